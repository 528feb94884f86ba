//! Read state and unread counts: `PUT /read`, the WebSocket `read` frame,
//! `GET /unread`, and `RoomService.MarkRead` / `ListUnread`.

use std::time::Duration;

use chat_proto::v1::{ListUnreadRequest, MarkReadRequest, MessageKind, SubscribeRequest, UnreadRoom};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use stack_tests::{Grpc, Settings, TestApp, User, Ws, assert_error, assert_status, authed, eventually, spawn_gateway};
use tonic::Code;

async fn unread(app: &TestApp, user: &User) -> Value {
    let (status, body) = app.get("/unread", Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The unread state of one room of `user`'s.
async fn unread_in(app: &TestApp, user: &User, room: i64) -> Value {
    let body = unread(app, user).await;
    body["Rooms"].as_array().unwrap().iter().find(|r| r["RoomID"] == room).cloned().expect("the room is listed")
}

async fn mark(app: &TestApp, user: &User, room: i64, message: i64) {
    let (status, body) = app.put("/read", Some(&user.token), json!({"RoomID": room, "MessageID": message})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

/// Alice's public room that Bob joined, with three messages of Alice's,
/// stored by the archiver.
struct Conversation {
    app: TestApp,
    grpc: Grpc,
    alice: User,
    bob: User,
    room: i64,
    sent: Vec<i64>,
}

async fn conversation() -> Conversation {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let mut grpc = app.grpc().await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(grpc.send(&alice, room, text).await.unwrap());
    }
    eventually("the messages are stored", async || unread_in(&app, &bob, room).await["Unread"] == 3).await;
    Conversation { app, grpc, alice, bob, room, sent }
}

#[tokio::test]
async fn unread_counts_others_messages_after_the_read_mark() {
    let Conversation { app, alice, bob, room, sent, .. } = conversation().await;
    let last = sent[2];
    assert_eq!(
        unread_in(&app, &bob, room).await,
        json!({"RoomID": room, "Unread": 3, "LastReadID": 0, "LastMessageID": last})
    );
    // Her own messages are not unread to Alice, and her joins never count.
    assert_eq!(
        unread_in(&app, &alice, room).await,
        json!({"RoomID": room, "Unread": 0, "LastReadID": 0, "LastMessageID": last})
    );
    mark(&app, &bob, room, sent[1]).await;
    assert_eq!(
        unread_in(&app, &bob, room).await,
        json!({"RoomID": room, "Unread": 1, "LastReadID": sent[1], "LastMessageID": last})
    );
    mark(&app, &bob, room, last).await;
    assert_eq!(unread_in(&app, &bob, room).await["Unread"], 0);
    assert_eq!(unread_in(&app, &alice, room).await["LastReadID"], 0, "Bob's mark is his own");
}

#[tokio::test]
async fn the_read_mark_never_moves_backwards() {
    let Conversation { app, grpc, bob, room, sent, .. } = conversation().await;
    mark(&app, &bob, room, sent[2]).await;
    mark(&app, &bob, room, sent[0]).await;
    assert_eq!(unread_in(&app, &bob, room).await["LastReadID"], sent[2], "an older id changes nothing");

    // Racing marks: whatever their order, the newest wins.
    let marks: Vec<i64> = (1..=40).map(|n| sent[2] + n * 7).collect();
    let calls = marks.iter().rev().chain(marks.iter()).map(|&message_id| {
        let mut grpc = grpc.clone();
        let request = authed(&bob, MarkReadRequest { room_id: room, message_id });
        tokio::spawn(async move { grpc.rooms.mark_read(request).await.map(drop) })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().expect("marked");
    }
    assert_eq!(unread_in(&app, &bob, room).await["LastReadID"], marks[marks.len() - 1]);
}

#[tokio::test]
async fn every_room_of_the_caller_is_listed_ascending_even_without_messages() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    assert_eq!(unread(&app, &alice).await, json!({"Rooms": []}));
    let second = app.create_room(&bob, "second", false).await;
    let first = app.create_room(&alice, "first", true).await;
    let (_, direct) = app.post("/direct", Some(&alice.token), json!({"UID": bob.uid})).await;
    app.put("/join", Some(&alice.token), json!({"RoomID": second})).await;
    let mut expected = vec![first, second, direct["RoomID"].as_i64().unwrap()];
    expected.sort();
    let listed: Vec<Value> = unread(&app, &alice).await["Rooms"].as_array().unwrap().clone();
    assert_eq!(listed.iter().map(|r| r["RoomID"].as_i64().unwrap()).collect::<Vec<_>>(), expected);
    for room in listed {
        assert_eq!((&room["Unread"], &room["LastReadID"], &room["LastMessageID"]), (&json!(0), &json!(0), &json!(0)));
    }
    assert_error(app.get("/unread", None).await, StatusCode::UNAUTHORIZED, "missing token");
    assert_error(app.get("/unread", Some("forged")).await, StatusCode::UNAUTHORIZED, "invalid token");
}

#[tokio::test]
async fn unread_counts_stop_at_1000() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "Busy", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let grpc = app.grpc().await;
    // 1,005 messages, sixteen sends at a time.
    let sends: Vec<_> = (0..16)
        .map(|worker| {
            let (mut grpc, alice) = (grpc.clone(), alice.clone());
            tokio::spawn(async move {
                let mut newest = 0;
                for n in (worker..1005).step_by(16) {
                    newest = newest.max(grpc.send(&alice, room, &format!("message {n}")).await.expect("sent"));
                }
                newest
            })
        })
        .collect();
    let mut newest = 0;
    for send in sends {
        newest = newest.max(send.await.unwrap());
    }
    // The count is capped, so it reads 1000 before the last messages are
    // archived: wait for the newest one instead.
    let stored = async || {
        let room = unread_in(&app, &bob, room).await;
        room["Unread"] == 1000 && room["LastMessageID"] == newest
    };
    eventually("every message is stored", stored).await;
    // Past the cap, and from a mark: still exact below it.
    let (_, page) = app.get(&format!("/messages/{room}?Limit=10"), Some(&alice.token)).await;
    let tenth_newest = page[9]["ID"].as_i64().unwrap();
    mark(&app, &bob, room, tenth_newest).await;
    assert_eq!(unread_in(&app, &bob, room).await["Unread"], 9);
}

#[tokio::test]
async fn marking_read_is_for_members_only() {
    let Conversation { app, alice, bob, room, sent, .. } = conversation().await;
    let carol = app.register("carol").await;
    let private = app.create_room(&alice, "Secret", true).await;
    let read = |room: i64, message: i64| json!({"RoomID": room, "MessageID": message});
    let token = Some(carol.token.as_str());
    assert_error(app.put("/read", token, read(room, sent[0])).await, StatusCode::FORBIDDEN, "not room member");
    assert_error(app.put("/read", token, read(private, sent[0])).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.put("/read", token, read(424_242, sent[0])).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(
        app.put("/read", Some(&bob.token), read(private, sent[0])).await,
        StatusCode::NOT_FOUND,
        "room not found",
    );
    // The creator and a member may.
    mark(&app, &alice, room, sent[0]).await;
    mark(&app, &bob, room, sent[0]).await;
    assert!(unread(&app, &carol).await["Rooms"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bad_read_marks_are_400_and_missing_tokens_401() {
    let Conversation { app, bob, room, sent, .. } = conversation().await;
    let token = Some(bob.token.as_str());
    for (body, problem) in [
        (json!({"RoomID": 0, "MessageID": sent[0]}), "invalid room id"),
        (json!({"RoomID": room, "MessageID": 0}), "invalid message id"),
        (json!({"RoomID": room, "MessageID": -5}), "invalid message id"),
        (json!({"RoomID": room}), "invalid message id"),
        (json!({}), "invalid room id; invalid message id"),
        (json!({"RoomID": room, "MessageID": "5"}), "invalid request"),
        (json!({"RoomID": room, "MessageID": 1.5}), "invalid request"),
    ] {
        assert_error(app.put("/read", token, body).await, StatusCode::BAD_REQUEST, problem);
    }
    assert_error(app.put("/read", None, json!({"RoomID": room, "MessageID": 1})).await, StatusCode::UNAUTHORIZED, "");
    assert_eq!(unread_in(&app, &bob, room).await["LastReadID"], 0, "nothing was marked");
}

#[tokio::test]
async fn the_websocket_read_frame_marks_the_current_room() {
    let Conversation { app, bob, room, sent, .. } = conversation().await;
    let mut ws = Ws::connect(&app.base, &bob.token).await;
    ws.send(json!({"Type": "read", "MessageID": sent[1], "Ref": "r0"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "not in room", "Ref": "r0"}));
    ws.enter(room).await;
    for bad in [json!({"Type": "read", "Ref": "r1"}), json!({"Type": "read", "MessageID": 0, "Ref": "r1"})] {
        ws.send(bad).await;
        assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "no such message", "Ref": "r1"}));
    }
    ws.send(json!({"Type": "read", "MessageID": "52"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "invalid json"}));

    ws.send(json!({"Type": "read", "MessageID": sent[1], "Ref": "r2"})).await;
    eventually("the mark is stored", async || unread_in(&app, &bob, room).await["LastReadID"] == sent[1]).await;
    // A mark that took is not answered; an older one is ignored alike.
    ws.send(json!({"Type": "read", "MessageID": sent[0]})).await;
    ws.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(unread_in(&app, &bob, room).await["Unread"], 1);
}

#[tokio::test]
async fn mark_read_and_list_unread_over_grpc() {
    let Conversation { app: _app, mut grpc, alice, bob, room, sent } = conversation().await;
    let list = async |grpc: &mut Grpc, user: &User| -> Vec<UnreadRoom> {
        grpc.rooms.list_unread(authed(user, ListUnreadRequest {})).await.expect("listed").into_inner().rooms
    };
    let rooms = list(&mut grpc, &bob).await;
    assert_eq!(rooms, [UnreadRoom { room_id: room, unread: 3, last_read_id: 0, last_message_id: sent[2] }]);
    grpc.rooms.mark_read(authed(&bob, MarkReadRequest { room_id: room, message_id: sent[0] })).await.unwrap();
    assert_eq!(list(&mut grpc, &bob).await[0].unread, 2);

    let carol = grpc.register("carol").await;
    let refused = grpc.rooms.mark_read(authed(&carol, MarkReadRequest { room_id: room, message_id: 1 })).await;
    assert_status(refused, Code::PermissionDenied, "not room member");
    let refused = grpc.rooms.mark_read(authed(&alice, MarkReadRequest { room_id: -1, message_id: 0 })).await;
    assert_status(refused, Code::InvalidArgument, "invalid room id; invalid message id");
    assert_status(grpc.rooms.list_unread(ListUnreadRequest {}).await, Code::Unauthenticated, "");
    assert!(list(&mut grpc, &carol).await.is_empty());
}

#[tokio::test]
async fn a_mark_that_moves_is_shown_live_to_the_others_never_to_the_reader() {
    let Conversation { app, mut grpc, alice, bob, room, sent } = conversation().await;
    // Alice on this gateway and on a gRPC stream, Bob on two sockets of
    // another gateway and a stream of his own.
    let (other_gateway, _stop) = spawn_gateway(&app.shared, &Settings::default(), app.core).await;
    let mut alice_ws = Ws::connect(&app.base, &alice.token).await;
    let mut bob_ws = Ws::connect(&other_gateway, &bob.token).await;
    let mut bob_other_ws = Ws::connect(&other_gateway, &bob.token).await;
    for ws in [&mut alice_ws, &mut bob_ws, &mut bob_other_ws] {
        ws.enter(room).await;
    }
    let subscribe = |user: &User| authed(user, SubscribeRequest { room_id: room, after_id: None });
    let mut alice_stream = grpc.messages.subscribe(subscribe(&alice)).await.unwrap().into_inner();
    let mut bob_stream = grpc.messages.subscribe(subscribe(&bob)).await.unwrap().into_inner();

    bob_ws.send(json!({"Type": "read", "MessageID": sent[1]})).await;
    let shown = json!({"Type": "read", "RoomID": room, "UID": bob.uid, "MessageID": sent[1]});
    assert_eq!(alice_ws.recv().await, shown);
    let event = tokio::time::timeout(Duration::from_secs(10), alice_stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((event.kind(), event.id, event.uid, event.message_id), (MessageKind::Read, 0, bob.uid, sent[1]));

    // An older mark changes nothing, and nobody hears of it.
    mark(&app, &bob, room, sent[0]).await;
    // Over REST (and gRPC) as over the socket.
    mark(&app, &bob, room, sent[2]).await;
    let shown = json!({"Type": "read", "RoomID": room, "UID": bob.uid, "MessageID": sent[2]});
    assert_eq!(alice_ws.recv().await, shown, "the older mark was not shown");
    let event = tokio::time::timeout(Duration::from_secs(10), alice_stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.message_id, sent[2]);

    // Bob's own sockets and stream saw none of it; a message after it is
    // the first thing they get.
    let next = grpc.send(&alice, room, "after the marks").await.unwrap();
    for ws in [&mut bob_ws, &mut bob_other_ws] {
        let frame = ws.recv().await;
        assert_eq!((&frame["Type"], &frame["ID"]), (&json!("message"), &json!(next)), "{frame}");
    }
    let event = tokio::time::timeout(Duration::from_secs(10), bob_stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((event.kind(), event.id), (MessageKind::Message, next));
    let frame = alice_ws.recv().await;
    assert_eq!(frame["ID"], next, "{frame}");
}

#[tokio::test]
async fn a_membership_gone_from_postgresql_ends_marks_and_unread_whatever_the_cache_says() {
    let Conversation { app, bob, room, sent, .. } = conversation().await;
    mark(&app, &bob, room, sent[0]).await;
    app.delete_membership_row(room, bob.uid).await;
    let answer = app.put("/read", Some(&bob.token), json!({"RoomID": room, "MessageID": sent[2]})).await;
    assert_error(answer, StatusCode::FORBIDDEN, "not room member");
    assert_eq!(unread(&app, &bob).await, json!({"Rooms": []}));
}

#[tokio::test]
async fn deleted_messages_are_not_unread_and_are_not_the_newest() {
    let Conversation { app, bob, room, sent, .. } = conversation().await;
    // As the archiver leaves a deleted entry (migration 0008's columns).
    let mut db = PgConnection::connect(&app.shared.database_url).await.unwrap();
    sqlx::query("UPDATE messages SET deleted = true, text = '' WHERE id = ANY($1)")
        .bind([sent[0], sent[2]])
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(
        unread_in(&app, &bob, room).await,
        json!({"RoomID": room, "Unread": 1, "LastReadID": 0, "LastMessageID": sent[1]})
    );
}
