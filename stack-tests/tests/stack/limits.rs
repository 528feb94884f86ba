//! Limits that hold for the whole deployment, not per replica: sends per
//! user, logins and registrations per address, and each other write per
//! user are counted once however many core-svc replicas and gateways serve
//! them, and password hashing is capped so that
//! a burst of logins is shed instead of exhausting memory.

use std::time::Instant;

use chat_proto::{
    reason,
    v1::{CreateRoomRequest, LoginRequest},
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tonic::Code;

use stack_tests::{Grpc, Settings, Shared, TestApp, Writes, authed, spawn_archiver, spawn_core, spawn_gateway};

#[tokio::test]
async fn a_users_send_rate_is_shared_by_every_core_replica() {
    let shared = Shared::new().await;
    let settings = Settings { send_per_second: 5, ..Settings::default() };
    let (core_a, _stop_a) = spawn_core(&shared, &settings).await;
    let (core_b, _stop_b) = spawn_core(&shared, &settings).await;
    let _stop_archiver = spawn_archiver(&shared).await;
    let (mut a, mut b) = (Grpc::connect(core_a).await, Grpc::connect(core_b).await);
    let alice = a.register("alice").await;
    let room = a.create_room(&alice, "General", false).await;

    let started = Instant::now();
    let mut accepted = 0;
    for n in 0..20 {
        let replica = if n % 2 == 0 { &mut a } else { &mut b };
        match replica.send(&alice, room, &format!("flood {n}")).await {
            Ok(_) => accepted += 1,
            Err(status) => assert_eq!(reason::of(&status).as_deref(), Some(reason::RATE_LIMITED), "{status:?}"),
        }
    }
    // A burst of 5, then 5 a second: what the two replicas let through
    // together, not 5 each.
    let allowed = 5 + (5.0 * started.elapsed().as_secs_f64()).ceil() as u32;
    assert!((5..=allowed).contains(&accepted), "{accepted} sends accepted, at most {allowed} allowed");
}

#[tokio::test]
async fn logins_per_address_are_counted_across_gateways_and_on_the_grpc_api() {
    let shared = Shared::new().await;
    let settings = Settings { login_per_ip: 4, ..Settings::default() };
    let (core, _stop_core) = spawn_core(&shared, &settings).await;
    let (gateway_a, _stop_a) = spawn_gateway(&shared, &settings, core).await;
    let (gateway_b, _stop_b) = spawn_gateway(&shared, &settings, core).await;
    let (app_a, app_b) = (TestApp::at(gateway_a, core, &shared), TestApp::at(gateway_b, core, &shared));
    app_a.register("alice").await; // the first login
    let login = json!({"Email": "alice@example.com", "Password": "password"});
    assert_eq!(app_b.put("/login", None, login.clone()).await.0, StatusCode::OK);
    assert_eq!(app_a.put("/login", None, login.clone()).await.0, StatusCode::OK);
    assert_eq!(app_b.put("/login", None, login.clone()).await.0, StatusCode::OK);
    let (status, body) = app_a.put("/login", None, login).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the fifth login from one address, over two gateways: {body}");

    // A direct gRPC client is limited by its own address too.
    let shared = Shared::new().await;
    let (core, _stop_core) = spawn_core(&shared, &Settings { login_per_ip: 3, ..Settings::default() }).await;
    let mut grpc = Grpc::connect(core).await;
    grpc.register("bob").await; // the first login
    let login = || LoginRequest { email: "bob@example.com".into(), password: "password".into() };
    for _ in 0..2 {
        grpc.users.login(login()).await.expect("under the limit");
    }
    let refused = grpc.users.login(login()).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason::of(&refused).as_deref(), Some(reason::RATE_LIMITED));
    assert!(refused.metadata().get("retry-after").is_some());
}

#[tokio::test]
async fn a_burst_of_logins_beyond_the_hashing_cap_is_shed_not_queued_without_bound() {
    let app =
        TestApp::spawn_with(Settings { password_hashes_at_once: 1, password_hash_wait_ms: 0, ..Settings::default() })
            .await;
    let grpc = app.grpc().await;
    let mut alice = grpc.clone();
    alice.register("alice").await;
    let logins = (0..12).map(|_| {
        let mut grpc = grpc.clone();
        tokio::spawn(async move {
            grpc.users.login(LoginRequest { email: "alice@example.com".into(), password: "password".into() }).await
        })
    });
    let answers: Vec<_> = futures::future::join_all(logins).await.into_iter().map(Result::unwrap).collect();
    let shed: Vec<_> = answers.iter().filter_map(|answer| answer.as_ref().err()).collect();
    assert!(answers.iter().any(Result::is_ok), "some logins are served");
    assert!(!shed.is_empty(), "with one hash at a time and no waiting, a burst of 12 sheds some");
    for status in shed {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason::of(status).as_deref(), Some(reason::OVERLOADED));
        assert!(status.metadata().get("retry-after").is_some());
    }
    // Over REST the same is a 429 with Retry-After; the service goes on.
    let login = json!({"Email": "alice@example.com", "Password": "password"});
    assert_eq!(app.put("/login", None, login).await.0, StatusCode::OK);
}

/// Answered 429 with a `Retry-After` of a few seconds at most a minute.
fn assert_limited((status, body): (StatusCode, serde_json::Value), retry_after: Option<u64>, what: &str) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{what}: {body}");
    assert!(body["Error"].as_str().is_some_and(|text| text.contains("try again later")), "{what}: {body}");
    assert!(retry_after.is_some_and(|secs| (1..=61).contains(&secs)), "{what}: Retry-After {retry_after:?}");
}

#[tokio::test]
async fn every_write_is_limited_across_gateways_and_replicas_with_429_and_retry_after() {
    let shared = Shared::new().await;
    let writes = Writes { register_per_ip: 3, create_room: 2, invite: 2, direct: 2, react: 2, search: 2 };
    let settings = Settings { writes, ..Settings::default() };
    let (core_a, _stop_core_a) = spawn_core(&shared, &settings).await;
    let (core_b, _stop_core_b) = spawn_core(&shared, &settings).await;
    let (gateway_a, _stop_a) = spawn_gateway(&shared, &settings, core_a).await;
    let (gateway_b, _stop_b) = spawn_gateway(&shared, &settings, core_b).await;
    let _stop_archiver = spawn_archiver(&shared).await;
    let (a, b) = (TestApp::at(gateway_a, core_a, &shared), TestApp::at(gateway_b, core_b, &shared));

    // Registrations, per address: three from 127.0.0.1 over two gateways.
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = a.register("carol").await;
    let dave = json!({"Username": "dave", "Email": "dave@example.com", "Password": "password"});
    let (answer, retry_after) = b.call_with_retry_after(Method::POST, "/register", None, &dave).await;
    assert_limited(answer, retry_after, "the fourth registration");

    // Each of alice's writes: two go through (one on each replica), the
    // third is refused, whatever else it would have been answered.
    let room = {
        let answer = a.post("/create-room", Some(&alice.token), json!({"Name": "one", "IsPrivate": false})).await;
        assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
        answer.1["RoomID"].as_i64().unwrap()
    };
    let mut grpc = Grpc::connect(core_b).await;
    let message = grpc.send(&alice, room, "react to this").await.expect("sends are not limited here");
    // What each write may still do (the first room counts already), then
    // the call over the limit; the calls alternate between the gateways.
    let rows = [
        (
            "create-room",
            Method::POST,
            "/create-room".to_owned(),
            vec![json!({"Name": "two"})],
            json!({"Name": "three"}),
        ),
        (
            "invite",
            Method::PUT,
            "/invite".to_owned(),
            vec![json!({"RoomID": room, "UID": bob.uid}), json!({"RoomID": room, "UID": carol.uid})],
            // bob is a member by then: the limit answers before the 409.
            json!({"RoomID": room, "UID": bob.uid}),
        ),
        (
            "direct",
            Method::POST,
            "/direct".to_owned(),
            vec![json!({"UID": bob.uid}), json!({"UID": carol.uid})],
            json!({"UID": bob.uid}),
        ),
        (
            "reactions",
            Method::PUT,
            format!("/messages/{room}/{message}/reactions"),
            vec![json!({"Emoji": "👍"}), json!({"Emoji": "👎"})],
            json!({"Emoji": "🎉"}),
        ),
        ("search", Method::GET, "/search?q=react".to_owned(), vec![json!({}), json!({})], json!({})),
    ];
    for (what, method, path, allowed, over) in rows {
        let gateways = [&b, &a].into_iter().cycle();
        for (body, app) in allowed.iter().zip(gateways.clone()) {
            let (answer, _) = app.call_with_retry_after(method.clone(), &path, Some(&alice.token), body).await;
            assert!(answer.0.is_success(), "{what} under the limit: {answer:?}");
        }
        let app = gateways.clone().nth(allowed.len()).expect("endless");
        let (answer, retry_after) = app.call_with_retry_after(method, &path, Some(&alice.token), &over).await;
        assert_limited(answer, retry_after, what);
    }

    // Over gRPC the same counter answers RESOURCE_EXHAUSTED, with
    // retry-after; another user is not held back by alice's count.
    let refused =
        grpc.rooms.create_room(authed(&alice, CreateRoomRequest { name: "four".into(), is_private: false })).await;
    let refused = refused.expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason::of(&refused).as_deref(), Some(reason::RATE_LIMITED));
    assert!(refused.metadata().get("retry-after").is_some());
    let answer = a.post("/create-room", Some(&bob.token), json!({"Name": "bobs"})).await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
}
