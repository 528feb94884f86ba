//! The OpenAPI links between operations: which answer's values another
//! operation takes (the room a `create-room` made is the one to join, read
//! and invite into; the account `register` made is the one to log in to and
//! look up). Clients read them as documentation; schemathesis's stateful
//! phase follows them to chain calls.

use serde_json::{Value, json};
use utoipa::{
    Modify,
    openapi::{
        OpenApi, RefOr,
        link::{Link, LinkBuilder},
    },
};

pub struct Links;

/// A link to `operation_id` with these parameters and body.
fn link(operation_id: &str, description: &str, parameters: &[(&str, &str)], body: Option<Value>) -> Link {
    let link = LinkBuilder::new().operation_id(operation_id).description(description).request_body(body);
    parameters.iter().fold(link, |link, (name, value)| link.parameter(*name, *value)).build()
}

impl Modify for Links {
    fn modify(&self, openapi: &mut OpenApi) {
        let created_room = "$response.body#/RoomID";
        let joined_room = "$request.body#/RoomID";
        let links = [
            (
                "/register",
                "POST",
                "201",
                "Login",
                link(
                    "login",
                    "Log in to the account just made",
                    &[],
                    Some(json!({"Email": "$request.body#/Email", "Password": "$request.body#/Password"})),
                ),
            ),
            (
                "/register",
                "POST",
                "201",
                "Profile",
                link("profile", "The account just made", &[("UID", "$response.body#/UID")], None),
            ),
            (
                "/login",
                "PUT",
                "200",
                "Profile",
                link("profile", "The account logged in to", &[("UID", "$response.body#/UID")], None),
            ),
            (
                "/create-room",
                "POST",
                "201",
                "Join",
                link("join", "Join the room just made", &[], Some(json!({"RoomID": created_room}))),
            ),
            (
                "/create-room",
                "POST",
                "201",
                "Room",
                link("room", "The room just made", &[("roomID", created_room)], None),
            ),
            (
                "/create-room",
                "POST",
                "201",
                "Messages",
                link("history", "Its history", &[("roomID", created_room)], None),
            ),
            (
                "/create-room",
                "POST",
                "201",
                "Online",
                link("online", "Who is in it", &[("roomID", created_room)], None),
            ),
            (
                "/create-room",
                "POST",
                "201",
                "Invite",
                link("invite", "Invite someone into it", &[], Some(json!({"RoomID": created_room, "UID": 1}))),
            ),
            (
                "/join",
                "PUT",
                "200",
                "Messages",
                link("history", "The joined room's history", &[("roomID", joined_room)], None),
            ),
            (
                "/join",
                "PUT",
                "200",
                "Leave",
                link("leave", "Leave it again", &[], Some(json!({"RoomID": joined_room}))),
            ),
            (
                "/direct",
                "POST",
                "200",
                "Messages",
                link("history", "The direct room's history", &[("roomID", created_room)], None),
            ),
            (
                "/messages/{roomID}",
                "GET",
                "200",
                "Edit",
                link(
                    "edit",
                    "Edit the newest entry",
                    &[("roomID", "$request.path.roomID"), ("messageID", "$response.body#/0/ID")],
                    None,
                ),
            ),
            (
                "/messages/{roomID}",
                "GET",
                "200",
                "React",
                link(
                    "react",
                    "React to the newest entry",
                    &[("roomID", "$request.path.roomID"), ("messageID", "$response.body#/0/ID")],
                    None,
                ),
            ),
        ];
        for (path, method, status, name, link) in links {
            let operation = openapi.paths.paths.get_mut(path).and_then(|item| match method {
                "GET" => item.get.as_mut(),
                "PUT" => item.put.as_mut(),
                "POST" => item.post.as_mut(),
                _ => unreachable!("only these are linked from"),
            });
            let response = operation.and_then(|operation| operation.responses.responses.get_mut(status));
            let Some(RefOr::T(response)) = response else { panic!("no {status} answer of {method} {path} to link") };
            response.links.insert(name.to_owned(), RefOr::T(link));
        }
    }
}
