//! Edits, deletions and reactions (`PATCH` / `DELETE /messages/{roomID}/{messageID}`,
//! `PUT .../reactions`, and the Edit, Delete and React calls): through the
//! log to the room's sockets and streams, into each entry's latest state in
//! history (also while only the recent cache holds them), and replayed on
//! resume in order.

use std::collections::HashSet;

use chat_proto::{
    reason,
    v1::{DeleteRequest, EditRequest, HistoryRequest, MessageKind, ReactRequest, SubscribeRequest},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use stack_tests::{
    Settings, TestApp, TwoInARoom, User, Ws, assert_error, assert_status, authed, eventually, two_in_a_room_with,
};
use tonic::Code;

/// Alice (the creator) and Bob, members of a public room, each with a
/// socket in it, and Carol, who is not a member.
struct Room {
    app: TestApp,
    alice: User,
    bob: User,
    carol: User,
    id: i64,
    a: Ws,
    b: Ws,
}

async fn room_with(settings: Settings) -> Room {
    let TwoInARoom { app, alice, bob, room: id, a, b } = two_in_a_room_with(settings).await;
    let carol = app.register("carol").await;
    Room { app, alice, bob, carol, id, a, b }
}

impl Room {
    /// Alice (or Bob) says `text`; its id, once the other socket has it
    /// too (past the frames queued before it).
    async fn say(&mut self, by_alice: bool, text: &str) -> i64 {
        let (sender, other) = if by_alice { (&mut self.a, &mut self.b) } else { (&mut self.b, &mut self.a) };
        let id = said(sender, text).await;
        while other.recv().await["ID"] != id {}
        id
    }

    fn entry_path(&self, id: i64) -> String {
        format!("/messages/{}/{id}", self.id)
    }

    async fn edit(&self, user: &User, id: i64, text: &str) -> (StatusCode, Value) {
        self.app.patch(&self.entry_path(id), Some(&user.token), json!({"Text": text})).await
    }

    async fn react(&self, user: &User, id: i64, emoji: &str, added: bool) -> (StatusCode, Value) {
        let path = format!("{}/reactions", self.entry_path(id));
        self.app.put(&path, Some(&user.token), json!({"Emoji": emoji, "Added": added})).await
    }

    /// The room's history as `user` reads it, by id.
    async fn history(&self, user: &User) -> Vec<Value> {
        let (status, body) = self.app.get(&format!("/messages/{}", self.id), Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().unwrap().clone()
    }

    async fn entry(&self, id: i64) -> Value {
        let history = self.history(&self.alice).await;
        history.into_iter().find(|entry| entry["ID"] == id).unwrap_or_else(|| panic!("no entry {id} in history"))
    }
}

/// The event id a change answered with, after checking its status.
#[track_caller]
fn event_id(answer: (StatusCode, Value), status: &str) -> i64 {
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1["status"], status, "{}", answer.1);
    answer.1["EventID"].as_i64().expect("an EventID")
}

#[tokio::test]
async fn edits_reactions_and_deletions_reach_the_room_live_and_history_shows_the_latest_state() {
    let mut room = room_with(Settings::default()).await;
    let (alice, bob) = (room.alice.clone(), room.bob.clone());
    let id = room.say(true, "helo").await;

    let edit = event_id(room.edit(&alice, id, "hello").await, "edited");
    assert!(edit > id, "a change gets an id of its own, after the entry's");
    let frame = room.b.recv().await;
    assert_eq!(frame["EditedAt"].as_str().map(str::len), Some("2026-01-01T00:00:00.000000Z".len()), "{frame}");
    assert_eq!(
        frame,
        json!({"Type": "edit", "ID": edit, "RoomID": room.id, "UID": alice.uid, "MessageID": id, "Text": "hello",
               "EditedAt": frame["EditedAt"]}),
    );
    assert_eq!(room.a.recv().await, frame, "the author sees it too");

    let thumbs = event_id(room.react(&bob, id, "👍", true).await, "ok");
    let frame = room.a.recv().await;
    assert_eq!(
        frame,
        json!({"Type": "reaction", "ID": thumbs, "RoomID": room.id, "UID": bob.uid, "MessageID": id,
               "Emoji": "👍", "Added": true}),
    );
    room.b.recv().await;
    event_id(room.react(&alice, id, "👍", true).await, "ok");
    event_id(room.react(&alice, id, "🎉", true).await, "ok");
    let entry = room.entry(id).await;
    assert_eq!(entry["Text"], "hello");
    assert!(entry["EditedAt"].is_string(), "{entry}");
    let mut reactors = [alice.uid, bob.uid];
    reactors.sort();
    assert_eq!(entry["Reactions"], json!({"👍": reactors, "🎉": [alice.uid]}));
    assert!(entry.get("Deleted").is_none() && entry.get("ReplyTo").is_none(), "{entry}");

    // Taking back: gone from the list; an emoji nobody holds is gone.
    event_id(room.react(&alice, id, "🎉", false).await, "ok");
    event_id(room.react(&bob, id, "👍", false).await, "ok");
    assert_eq!(room.entry(id).await["Reactions"], json!({"👍": [alice.uid]}));

    let deletion = event_id(room.app.delete(&room.entry_path(id), Some(&alice.token)).await, "deleted");
    let expected = json!({"Type": "delete", "ID": deletion, "RoomID": room.id, "UID": alice.uid, "MessageID": id});
    let mut seen = Vec::new();
    while seen.last() != Some(&expected) {
        seen.push(room.b.recv().await);
    }
    let entry = room.entry(id).await;
    assert_eq!((entry["Deleted"].clone(), entry["Text"].clone()), (json!(true), json!("")), "{entry}");
    assert!(entry.get("Reactions").is_none(), "a deleted entry has no reactions: {entry}");
    // The change events are not entries of history.
    let ids: Vec<i64> = room.history(&alice).await.iter().map(|entry| entry["ID"].as_i64().unwrap()).collect();
    assert!(!ids.contains(&edit) && !ids.contains(&deletion), "{ids:?}");
}

#[tokio::test]
async fn history_shows_the_latest_state_of_what_only_the_cache_holds_and_then_postgres_agrees() {
    let mut room = room_with(Settings { archiver: false, ..Settings::default() }).await;
    let (alice, bob) = (room.alice.clone(), room.bob.clone());
    let kept = room.say(true, "first").await;
    let gone = room.say(false, "second").await;
    event_id(room.edit(&alice, kept, "first, edited").await, "edited");
    event_id(room.edit(&alice, kept, "first, edited twice").await, "edited");
    event_id(room.react(&bob, kept, "👍", true).await, "ok");
    event_id(room.app.delete(&room.entry_path(gone), Some(&bob.token)).await, "deleted");
    let cached = room.history(&alice).await;
    let mut db = PgConnection::connect(&room.app.shared.database_url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&mut db).await.unwrap();
    assert_eq!(stored, 0, "nothing archived yet: history came from the cache");
    let state = |history: &[Value], id: i64| history.iter().find(|entry| entry["ID"] == id).cloned().unwrap();
    assert_eq!(state(&cached, kept)["Text"], "first, edited twice");
    assert_eq!(state(&cached, kept)["Reactions"], json!({"👍": [bob.uid]}));
    assert_eq!(
        (state(&cached, gone)["Deleted"].clone(), state(&cached, gone)["Text"].clone()),
        (json!(true), json!(""))
    );

    room.app.start_archiver().await;
    eventually("the archiver stores the changes", async || {
        sqlx::query_scalar::<_, String>("SELECT text FROM messages WHERE id = $1")
            .bind(kept)
            .fetch_optional(&mut db)
            .await
            .unwrap()
            .is_some_and(|text| text == "first, edited twice")
    })
    .await;
    // The recent history gone: PostgreSQL alone answers, the same.
    room.app.forget_recent_history().await;
    let path = format!("/messages/{}", room.id);
    eventually("history from PostgreSQL alone is the same", async || {
        room.app.get(&path, Some(&alice.token)).await == (StatusCode::OK, Value::Array(cached.clone()))
    })
    .await;
    let text: String =
        sqlx::query_scalar("SELECT text FROM messages WHERE id = $1").bind(gone).fetch_one(&mut db).await.unwrap();
    assert_eq!(text, "", "a deleted message keeps no text in PostgreSQL either");
}

#[tokio::test]
async fn changes_are_refused_with_the_contracts_errors() {
    let mut room = room_with(Settings::default()).await;
    let (alice, bob, carol) = (room.alice.clone(), room.bob.clone(), room.carol.clone());
    let alices = room.say(true, "alice's").await;
    let bobs = room.say(false, "bob's").await;
    let path = room.entry_path(alices);

    // Authorization: no token, a stranger, a member who is not the author.
    assert_error(room.app.patch(&path, None, json!({"Text": "x"})).await, StatusCode::UNAUTHORIZED, "");
    assert_error(room.edit(&carol, alices, "x").await, StatusCode::FORBIDDEN, "not room member");
    assert_error(room.app.delete(&path, Some(&carol.token)).await, StatusCode::FORBIDDEN, "not room member");
    assert_error(room.react(&carol, alices, "👍", true).await, StatusCode::FORBIDDEN, "not room member");
    assert_error(room.edit(&bob, alices, "x").await, StatusCode::FORBIDDEN, "not author");
    assert_error(room.app.delete(&path, Some(&bob.token)).await, StatusCode::FORBIDDEN, "not author");
    // A private room is not even known to a stranger.
    let private = room.app.create_room(&alice, "Private", true).await;
    let (status, body) =
        room.app.patch(&format!("/messages/{private}/{alices}"), Some(&carol.token), json!({"Text": "x"})).await;
    assert_error((status, body), StatusCode::NOT_FOUND, "room not found");

    // The text rules of a message.
    assert_error(room.edit(&alice, alices, " \n ").await, StatusCode::BAD_REQUEST, "empty message");
    assert_error(room.edit(&alice, alices, &"x".repeat(2001)).await, StatusCode::BAD_REQUEST, "message too long");
    assert_error(room.edit(&alice, alices, "bell\u{7}").await, StatusCode::BAD_REQUEST, "invalid characters");
    assert_error(
        room.app.call(reqwest::Method::PATCH, &path, Some(&alice.token), Some("{")).await,
        StatusCode::BAD_REQUEST,
        "invalid json",
    );
    let oversized = json!({"Text": "x".repeat(70 * 1024)}).to_string();
    assert_error(
        room.app.call(reqwest::Method::PATCH, &path, Some(&alice.token), Some(&oversized)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "",
    );

    // Bad ids, unknown entries, and what is no message.
    for (bad, text) in [
        ("abc/1", "invalid room id"),
        ("0/1", "invalid room id"),
        ("1/-5", "invalid message id"),
        ("1/x", "invalid message id"),
    ] {
        let answer = room.app.patch(&format!("/messages/{bad}"), Some(&alice.token), json!({"Text": "x"})).await;
        assert_error(answer, StatusCode::BAD_REQUEST, text);
    }
    assert_error(room.edit(&alice, 999_999_999, "x").await, StatusCode::NOT_FOUND, "no such message");
    let elsewhere = room.app.create_room(&alice, "Elsewhere", false).await;
    let mut other = Ws::connect(&room.app.base, &alice.token).await;
    other.enter(elsewhere).await;
    let (sent, _) = other.say("in another room").await;
    let foreign = sent["MessageID"].as_i64().unwrap();
    assert_error(room.edit(&alice, foreign, "x").await, StatusCode::NOT_FOUND, "no such message");
    let edit = event_id(room.edit(&alice, alices, "edited").await, "edited");
    assert_error(room.edit(&alice, edit, "an edit is no message").await, StatusCode::NOT_FOUND, "no such message");
    let history = room.history(&alice).await;
    let join = history.iter().find(|entry| entry["Type"] == "join").unwrap()["ID"].as_i64().unwrap();
    assert_error(room.edit(&bob, join, "a join is no message").await, StatusCode::NOT_FOUND, "no such message");

    // The creator may delete anyone's message; then it is gone for every change.
    event_id(room.app.delete(&room.entry_path(bobs), Some(&alice.token)).await, "deleted");
    assert_error(room.edit(&bob, bobs, "back?").await, StatusCode::NOT_FOUND, "no such message");
    assert_error(
        room.app.delete(&room.entry_path(bobs), Some(&bob.token)).await,
        StatusCode::NOT_FOUND,
        "no such message",
    );
    assert_error(room.react(&alice, bobs, "👍", true).await, StatusCode::NOT_FOUND, "no such message");
}

#[tokio::test]
async fn reactions_are_limited_in_size_and_in_number() {
    let mut room = room_with(Settings::default()).await;
    let (alice, bob) = (room.alice.clone(), room.bob.clone());
    let id = room.say(true, "react to me").await;
    assert_error(room.react(&bob, id, "", true).await, StatusCode::BAD_REQUEST, "emoji must be 1 to 32 bytes");
    assert_error(room.react(&bob, id, "  ", true).await, StatusCode::BAD_REQUEST, "emoji must be 1 to 32 bytes");
    assert_error(room.react(&bob, id, &"👍".repeat(9), true).await, StatusCode::BAD_REQUEST, "32 bytes");
    assert_error(room.react(&bob, id, "a\u{0}", true).await, StatusCode::BAD_REQUEST, "no control characters");
    event_id(room.react(&bob, id, &"👍".repeat(8), true).await, "ok");
    for n in 1..20 {
        event_id(room.react(&bob, id, &format!("e{n}"), true).await, "ok");
    }
    assert_error(room.react(&alice, id, "one too many", true).await, StatusCode::CONFLICT, "too many reactions");
    // What is already there may still be added to, or taken back.
    event_id(room.react(&alice, id, "e1", true).await, "ok");
    event_id(room.react(&alice, id, "never added", false).await, "ok");
    event_id(room.react(&bob, id, "e19", false).await, "ok");
    event_id(room.react(&alice, id, "now there is room", true).await, "ok");
    let entry = room.entry(id).await;
    let reactions = entry["Reactions"].as_object().unwrap();
    assert_eq!(reactions.len(), 20, "{reactions:?}");
    assert_eq!(reactions["e1"], json!([alice.uid.min(bob.uid), alice.uid.max(bob.uid)]));
    assert!(!reactions.contains_key("e19") && !reactions.contains_key("never added"));
    // A missing `Added` adds.
    let path = format!("{}/reactions", room.entry_path(id));
    event_id(room.app.put(&path, Some(&bob.token), json!({"emoji": "e2"})).await, "ok");
}

#[tokio::test]
async fn the_grpc_calls_and_streams_carry_the_changes() {
    let mut room = room_with(Settings::default()).await;
    let (alice, bob, carol) = (room.alice.clone(), room.bob.clone(), room.carol.clone());
    let mut grpc = room.app.grpc().await;
    let id = room.say(true, "over grpc").await;
    let subscribe = authed(&bob, SubscribeRequest { room_id: room.id, after_id: None });
    let mut stream = grpc.messages.subscribe(subscribe).await.unwrap().into_inner();

    let edit = EditRequest { room_id: room.id, message_id: id, text: "edited over grpc".into() };
    let edited = grpc.messages.edit(authed(&alice, edit.clone())).await.unwrap().into_inner().event_id;
    let react = ReactRequest { room_id: room.id, message_id: id, emoji: "👍".into(), added: true };
    let reacted = grpc.messages.react(authed(&bob, react.clone())).await.unwrap().into_inner().event_id;
    let delete = DeleteRequest { room_id: room.id, message_id: id };
    let deleted = grpc.messages.delete(authed(&alice, delete)).await.unwrap().into_inner().event_id;

    let event = stream.message().await.unwrap().unwrap();
    assert_eq!(
        (event.id, event.kind(), event.message_id, event.text.as_str()),
        (edited, MessageKind::Edit, id, "edited over grpc")
    );
    assert!(event.edited_at.is_some());
    let event = stream.message().await.unwrap().unwrap();
    assert_eq!((event.id, event.kind(), event.uid), (reacted, MessageKind::Reaction, bob.uid));
    assert_eq!((event.message_id, event.emoji.as_str(), event.added), (id, "👍", true));
    let event = stream.message().await.unwrap().unwrap();
    assert_eq!((event.id, event.kind(), event.message_id), (deleted, MessageKind::Delete, id));
    let history = grpc.messages.history(authed(&bob, HistoryRequest { room_id: room.id, ..HistoryRequest::default() }));
    let entry = history.await.unwrap().into_inner().messages.into_iter().find(|m| m.id == id).unwrap();
    assert!(entry.deleted && entry.text.is_empty() && entry.reactions.is_empty(), "{entry:?}");

    let other = room.say(false, "bob's").await;
    let not_author = EditRequest { room_id: room.id, message_id: other, text: "x".into() };
    assert_status(grpc.messages.edit(authed(&alice, not_author)).await, Code::PermissionDenied, "not author");
    assert_status(grpc.messages.edit(authed(&alice, edit)).await, Code::NotFound, "no such message");
    assert_status(grpc.messages.react(authed(&carol, react)).await, Code::PermissionDenied, "not room member");
    let oversized = ReactRequest { room_id: room.id, message_id: other, emoji: "x".repeat(33), added: true };
    let refused = grpc.messages.react(authed(&bob, oversized)).await;
    assert_eq!(reason::of(refused.as_ref().unwrap_err()).as_deref(), Some(reason::INVALID_ARGUMENT));
    assert_status(refused, Code::InvalidArgument, "emoji");
    for n in 0..20 {
        let react = ReactRequest { room_id: room.id, message_id: other, emoji: format!("e{n}"), added: true };
        grpc.messages.react(authed(&bob, react)).await.unwrap();
    }
    let past = ReactRequest { room_id: room.id, message_id: other, emoji: "e20".into(), added: true };
    assert_status(grpc.messages.react(authed(&bob, past)).await, Code::FailedPrecondition, "too many reactions");
}

/// `ws` says `text`; its id.
async fn said(ws: &mut Ws, text: &str) -> i64 {
    ws.say(text).await.0["MessageID"].as_i64().unwrap()
}

/// What a resuming client receives after `last_id`, in order, until it
/// has `count` events.
async fn resumed(room: &Room, user: &User, last_id: i64, count: usize) -> Vec<Value> {
    let mut ws = Ws::connect(&room.app.base, &user.token).await;
    ws.send(json!({"Type": "enter", "RoomID": room.id, "LastID": last_id})).await;
    assert_eq!(ws.recv().await, json!({"Type": "enter", "RoomID": room.id}));
    let mut events = Vec::new();
    while events.len() < count {
        events.push(ws.recv().await);
    }
    events
}

#[tokio::test]
async fn a_resume_replays_edits_reactions_and_deletions_in_order_from_the_cache_and_from_postgres() {
    let mut room = room_with(Settings::default()).await;
    let (alice, bob) = (room.alice.clone(), room.bob.clone());
    let seen = room.say(true, "seen before leaving").await;
    let away = Ws::connect(&room.app.base, &bob.token).await;
    std::mem::replace(&mut room.b, away).close().await;

    // While Bob is away: messages, and changes to old and new ones alike.
    let mut expected = Vec::new();
    let first = said(&mut room.a, "one").await;
    expected.push(first);
    expected.push(event_id(room.edit(&alice, seen, "seen, edited").await, "edited"));
    expected.push(event_id(room.react(&alice, first, "👍", true).await, "ok"));
    let second = said(&mut room.a, "two").await;
    expected.push(second);
    expected.push(event_id(room.edit(&alice, second, "two, edited").await, "edited"));
    expected.push(event_id(room.app.delete(&room.entry_path(first), Some(&alice.token)).await, "deleted"));
    expected.push(event_id(room.react(&alice, second, "👍", false).await, "ok"));

    let check = |events: &[Value]| {
        let ids: Vec<i64> = events.iter().map(|event| event["ID"].as_i64().unwrap()).collect();
        assert_eq!(ids, expected, "every event once, in id order: {events:?}");
        let kinds: Vec<&str> = events.iter().map(|event| event["Type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["message", "edit", "reaction", "message", "edit", "delete", "reaction"]);
        assert_eq!(events[1]["MessageID"], seen);
        assert_eq!(events[5]["MessageID"], first);
    };
    let from_cache = resumed(&room, &bob, seen, expected.len()).await;
    check(&from_cache);
    assert_eq!(from_cache[0]["Text"], "one", "from the cache, an entry as it was sent");

    let mut grpc = room.app.grpc().await;
    let subscribe = authed(&bob, SubscribeRequest { room_id: room.id, after_id: Some(seen) });
    let mut stream = grpc.messages.subscribe(subscribe).await.unwrap().into_inner();
    let mut streamed = Vec::new();
    while streamed.len() < expected.len() {
        streamed.push(stream.message().await.unwrap().unwrap().id);
    }
    assert_eq!(streamed, expected, "a stream with after_id replays the same");

    // Once archived and out of the cache, PostgreSQL replays the same events.
    let mut db = PgConnection::connect(&room.app.shared.database_url).await.unwrap();
    let last = *expected.last().unwrap();
    eventually("the archiver stores the changes", async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM message_changes WHERE id = $1")
            .bind(last)
            .fetch_one(&mut db)
            .await
            .unwrap()
            == 1
    })
    .await;
    room.app.forget_recent_history().await;
    let from_postgres = resumed(&room, &bob, seen, expected.len()).await;
    check(&from_postgres);
    assert_eq!(from_postgres[0]["Deleted"], true, "from PostgreSQL, an entry in its stored state");
    let distinct: HashSet<String> = from_postgres.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), expected.len());
}
