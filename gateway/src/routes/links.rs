//! The OpenAPI links between operations: which answer's values another
//! operation takes (the room a `create-room` made is the one to join, read
//! and invite into; the account `register` made is the one to log in to and
//! look up). Clients read them as documentation; schemathesis's stateful
//! phase follows them to chain calls. Written into the document as JSON:
//! utoipa's own link type names its fields in snake case, which no reader
//! of OpenAPI understands.

use serde_json::{Map, Value, json};

/// Adds the links to `document`, the serialised OpenAPI document.
pub fn add(document: &mut Value) {
    let created_room = "$response.body#/RoomID";
    let joined_room = "$request.body#/RoomID";
    #[rustfmt::skip]
    let links = [
        ("/register", "post", "201", "Login", json!({"operationId": "login", "description": "Log in to the account just made",
            "requestBody": {"Email": "$request.body#/Email", "Password": "$request.body#/Password"}})),
        ("/register", "post", "201", "Profile", json!({"operationId": "profile", "description": "The account just made",
            "parameters": {"UID": "$response.body#/UID"}})),
        ("/login", "put", "200", "Profile", json!({"operationId": "profile", "description": "The account logged in to",
            "parameters": {"UID": "$response.body#/UID"}})),
        ("/create-room", "post", "201", "Join", json!({"operationId": "join", "description": "Join the room just made",
            "requestBody": {"RoomID": created_room}})),
        ("/create-room", "post", "201", "Room", json!({"operationId": "room", "description": "The room just made",
            "parameters": {"roomID": created_room}})),
        ("/create-room", "post", "201", "Messages", json!({"operationId": "history", "description": "Its history",
            "parameters": {"roomID": created_room}})),
        ("/create-room", "post", "201", "Online", json!({"operationId": "online", "description": "Who is in it",
            "parameters": {"roomID": created_room}})),
        ("/join", "put", "200", "Messages", json!({"operationId": "history", "description": "The joined room's history",
            "parameters": {"roomID": joined_room}})),
        ("/join", "put", "200", "Leave", json!({"operationId": "leave", "description": "Leave it again",
            "requestBody": {"RoomID": joined_room}})),
        ("/direct", "post", "200", "Messages", json!({"operationId": "history", "description": "The direct room's history",
            "parameters": {"roomID": created_room}})),
    ];
    for (path, method, status, name, link) in links {
        let response = document
            .pointer_mut(&format!("/paths/{}/{method}/responses/{status}", path.replace('~', "~0").replace('/', "~1")))
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no {status} answer of {method} {path} to link from"));
        let links = response.entry("links").or_insert_with(|| Value::Object(Map::new()));
        links.as_object_mut().expect("links are an object").insert(name.to_owned(), link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_names_an_operation_of_the_document() {
        let (_, api) = super::super::documented_routes().split_for_parts();
        let mut document = serde_json::to_value(api).expect("the document serialises");
        add(&mut document);
        let operations: Vec<&str> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|operation| operation["operationId"].as_str())
            .collect();
        let mut linked = 0;
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for response in operation["responses"].as_object().into_iter().flat_map(|r| r.values()) {
                    for link in response["links"].as_object().into_iter().flat_map(|l| l.values()) {
                        let target = link["operationId"].as_str().expect("an operationId");
                        assert!(operations.contains(&target), "a link to {target}, which is no operation");
                        linked += 1;
                    }
                }
            }
        }
        assert_eq!(linked, 10);
    }
}
