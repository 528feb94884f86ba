//! History: `GET /messages/{roomID}`.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use stack_tests::{TestApp, Ws, assert_error};

#[tokio::test]
async fn three_hundred_messages_page_back_each_exactly_once_newest_first() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    let mut sent = Vec::new();
    for i in 0..300 {
        let (frame, _) = a.say(&format!("message {i}")).await;
        sent.push(frame["MessageID"].as_i64().unwrap());
    }
    let token = Some(alice.token.as_str());
    let mut seen = Vec::new();
    let mut last_id = 0;
    loop {
        // The original's way (LastID in a JSON body) and the query both work.
        let body = json!({"LastID": last_id}).to_string();
        let (status, page) = app.call(Method::GET, &format!("/messages/{room}"), token, Some(&body)).await;
        assert_eq!(status, StatusCode::OK);
        let page: Vec<i64> = page
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["Type"] == "message")
            .map(|m| m["ID"].as_i64().unwrap())
            .collect();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 100);
        assert!(page.windows(2).all(|w| w[0] > w[1]), "newest first");
        seen.extend(page.iter().filter(|id| **id != last_id));
        if page.len() == 1 && page[0] == last_id {
            break;
        }
        // LastID is inclusive, as in the original: the next page starts at the last id seen.
        last_id = *page.last().unwrap();
    }
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    sent.reverse();
    assert_eq!(seen, sent);
}

#[tokio::test]
async fn history_takes_last_id_and_limit_from_the_query() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut a = Ws::connect(&app.base, &alice.token).await;
    a.enter(room).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(a.say(&format!("m{i}")).await.0["MessageID"].as_i64().unwrap());
    }
    let token = Some(alice.token.as_str());
    let (_, page) = app.get(&format!("/messages/{room}?Limit=2"), token).await;
    let got: Vec<i64> = page.as_array().unwrap().iter().map(|m| m["ID"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![ids[4], ids[3]]);
    for query in [format!("LastID={}", ids[2]), format!("last_id={}", ids[2])] {
        let (_, page) = app.get(&format!("/messages/{room}?{query}&limit=2"), token).await;
        let got: Vec<i64> = page.as_array().unwrap().iter().map(|m| m["ID"].as_i64().unwrap()).collect();
        assert_eq!(got, vec![ids[2], ids[1]], "{query}");
    }
}

#[tokio::test]
async fn history_is_for_members_only_and_refuses_bad_input() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let public = app.create_room(&alice, "Open", false).await;
    let private = app.create_room(&alice, "Closed", true).await;
    let token = Some(bob.token.as_str());
    assert_error(app.get(&format!("/messages/{public}"), token).await, StatusCode::FORBIDDEN, "not room member");
    assert_error(app.get(&format!("/messages/{private}"), token).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.get("/messages/424242", token).await, StatusCode::NOT_FOUND, "room not found");
    assert_error(app.get(&format!("/messages/{public}"), None).await, StatusCode::UNAUTHORIZED, "missing token");
    let own = Some(alice.token.as_str());
    assert_error(app.get("/messages/abc", own).await, StatusCode::BAD_REQUEST, "invalid room id");
    for query in ["Limit=0", "Limit=101", "Limit=x", "LastID=-1", "LastID=abc"] {
        let answer = app.get(&format!("/messages/{public}?{query}"), own).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{query}: {}", answer.1);
    }
    let answer = app.call(Method::GET, &format!("/messages/{public}"), own, Some("{broken")).await;
    assert_error(answer, StatusCode::BAD_REQUEST, "invalid json");
    let (status, page) = app.get(&format!("/messages/{public}"), own).await;
    assert_eq!((status, page), (StatusCode::OK, json!([])));
}
