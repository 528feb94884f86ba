//! Leaving a room (`PUT /leave`, LeaveRoom) and removing a member (`PUT
//! /remove-member`, RemoveMember): a `leave` entry through the log, the
//! member's sockets and streams on the room cut off on every gateway and
//! replica, and their membership gone everywhere at once.

use chat_proto::{
    reason,
    v1::{LeaveRoomRequest, MessageKind, RemoveMemberRequest, SendRequest, SubscribeRequest},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use stack_tests::{Pair, Shared, TestApp, TwoInARoom, User, Ws, assert_error, assert_status, authed, two_in_a_room};
use tonic::Code;

fn error(text: &str) -> Value {
    json!({"Type": "error", "Error": text})
}

/// Reads `ws` until a frame of `kind` arrives; that frame.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = ws.recv().await;
        if frame["Type"] == kind {
            return frame;
        }
    }
}

/// A direct room of two users, made as the direct-room feature makes them.
async fn direct_room(shared: &Shared, a: &User, b: &User) -> i64 {
    let mut db = PgConnection::connect(&shared.database_url).await.unwrap();
    let room: i64 = sqlx::query_scalar(
        "INSERT INTO rooms (name, creator_id, is_private, kind) VALUES ('', $1, true, 2) RETURNING id",
    )
    .bind(a.uid)
    .fetch_one(&mut db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO room_members (room_id, user_id) VALUES ($1, $2), ($1, $3)")
        .bind(room)
        .bind(a.uid)
        .bind(b.uid)
        .execute(&mut db)
        .await
        .unwrap();
    room
}

#[tokio::test]
async fn a_member_leaves_with_a_leave_entry_and_is_a_member_no_more() {
    let TwoInARoom { app, alice, bob, room, mut a, mut b } = two_in_a_room().await;
    let _ = app.get(&format!("/messages/{room}"), Some(&bob.token)).await; // membership cached

    assert_eq!(
        app.put("/leave", Some(&bob.token), json!({"RoomID": room})).await,
        (StatusCode::OK, json!({"status": "left"}))
    );
    let leave = next_of(&mut a, "leave").await;
    assert_eq!(
        (leave["UID"].clone(), leave["RoomID"].clone(), leave["Text"].clone()),
        (json!(bob.uid), json!(room), json!(""))
    );
    // Bob's own socket in the room is out of it.
    assert_eq!(b.recv().await, json!({"Type": "enter", "RoomID": 0}));
    assert_eq!(b.recv().await, error("not room member"));
    let (status, history) = app.get(&format!("/messages/{room}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history[0], leave, "the leave entry is in history as it was live");
    assert_error(
        app.get(&format!("/messages/{room}"), Some(&bob.token)).await,
        StatusCode::FORBIDDEN,
        "not room member",
    );
    b.send(json!({"Type": "enter", "RoomID": room})).await;
    assert_eq!(b.recv().await, error("not room member"));
    let (_, rooms) = app.get("/rooms", Some(&bob.token)).await;
    assert_eq!(rooms, json!({"IDs": []}));

    // Leaving again, or a room one cannot see, or none.
    assert_error(
        app.put("/leave", Some(&bob.token), json!({"RoomID": room})).await,
        StatusCode::CONFLICT,
        "not room member",
    );
    let private = app.create_room(&alice, "Private", true).await;
    assert_error(
        app.put("/leave", Some(&bob.token), json!({"RoomID": private})).await,
        StatusCode::NOT_FOUND,
        "room not found",
    );
    assert_error(
        app.put("/leave", Some(&bob.token), json!({"RoomID": 999_999})).await,
        StatusCode::NOT_FOUND,
        "room not found",
    );
    assert_error(
        app.put("/leave", Some(&bob.token), json!({"RoomID": 0})).await,
        StatusCode::BAD_REQUEST,
        "invalid room id",
    );
    assert_error(app.put("/leave", Some(&bob.token), json!({"RoomID": "x"})).await, StatusCode::BAD_REQUEST, "");
    assert_error(app.put("/leave", None, json!({"RoomID": room})).await, StatusCode::UNAUTHORIZED, "");
    // A direct room cannot be left.
    let direct = direct_room(&app.shared, &alice, &bob).await;
    assert_error(
        app.put("/leave", Some(&bob.token), json!({"RoomID": direct})).await,
        StatusCode::FORBIDDEN,
        "direct room",
    );
    // Joining again works.
    assert_eq!(app.put("/join", Some(&bob.token), json!({"RoomID": room})).await.0, StatusCode::OK);
    b.enter(room).await;
}

#[tokio::test]
async fn the_creator_removes_a_member_whose_sockets_and_streams_on_every_gateway_and_replica_are_cut_off() {
    let pair = Pair::spawn().await;
    let (app, app_b) = (&pair.a, &pair.b);
    let (gateway_a, gateway_b) = (app.base.clone(), app_b.base.clone());
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_room(&alice, "General", false).await;
    let other = app.create_room(&alice, "Other", false).await;
    for (user, room) in [(&bob, room), (&carol, room), (&bob, other)] {
        app.put("/join", Some(&user.token), json!({"RoomID": room})).await;
    }
    let mut a = Ws::connect(&gateway_a, &alice.token).await;
    a.enter(room).await;
    // Bob: a socket in the room on each gateway, one in another room, and a
    // stream on the room on the other replica.
    let mut bob_a = Ws::connect(&gateway_a, &bob.token).await;
    let mut bob_b = Ws::connect(&gateway_b, &bob.token).await;
    let mut bob_other = Ws::connect(&gateway_b, &bob.token).await;
    bob_a.enter(room).await;
    bob_b.enter(room).await;
    bob_other.enter(other).await;
    let mut grpc_b = app_b.grpc().await;
    let subscribe = authed(&bob, SubscribeRequest { room_id: room, after_id: None });
    let mut stream = grpc_b.messages.subscribe(subscribe).await.unwrap().into_inner();

    // Only the creator may remove, and not themselves.
    let remove = |uid: i64| json!({"RoomID": room, "UID": uid});
    assert_error(
        app.put("/remove-member", Some(&carol.token), remove(bob.uid)).await,
        StatusCode::FORBIDDEN,
        "creator",
    );
    assert_error(app.put("/remove-member", Some(&bob.token), remove(bob.uid)).await, StatusCode::FORBIDDEN, "creator");
    assert_error(
        app.put("/remove-member", Some(&alice.token), remove(alice.uid)).await,
        StatusCode::BAD_REQUEST,
        "leave",
    );
    assert_error(
        app.put("/remove-member", Some(&alice.token), remove(0)).await,
        StatusCode::BAD_REQUEST,
        "invalid user id",
    );
    assert_error(app.put("/remove-member", None, remove(bob.uid)).await, StatusCode::UNAUTHORIZED, "");

    assert_eq!(
        app.put("/remove-member", Some(&alice.token), remove(bob.uid)).await,
        (StatusCode::OK, json!({"status": "removed"})),
    );
    for ws in [&mut bob_a, &mut bob_b] {
        assert_eq!(ws.recv().await, json!({"Type": "enter", "RoomID": 0}));
        assert_eq!(ws.recv().await, error("removed from room"));
    }
    let ended = loop {
        match stream.message().await {
            Ok(Some(event)) => assert_ne!(event.kind(), MessageKind::Message, "nothing new reaches the stream"),
            ended => break ended,
        }
    };
    let status = ended.expect_err("the stream ends with an error");
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "removed from room"));
    assert_eq!(reason::of(&status).as_deref(), Some(reason::REMOVED_FROM_ROOM));
    let leave = next_of(&mut a, "leave").await;
    assert_eq!(leave["UID"], bob.uid, "the room sees a leave entry: {leave}");

    // Bob is out of that room everywhere, and still in the other.
    let (sent, _) = a.say("after bob").await;
    bob_a.expect_silence(std::time::Duration::from_millis(300)).await;
    for app in [&app, &app_b] {
        assert_error(
            app.get(&format!("/messages/{room}"), Some(&bob.token)).await,
            StatusCode::FORBIDDEN,
            "not room member",
        );
        let edit = json!({"Text": "x"});
        assert_error(
            app.patch(&format!("/messages/{room}/{}", sent["MessageID"]), Some(&bob.token), edit).await,
            StatusCode::FORBIDDEN,
            "not room member",
        );
    }
    let send = authed(&bob, SendRequest { room_id: room, text: "still here?".into(), ..SendRequest::default() });
    assert_status(grpc_b.messages.send(send).await, Code::PermissionDenied, "not room member");
    bob_b.send(json!({"Type": "enter", "RoomID": room})).await;
    assert_eq!(bob_b.recv().await, error("not room member"));
    bob_other.say("still in the other room").await;

    assert_error(
        app.put("/remove-member", Some(&alice.token), remove(bob.uid)).await,
        StatusCode::CONFLICT,
        "not room member",
    );
    assert_error(
        app.put("/remove-member", Some(&alice.token), remove(999_999)).await,
        StatusCode::CONFLICT,
        "not room member",
    );
    let direct = direct_room(&app.shared, &alice, &carol).await;
    let in_direct = json!({"RoomID": direct, "UID": carol.uid});
    assert_error(app.put("/remove-member", Some(&alice.token), in_direct).await, StatusCode::FORBIDDEN, "direct room");
}

#[tokio::test]
async fn leaving_and_removing_over_grpc() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let bob = grpc.register("bob").await;
    let room = grpc.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let leave = |room_id| LeaveRoomRequest { room_id };
    grpc.rooms.leave_room(authed(&bob, leave(room))).await.expect("left");
    assert_status(grpc.rooms.leave_room(authed(&bob, leave(room))).await, Code::FailedPrecondition, "not room member");
    assert_status(grpc.rooms.leave_room(authed(&bob, leave(-1))).await, Code::InvalidArgument, "invalid room id");
    assert_status(grpc.rooms.leave_room(tonic::Request::new(leave(room))).await, Code::Unauthenticated, "");
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let remove = RemoveMemberRequest { room_id: room, uid: bob.uid };
    assert_status(grpc.rooms.remove_member(authed(&bob, remove)).await, Code::PermissionDenied, "creator");
    grpc.rooms.remove_member(authed(&alice, remove)).await.expect("removed");
    assert_status(grpc.rooms.remove_member(authed(&alice, remove)).await, Code::FailedPrecondition, "not room member");
    let (_, history) = app.get(&format!("/messages/{room}"), Some(&alice.token)).await;
    let kinds: Vec<&str> = history.as_array().unwrap().iter().map(|entry| entry["Type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["leave", "join", "leave", "join"], "newest first: {history}");
}
