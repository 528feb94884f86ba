//! Typing: the WebSocket `typing` frame and the `Typing` RPC, relayed live
//! to the room's other members, never stored, at most one per user and room
//! every 3 s.

use std::time::Duration;

use chat_proto::v1::{MessageKind, TypingRequest};
use redis::AsyncCommands;
use serde_json::json;
use sqlx::Connection;
use stack_tests::{Settings, TestApp, Ws, assert_status, authed, next_event, spawn_gateway};
use tonic::Code;

#[tokio::test]
async fn typing_outside_a_room_is_refused() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.send(json!({"Type": "typing", "Ref": "t1"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "not in room", "Ref": "t1"}));
    let room = app.create_room(&alice, "General", false).await;
    ws.enter(room).await;
    ws.enter(0).await;
    ws.send(json!({"Type": "typing"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "not in room"}), "back in the lobby");
}

#[tokio::test]
async fn the_typing_rpc_is_for_members_only() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let room = app.create_room(&alice, "General", false).await;
    let secret = app.create_room(&alice, "Secret", true).await;
    let mut grpc = app.grpc().await;
    let typing = |user, room_id| authed(user, TypingRequest { room_id });
    assert_status(grpc.messages.typing(TypingRequest { room_id: room }).await, Code::Unauthenticated, "missing token");
    assert_status(grpc.messages.typing(typing(&carol, room)).await, Code::PermissionDenied, "not room member");
    assert_status(grpc.messages.typing(typing(&carol, secret)).await, Code::NotFound, "room not found");
    assert_status(grpc.messages.typing(typing(&carol, 999_999)).await, Code::NotFound, "room not found");
    for bad in [0, -5] {
        assert_status(grpc.messages.typing(typing(&alice, bad)).await, Code::InvalidArgument, "room");
    }
    grpc.messages.typing(typing(&alice, room)).await.expect("a member may");
    grpc.messages.typing(typing(&alice, room)).await.expect("and again: dropped silently, not refused");
}

fn typing(room: i64, uid: i64) -> serde_json::Value {
    json!({"Type": "typing", "RoomID": room, "UID": uid})
}

#[tokio::test]
async fn typing_reaches_the_other_members_on_every_gateway_and_stream_but_not_the_typist() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_room(&alice, "General", false).await;
    for member in [&bob, &carol] {
        app.put("/join", Some(&member.token), json!({"RoomID": room})).await;
    }
    let (other_base, _stop) = spawn_gateway(&app.shared, &Settings::default(), app.core).await;
    let mut grpc = app.grpc().await;
    let mut stream = grpc.subscribe(&carol, room).await;
    let mut typist = Ws::connect(&app.base, &alice.token).await;
    let mut typists_other = Ws::connect(&other_base, &alice.token).await;
    let mut b = Ws::connect(&other_base, &bob.token).await;
    for ws in [&mut typist, &mut typists_other, &mut b] {
        ws.enter(room).await;
    }
    typist.send(json!({"Type": "typing"})).await;
    assert_eq!(next_side_of(&mut b, "typing").await, typing(room, alice.uid), "across gateways");
    let event = next_event(&mut stream, |event| event.kind() == MessageKind::Typing).await;
    assert_eq!((event.id, event.room_id, event.uid), (0, room, alice.uid), "MESSAGE_KIND_TYPING on the stream");
    for own in [&mut typist, &mut typists_other] {
        expect_no(own, "typing", Duration::from_millis(500)).await;
    }

    // The Typing RPC reaches the sockets, and is not stored.
    grpc.messages.typing(authed(&carol, TypingRequest { room_id: room })).await.unwrap();
    assert_eq!(next_side_of(&mut b, "typing").await, typing(room, carol.uid));
    assert_eq!(next_side_of(&mut typist, "typing").await, typing(room, carol.uid));
    let (_, history) = app.get(&format!("/messages/{room}"), Some(&bob.token)).await;
    let kinds: Vec<&str> = history.as_array().unwrap().iter().map(|m| m["Type"].as_str().unwrap()).collect();
    assert!(kinds.iter().all(|kind| *kind == "join"), "only the joins are in history: {kinds:?}");
}

#[tokio::test]
async fn one_typing_per_user_and_room_is_relayed_every_three_seconds_whatever_the_gateway() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    let other_room = app.create_room(&alice, "Other", false).await;
    for joined in [room, other_room] {
        app.put("/join", Some(&bob.token), json!({"RoomID": joined})).await;
    }
    let (other_base, _stop) = spawn_gateway(&app.shared, &Settings::default(), app.core).await;
    let mut here = Ws::connect(&app.base, &alice.token).await;
    let mut there = Ws::connect(&other_base, &alice.token).await;
    let mut elsewhere = Ws::connect(&app.base, &alice.token).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    let mut b_elsewhere = Ws::connect(&app.base, &bob.token).await;
    for ws in [&mut here, &mut there, &mut b] {
        ws.enter(room).await;
    }
    for ws in [&mut elsewhere, &mut b_elsewhere] {
        ws.enter(other_room).await;
    }
    let started = std::time::Instant::now();
    for _ in 0..5 {
        here.send(json!({"Type": "typing"})).await;
        there.send(json!({"Type": "typing"})).await;
    }
    assert_eq!(next_side_of(&mut b, "typing").await, typing(room, alice.uid));
    // Another room is counted apart.
    elsewhere.send(json!({"Type": "typing"})).await;
    assert_eq!(next_side_of(&mut b_elsewhere, "typing").await, typing(other_room, alice.uid));
    let wait = Duration::from_secs(3).saturating_sub(started.elapsed()).saturating_sub(Duration::from_millis(500));
    expect_no(&mut b, "typing", wait).await;
    for ws in [&mut here, &mut there] {
        expect_no(ws, "error", Duration::ZERO).await;
    }
    // Once 3 s have passed since the one relayed (which core-svc took a
    // moment after `started`), the next one is relayed.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed())).await;
    here.send(json!({"Type": "typing"})).await;
    assert_eq!(next_side_of(&mut b, "typing").await, typing(room, alice.uid));
}

#[tokio::test]
async fn a_member_removed_from_the_room_meanwhile_gets_the_refusal() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    let room = app.create_room(&alice, "General", false).await;
    ws.enter(room).await;
    // Her membership gone behind the socket's back, as a removal would.
    let mut db = sqlx::PgConnection::connect(&app.shared.database_url).await.unwrap();
    sqlx::query("DELETE FROM room_members WHERE room_id = $1").bind(room).execute(&mut db).await.unwrap();
    app.redis().await.del::<_, ()>(app.cache_key(&format!("member:{room}:{}", alice.uid)).await).await.unwrap();
    ws.send(json!({"Type": "typing", "Ref": "t"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "not room member", "Ref": "t"}));
}

/// The next side frame of `kind`, passing over the other side frames.
async fn next_side_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    loop {
        let frame = ws.side().await;
        if frame["Type"] == kind {
            return frame;
        }
    }
}

/// Asserts that no frame of `kind` comes for `wait` (others are passed over).
async fn expect_no(ws: &mut Ws, kind: &str, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let next = async { if stack_tests::SIDE_FRAMES.contains(&kind) { ws.side().await } else { ws.recv().await } };
        match tokio::time::timeout_at(until, next).await {
            Err(_) => return,
            Ok(frame) => assert_ne!(frame["Type"], kind, "expected no {kind}, got {frame}"),
        }
    }
}
