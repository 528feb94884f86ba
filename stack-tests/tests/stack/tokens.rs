//! Hostile tokens: unsigned, signed with another secret, of another
//! algorithm, expired, not yet valid, without a user id, and of a user that
//! does not exist. Each is refused alike on every surface: REST answers 401,
//! the WebSocket upgrade 401 before upgrading (and the `auth` frame `invalid
//! token`, as the contract has it for that frame), gRPC UNAUTHENTICATED,
//! with the same text.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chat_proto::v1::GetProfileRequest;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stack_tests::{JWT_SECRET, TestApp, Ws, bearer};
use tokio_tungstenite::tungstenite::Error as WsError;
use tonic::Code;

fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A token signed (HS256) with `secret`, with these claims.
fn signed(secret: &[u8], claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A token whose header says `alg`, signed with the server's own secret by
/// HMAC: what an RS256/HS256 confusion would make a careless verifier accept.
fn confused(alg: &str, claims: &Value) -> String {
    let message = format!(
        "{}.{}",
        base64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// Every kind of bad token for `uid` (a user who exists), and the text it is
/// refused with.
fn hostile_tokens(uid: i64) -> Vec<(&'static str, String, &'static str)> {
    let secret = JWT_SECRET.as_bytes();
    let valid = json!({"UID": uid, "exp": now() + 3600, "iat": now()});
    let unsigned =
        format!("{}.{}.", base64url(br#"{"alg":"none","typ":"JWT"}"#), base64url(valid.to_string().as_bytes()));
    vec![
        ("alg none", unsigned, "invalid token"),
        ("another secret", signed(b"another-secret-0123456789abcdef-xyz", valid.clone()), "invalid token"),
        ("RS256 header, HMAC signature", confused("RS256", &valid), "invalid token"),
        ("expired", signed(secret, json!({"UID": uid, "exp": now() - 60, "iat": now() - 3600})), "token expired"),
        (
            "not yet valid",
            signed(secret, json!({"UID": uid, "exp": now() + 7200, "iat": now(), "nbf": now() + 3600})),
            "invalid token",
        ),
        ("no UID", signed(secret, json!({"exp": now() + 3600, "iat": now()})), "invalid token"),
        ("UID 0", signed(secret, json!({"UID": 0, "exp": now() + 3600, "iat": now()})), "invalid token"),
        (
            "no such user",
            signed(secret, json!({"UID": uid + 1000, "exp": now() + 3600, "iat": now()})),
            "invalid token",
        ),
    ]
}

#[tokio::test]
async fn a_hostile_token_is_refused_alike_over_rest_websocket_and_grpc() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let ws_url = format!("{}/ws", app.base.replacen("http", "ws", 1));
    let mut grpc = app.grpc().await;
    let mut socket = Ws::connect(&app.base, &alice.token).await;
    // The claims each bad token starts from are good ones: signed with the
    // secret, they are accepted, so each refusal is for what was changed.
    let good = signed(JWT_SECRET.as_bytes(), json!({"UID": alice.uid, "exp": now() + 3600, "iat": now()}));
    assert_eq!(app.get("/profile", Some(&good)).await.0, StatusCode::OK);
    for (what, token, text) in hostile_tokens(alice.uid) {
        for auth in [token.clone(), format!("Bearer {token}")] {
            for path in ["/profile", "/rooms"] {
                let answer = app.get(path, Some(&auth)).await;
                assert_eq!(answer, (StatusCode::UNAUTHORIZED, json!({"Error": text})), "{what} at {path}");
            }
        }
        match tokio_tungstenite::connect_async(format!("{ws_url}?token={token}")).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body, json!({"Error": text}), "{what}");
            }
            other => panic!("{what}: the upgrade answered {other:?}"),
        }
        // A socket offered the token as a fresh one keeps its own; the
        // contract's text for the frame is `invalid token`, expired or not.
        socket.send(json!({"Type": "auth", "Token": token, "Ref": what})).await;
        let refused = socket.recv().await;
        assert_eq!(refused, json!({"Type": "error", "Error": "invalid token", "Ref": what}), "{what}");
        let profile = grpc.users.get_profile(bearer(&token, GetProfileRequest { uid: 0 })).await;
        let refused = profile.expect_err(what);
        assert_eq!((refused.code(), refused.message()), (Code::Unauthenticated, text), "{what}");
    }
    // The socket still works on its own token, and the real one still works.
    let room = app.create_room(&alice, "General", false).await;
    socket.enter(room).await;
    assert_eq!(app.get("/profile", Some(&alice.token)).await.0, StatusCode::OK);
}
