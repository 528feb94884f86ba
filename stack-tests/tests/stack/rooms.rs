use reqwest::StatusCode;
use serde_json::json;

use stack_tests::{TestApp, assert_error};

#[tokio::test]
async fn create_room_makes_the_creator_a_member() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let (status, body) = app.get("/rooms", Some(&alice.token)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"IDs": [room]})));
    let (status, body) = app.get(&format!("/room/{room}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["RoomID"], room);
    assert_eq!(body["Name"], "General");
    assert_eq!(body["CreatorUID"], alice.uid);
    assert_eq!(body["IsPrivate"], false);
    assert!(body["CreatedAt"].is_string());
}

#[tokio::test]
async fn create_room_validates_and_refuses_taken_names_ignoring_case() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let token = Some(alice.token.as_str());
    app.create_room(&alice, "General", false).await;
    assert_error(app.post("/create-room", token, json!({"Name": "GENERAL"})).await, StatusCode::CONFLICT, "taken");
    assert_error(app.post("/create-room", token, json!({"Name": "  general "})).await, StatusCode::CONFLICT, "taken");
    assert_error(app.post("/create-room", token, json!({"Name": "   "})).await, StatusCode::BAD_REQUEST, "1 to 100");
    assert_error(
        app.post("/create-room", token, json!({"Name": "r".repeat(101)})).await,
        StatusCode::BAD_REQUEST,
        "1 to 100",
    );
    assert_error(
        app.post("/create-room", token, json!({"Name": "a\u{0}b"})).await,
        StatusCode::BAD_REQUEST,
        "invalid characters",
    );
    assert_error(app.post("/create-room", None, json!({"Name": "x"})).await, StatusCode::UNAUTHORIZED, "missing token");
}

#[tokio::test]
async fn rooms_list_is_ascending_and_always_an_array() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (_, body) = app.get("/rooms", Some(&bob.token)).await;
    assert_eq!(body, json!({"IDs": []}));
    let first = app.create_room(&alice, "one", false).await;
    let second = app.create_room(&alice, "two", false).await;
    let third = app.create_room(&bob, "three", false).await;
    for room in [second, first] {
        app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    }
    let (_, body) = app.get("/rooms", Some(&bob.token)).await;
    assert_eq!(body, json!({"IDs": [first, second, third]}));
    assert_error(app.get("/rooms", None).await, StatusCode::UNAUTHORIZED, "missing token");
}

#[tokio::test]
async fn join_public_room_then_409_on_the_second_time() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    let (status, body) = app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "joined"})));
    assert_error(
        app.put("/join", Some(&bob.token), json!({"RoomID": room})).await,
        StatusCode::CONFLICT,
        "already a member",
    );
    assert_error(
        app.put("/join", Some(&alice.token), json!({"RoomID": room})).await,
        StatusCode::CONFLICT,
        "already a member",
    );
}

#[tokio::test]
async fn join_refuses_private_unknown_and_invalid_rooms() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let private = app.create_room(&alice, "Secret", true).await;
    let token = Some(bob.token.as_str());
    assert_error(app.put("/join", token, json!({"RoomID": private})).await, StatusCode::FORBIDDEN, "private");
    assert_error(app.put("/join", token, json!({"RoomID": 424242})).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.put("/join", token, json!({"RoomID": 0})).await, StatusCode::BAD_REQUEST, "invalid room id");
    assert_error(app.put("/join", token, json!({"RoomID": -3})).await, StatusCode::BAD_REQUEST, "invalid room id");
    assert_error(app.put("/join", None, json!({"RoomID": private})).await, StatusCode::UNAUTHORIZED, "missing token");
}

#[tokio::test]
async fn only_the_creator_invites_and_the_invitee_sees_the_private_room() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_room(&alice, "Secret", true).await;
    let path = format!("/room/{room}");
    assert_error(app.get(&path, Some(&bob.token)).await, StatusCode::NOT_FOUND, "room not found");

    let invite_bob = json!({"RoomID": room, "UID": bob.uid});
    let (status, body) = app.put("/invite", Some(&alice.token), invite_bob.clone()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "invited"})));
    let (status, _) = app.get(&path, Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, rooms) = app.get("/rooms", Some(&bob.token)).await;
    assert_eq!(rooms, json!({"IDs": [room]}));

    assert_error(app.put("/invite", Some(&alice.token), invite_bob).await, StatusCode::CONFLICT, "already a member");
    // A member who is not the creator may not invite.
    let invite_carol = json!({"RoomID": room, "UID": carol.uid});
    assert_error(app.put("/invite", Some(&bob.token), invite_carol.clone()).await, StatusCode::FORBIDDEN, "creator");
    // A non-member does not learn the private room exists.
    assert_error(app.put("/invite", Some(&carol.token), invite_carol).await, StatusCode::NOT_FOUND, "room not found");
}

#[tokio::test]
async fn invite_unknown_room_or_user_is_404_and_bad_ids_400() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let token = Some(alice.token.as_str());
    assert_error(
        app.put("/invite", token, json!({"RoomID": room, "UID": 987654})).await,
        StatusCode::NOT_FOUND,
        "user not found",
    );
    assert_error(
        app.put("/invite", token, json!({"RoomID": 987654, "UID": alice.uid})).await,
        StatusCode::NOT_FOUND,
        "room not found",
    );
    let answer = app.put("/invite", token, json!({"RoomID": 0, "UID": -1})).await;
    assert_error(answer, StatusCode::BAD_REQUEST, "invalid room id; invalid user id");
    assert_error(
        app.put("/invite", None, json!({"RoomID": room, "UID": 1})).await,
        StatusCode::UNAUTHORIZED,
        "missing token",
    );
}

#[tokio::test]
async fn private_room_is_404_to_anonymous_and_outsiders_but_shown_to_members() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "Secret", true).await;
    let path = format!("/room/{room}");
    assert_error(app.get(&path, None).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.get(&path, Some(&bob.token)).await, StatusCode::NOT_FOUND, "room not found");
    let (status, body) = app.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["IsPrivate"], true);
    assert_error(app.get(&path, Some("forged")).await, StatusCode::UNAUTHORIZED, "invalid token");
    for bad in ["abc", "0", "-5", "1e3"] {
        assert_error(app.get(&format!("/room/{bad}"), None).await, StatusCode::BAD_REQUEST, "invalid room id");
    }
    assert_error(app.get("/room/777777", None).await, StatusCode::NOT_FOUND, "room not found");
}
