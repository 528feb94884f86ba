//! Direct rooms: `POST /direct` and `RoomService.OpenDirect`.

use std::time::Duration;

use chat_proto::v1::{GetRoomRequest, InviteRequest, MessageKind, OpenDirectRequest, RoomKind, SubscribeRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use stack_tests::{TestApp, User, Ws, assert_error, assert_status, authed};
use tonic::Code;

async fn open(app: &TestApp, caller: &User, other: i64) -> i64 {
    let (status, body) = app.post("/direct", Some(&caller.token), json!({"UID": other})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["RoomID"].as_i64().expect("RoomID")
}

#[tokio::test]
async fn the_direct_room_of_two_users_is_one_room_whoever_asks() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = open(&app, &alice, bob.uid).await;
    assert_eq!(open(&app, &alice, bob.uid).await, room);
    assert_eq!(open(&app, &bob, alice.uid).await, room);

    for user in [&alice, &bob] {
        let (status, body) = app.get(&format!("/room/{room}"), Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((&body["Kind"], &body["IsPrivate"], &body["Name"]), (&json!("direct"), &json!(true), &json!("")));
        assert_eq!(app.get("/rooms", Some(&user.token)).await.1, json!({"IDs": [room]}));
    }
    let group = app.create_room(&alice, "General", false).await;
    assert_eq!(app.get(&format!("/room/{group}"), None).await.1["Kind"], "group");

    let mut grpc = app.grpc().await;
    let details = grpc.rooms.get_room(authed(&bob, GetRoomRequest { room_id: room })).await.unwrap().into_inner();
    assert_eq!(details.kind(), RoomKind::Direct);
    let details = grpc.rooms.get_room(GetRoomRequest { room_id: group }).await.unwrap().into_inner();
    assert_eq!(details.kind(), RoomKind::Group);
    let over_grpc = grpc.rooms.open_direct(authed(&bob, OpenDirectRequest { uid: alice.uid })).await.unwrap();
    assert_eq!(over_grpc.into_inner().room_id, room);
}

#[tokio::test]
async fn both_users_join_a_new_direct_room_and_history_says_so() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = open(&app, &alice, bob.uid).await;
    open(&app, &bob, alice.uid).await;
    let (status, history) = app.get(&format!("/messages/{room}"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let mut joined: Vec<(Value, Value)> =
        history.as_array().unwrap().iter().map(|entry| (entry["Type"].clone(), entry["UID"].clone())).collect();
    joined.sort_by_key(|(_, uid)| uid.as_i64());
    assert_eq!(joined, [(json!("join"), json!(alice.uid)), (json!("join"), json!(bob.uid))], "one join each, once");
}

#[tokio::test]
async fn each_pair_has_its_own_direct_room_and_names_never_clash() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let ab = open(&app, &alice, bob.uid).await;
    let ac = open(&app, &carol, alice.uid).await;
    let bc = open(&app, &bob, carol.uid).await;
    assert!(ab != ac && ac != bc && ab != bc);
    assert_eq!(app.get("/rooms", Some(&alice.token)).await.1, json!({"IDs": [ab, ac]}));
    assert_error(app.get(&format!("/room/{ab}"), Some(&carol.token)).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.get(&format!("/room/{ab}"), None).await, StatusCode::NOT_FOUND, "room not found");
    // Group rooms' names are unaffected by direct rooms' (empty) names.
    app.create_room(&alice, "x", false).await;
}

#[tokio::test]
async fn direct_rooms_refuse_oneself_unknown_users_and_bad_input() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let token = Some(alice.token.as_str());
    assert_error(app.post("/direct", token, json!({"UID": alice.uid})).await, StatusCode::BAD_REQUEST, "oneself");
    assert_error(app.post("/direct", token, json!({"UID": 987_654})).await, StatusCode::NOT_FOUND, "user not found");
    for bad in [json!({"UID": 0}), json!({"UID": -4}), json!({})] {
        assert_error(app.post("/direct", token, bad).await, StatusCode::BAD_REQUEST, "invalid user id");
    }
    assert_error(app.post("/direct", None, json!({"UID": 1})).await, StatusCode::UNAUTHORIZED, "missing token");
    assert_error(
        app.post("/direct", Some("forged"), json!({"UID": 1})).await,
        StatusCode::UNAUTHORIZED,
        "invalid token",
    );
    let answer = app.call(reqwest::Method::POST, "/direct", token, Some(r#"{"UID": "2"}"#)).await;
    assert_error(answer, StatusCode::BAD_REQUEST, "invalid request");

    let mut grpc = app.grpc().await;
    let open = |uid| authed(&alice, OpenDirectRequest { uid });
    assert_status(grpc.rooms.open_direct(open(alice.uid)).await, Code::InvalidArgument, "oneself");
    assert_status(grpc.rooms.open_direct(open(987_654)).await, Code::NotFound, "user not found");
    assert_status(grpc.rooms.open_direct(open(0)).await, Code::InvalidArgument, "invalid user id");
    let anonymous = grpc.rooms.open_direct(OpenDirectRequest { uid: 1 }).await;
    assert_status(anonymous, Code::Unauthenticated, "");
    // Nothing was created by the refused calls.
    assert_eq!(app.get("/rooms", token).await.1, json!({"IDs": []}));
}

#[tokio::test]
async fn no_one_is_invited_into_or_joins_a_direct_room() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = open(&app, &alice, bob.uid).await;
    let invite_carol = json!({"RoomID": room, "UID": carol.uid});
    // The creator and the other member alike: 403, they know the room.
    for member in [&alice, &bob] {
        let answer = app.put("/invite", Some(&member.token), invite_carol.clone()).await;
        assert_error(answer, StatusCode::FORBIDDEN, "cannot invite into a direct room");
    }
    // A stranger does not learn it exists.
    assert_error(app.put("/invite", Some(&carol.token), invite_carol).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.put("/join", Some(&carol.token), json!({"RoomID": room})).await, StatusCode::FORBIDDEN, "private");
    let answer = app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    assert_error(answer, StatusCode::CONFLICT, "already a member");

    let mut grpc = app.grpc().await;
    let invite = grpc.rooms.invite(authed(&alice, InviteRequest { room_id: room, uid: carol.uid })).await;
    assert_status(invite, Code::PermissionDenied, "cannot invite into a direct room");
    assert_eq!(app.get("/rooms", Some(&carol.token)).await.1, json!({"IDs": []}));
}

#[tokio::test]
async fn concurrent_first_calls_from_both_sides_make_one_room() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        users.push(app.register(name).await);
    }
    let grpc = app.grpc().await;
    // Every pair at once, each pair from both sides eight times over.
    let mut calls = Vec::new();
    for (i, a) in users.iter().enumerate() {
        for b in &users[i + 1..] {
            for n in 0..16 {
                let (caller, other) = if n % 2 == 0 { (a.clone(), b.uid) } else { (b.clone(), a.uid) };
                let mut grpc = grpc.clone();
                calls.push(tokio::spawn(async move {
                    let request = authed(&caller, OpenDirectRequest { uid: other });
                    let room = grpc.rooms.open_direct(request).await.expect("opened").into_inner().room_id;
                    ((caller.uid.min(other), caller.uid.max(other)), room)
                }));
            }
        }
    }
    let mut rooms = std::collections::HashMap::new();
    for call in calls {
        let (pair, room) = call.await.unwrap();
        assert_eq!(*rooms.entry(pair).or_insert(room), room, "one room for the pair {pair:?}");
    }
    assert_eq!(rooms.len(), 6);
    let mut db = PgConnection::connect(&app.shared.database_url).await.unwrap();
    let direct: i64 = sqlx::query_scalar("SELECT count(*) FROM rooms WHERE kind = 2").fetch_one(&mut db).await.unwrap();
    assert_eq!(direct, 6, "the calls that lost the race left no room behind");
    let members: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM room_members WHERE room_id = ANY($1) GROUP BY room_id")
            .bind(rooms.values().copied().collect::<Vec<_>>())
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(members, [2; 6], "exactly two members each");
    for user in &users {
        let (_, mine) = app.get("/rooms", Some(&user.token)).await;
        assert_eq!(mine["IDs"].as_array().unwrap().len(), 3, "{mine}");
    }
}

#[tokio::test]
async fn a_websocket_user_and_a_grpc_user_talk_in_their_direct_room() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut grpc = app.grpc().await;
    let bob = grpc.register("bob").await;
    let room = open(&app, &alice, bob.uid).await;
    let mut stream = grpc
        .messages
        .subscribe(authed(&bob, SubscribeRequest { room_id: room, after_id: None }))
        .await
        .expect("subscribed")
        .into_inner();
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.enter(room).await;

    let (sent, _) = ws.say("hi Bob, from a socket").await;
    let received = next_message(&mut stream).await;
    assert_eq!(
        (received.id, received.uid, received.text.as_str()),
        (sent["MessageID"].as_i64().unwrap(), alice.uid, "hi Bob, from a socket")
    );

    let id = grpc.send(&bob, room, "hi Alice, from gRPC").await.unwrap();
    let frame = ws.recv().await;
    assert_eq!((&frame["Type"], &frame["ID"], &frame["UID"]), (&json!("message"), &json!(id), &json!(bob.uid)));
    assert_eq!(frame["Text"], "hi Alice, from gRPC");
}

/// The next `message` event of a stream (the joins of the room's creation
/// may come first).
async fn next_message(stream: &mut tonic::Streaming<chat_proto::v1::Message>) -> chat_proto::v1::Message {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("the stream goes on");
        if event.kind() == MessageKind::Message {
            return event;
        }
    }
}
