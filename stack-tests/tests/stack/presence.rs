//! Presence across gateways and core-svc replicas: the `online` frame after
//! `enter`, `GET /room/{roomID}/online` and `ListOnline`, and a gateway
//! that dies taking its members offline.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use chat_proto::v1::{ListOnlineRequest, MessageKind};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stack_tests::{
    DoomedGateway, Settings, TestApp, User, Ws, assert_error, assert_status, authed, next_event, spawn_gateway,
};
use tonic::Code;

/// Who `GET /room/{room}/online` lists, asked as `user`.
async fn online(app: &TestApp, user: &User, room: i64) -> Vec<i64> {
    let (status, body) = app.get(&format!("/room/{room}/online"), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body["Online"].clone()).expect("an array of uids")
}

/// Waits until `GET /room/{room}/online` lists exactly `expected` (a socket
/// that closed is told to Redis a moment later).
async fn online_becomes(app: &TestApp, user: &User, room: i64, expected: &[i64], within: Duration) {
    let started = Instant::now();
    loop {
        let now = online(app, user, room).await;
        if now == expected {
            return;
        }
        assert!(started.elapsed() < within, "online is {now:?}, not {expected:?}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let stream = grpc.subscribe(&carol, room).await;
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

fn presence(room: i64, uid: i64, online: bool) -> Value {
    json!({"Type": "presence", "RoomID": room, "UID": uid, "Online": online})
}

#[tokio::test]
async fn presence_reaches_the_other_members_on_every_gateway_and_stream() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, room) = a_room(&app).await;
    let dave = app.register("dave").await;
    for member in [&carol, &dave] {
        app.put("/join", Some(&member.token), json!({"RoomID": room})).await;
    }
    let (other_base, _stop) = spawn_gateway(&app.shared, &Settings::default(), app.core).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    a.side().await;
    let mut b = Ws::connect(&other_base, &bob.token).await;
    b.enter(room).await;
    b.side().await;
    assert_eq!(a.side().await, presence(room, bob.uid, true), "from the other gateway");
    let mut grpc = app.grpc().await;
    let mut stream = grpc.subscribe(&carol, room).await;
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.side().await, presence(room, carol.uid, true), "a stream counts");
    }

    let mut d = Ws::connect(&other_base, &dave.token).await;
    d.enter(room).await;
    assert_eq!(d.side().await["Type"], "online");
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.side().await, presence(room, dave.uid, true));
    }
    let event = next_event(&mut stream, |_| true).await;
    assert_eq!(
        (event.kind(), event.id, event.room_id, event.uid, event.online),
        (MessageKind::Presence, 0, room, dave.uid, true),
        "the stream gets it as MESSAGE_KIND_PRESENCE"
    );
    d.expect_no_side(Duration::from_millis(500)).await;

    d.close().await;
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.side().await, presence(room, dave.uid, false));
    }
    let event = next_event(&mut stream, |_| true).await;
    assert_eq!((event.kind(), event.uid, event.online), (MessageKind::Presence, dave.uid, false));
    drop(stream);
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.side().await, presence(room, carol.uid, false));
    }
}

#[tokio::test]
async fn a_second_socket_of_a_member_announces_nothing_and_only_the_last_to_close_does() {
    let app = TestApp::spawn().await;
    let (alice, bob, _, room) = a_room(&app).await;
    let (other_base, _stop) = spawn_gateway(&app.shared, &Settings::default(), app.core).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.enter(room).await;
    b.side().await;
    let mut first = Ws::connect(&app.base, &alice.token).await;
    first.enter(room).await;
    assert_eq!(b.side().await, presence(room, alice.uid, true));
    let mut again = Ws::connect(&app.base, &alice.token).await;
    again.enter(room).await;
    let mut there = Ws::connect(&other_base, &alice.token).await;
    there.enter(room).await;
    assert_eq!(online(&app, &bob, room).await, sorted(vec![alice.uid, bob.uid]), "listed once");
    // Past the second that a change may be held back.
    b.expect_no_side(Duration::from_millis(1500)).await;
    first.close().await;
    there.close().await;
    b.expect_no_side(Duration::from_millis(1500)).await;
    assert_eq!(online(&app, &bob, room).await, sorted(vec![alice.uid, bob.uid]), "while one socket is open");
    again.close().await;
    assert_eq!(b.side().await, presence(room, alice.uid, false));
    online_becomes(&app, &bob, room, &[bob.uid], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_member_who_keeps_coming_and_going_is_told_at_most_once_a_second() {
    let app = TestApp::spawn().await;
    let (alice, bob, _, room) = a_room(&app).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.enter(room).await;
    b.side().await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    let started = Instant::now();
    for _ in 0..15 {
        a.enter(room).await;
        a.enter(0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.enter(room).await;
    // What Bob is told, until nothing more comes.
    let mut told = Vec::new();
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(1500), b.side()).await {
        assert_eq!((&frame["Type"], &frame["UID"]), (&json!("presence"), &json!(alice.uid)), "{frame}");
        told.push(frame["Online"].as_bool().unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!((told.len() as f64) <= seconds + 1.0, "{} frames in {seconds:.1} s: {told:?}", told.len());
    assert!(told.windows(2).all(|pair| pair[0] != pair[1]), "each one a change: {told:?}");
    assert_eq!(told.last(), Some(&true), "the last one says where she is: in");
}

#[tokio::test]
async fn a_gateway_that_dies_takes_its_members_offline_when_its_lease_runs_out() {
    let settings = Settings { presence_lease_secs: 2, ..Settings::default() };
    let app = TestApp::spawn_with(Settings { presence_lease_secs: 2, ..Settings::default() }).await;
    let (alice, bob, _, room) = a_room(&app).await;
    let mut doomed = DoomedGateway::spawn(&app.shared, &settings, app.core).await;
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.enter(room).await;
    b.side().await;
    let mut a = Ws::connect(&doomed.base, &alice.token).await;
    a.enter(room).await;
    assert_eq!(b.side().await, presence(room, alice.uid, true));
    let mut grpc = app.grpc().await;
    let mut stream = grpc.subscribe(&bob, room).await;
    assert_eq!(online(&app, &bob, room).await, sorted(vec![alice.uid, bob.uid]));

    doomed.kill();
    // Nothing closed cleanly: only the lease running out (and a sweep)
    // takes Alice offline.
    let deadline = Duration::from_secs(60);
    let offline = tokio::time::timeout(deadline, b.side()).await.expect("offline within 60 s");
    assert_eq!(offline, presence(room, alice.uid, false));
    let event = tokio::time::timeout(deadline, stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((event.kind(), event.uid, event.online), (MessageKind::Presence, alice.uid, false), "streams too");
    assert_eq!(online(&app, &bob, room).await, [bob.uid]);
    drop(a);
}

#[tokio::test]
async fn while_redis_is_away_a_gateway_knows_its_own_sockets_and_renewals_catch_up_after() {
    let redis: std::net::SocketAddr =
        testkit::redis_url().trim_start_matches("redis://").parse().expect("TEST_REDIS_URL is redis://<ip>:<port>");
    let proxy = testkit::Proxy::start(redis).await;
    let redis_url = format!("redis://{}", proxy.addr());
    let app = TestApp::spawn_with(Settings { redis_url, presence_lease_secs: 2, ..Settings::default() }).await;
    let (alice, bob, _, room) = a_room(&app).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    a.side().await;

    proxy.cut();
    let mut b = Ws::connect(&app.base, &bob.token).await;
    b.enter(room).await;
    let both = sorted(vec![alice.uid, bob.uid]);
    assert_eq!(b.side().await, json!({"Type": "online", "RoomID": room, "Online": both}), "this gateway's own");
    assert_error(
        app.get(&format!("/room/{room}/online"), Some(&bob.token)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable",
    );
    // Longer than a lease: Alice's entry runs out meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    online_becomes(&app, &bob, room, &both, Duration::from_secs(30)).await;
    // Alice hears once that Bob, who came while Redis was away, is in.
    // (Bob may hear that Alice went and came back: to the other processes
    // her entry ran out, as a dead gateway's would.)
    assert_eq!(a.side().await, presence(room, bob.uid, true));
    a.expect_no_side(Duration::from_millis(1500)).await;
}

/// How many times the gateways of this process have read a room's whole
/// online list from Redis (other tests' enters count too, a few each).
async fn online_list_reads(app: &TestApp) -> f64 {
    app.metric("chat_presence_list_reads_total").await
}

/// A big room coming online at once. Each enter used to read the room's
/// whole online list from Redis: 5,000 members entering made 12.5 million
/// reads, Redis fell behind, and enters were refused. Now the enters of one
/// second share one read, each bringing it up to date with the changes its
/// room feed heard since: every enter succeeds, the list is read a few
/// times rather than once per enter, and every socket still learns of every
/// member once, from its online frame or one presence frame after it.
#[tokio::test]
async fn members_entering_one_room_at_once_share_reads_of_its_online_list_and_each_learns_of_everyone_once() {
    const MEMBERS: usize = 150;
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "Everyone", false).await;
    let members = app.members(room, MEMBERS).await;
    let everyone: BTreeSet<i64> = members.iter().map(|member| member.uid).collect();
    let mut sockets = Vec::with_capacity(MEMBERS);
    for member in &members {
        sockets.push(Ws::connect(&app.base, &member.token).await);
    }

    let reads_before = online_list_reads(&app).await;
    futures::future::join_all(sockets.iter_mut().map(|ws| ws.enter(room))).await;
    let reads = online_list_reads(&app).await - reads_before;

    let learnt = futures::future::join_all(sockets.iter_mut().zip(&members).map(async |(ws, me)| {
        let online = ws.side().await;
        assert_eq!((&online["Type"], &online["RoomID"]), (&json!("online"), &json!(room)), "{online}");
        let mut known: BTreeSet<i64> = serde_json::from_value(online["Online"].clone()).expect("an array of uids");
        assert!(known.contains(&me.uid), "the socket itself is listed");
        let mut told = BTreeSet::new();
        while known != everyone {
            let frame = ws.side().await;
            assert_eq!(frame["Online"], json!(true), "nobody left: {frame}");
            let uid = frame["UID"].as_i64().expect("a uid");
            assert!(told.insert(uid), "told twice that {uid} came");
            known.insert(uid);
        }
        known.len()
    }))
    .await;
    assert!(learnt.iter().all(|&known| known == MEMBERS));
    assert!(reads < (MEMBERS / 5) as f64, "{reads} reads of the online list for {MEMBERS} enters");
}
