//! The WebSocket `auth` frame: a fresh token for the same user, without
//! reconnecting.

use std::time::Duration;

use client_input::token::TokenKeys;
use serde_json::json;
use stack_tests::{JWT_SECRET, TestApp, Ws};

fn keys() -> TokenKeys {
    TokenKeys::new(JWT_SECRET.as_bytes())
}

/// The `ExpiresAt` the `auth` answer gives for a token expiring then.
fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
}

#[tokio::test]
async fn a_fresh_token_keeps_the_socket_open_past_the_old_ones_expiry() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let short_lived = keys().issue(alice.uid, chrono::Duration::seconds(2));
    let mut ws = Ws::connect(&app.base, &short_lived.token).await;
    ws.enter(room).await;
    let fresh = keys().issue(alice.uid, chrono::Duration::hours(1));
    ws.send(json!({"Type": "auth", "Token": fresh.token, "Ref": "a1"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "auth", "ExpiresAt": rfc3339(fresh.expires_at), "Ref": "a1"}));
    // Past the first token's expiry: still open, still in the room.
    ws.expect_silence(Duration::from_secs(3)).await;
    let (sent, _) = ws.say("still here").await;
    assert_eq!(sent["Type"], "sent");
}

#[tokio::test]
async fn the_deadline_moves_to_the_new_tokens_even_when_it_is_sooner() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    let sooner = keys().issue(alice.uid, chrono::Duration::seconds(2));
    ws.send(json!({"Type": "auth", "Token": format!("Bearer {}", sooner.token)})).await;
    assert_eq!(ws.recv().await["Type"], "auth", "a Bearer prefix is fine too");
    assert_eq!(ws.close_frame().await, Some((1008, "token expired".to_owned())));
    assert!(chrono::Utc::now() >= sooner.expires_at, "not before the new token expired");
}

#[tokio::test]
async fn another_users_or_an_invalid_token_is_refused_and_the_old_one_stays() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    let short_lived = keys().issue(alice.uid, chrono::Duration::seconds(3));
    let mut ws = Ws::connect(&app.base, &short_lived.token).await;
    ws.enter(room).await;
    let mut tampered = keys().issue(alice.uid, chrono::Duration::hours(1)).token;
    tampered.pop();
    let expired = keys().issue(alice.uid, chrono::Duration::seconds(-10)).token;
    let other_secret =
        TokenKeys::new(b"another-secret-0123456789abcdef-xyz").issue(alice.uid, chrono::Duration::hours(1));
    for token in [bob.token.clone(), tampered, expired, other_secret.token, "forged.token.value".into(), " ".into()] {
        ws.send(json!({"Type": "auth", "Token": token, "Ref": "r"})).await;
        assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "invalid token", "Ref": "r"}), "{token}");
    }
    // Still Alice, still in her room.
    let (_, copy) = ws.say("as alice").await;
    assert_eq!(copy["UID"], alice.uid);
    // And still on the old token: the socket ends when it expires.
    assert_eq!(ws.close_frame().await, Some((1008, "token expired".to_owned())));
}

#[tokio::test]
async fn hostile_auth_frames_get_errors_and_the_socket_stays_open() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    let cases = [
        (json!({"Type": "auth"}), "invalid token"),
        (json!({"Type": "auth", "Token": ""}), "invalid token"),
        (json!({"Type": "auth", "Token": "x".repeat(5000)}), "invalid token"),
        (json!({"Type": "auth", "Token": "line\nbreak"}), "invalid token"),
        (json!({"Type": "auth", "Token": 42}), "invalid json"),
        (json!({"Type": "auth", "Token": ["a"]}), "invalid json"),
    ];
    for (frame, error) in cases {
        ws.send(frame.clone()).await;
        assert_eq!(ws.recv().await, json!({"Type": "error", "Error": error}), "{frame}");
    }
    // After all that, a good token is still taken.
    ws.send(json!({"Type": "auth", "Token": alice.token})).await;
    assert_eq!(ws.recv().await["Type"], "auth");
}
