//! The WebSocket protocol over real sockets, with real NATS, Kafka and the
//! archiver behind it.

use std::{collections::HashSet, time::Duration};

use client_input::token::TokenKeys;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use stack_tests::{
    JWT_SECRET, Pair, Settings, Shared, TestApp, TwoInARoom, User, Ws, alice_and_bob_in_a_room, spawn_archiver,
    spawn_core, spawn_gateway, two_in_a_room,
};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn a_missing_or_bad_token_is_refused_with_401_before_the_upgrade() {
    let app = TestApp::spawn().await;
    let url = format!("{}/ws", app.base.replacen("http", "ws", 1));
    for url in [url.clone(), format!("{url}?token=forged.token.value"), format!("{url}?token=")] {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{url}");
            }
            other => panic!("{url}: expected 401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_authorization_header_works_too() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "{}/ws",
        app.base.replacen("http", "ws", 1)
    ))
    .unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {}", alice.token).parse().unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade with a header token");
    use futures::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), r#"{"Type":"enter","RoomID":0}"#);
}

#[tokio::test]
async fn two_members_exchange_messages() {
    let TwoInARoom { app: _app, alice, room, mut a, mut b, .. } = two_in_a_room().await;

    a.send(json!({"Type": "message", "Text": "hello bob", "Ref": "m-1"})).await;
    let mut frames = [a.recv().await, a.recv().await];
    frames.sort_by_key(|f| f["Type"].as_str().unwrap().to_owned());
    let (message, sent) = (&frames[0], &frames[1]);
    assert_eq!(sent["Type"], "sent");
    assert_eq!(sent["Ref"], "m-1");
    assert!(sent["Timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(message["Type"], "message");
    assert_eq!(message["ID"], sent["MessageID"]);
    assert_eq!(message["UID"], alice.uid);
    assert_eq!(message["RoomID"], room);
    assert_eq!(message["Text"], "hello bob");
    assert_eq!(&b.recv().await, message);

    let (sent, _) = b.say("hi alice").await;
    let reply = a.recv().await;
    assert_eq!((reply["Text"].as_str(), &reply["ID"]), (Some("hi alice"), &sent["MessageID"]));
}

#[tokio::test]
async fn a_non_member_cannot_enter_and_leaving_stops_delivery() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.send(json!({"Type": "enter", "RoomID": room, "Ref": "e"})).await;
    assert_eq!(b.recv().await, json!({"Type": "error", "Error": "not room member", "Ref": "e"}));
    b.send(json!({"Type": "enter", "RoomID": 987654})).await;
    assert_eq!(b.recv().await["Error"], "not room member");

    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    b.enter(room).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    a.say("first").await;
    assert_eq!(b.recv().await["Text"], "first");
    b.enter(0).await;
    a.say("second").await;
    b.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn joins_and_invites_are_announced_to_the_room() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let join = a.recv().await;
    assert_eq!((join["Type"].as_str(), &join["UID"], join["Text"].as_str()), (Some("join"), &json!(bob.uid), Some("")));
    app.put("/invite", Some(&alice.token), json!({"RoomID": room, "UID": carol.uid})).await;
    let invite = a.recv().await;
    assert_eq!((invite["Type"].as_str(), &invite["UID"]), (Some("join"), &json!(carol.uid)));
    assert!(invite["ID"].as_i64() > join["ID"].as_i64());
}

#[tokio::test]
async fn a_sent_message_is_in_history_at_once() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    let (sent, _) = a.say("remember me").await;
    let (status, history) = app.get(&format!("/messages/{room}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history[0]["ID"], sent["MessageID"]);
    assert_eq!(history[0]["Text"], "remember me");
    assert_eq!(history[0]["Type"], "message");
}

#[tokio::test]
async fn resume_with_last_id_delivers_every_missed_message_once_then_live_ones() {
    let TwoInARoom { app, bob, room, mut a, mut b, .. } = two_in_a_room().await;
    let (seen, _) = a.say("before").await;
    let last_seen = b.recv().await["ID"].as_i64().unwrap();
    assert_eq!(json!(last_seen), seen["MessageID"]);
    b.close().await;

    // Alice goes on while Bob is away: more than one replay page.
    let mut missed = Vec::new();
    for i in 0..150 {
        let (sent, _) = a.say(&format!("missed {i}")).await;
        missed.push(sent["MessageID"].as_i64().unwrap());
    }
    // Bob comes back while Alice keeps sending.
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.send(json!({"Type": "enter", "RoomID": room, "LastID": last_seen})).await;
    let sender = tokio::spawn(async move {
        let mut live = Vec::new();
        for i in 0..30 {
            let (sent, _) = a.say(&format!("live {i}")).await;
            live.push(sent["MessageID"].as_i64().unwrap());
        }
        (live, a)
    });
    assert_eq!(b.recv().await, json!({"Type": "enter", "RoomID": room}));
    let (live, mut a) = sender.await.unwrap();
    let expected: Vec<i64> = missed.iter().chain(&live).copied().collect();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        received.push(b.recv().await["ID"].as_i64().unwrap());
    }
    assert_eq!(received.iter().collect::<HashSet<_>>().len(), received.len(), "no duplicates");
    assert_eq!(received, expected, "every message once, in order");
    // Nothing twice after them either: the next frame is the next message.
    let (last, _) = a.say("last").await;
    assert_eq!(b.recv().await["ID"], last["MessageID"]);
}

#[tokio::test]
async fn clients_on_two_gateways_and_two_core_replicas_talk_and_ids_stay_unique() {
    let pair = Pair::spawn().await;
    let (app_a, app_b) = (&pair.a, &pair.b);
    let (alice, bob, _room, mut a, mut b) = alice_and_bob_in_a_room(app_a, app_b).await;

    let mut ids = HashSet::new();
    for i in 0..50 {
        let (sent, _) = a.say(&format!("a{i}")).await;
        assert!(ids.insert(sent["MessageID"].as_i64().unwrap()));
        let (sent, _) = b.say(&format!("b{i}")).await;
        assert!(ids.insert(sent["MessageID"].as_i64().unwrap()));
    }
    // Each side has read its own copies in `say`; the other side's arrive too.
    let (mut from_b, mut from_a) = (HashSet::new(), HashSet::new());
    while from_b.len() < 50 {
        let frame = a.recv().await;
        assert_eq!(frame["UID"], bob.uid);
        from_b.insert(frame["ID"].as_i64().unwrap());
    }
    while from_a.len() < 50 {
        let frame = b.recv().await;
        assert_eq!(frame["UID"], alice.uid);
        from_a.insert(frame["ID"].as_i64().unwrap());
    }
    assert_eq!(from_a.union(&from_b).copied().collect::<HashSet<_>>(), ids);
    assert!(ids.iter().all(|id| *id < 1 << 53));
}

#[tokio::test]
async fn hostile_frames_get_their_errors_and_others_are_still_served() {
    let app = TestApp::spawn_with(Settings { send_per_second: 5, ..Settings::default() }).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.enter(room).await;

    let error = |text: &str| json!({"Type": "error", "Error": text});
    a.send(json!({"Type": "message", "Text": "too early"})).await;
    assert_eq!(a.recv().await, error("not in room"));
    for (raw, expected) in [
        ("{not json", "invalid json"),
        ("[1,2]", "invalid json"),
        (r#"{"Type":"enter","RoomID":"one"}"#, "invalid json"),
        (r#"{"Type":"dance"}"#, "invalid operation"),
        (r#"{"Type":"enter","RoomID":-1}"#, "invalid room id"),
        (r#"{"Type":"enter"}"#, "invalid room id"),
        (r#"{"Type":"enter","RoomID":0}"#, "already in room"),
    ] {
        a.send_raw(WsMessage::text(raw)).await;
        assert_eq!(a.recv().await, error(expected), "{raw}");
    }
    a.send_raw(WsMessage::binary(vec![1, 2, 3])).await;
    assert_eq!(a.recv().await, error("invalid operation"));
    a.enter(room).await;
    a.send(json!({"Type": "enter", "RoomID": room})).await;
    assert_eq!(a.recv().await, error("already in room"));
    for (text, expected) in [("", "empty message"), ("  \n\t ", "empty message")] {
        a.send(json!({"Type": "message", "Text": text, "Ref": "r"})).await;
        assert_eq!(a.recv().await, json!({"Type": "error", "Error": expected, "Ref": "r"}));
    }
    a.send(json!({"Type": "message"})).await;
    assert_eq!(a.recv().await, error("empty message"));
    a.send(json!({"Type": "message", "Text": "é".repeat(2001)})).await;
    assert_eq!(a.recv().await, error("message too long"));
    a.send(json!({"Type": "message", "Text": "x", "Ref": "r".repeat(65)})).await;
    assert_eq!(a.recv().await, error("invalid json"));
    b.expect_silence(Duration::from_millis(200)).await;

    // A flood past the send rate: some are refused, none is lost.
    for i in 0..20 {
        a.send(json!({"Type": "message", "Text": format!("flood {i}"), "Ref": i.to_string()})).await;
    }
    let mut sent = 0;
    let mut refused = 0;
    while sent + refused < 20 {
        let frame = a.recv().await;
        match frame["Type"].as_str() {
            Some("sent") => sent += 1,
            Some("error") => {
                assert_eq!(frame["Error"], "too many messages");
                refused += 1;
            }
            _ => {}
        }
    }
    assert!(refused > 0 && sent >= 5, "sent {sent}, refused {refused}");
    let mut delivered = 0;
    while delivered < sent {
        assert_eq!(b.recv().await["Type"], "message");
        delivered += 1;
    }

    // A frame over 16 KiB closes that connection with 1009 ...
    a.send_raw(WsMessage::text("x".repeat(17 * 1024))).await;
    assert_eq!(a.close_code().await, Some(1009));
    // ... and everyone else is still served.
    let (sent, _) = b.say("still here").await;
    assert_eq!(sent["Type"], "sent");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_by_the_queue_limit() {
    let app = TestApp::spawn_with(Settings { ws_queue_frames: 32, ..Settings::default() }).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let mut slow = Ws::connect_with_small_buffer(&app.base, &bob.token).await;
    slow.enter(room).await;
    let mut alice_ws = Ws::connect(&app.base, &alice.token).await;
    alice_ws.enter(room).await;
    let closed_before = closed_as_too_slow(&app).await;
    // 8 KB frames (2000 four-byte characters), 6 MB in all: far more than
    // the connection's buffers hold, so the writes to Bob stall.
    const FLOOD: usize = 750;
    // Alice reads everything while Bob reads nothing.
    let keeping_up = tokio::spawn(async move {
        let mut received = 0;
        while received < FLOOD {
            assert_eq!(alice_ws.recv().await["Type"], "message");
            received += 1;
        }
        alice_ws
    });
    // Sent by a service over gRPC, so the flood waits for nobody's socket.
    let mut grpc = app.grpc().await;
    let flood = tokio::spawn(async move {
        let text = "😀".repeat(2000);
        for _ in 0..FLOOD {
            grpc.send(&alice, room, &text).await.unwrap();
        }
    });
    // The server gives up on Bob while he still reads nothing: once 32
    // frames wait behind the stalled write, not when it times out (that
    // close says "write timed out"), nor when he reads again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while closed_as_too_slow(&app).await == closed_before {
        assert!(tokio::time::Instant::now() < deadline, "no socket closed as too slow while Bob read nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(slow.close_frame().await, Some((1008, "too slow".to_owned())));
    flood.await.unwrap();
    let mut alice_ws = keeping_up.await.expect("Alice got every message");
    alice_ws.say("still here").await;
}

/// How many sockets the gateways of this process have closed as too slow.
/// (The metrics recorder is shared, and no other test's socket is too slow.)
async fn closed_as_too_slow(app: &TestApp) -> f64 {
    app.metric(r#"chat_ws_closed_by_server_total{reason="too_slow"}"#).await
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let shared = Shared::new().await;
    let settings = Settings::default();
    let (core, _stop_core) = spawn_core(&shared, &settings).await;
    let (gateway, stop_gateway) = spawn_gateway(&shared, &settings, core).await;
    let app = TestApp::at(gateway.clone(), core, &shared);
    let alice = app.register("alice").await;
    let mut a = Ws::connect(&gateway, &alice.token).await;
    drop(stop_gateway);
    assert_eq!(a.close_code().await, Some(1001));
}

#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let short_lived = TokenKeys::new(JWT_SECRET.as_bytes()).issue(alice.uid, chrono::Duration::seconds(2));
    let mut ws = Ws::connect(&app.base, &short_lived.token).await;
    ws.enter(room).await;
    let mut other = Ws::connect(&app.base, &alice.token).await;
    other.enter(room).await;
    other.say("while the token lasts").await;
    assert_eq!(ws.recv().await["Text"], "while the token lasts");
    assert_eq!(ws.close_code().await, Some(1008));
    assert!(chrono::Utc::now() >= short_lived.expires_at, "not before the token expired");
}

#[tokio::test]
async fn a_client_that_chats_then_sends_an_oversized_frame_always_gets_the_1009_close() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    // Each try chats first, so that the server's side of the connection
    // has traffic behind it, then sends a frame that is too large whole.
    for attempt in 0..10 {
        let mut ws = Ws::connect(&app.base, &alice.token).await;
        ws.enter(room).await;
        let (sent, _) = ws.say(&format!("hello {attempt}")).await;
        assert_eq!(sent["Type"], "sent");
        ws.send_raw(WsMessage::text("x".repeat(20 * 1024))).await;
        // The client goes on writing until the answer arrives: a server that
        // drops the connection with the client's bytes unread resets it, and
        // the reset fails the writes and loses the close frame.
        let code =
            ws.write_until_closed(|n| json!({"Type": "message", "Text": format!("after the big one {n}")})).await;
        assert_eq!(code, Some(1009), "try {attempt}: the close frame arrives, not a reset");
    }
}

/// The stack, with the test's database (to hold its locks) at hand.
struct Stack {
    shared: Shared,
    app: TestApp,
    stop_gateway: oneshot::Sender<()>,
    _stops: [oneshot::Sender<()>; 2],
}

async fn stack(settings: Settings) -> Stack {
    let shared = Shared::new().await;
    let (core, stop_core) = spawn_core(&shared, &settings).await;
    let (gateway, stop_gateway) = spawn_gateway(&shared, &settings, core).await;
    let stop_archiver = spawn_archiver(&shared).await;
    let app = TestApp::at(gateway, core, &shared);
    Stack { shared, app, stop_gateway, _stops: [stop_core, stop_archiver] }
}

/// The messages table locked by a transaction of the test's, as a long
/// migration would hold it: core-svc's reads of stored history wait for it.
struct HistoryLocked {
    database_url: String,
    db: PgConnection,
}

impl HistoryLocked {
    async fn lock(database_url: &str) -> Self {
        Self::lock_table(database_url, "messages").await
    }

    async fn lock_table(database_url: &str, table: &str) -> Self {
        let mut db = PgConnection::connect(database_url).await.expect("the test database");
        db.execute("BEGIN").await.unwrap();
        db.execute(format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE").as_str()).await.unwrap();
        Self { database_url: database_url.to_owned(), db }
    }

    /// Waits until a history read of core-svc's waits for the lock.
    async fn wait_for_a_reader(&self) {
        let pattern = "SELECT % FROM messages%WHERE room_id = $1%";
        // Another connection: one in a transaction sees the same snapshot of
        // pg_stat_activity every time.
        let mut db = PgConnection::connect(&self.database_url).await.expect("the test database");
        let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
            AND wait_event_type = 'Lock' AND query LIKE $1";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sqlx::query_scalar::<_, i64>(waiting).bind(pattern).fetch_one(&mut db).await.unwrap() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no history read waits for the lock");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn release(mut self) {
        self.db.execute("COMMIT").await.unwrap();
    }
}

/// Leaves a room's history in PostgreSQL only, so that replays read it from
/// there (and a test's lock on it holds them up): waits until the archiver
/// has stored `ids`, then empties the room's recent cache.
async fn only_in_postgres(app: &TestApp, shared: &Shared, room: i64, ids: &[i64]) {
    let mut db = PgConnection::connect(&shared.database_url).await.expect("the test database");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1)")
            .bind(ids)
            .fetch_one(&mut db)
            .await
            .unwrap();
        if stored == ids.len() as i64 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the archiver stores the room's messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = app.cache_key(&format!("recent-v4:{room}")).await;
    let _: () = redis::AsyncCommands::del(&mut app.redis().await, key).await.unwrap();
}

/// Alice and Bob, members of a public room.
async fn alice_and_bob(app: &TestApp) -> (User, User, i64) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    (alice, bob, room)
}

#[tokio::test]
async fn a_replay_far_longer_than_the_queue_comes_whole_in_order_and_the_socket_stays_open() {
    let Stack { shared, app, stop_gateway: _stop_gateway, _stops } =
        stack(Settings { ws_queue_frames: 4, ..Settings::default() }).await;
    let (alice, bob, room) = alice_and_bob(&app).await;
    let mut grpc = app.grpc().await;
    let last_seen = grpc.send(&alice, room, "seen").await.unwrap();
    let mut missed = Vec::new();
    for i in 0..150 {
        missed.push(grpc.send(&alice, room, &format!("missed {i}")).await.unwrap());
    }
    only_in_postgres(&app, &shared, room, &missed).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;

    // Bob's replay waits on its first read of history ...
    let lock = HistoryLocked::lock(&shared.database_url).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.send(json!({"Type": "enter", "RoomID": room, "LastID": last_seen})).await;
    lock.wait_for_a_reader().await;
    // ... while live messages, five times the queue, reach the gateway's
    // room feed (Alice's copy comes through it).
    let mut live = Vec::new();
    for i in 0..20 {
        let (sent, _) = a.say(&format!("live {i}")).await;
        live.push(sent["MessageID"].as_i64().unwrap());
    }
    lock.release().await;

    assert_eq!(b.recv().await, json!({"Type": "enter", "RoomID": room}));
    let expected: Vec<i64> = missed.iter().chain(&live).copied().collect();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        received.push(b.recv().await["ID"].as_i64().unwrap());
    }
    assert_eq!(received, expected, "every message once, in order");
    let (last, _) = a.say("last").await;
    assert_eq!(b.recv().await["ID"], last["MessageID"], "then the live ones, nothing twice");
}

#[tokio::test]
async fn a_socket_keeps_serving_its_room_while_an_enter_waits() {
    let Stack { shared, app, stop_gateway: _stop_gateway, _stops } = stack(Settings::default()).await;
    let (alice, bob, general) = alice_and_bob(&app).await;
    let other = app.create_room(&bob, "Other", false).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    a.enter(general).await;
    b.enter(general).await;

    let lock = HistoryLocked::lock(&shared.database_url).await;
    b.send(json!({"Type": "enter", "RoomID": other, "LastID": 0, "Ref": "e"})).await;
    lock.wait_for_a_reader().await;
    let (sent, _) = a.say("while you wait").await;
    assert_eq!(b.recv().await["ID"], sent["MessageID"], "the room Bob is still in");
    lock.release().await;
    assert_eq!(b.recv().await, json!({"Type": "enter", "RoomID": other, "Ref": "e"}));
    a.say("after you left").await;
    b.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn shutdown_closes_a_socket_whose_enter_waits_with_1001() {
    let Stack { shared, app, stop_gateway, _stops } = stack(Settings::default()).await;
    let (_, bob, room) = alice_and_bob(&app).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    let lock = HistoryLocked::lock(&shared.database_url).await;
    b.send(json!({"Type": "enter", "RoomID": room, "LastID": 0})).await;
    lock.wait_for_a_reader().await;
    drop(stop_gateway);
    assert_eq!(b.close_code().await, Some(1001));
    lock.release().await;
}

#[tokio::test]
async fn an_enter_whose_history_does_not_answer_in_time_is_refused_and_changes_nothing() {
    let Stack { shared, app, stop_gateway: _stop_gateway, _stops } = stack(Settings::default()).await;
    let (_, bob, room) = alice_and_bob(&app).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    let lock = HistoryLocked::lock(&shared.database_url).await;
    b.send(json!({"Type": "enter", "RoomID": room, "LastID": 0, "Ref": "e"})).await;
    assert_eq!(b.recv().await, json!({"Type": "error", "Error": "temporarily unavailable", "Ref": "e"}));
    b.send(json!({"Type": "message", "Text": "am I in?"})).await;
    assert_eq!(b.recv().await, json!({"Type": "error", "Error": "not in room"}));
    lock.release().await;
}

#[tokio::test]
async fn a_replay_that_fails_after_the_enter_leaves_the_room() {
    let Stack { shared, app, stop_gateway: _stop_gateway, _stops } = stack(Settings::default()).await;
    let (alice, bob, room) = alice_and_bob(&app).await;
    let mut grpc = app.grpc().await;
    let mut sent = Vec::new();
    for i in 0..120 {
        sent.push(grpc.send(&alice, room, &format!("message {i}")).await.unwrap());
    }
    only_in_postgres(&app, &shared, room, &sent).await;

    // The first page waits on a lock of the messages. Meanwhile the table
    // of the archiver's progress, which every read of history from
    // PostgreSQL consults first (the first page has already), is locked
    // too: the second page waits on it past the gateway's patience.
    let first = HistoryLocked::lock(&shared.database_url).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.send(json!({"Type": "enter", "RoomID": room, "LastID": sent[0] - 1, "Ref": "e"})).await;
    first.wait_for_a_reader().await;
    let second = HistoryLocked::lock_table(&shared.database_url, "archive_progress").await;
    first.release().await;

    assert_eq!(b.recv().await, json!({"Type": "enter", "RoomID": room, "Ref": "e"}));
    for id in &sent[..100] {
        assert_eq!(b.recv().await["ID"], *id);
    }
    assert_eq!(b.recv().await, json!({"Type": "enter", "RoomID": 0}));
    assert_eq!(b.recv().await, json!({"Type": "error", "Error": "temporarily unavailable", "Ref": "e"}));
    b.send(json!({"Type": "message", "Text": "am I in?"})).await;
    assert_eq!(b.recv().await, json!({"Type": "error", "Error": "not in room"}));
    second.release().await;
}
