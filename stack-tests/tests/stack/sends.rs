//! What a send may carry beyond its text: `ReplyTo` (an entry of the same
//! room) and `Key` (the same user and key give the same message, stored
//! once, across reconnects, gateways and core-svc replicas, and after a
//! replica died between the log's acknowledgement and its answer).

use std::collections::HashSet;

use chat_proto::{
    events::v1::{Event, Posted, event::Kind},
    reason,
    v1::SendRequest,
};
use prost::Message as _;
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use stack_tests::{Pair, TestApp, TwoInARoom, Ws, assert_status, authed, eventually, two_in_a_room};
use tonic::Code;

fn error(text: &str) -> Value {
    json!({"Type": "error", "Error": text})
}

/// The `sent` answer to a frame, past the room's frames queued before it.
async fn answer(ws: &mut Ws) -> Value {
    loop {
        let frame = ws.recv().await;
        if matches!(frame["Type"].as_str(), Some("sent" | "error")) {
            return frame;
        }
    }
}

/// How many times the archiver stored a message with this text.
async fn stored(database_url: &str, text: &str) -> i64 {
    let mut db = PgConnection::connect(database_url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE text = $1").bind(text).fetch_one(&mut db).await.unwrap()
}

#[tokio::test]
async fn a_reply_answers_an_entry_of_its_own_room_and_nothing_else() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let elsewhere = app.create_room(&alice, "Elsewhere", false).await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.enter(elsewhere).await;
    let foreign = ws.say("in another room").await.0["MessageID"].as_i64().unwrap();
    ws.enter(room).await;
    let (first, _) = ws.say("first").await;
    let first = first["MessageID"].as_i64().unwrap();

    let (sent, copy) = ws.say_frame(json!({"Type": "message", "Text": "re: first", "ReplyTo": first})).await;
    assert_eq!((copy["ID"].clone(), copy["ReplyTo"].clone()), (sent["MessageID"].clone(), json!(first)), "{copy}");
    let (_, history) = app.get(&format!("/messages/{room}"), Some(&alice.token)).await;
    assert_eq!(history[0]["ReplyTo"], first);
    assert!(history[1].get("ReplyTo").is_none(), "no reply, no field: {}", history[1]);

    let edit = app.patch(&format!("/messages/{room}/{first}"), Some(&alice.token), json!({"Text": "first!"})).await;
    let edit_id = edit.1["EventID"].as_i64().unwrap();
    for (bad, why) in [
        (json!(foreign), "another room's"),
        (json!(999_999_999), "unknown"),
        (json!(-3), "negative"),
        (json!(edit_id), "an edit, no entry"),
    ] {
        ws.send(json!({"Type": "message", "Text": "re: ?", "ReplyTo": bad, "Ref": why})).await;
        assert_eq!(answer(&mut ws).await, json!({"Type": "error", "Error": "invalid reply", "Ref": why}));
    }
    ws.send(json!({"Type": "message", "Text": "re", "ReplyTo": "first"})).await;
    assert_eq!(answer(&mut ws).await, error("invalid json"));

    let mut grpc = app.grpc().await;
    let reply =
        |reply_to| authed(&alice, SendRequest { room_id: room, text: "re".into(), reply_to, key: String::new() });
    grpc.messages.send(reply(first)).await.expect("a reply over gRPC");
    let refused = grpc.messages.send(reply(foreign)).await;
    assert_eq!(reason::of(refused.as_ref().unwrap_err()).as_deref(), Some(reason::INVALID_REPLY));
    assert_status(refused, Code::InvalidArgument, "invalid reply");
}

#[tokio::test]
async fn the_same_key_gives_the_same_message_across_reconnects_gateways_and_replicas() {
    let pair = Pair::spawn().await;
    let (app, app_b) = (&pair.a, &pair.b);
    let (gateway_a, gateway_b, shared) = (app.base.clone(), app_b.base.clone(), app.shared.clone());
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let mut watcher = Ws::connect(&gateway_a, &bob.token).await;
    watcher.enter(room).await;

    let frame = json!({"Type": "message", "Text": "once only", "Key": "c1-000017"});
    let mut a = Ws::connect(&gateway_a, &alice.token).await;
    a.enter(room).await;
    a.send(frame.clone()).await;
    let first = answer(&mut a).await;
    assert_eq!(first["Type"], "sent", "{first}");
    // Again on the same socket, after a reconnect, and through the other
    // gateway and replica.
    a.send(frame.clone()).await;
    assert_eq!(answer(&mut a).await, first);
    a.close().await;
    let mut again = Ws::connect(&gateway_a, &alice.token).await;
    again.enter(room).await;
    again.send(frame.clone()).await;
    assert_eq!(answer(&mut again).await, first);
    let mut b = Ws::connect(&gateway_b, &alice.token).await;
    b.enter(room).await;
    b.send(frame.clone()).await;
    assert_eq!(answer(&mut b).await, first, "the same id and time through another gateway and replica");
    // Another user's same key is another message.
    let mut bobs = Ws::connect(&gateway_b, &bob.token).await;
    bobs.enter(room).await;
    bobs.send(json!({"Type": "message", "Text": "bob's", "Key": "c1-000017"})).await;
    assert_ne!(answer(&mut bobs).await["MessageID"], first["MessageID"]);

    // Both gateways at once, many times over.
    let keyed = |n: usize| json!({"Type": "message", "Text": format!("raced {n}"), "Key": format!("race-{n}")});
    for n in 0..10 {
        again.send(keyed(n)).await;
        b.send(keyed(n)).await;
        let (one, other) = (answer(&mut again).await, answer(&mut b).await);
        assert_eq!(one["Type"], "sent", "{one}");
        assert_eq!(one, other, "the same answer to both");
    }

    // Stored once, and live once.
    let mut live: Vec<i64> = Vec::new();
    while live.len() < 12 {
        live.push(watcher.recv().await["ID"].as_i64().unwrap());
    }
    assert_eq!(live.iter().collect::<HashSet<_>>().len(), live.len(), "no message twice live: {live:?}");
    watcher.expect_silence(std::time::Duration::from_millis(300)).await;
    eventually("the archiver stores them", async || stored(&shared.database_url, "raced 9").await == 1).await;
    assert_eq!(stored(&shared.database_url, "once only").await, 1);
    for n in 0..10 {
        assert_eq!(stored(&shared.database_url, &format!("raced {n}")).await, 1);
    }
    let (_, history) = app.get(&format!("/messages/{room}"), Some(&alice.token)).await;
    let ids: Vec<&Value> = history.as_array().unwrap().iter().map(|entry| &entry["ID"]).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "no entry twice in history");
}

#[tokio::test]
async fn a_key_over_64_characters_is_refused() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.enter(room).await;
    ws.send(json!({"Type": "message", "Text": "long key", "Key": "k".repeat(65)})).await;
    assert_eq!(answer(&mut ws).await, error("invalid key"));
    ws.send(json!({"Type": "message", "Text": "long key", "Key": "é".repeat(64)})).await;
    assert_eq!(answer(&mut ws).await["Type"], "sent", "64 characters (128 bytes) are fine");
    ws.send(json!({"Type": "message", "Text": "long key", "Key": 17})).await;
    assert_eq!(answer(&mut ws).await, error("invalid json"));

    let mut grpc = app.grpc().await;
    let send = SendRequest { room_id: room, text: "long key".into(), reply_to: 0, key: "k".repeat(65) };
    let refused = grpc.messages.send(authed(&alice, send)).await;
    assert_eq!(reason::of(refused.as_ref().unwrap_err()).as_deref(), Some(reason::INVALID_KEY));
    assert_status(refused, Code::InvalidArgument, "key must be at most 64 characters");
    assert_eq!(app.get(&format!("/messages/{room}"), Some(&alice.token)).await.1.as_array().unwrap().len(), 1);
}

/// A replica that wrote a keyed send to the log and died before it could
/// answer (or mark the key): the key's reservation is left unmarked, its
/// claim lapsing, and the event is in the log. The client's retry gets
/// that very message, and it is stored once.
#[tokio::test]
async fn a_retry_after_a_replica_died_between_the_logs_ack_and_its_answer_gets_the_same_message() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.enter(room).await;
    let (before, _) = ws.say("before").await;
    // What the dead replica had made: an id and time of its own.
    let id = before["MessageID"].as_i64().unwrap() + 1_000;
    let posted = Posted { text: "sent by a replica that died".into(), reply_to: 0, key: "k-died".into() };
    let timestamp = Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp(), nanos: 5_000 });
    let event = Event { id, room_id: room, uid: alice.uid, timestamp, kind: Some(Kind::Posted(posted)) };
    let encoded = event.encode_to_vec();
    let mut db = PgConnection::connect(&app.shared.database_url).await.unwrap();
    sqlx::query(
        "INSERT INTO send_keys (user_id, key, message_id, event, claim, claimed_until)
         VALUES ($1, 'k-died', $2, $3, 1, now() - interval '1 second')",
    )
    .bind(alice.uid)
    .bind(id)
    .bind(&encoded)
    .execute(&mut db)
    .await
    .unwrap();
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &app.shared.kafka_brokers).create().unwrap();
    // Where core-svc writes a room's events (its test settings have 4 partitions).
    let key = room.to_string();
    let record = FutureRecord::to(&app.shared.topic).partition(room.rem_euclid(4) as i32).key(&key).payload(&encoded);
    producer.send(record, std::time::Duration::from_secs(5)).await.map_err(|(error, _)| error).expect("logged");

    ws.send(json!({"Type": "message", "Text": "the retry's own text", "Key": "k-died"})).await;
    let sent = answer(&mut ws).await;
    assert_eq!(sent["MessageID"], id, "{sent}");
    assert_eq!(sent["Timestamp"], written(&event), "the first attempt's time");
    let text = "sent by a replica that died";
    eventually("the archiver stores it", async || stored(&app.shared.database_url, text).await == 1).await;
    let (status, history) = app.get(&format!("/messages/{room}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = history.as_array().unwrap().iter().map(|entry| &entry["ID"]).collect();
    assert_eq!(ids.iter().filter(|listed| ***listed == id).count(), 1, "once in history: {history}");
    assert_eq!(stored(&app.shared.database_url, "the retry's own text").await, 0, "nothing new was stored");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&mut db).await.unwrap();
    assert_eq!(dead, 0, "the copy in the log is no collision");
    // And from now on the key is answered at once.
    ws.send(json!({"Type": "message", "Text": "once more", "Key": "k-died"})).await;
    assert_eq!(answer(&mut ws).await["MessageID"], id);
}

/// A timestamp as the gateway writes it.
fn written(event: &Event) -> String {
    let at = event.timestamp.unwrap();
    let time = chrono::DateTime::from_timestamp(at.seconds, at.nanos as u32).unwrap();
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A client that goes away mid-send (its gateway died, it gave up waiting)
/// drops its call. Whatever point core-svc's work had reached, a message
/// the log took must still reach the room's live readers and its recent
/// history, and the retry with the key answer it: here calls are cut off
/// after a delay that grows by a quarter of a millisecond each time, so
/// that some end between the log's acknowledgement and the live subject.
#[tokio::test]
async fn a_send_whose_caller_goes_away_after_the_log_took_it_still_reaches_everyone() {
    let TwoInARoom { app, alice, room, b: mut watcher, .. } = two_in_a_room().await;
    // Read meanwhile, as a client does: a message that never comes live
    // ends this with a wait for a frame that fails.
    let (heard, mut live_ids) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let _ = heard.send(watcher.recv().await["ID"].as_i64().unwrap());
        }
    });
    let mut grpc = app.grpc().await;
    let mut acknowledged = Vec::new();
    for n in 0..60u64 {
        let send = || SendRequest { room_id: room, text: format!("cut {n}"), reply_to: 0, key: format!("cut-{n}") };
        let cut_after = std::time::Duration::from_micros(250 * n);
        let mut messages = grpc.messages.clone();
        let _ = tokio::time::timeout(cut_after, messages.send(authed(&alice, send()))).await;
        let sent = grpc.messages.send(authed(&alice, send())).await.expect("the retry is answered").into_inner();
        acknowledged.push(sent.message_id);
    }
    let mut live = Vec::new();
    while live.len() < acknowledged.len() {
        let id = live_ids.recv().await;
        live.push(id.unwrap_or_else(|| panic!("{} of {} came live: {live:?}", live.len(), acknowledged.len())));
    }
    reader.abort();
    assert_eq!(live, acknowledged, "each once, in order");
    let (_, history) = app.get(&format!("/messages/{room}?Limit=100"), Some(&alice.token)).await;
    let mut listed: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["ID"].as_i64())
        .filter(|id| live.contains(id))
        .collect();
    listed.reverse();
    assert_eq!(listed, acknowledged, "the recent history lists them all");
}
