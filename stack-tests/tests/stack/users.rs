use chrono::Duration;
use client_input::token::TokenKeys;
use reqwest::StatusCode;
use serde_json::json;

use stack_tests::{JWT_SECRET, Settings, TestApp, assert_error};

#[tokio::test]
async fn register_answers_201_with_the_new_uid() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post("/register", None, json!({"Username": "alice", "Email": "alice@example.com", "Password": "password"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body["UID"].as_i64().unwrap() > 0, "{body}");
}

#[tokio::test]
async fn register_reports_every_invalid_field_at_once() {
    let app = TestApp::spawn().await;
    let answer = app.post("/register", None, json!({"Username": "a b", "Email": "nope", "Password": "short"})).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST);
    let message = answer.1["Error"].as_str().unwrap().to_owned();
    assert_eq!(message.split("; ").count(), 3, "{message}");
    for (body, text) in [
        (json!({"Username": "ab", "Email": "ab@example.com", "Password": "password"}), "username must be 3 to 20"),
        (
            json!({"Username": "a".repeat(21), "Email": "ab@example.com", "Password": "password"}),
            "username must be 3 to 20",
        ),
        (json!({"Username": "bad-name", "Email": "ab@example.com", "Password": "password"}), "only letters"),
        (json!({"Username": "good", "Email": "ab@example", "Password": "password"}), "email"),
        (json!({"Username": "good", "Email": "ab@example.com", "Password": "1234567"}), "password must be 8 to 128"),
        (
            json!({"Username": "good", "Email": "ab@example.com", "Password": "x".repeat(129)}),
            "password must be 8 to 128",
        ),
        (json!({}), "username"),
    ] {
        assert_error(app.post("/register", None, body).await, StatusCode::BAD_REQUEST, text);
    }
}

#[tokio::test]
async fn register_refuses_taken_usernames_and_emails_with_409() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let taken_name = json!({"Username": "alice", "Email": "other@example.com", "Password": "password"});
    assert_error(app.post("/register", None, taken_name).await, StatusCode::CONFLICT, "username already taken");
    // E-mail addresses compare case-insensitively.
    let taken_email = json!({"Username": "alice2", "Email": "ALICE@Example.com", "Password": "password"});
    assert_error(app.post("/register", None, taken_email).await, StatusCode::CONFLICT, "email already registered");
}

#[tokio::test]
async fn request_field_names_match_case_insensitively() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .post("/register", None, json!({"username": "carol", "EMAIL": "carol@example.com", "PassWord": "password"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.put("/login", None, json!({"email": "Carol@Example.com", "password": "password"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn login_returns_a_token_the_api_accepts() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let (status, body) = app.put("/login", None, json!({"Email": "alice@example.com", "Password": "password"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["UID"], alice.uid);
    assert!(body["ExpiresAt"].as_str().unwrap().ends_with('Z'), "{body}");
    let token = body["token"].as_str().unwrap();
    let (status, _) = app.get("/profile", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let wrong_password =
        app.put("/login", None, json!({"Email": "alice@example.com", "Password": "wrong-password"})).await;
    let unknown_email = app.put("/login", None, json!({"Email": "nobody@example.com", "Password": "password"})).await;
    assert_eq!(wrong_password, unknown_email);
    assert_error(wrong_password, StatusCode::UNAUTHORIZED, "wrong email or password");
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_for_a_while() {
    let app = TestApp::spawn_with(Settings { login_max_failures: 3, ..Settings::default() }).await;
    app.register("alice").await;
    app.register("bob").await;
    for _ in 0..3 {
        let answer = app.put("/login", None, json!({"Email": "alice@example.com", "Password": "guessing!"})).await;
        assert_error(answer, StatusCode::UNAUTHORIZED, "wrong email or password");
    }
    let response = reqwest::Client::new()
        .put(format!("{}/login", app.base))
        .body(json!({"Email": "alice@example.com", "Password": "password"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another account is not affected.
    let (status, _) = app.put("/login", None, json!({"Email": "bob@example.com", "Password": "password"})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn logins_from_one_address_are_rate_limited() {
    let app = TestApp::spawn_with(Settings { login_per_ip: 3, ..Settings::default() }).await;
    app.register("alice").await; // one login
    for _ in 0..2 {
        let (status, _) = app.put("/login", None, json!({"Email": "alice@example.com", "Password": "password"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = reqwest::Client::new()
        .put(format!("{}/login", app.base))
        .body(json!({"Email": "alice@example.com", "Password": "password"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn own_profile_includes_the_email() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let (status, body) = app.get("/profile", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["UID"], alice.uid);
    assert_eq!(body["Username"], "alice");
    assert_eq!(body["Email"], "alice@example.com");
    assert!(body["CreatedAt"].as_str().unwrap().contains('T'));
}

#[tokio::test]
async fn bearer_and_bare_tokens_both_work() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    for auth in [alice.token.clone(), format!("Bearer {}", alice.token), format!("bearer {}", alice.token)] {
        let (status, _) = app.get("/profile", Some(&auth)).await;
        assert_eq!(status, StatusCode::OK, "{auth}");
    }
}

#[tokio::test]
async fn missing_malformed_tampered_and_expired_tokens_get_401() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    assert_error(app.get("/profile", None).await, StatusCode::UNAUTHORIZED, "missing token");
    assert_error(app.get("/profile", Some("garbage")).await, StatusCode::UNAUTHORIZED, "invalid token");
    let mut tampered = alice.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_error(app.get("/profile", Some(&tampered)).await, StatusCode::UNAUTHORIZED, "invalid token");
    let forged = TokenKeys::new(b"not the server's secret, but long enough").issue(alice.uid, Duration::hours(1));
    assert_error(app.get("/profile", Some(&forged.token)).await, StatusCode::UNAUTHORIZED, "invalid token");
    let expired = TokenKeys::new(JWT_SECRET.as_bytes()).issue(alice.uid, Duration::seconds(-5));
    assert_error(app.get("/profile", Some(&expired.token)).await, StatusCode::UNAUTHORIZED, "token expired");
}

#[tokio::test]
async fn public_profile_hides_the_email_from_others() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let path = format!("/profile/{}", alice.uid);
    for auth in [None, Some(bob.token.as_str())] {
        let (status, body) = app.get(&path, auth).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["Username"], "alice");
        assert!(body.get("Email").is_none(), "{body}");
    }
    let (_, body) = app.get(&path, Some(&alice.token)).await;
    assert_eq!(body["Email"], "alice@example.com");
}

#[tokio::test]
async fn unknown_or_invalid_profile_ids() {
    let app = TestApp::spawn().await;
    assert_error(app.get("/profile/999999", None).await, StatusCode::NOT_FOUND, "user not found");
    for bad in ["abc", "0", "-1", "1.5", "99999999999999999999999"] {
        assert_error(app.get(&format!("/profile/{bad}"), None).await, StatusCode::BAD_REQUEST, "invalid user id");
    }
}

#[tokio::test]
async fn change_name_renames_and_refuses_bad_names() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    app.register("bob").await;
    let token = Some(alice.token.as_str());
    let (status, body) = app.put("/change-name", token, json!({"NewName": "alice_2"})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "name changed"})));
    assert_error(app.put("/change-name", token, json!({"NewName": "alice_2"})).await, StatusCode::BAD_REQUEST, "same");
    assert_error(app.put("/change-name", token, json!({"NewName": "bob"})).await, StatusCode::CONFLICT, "taken");
    assert_error(app.put("/change-name", token, json!({"NewName": "x"})).await, StatusCode::BAD_REQUEST, "3 to 20");
    assert_error(app.put("/change-name", token, json!({})).await, StatusCode::BAD_REQUEST, "3 to 20");
    assert_error(app.put("/change-name", None, json!({"NewName": "ghost"})).await, StatusCode::UNAUTHORIZED, "missing");
}
