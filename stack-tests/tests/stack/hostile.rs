//! Malformed, oversized and hostile input: a clear 4xx, nothing stored,
//! nothing leaked, and the server keeps serving.

use chat_proto::{reason, v1::SendRequest};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tonic::Code;

use stack_tests::{TestApp, Ws, assert_error, assert_status, authed};

const BODY_ENDPOINTS: [(Method, &str); 8] = [
    (Method::POST, "/register"),
    (Method::PUT, "/login"),
    (Method::PUT, "/change-name"),
    (Method::POST, "/create-room"),
    (Method::PUT, "/join"),
    (Method::PUT, "/invite"),
    (Method::POST, "/direct"),
    (Method::PUT, "/read"),
];

/// Every request field of the API, each with a value of the wrong type.
const WRONG_TYPES: &str = r#"{"Username": 1, "Email": [], "Password": {}, "NewName": 2, "Name": 3, "IsPrivate": "yes", "RoomID": "1", "UID": true, "MessageID": []}"#;

#[tokio::test]
async fn malformed_json_is_400_on_every_endpoint_with_a_body() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    for (method, path) in BODY_ENDPOINTS {
        for body in ["", "{", "{\"Name\": }", "[]", "42", "\"str\"", WRONG_TYPES, "\u{0}"] {
            let answer = app.call(method.clone(), path, Some(&alice.token), Some(body)).await;
            assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{method} {path} {body:?}: {}", answer.1);
            assert!(answer.1["Error"].is_string(), "{}", answer.1);
        }
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_on_every_endpoint_with_a_body() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let huge = json!({"Username": "x".repeat(70 * 1024)}).to_string();
    for (method, path) in BODY_ENDPOINTS {
        let answer = app.call(method.clone(), path, Some(&alice.token), Some(&huge)).await;
        assert_error(answer, StatusCode::PAYLOAD_TOO_LARGE, "64 KiB");
    }
    // Just under the limit is parsed (and then fails validation, not the size check).
    let near = json!({"Name": "n".repeat(60 * 1024)}).to_string();
    let answer = app.call(Method::POST, "/create-room", Some(&alice.token), Some(&near)).await;
    assert_error(answer, StatusCode::BAD_REQUEST, "1 to 100");
}

#[tokio::test]
async fn hostile_text_is_refused_or_stored_verbatim_never_interpreted() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let injection = json!({"Username": "x';DROP--", "Email": "e@example.com", "Password": "password"});
    assert_error(app.post("/register", None, injection).await, StatusCode::BAD_REQUEST, "only letters");
    let evil = "Robert'); DROP TABLE rooms;-- <script>alert(1)</script> 🚀";
    let room = app.create_room(&alice, evil, false).await;
    assert_eq!(app.get(&format!("/room/{room}"), None).await.1["Name"], evil);
    let login = json!({"Email": "' OR 1=1 --@example.com", "Password": "' OR '1'='1"});
    assert_error(app.put("/login", None, login).await, StatusCode::UNAUTHORIZED, "wrong email or password");
    // Numbers at the edges of i64 and beyond.
    let token = Some(alice.token.as_str());
    assert_error(app.put("/join", token, json!({"RoomID": i64::MAX})).await, StatusCode::NOT_FOUND, "room not found");
    let answer = app.call(Method::PUT, "/join", token, Some(r#"{"RoomID": 99999999999999999999999}"#)).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST);
    // Everyone else is still served.
    assert_eq!(app.get("/profile", token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn tokens_in_odd_shapes_are_401_not_500() {
    let app = TestApp::spawn().await;
    for auth in
        ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "a.b.c", &"x".repeat(8000), "eyJhbGciOiJub25lIn0.eyJVSUQiOjF9."]
    {
        let (status, body) = app.get("/profile", Some(auth)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}: {body}");
    }
}

#[tokio::test]
async fn passwords_and_tokens_never_appear_in_error_bodies() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let secret = "SuperSecretPassword123";
    let answer = app.put("/login", None, json!({"Email": "alice@example.com", "Password": secret})).await;
    assert!(!answer.1.to_string().contains(secret));
    let answer = app.get("/profile", Some(&format!("{}x", alice.token))).await;
    assert!(!answer.1.to_string().contains(&alice.token));
}

/// A NUL once reached the message log, where the archiver could never
/// store it (PostgreSQL refuses it in text) and stopped archiving. Control
/// characters other than newline and tab are refused at every edge.
#[tokio::test]
async fn control_characters_are_refused_on_every_edge_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.enter(room).await;
    let hostile = ["nul\u{0}byte", "bell\u{7}", "carriage\rreturn", "escape\u{1b}[2J", "c1\u{85}"];
    for text in hostile {
        ws.send(json!({"Type": "message", "Text": text, "Ref": "r"})).await;
        assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "invalid characters", "Ref": "r"}), "{text:?}");
    }
    let (sent, _) = ws.say("two lines\n\tand a tab").await;

    let mut grpc = app.grpc().await;
    for text in hostile {
        let answer = grpc
            .messages
            .send(authed(&alice, SendRequest { room_id: room, text: text.into(), ..SendRequest::default() }))
            .await;
        let status = answer.expect_err("refused");
        assert_eq!(reason::of(&status).as_deref(), Some(reason::INVALID_CHARACTERS), "{text:?}");
        assert_status(Err::<(), _>(status), Code::InvalidArgument, "invalid characters");
    }
    let (_, page) = app.get(&format!("/messages/{room}"), Some(&alice.token)).await;
    let ids: Vec<&serde_json::Value> = page.as_array().unwrap().iter().map(|m| &m["ID"]).collect();
    assert_eq!(ids, [&sent["MessageID"]], "only the valid message is stored: {page}");

    let token = Some(alice.token.as_str());
    for name in ["nul\u{0}room", "tab\there", "line\nbreak"] {
        let answer = app.post("/create-room", token, json!({"Name": name, "IsPrivate": false})).await;
        assert_error(answer, StatusCode::BAD_REQUEST, "invalid characters");
    }
    let answer = app.put("/change-name", token, json!({"NewName": "nul\u{0}name"})).await;
    assert_error(answer, StatusCode::BAD_REQUEST, "invalid characters");
    let register = json!({"Username": "bob\u{0}", "Email": "bob@example.com", "Password": "password"});
    assert_error(app.post("/register", None, register).await, StatusCode::BAD_REQUEST, "invalid characters");
}
