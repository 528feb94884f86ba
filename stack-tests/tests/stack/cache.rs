//! Redis is a cache only: a change is visible on the very next read, and
//! with Redis unreachable every endpoint still answers from PostgreSQL.

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;

use stack_tests::{Settings, TestApp};

#[tokio::test]
async fn reads_are_cached_and_writes_are_visible_at_once() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let own = Some(alice.token.as_str());
    let public_path = format!("/profile/{}", alice.uid);

    // Fill the caches.
    let room = app.create_room(&bob, "Secret", true).await;
    app.get("/profile", own).await;
    app.get(&public_path, None).await;
    app.get("/rooms", own).await;
    app.get(&format!("/room/{room}"), own).await;
    let mut redis = app.redis().await;
    let cached: Option<String> = redis.get(app.cache_key(&format!("user:{}", alice.uid)).await).await.unwrap();
    assert!(cached.is_some_and(|profile| profile.contains("alice")), "the profile is cached");
    let cached: Option<String> = redis.get(app.cache_key(&format!("user:{}:rooms", alice.uid)).await).await.unwrap();
    assert_eq!(cached.as_deref(), Some("[]"));

    app.put("/change-name", own, json!({"NewName": "alice_renamed"})).await;
    assert_eq!(app.get("/profile", own).await.1["Username"], "alice_renamed");
    assert_eq!(app.get(&public_path, None).await.1["Username"], "alice_renamed");

    app.put("/invite", Some(&bob.token), json!({"RoomID": room, "UID": alice.uid})).await;
    assert_eq!(app.get("/rooms", own).await.1, json!({"IDs": [room]}));
    assert_eq!(app.get(&format!("/room/{room}"), own).await.0, StatusCode::OK);

    let public = app.create_room(&bob, "Open", false).await;
    app.get("/rooms", own).await;
    app.put("/join", own, json!({"RoomID": public})).await;
    assert_eq!(app.get("/rooms", own).await.1, json!({"IDs": [room, public]}));
}

#[tokio::test]
async fn every_endpoint_works_with_redis_unreachable() {
    let app = TestApp::spawn_with(Settings { redis_url: "redis://127.0.0.1:1".into(), ..Settings::default() }).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let own = Some(alice.token.as_str());
    assert_eq!(app.get("/profile", own).await.1["Email"], "alice@example.com");
    assert_eq!(app.get(&format!("/profile/{}", bob.uid), None).await.1["Username"], "bob");
    assert_eq!(app.put("/change-name", own, json!({"NewName": "alice_2"})).await.0, StatusCode::OK);
    assert_eq!(app.get("/profile", own).await.1["Username"], "alice_2");
    let room = app.create_room(&alice, "Secret", true).await;
    let public = app.create_room(&bob, "Open", false).await;
    assert_eq!(app.put("/join", own, json!({"RoomID": public})).await.0, StatusCode::OK);
    assert_eq!(app.put("/join", own, json!({"RoomID": public})).await.0, StatusCode::CONFLICT);
    assert_eq!(app.put("/invite", own, json!({"RoomID": room, "UID": bob.uid})).await.0, StatusCode::OK);
    assert_eq!(app.get("/rooms", own).await.1, json!({"IDs": [room, public]}));
    assert_eq!(app.get(&format!("/room/{room}"), Some(&bob.token)).await.0, StatusCode::OK);
}
