//! Search: `GET /search` and `MessageService.Search`, PostgreSQL full-text
//! search over the caller's rooms.

use chat_proto::v1::SearchRequest;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use stack_tests::{Grpc, TestApp, User, assert_error, assert_status, authed, eventually};
use tonic::Code;

/// The ids and texts `user` finds with `query` (the part after `?`).
async fn search(app: &TestApp, user: &User, query: &str) -> Vec<(i64, String)> {
    let (status, body) = app.get(&format!("/search?{query}"), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert_eq!(entry["Type"], "message", "{entry}");
            (entry["ID"].as_i64().unwrap(), entry["Text"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn ids(found: &[(i64, String)]) -> Vec<i64> {
    found.iter().map(|(id, _)| *id).collect()
}

/// Sends each text to the room as `user`, then waits until the archiver has
/// stored them all: search only reads PostgreSQL.
async fn say(app: &TestApp, grpc: &mut Grpc, user: &User, room: i64, texts: &[&str]) -> Vec<i64> {
    let mut sent = Vec::new();
    for text in texts {
        sent.push(grpc.send(user, room, text).await.expect("sent"));
    }
    let mut db = PgConnection::connect(&app.shared.database_url).await.unwrap();
    let stored = async || {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1)")
            .bind(&sent)
            .fetch_one(&mut db)
            .await
            .unwrap();
        count == sent.len() as i64
    };
    eventually("the messages are stored", stored).await;
    sent
}

#[tokio::test]
async fn search_finds_messages_with_every_word_newest_first() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let texts = ["Hello world", "hello there", "goodbye, World!", "worldwide hellos", "Привет мир hello"];
    let sent = say(&app, &mut grpc, &alice, room, &texts).await;

    assert_eq!(ids(&search(&app, &alice, "q=hello").await), [sent[4], sent[1], sent[0]], "whole words, any case");
    assert_eq!(ids(&search(&app, &alice, "q=WORLD").await), [sent[2], sent[0]]);
    assert_eq!(ids(&search(&app, &alice, "q=hello%20world").await), [sent[0]], "every word");
    assert_eq!(ids(&search(&app, &alice, "q=world%20hello").await), [sent[0]], "in any order");
    assert_eq!(ids(&search(&app, &alice, "q=%D0%BC%D0%B8%D1%80").await), [sent[4]], "any script");
    assert!(search(&app, &alice, "q=nothing").await.is_empty());
    let found = search(&app, &alice, &format!("q=hello&RoomID={room}")).await;
    assert_eq!(found[0], (sent[4], texts[4].to_owned()));

    // Paging as history: `ID <= LastID`, at most `Limit`.
    assert_eq!(ids(&search(&app, &alice, "q=hello&Limit=2").await), [sent[4], sent[1]]);
    assert_eq!(ids(&search(&app, &alice, &format!("q=hello&LastID={}", sent[1])).await), [sent[1], sent[0]]);
    assert_eq!(ids(&search(&app, &alice, &format!("q=hello&lastid={}&limit=1", sent[1] - 1)).await), [sent[0]]);
}

#[tokio::test]
async fn search_covers_only_the_callers_rooms() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let public = app.create_room(&alice, "Public", false).await;
    let private = app.create_room(&alice, "Secret", true).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": public})).await;
    let in_public = say(&app, &mut grpc, &alice, public, &["launch plans"]).await;
    let in_private = say(&app, &mut grpc, &alice, private, &["launch codes"]).await;

    assert_eq!(ids(&search(&app, &alice, "q=launch").await), [in_private[0], in_public[0]], "the creator");
    assert_eq!(ids(&search(&app, &bob, "q=launch").await), in_public, "a member");
    assert!(search(&app, &carol, "q=launch").await.is_empty(), "a stranger");
    assert_eq!(ids(&search(&app, &alice, &format!("q=launch&RoomID={public}")).await), in_public);
    let bob_token = Some(bob.token.as_str());
    let carol_token = Some(carol.token.as_str());
    let answer = app.get(&format!("/search?q=launch&RoomID={public}"), carol_token).await;
    assert_error(answer, StatusCode::FORBIDDEN, "not room member");
    let answer = app.get(&format!("/search?q=launch&RoomID={private}"), bob_token).await;
    assert_error(answer, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.get("/search?q=launch&RoomID=424242", bob_token).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.get("/search?q=launch", None).await, StatusCode::UNAUTHORIZED, "missing token");

    // Joining brings a room's past messages into reach.
    app.put("/invite", Some(&alice.token), json!({"RoomID": private, "UID": bob.uid})).await;
    assert_eq!(ids(&search(&app, &bob, "q=launch").await), [in_private[0], in_public[0]]);
}

#[tokio::test]
async fn search_validates_its_query_and_parameters() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let token = Some(alice.token.as_str());
    let q200 = "q".repeat(200);
    let (status, _) = app.get(&format!("/search?q={q200}"), token).await;
    assert_eq!(status, StatusCode::OK, "200 characters are allowed");
    for (query, problem) in [
        ("", "empty query"),
        ("q=", "empty query"),
        ("q=%20%09%0A", "empty query"),
        (&format!("q={q200}q"), "query must be 1 to 200 characters"),
        ("q=nul%00byte", "query has invalid characters"),
        ("q=bell%07", "query has invalid characters"),
        ("q=esc%1B%5B2J", "query has invalid characters"),
        ("q=x&Limit=0", "Limit must be 1 to 100"),
        ("q=x&Limit=101", "Limit must be 1 to 100"),
        ("q=x&Limit=ten", "invalid Limit"),
        ("q=x&LastID=-1", "invalid LastID"),
        ("q=x&RoomID=abc", "invalid RoomID"),
        ("q=x&RoomID=-2", "invalid RoomID"),
    ] {
        assert_error(app.get(&format!("/search?{query}"), token).await, StatusCode::BAD_REQUEST, problem);
    }
}

#[tokio::test]
async fn sql_and_tsquery_syntax_in_a_query_are_only_words() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let texts = ["'; DROP TABLE messages; --", "a b c", "abc:* and !b"];
    let sent = say(&app, &mut grpc, &alice, room, &texts).await;
    let encode = |q: &str| {
        q.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect::<String>()
    };
    let found = search(&app, &alice, &format!("q={}", encode("'; DROP TABLE messages; --"))).await;
    assert_eq!(ids(&found), [sent[0]], "the words drop, table and messages");
    // `&`, `!`, `|` and `:*` are not operators: the words a, b and c must all be there.
    assert_eq!(ids(&search(&app, &alice, &format!("q={}", encode("a & !b | c:*"))).await), [sent[1]]);
    assert!(search(&app, &alice, &format!("q={}", encode("ab:*"))).await.is_empty(), "no prefix matching");
    for hostile in ["!!!", "(", "'", "\\", ":*", "&|!<->", "a <-> b", "' OR 1=1 --"] {
        let (status, body) = app.get(&format!("/search?q={}", encode(hostile)), Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{hostile:?}: {body}");
    }
    let mut db = PgConnection::connect(&app.shared.database_url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&mut db).await.unwrap();
    assert!(stored >= 3, "the messages table is still there");
}

#[tokio::test]
async fn search_over_grpc() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let bob = grpc.register("bob").await;
    let room = grpc.create_room(&alice, "General", true).await;
    let sent = say(&app, &mut grpc, &alice, room, &["deploy friday", "deploy monday"]).await;
    let request = |query: &str, room_id, last_id, limit| SearchRequest { query: query.into(), room_id, last_id, limit };
    let found = grpc.messages.search(authed(&alice, request("deploy", 0, 0, 0))).await.unwrap().into_inner();
    assert_eq!(found.messages.iter().map(|m| m.id).collect::<Vec<_>>(), [sent[1], sent[0]]);
    let found = grpc.messages.search(authed(&alice, request("deploy", room, sent[0], 1))).await.unwrap().into_inner();
    assert_eq!((found.messages.len(), found.messages[0].text.as_str()), (1, "deploy friday"));

    let refused = grpc.messages.search(authed(&bob, request("deploy", room, 0, 0))).await;
    assert_status(refused, Code::NotFound, "room not found");
    let found = grpc.messages.search(authed(&bob, request("deploy", 0, 0, 0))).await.unwrap().into_inner();
    assert!(found.messages.is_empty());
    let refused = grpc.messages.search(authed(&alice, request(" ", -1, -1, 101))).await;
    assert_status(
        refused,
        Code::InvalidArgument,
        "empty query; invalid room id; invalid last id; limit must be 1 to 100",
    );
    assert_status(grpc.messages.search(request("deploy", 0, 0, 0)).await, Code::Unauthenticated, "");
}

#[tokio::test]
async fn search_answers_as_json_the_same_message_shape_as_history() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    say(&app, &mut grpc, &alice, room, &["shape check"]).await;
    let (_, found) = app.get("/search?q=shape", Some(&alice.token)).await;
    let (_, history) = app.get(&format!("/messages/{room}?Limit=1"), Some(&alice.token)).await;
    assert_eq!(found, history);
    let entry: &Value = &found[0];
    assert_eq!((&entry["RoomID"], &entry["UID"]), (&json!(room), &json!(alice.uid)));
}

#[tokio::test]
async fn deleted_entries_never_match_and_edited_ones_match_their_new_text() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let sent = say(&app, &mut grpc, &alice, room, &["draft plan alpha", "draft plan beta", "final plan"]).await;
    // As the archiver leaves an edit and a deletion (migration 0008's columns).
    let mut db = PgConnection::connect(&app.shared.database_url).await.unwrap();
    sqlx::query("UPDATE messages SET text = 'revised plan gamma', edited_at = now() WHERE id = $1")
        .bind(sent[0])
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE messages SET deleted = true WHERE id = $1").bind(sent[1]).execute(&mut db).await.unwrap();
    assert_eq!(ids(&search(&app, &alice, "q=plan").await), [sent[2], sent[0]]);
    assert!(search(&app, &alice, "q=alpha").await.is_empty(), "the old text no longer matches");
    assert_eq!(ids(&search(&app, &alice, "q=gamma").await), [sent[0]]);
    assert!(search(&app, &alice, "q=beta").await.is_empty(), "a deleted entry, even with its text kept");
}

#[tokio::test]
async fn a_membership_gone_from_postgresql_ends_search_whatever_the_cache_says() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    say(&app, &mut grpc, &alice, room, &["secret plans"]).await;
    assert_eq!(search(&app, &bob, &format!("q=plans&RoomID={room}")).await.len(), 1, "a member finds it");
    app.delete_membership_row(room, bob.uid).await;
    assert!(search(&app, &bob, "q=plans").await.is_empty());
    assert!(search(&app, &bob, &format!("q=plans&RoomID={room}")).await.is_empty());
}
