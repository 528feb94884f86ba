//! `chat.v1.UserService` over gRPC, as another service would call it.

use chat_proto::v1::{ChangeNameRequest, GetProfileRequest, LoginRequest, RegisterRequest};
use client_input::token::TokenKeys;
use stack_tests::{JWT_SECRET, Settings, TestApp, assert_status, authed, bearer};
use tonic::{Code, Request};

fn register(username: &str, email: &str, password: &str) -> RegisterRequest {
    RegisterRequest { username: username.into(), email: email.into(), password: password.into() }
}

#[tokio::test]
async fn register_login_and_read_profiles() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let bob = grpc.register("bob").await;

    let login = grpc
        .users
        .login(LoginRequest { email: "ALICE@example.com".into(), password: "password".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.uid, alice.uid);
    assert!(login.expires_at.is_some_and(|at| at.seconds > chrono::Utc::now().timestamp()));

    let own = grpc.users.get_profile(authed(&alice, GetProfileRequest { uid: 0 })).await.unwrap().into_inner();
    assert_eq!((own.uid, own.username.as_str(), own.email.as_deref()), (alice.uid, "alice", Some("alice@example.com")));
    // Someone else's profile never carries their e-mail, asked with or without a token.
    let seen_by_bob = grpc.users.get_profile(authed(&bob, GetProfileRequest { uid: alice.uid })).await.unwrap();
    assert_eq!((seen_by_bob.get_ref().username.as_str(), seen_by_bob.get_ref().email.as_ref()), ("alice", None));
    let anonymous = grpc.users.get_profile(GetProfileRequest { uid: alice.uid }).await.unwrap();
    assert_eq!(anonymous.get_ref().email, None);
}

#[tokio::test]
async fn register_refuses_bad_and_taken_names() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    grpc.register("alice").await;
    let bad = grpc.users.register(register("a!", "nope", "short")).await;
    let status = bad.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message().matches("; ").count(), 2, "every problem at once: {}", status.message());
    let taken = grpc.users.register(register("alice", "other@example.com", "password")).await;
    assert_status(taken, Code::AlreadyExists, "username already taken");
    let email_taken = grpc.users.register(register("alice2", "Alice@Example.com", "password")).await;
    assert_status(email_taken, Code::AlreadyExists, "email already registered");
}

#[tokio::test]
async fn login_refuses_wrong_credentials_with_one_message_then_locks_the_account() {
    let app = TestApp::spawn_with(Settings { login_max_failures: 3, ..Settings::default() }).await;
    let mut grpc = app.grpc().await;
    grpc.register("alice").await;
    let login = |email: &str, password: &str| LoginRequest { email: email.into(), password: password.into() };
    let unknown = grpc.users.login(login("nobody@example.com", "password")).await.unwrap_err();
    let wrong = grpc.users.login(login("alice@example.com", "wrong-password")).await.unwrap_err();
    assert_eq!((unknown.code(), wrong.code()), (Code::Unauthenticated, Code::Unauthenticated));
    assert_eq!(unknown.message(), wrong.message());
    for _ in 0..2 {
        let _ = grpc.users.login(login("alice@example.com", "wrong-password")).await;
    }
    let locked = grpc.users.login(login("alice@example.com", "password")).await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    let retry_after: u64 = locked.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0);
}

#[tokio::test]
async fn profile_needs_a_valid_token_for_the_caller_and_an_existing_user() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let own = GetProfileRequest { uid: 0 };
    assert_status(grpc.users.get_profile(Request::new(own)).await, Code::Unauthenticated, "missing token");
    let tampered = format!("Bearer {}x", alice.token);
    assert_status(grpc.users.get_profile(bearer(&tampered, own)).await, Code::Unauthenticated, "invalid token");
    let expired = TokenKeys::new(JWT_SECRET.as_bytes()).issue(alice.uid, chrono::Duration::seconds(-120)).token;
    let expired = bearer(&format!("Bearer {expired}"), own);
    assert_status(grpc.users.get_profile(expired).await, Code::Unauthenticated, "token expired");
    // The raw token, without "Bearer", is accepted as on REST.
    assert!(grpc.users.get_profile(bearer(&alice.token, own)).await.is_ok());
    let unknown = GetProfileRequest { uid: alice.uid + 1000 };
    assert_status(grpc.users.get_profile(unknown).await, Code::NotFound, "user not found");
    assert_status(grpc.users.get_profile(GetProfileRequest { uid: -1 }).await, Code::InvalidArgument, "user");
}

#[tokio::test]
async fn change_name_renames_the_caller_only() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    grpc.register("bob").await;
    let rename = |name: &str| ChangeNameRequest { new_name: name.into() };
    grpc.users.change_name(authed(&alice, rename("alice_2"))).await.unwrap();
    let profile = grpc.users.get_profile(GetProfileRequest { uid: alice.uid }).await.unwrap().into_inner();
    assert_eq!(profile.username, "alice_2");

    assert_status(grpc.users.change_name(authed(&alice, rename("alice_2"))).await, Code::InvalidArgument, "same");
    assert_status(grpc.users.change_name(authed(&alice, rename("x"))).await, Code::InvalidArgument, "username");
    assert_status(grpc.users.change_name(authed(&alice, rename("bob"))).await, Code::AlreadyExists, "taken");
    assert_status(grpc.users.change_name(rename("carol")).await, Code::Unauthenticated, "missing token");
}
