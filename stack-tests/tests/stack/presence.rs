//! Presence across gateways and core-svc replicas: the `online` frame after
//! `enter`, `GET /room/{roomID}/online` and `ListOnline`, and a gateway
//! that dies taking its members offline.

use std::time::{Duration, Instant};

use chat_proto::v1::{ListOnlineRequest, Message, SubscribeRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stack_tests::{
    DoomedGateway, Grpc, Settings, TestApp, User, Ws, assert_error, assert_status, authed, spawn_gateway,
};
use tonic::{Code, Streaming};

/// Who `GET /room/{room}/online` lists, asked as `user`.
async fn online(app: &TestApp, user: &User, room: i64) -> Vec<i64> {
    let (status, body) = app.get(&format!("/room/{room}/online"), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body["Online"].clone()).expect("an array of uids")
}

/// Waits until `GET /room/{room}/online` lists exactly `expected` (a socket
/// that closed is told to Redis a moment later); how long that took.
async fn online_becomes(app: &TestApp, user: &User, room: i64, expected: &[i64], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = online(app, user, room).await;
        if now == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "online is {now:?}, not {expected:?}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn subscribe(grpc: &mut Grpc, user: &User, room_id: i64) -> Streaming<Message> {
    let request = authed(user, SubscribeRequest { room_id, after_id: None });
    grpc.messages.subscribe(request).await.expect("subscribed").into_inner()
}

/// Alice's public room, with Bob a member and Carol a stranger to it.
async fn a_room(app: &TestApp) -> (User, User, User, i64) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    (alice, bob, carol, room)
}

fn sorted(mut uids: Vec<i64>) -> Vec<i64> {
    uids.sort_unstable();
    uids
}

#[tokio::test]
async fn the_online_frame_follows_enter_and_lists_who_is_there_with_the_socket_itself() {
    let app = TestApp::spawn().await;
    let (alice, bob, _, room) = a_room(&app).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    assert_eq!(a.side().await, json!({"Type": "online", "RoomID": room, "Online": [alice.uid]}));
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.enter(room).await;
    let both = sorted(vec![alice.uid, bob.uid]);
    assert_eq!(b.side().await, json!({"Type": "online", "RoomID": room, "Online": both}));
    // Back to the lobby: no online frame there.
    b.enter(0).await;
    b.expect_no_side(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn online_lists_every_member_with_a_socket_on_any_gateway_or_a_stream() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, room) = a_room(&app).await;
    let (other_base, _stop) = spawn_gateway(&app.shared, &Settings::default(), app.core).await;
    let other = TestApp::at(other_base, app.core, &app.shared);
    app.put("/join", Some(&carol.token), json!({"RoomID": room})).await;
    assert_eq!(online(&app, &alice, room).await, Vec::<i64>::new(), "nobody yet");

    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    let mut b = Ws::connect(&other.base, &bob.token).await;
    b.enter(room).await;
    let mut grpc = app.grpc().await;
    let stream = subscribe(&mut grpc, &carol, room).await;
    let everyone = sorted(vec![alice.uid, bob.uid, carol.uid]);
    for gateway in [&app, &other] {
        assert_eq!(online(gateway, &bob, room).await, everyone, "the same from either gateway");
    }
    let listed = grpc.rooms.list_online(authed(&alice, ListOnlineRequest { room_id: room })).await.unwrap();
    assert_eq!(listed.into_inner().uids, everyone, "and over gRPC");

    a.close().await;
    online_becomes(&other, &bob, room, &sorted(vec![bob.uid, carol.uid]), Duration::from_secs(10)).await;
    drop(stream);
    online_becomes(&app, &bob, room, &[bob.uid], Duration::from_secs(10)).await;
    b.enter(0).await;
    online_becomes(&app, &bob, room, &[], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_member_stays_online_until_their_last_socket_closes_on_whichever_gateway() {
    let app = TestApp::spawn().await;
    let (alice, bob, _, room) = a_room(&app).await;
    let (other_base, _stop) = spawn_gateway(&app.shared, &Settings::default(), app.core).await;
    let mut here = Ws::connect(&app.base, &alice.token).await;
    here.enter(room).await;
    let mut again = Ws::connect(&app.base, &alice.token).await;
    again.enter(room).await;
    let mut there = Ws::connect(&other_base, &alice.token).await;
    there.enter(room).await;
    assert_eq!(online(&app, &bob, room).await, [alice.uid], "listed once however many sockets");

    here.close().await;
    there.close().await;
    // Given time to be told, nothing changes while one socket is open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(online(&app, &bob, room).await, [alice.uid]);
    again.close().await;
    online_becomes(&app, &bob, room, &[], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_gateway_that_dies_takes_its_members_offline_when_its_lease_runs_out() {
    let settings = Settings { presence_lease_secs: 2, ..Settings::default() };
    let app = TestApp::spawn_with(Settings { presence_lease_secs: 2, ..Settings::default() }).await;
    let (alice, bob, _, room) = a_room(&app).await;
    let mut doomed = DoomedGateway::spawn(&app.shared, &settings, app.core).await;
    let mut a = Ws::connect(&doomed.base, &alice.token).await;
    a.enter(room).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.enter(room).await;
    assert_eq!(online(&app, &bob, room).await, sorted(vec![alice.uid, bob.uid]));

    doomed.kill();
    // Within a lease and a sixth of it, and more than any renewal period
    // (the dead gateway's entries outlive it: it removed nothing).
    online_becomes(&app, &bob, room, &[bob.uid], Duration::from_secs(60)).await;
    drop(a);
}

#[tokio::test]
async fn online_is_for_members_only() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, room) = a_room(&app).await;
    let secret = app.create_room(&alice, "Secret", true).await;
    assert_error(app.get(&format!("/room/{room}/online"), None).await, StatusCode::UNAUTHORIZED, "missing token");
    assert_error(
        app.get(&format!("/room/{room}/online"), Some("forged.token.value")).await,
        StatusCode::UNAUTHORIZED,
        "invalid token",
    );
    assert_error(
        app.get(&format!("/room/{room}/online"), Some(&carol.token)).await,
        StatusCode::FORBIDDEN,
        "not room member",
    );
    for hidden in [secret, 999_999] {
        assert_error(
            app.get(&format!("/room/{hidden}/online"), Some(&bob.token)).await,
            StatusCode::NOT_FOUND,
            "room not found",
        );
    }
    for bad in ["0", "-1", "abc", "1.5", "99999999999999999999"] {
        assert_error(
            app.get(&format!("/room/{bad}/online"), Some(&bob.token)).await,
            StatusCode::BAD_REQUEST,
            "invalid room id",
        );
    }
    assert_eq!(online(&app, &alice, secret).await, Vec::<i64>::new(), "the creator of the private room may");

    let mut grpc = app.grpc().await;
    let ask = |user: &User, room_id| authed(user, ListOnlineRequest { room_id });
    assert_status(
        grpc.rooms.list_online(ListOnlineRequest { room_id: room }).await,
        Code::Unauthenticated,
        "missing token",
    );
    assert_status(grpc.rooms.list_online(ask(&carol, room)).await, Code::PermissionDenied, "not room member");
    assert_status(grpc.rooms.list_online(ask(&bob, secret)).await, Code::NotFound, "room not found");
    assert_status(grpc.rooms.list_online(ask(&bob, 0)).await, Code::InvalidArgument, "room");
}

#[tokio::test]
async fn the_openapi_document_describes_online() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.get("/openapi.json", None).await;
    let operation = &doc["paths"]["/room/{roomID}/online"]["get"];
    for code in ["200", "400", "401", "403", "404"] {
        assert!(operation["responses"][code].is_object(), "{code} missing from {operation}");
    }
    let schema: &Value = &operation["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{operation}");
}
