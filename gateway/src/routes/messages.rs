//! History and the changes to its entries: `GET /messages/{roomID}`,
//! `PATCH` and `DELETE /messages/{roomID}/{messageID}`, `PUT
//! /messages/{roomID}/{messageID}/reactions`.

use axum::{
    Json,
    body::Bytes,
    extract::{RawQuery, State},
};
use chat_proto::v1::{DeleteRequest, EditRequest, HistoryRequest, ReactRequest};
use client_input::{json::parse_case_insensitive, query::QueryParams};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, EntryPath, PathParam, fields, parse_entry_path, parse_path_id};
use crate::{
    core_client::CoreClient,
    error::{ApiError, ErrorBody},
    extract::{JsonBody, Token},
    wire::MessageBody,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history)).routes(routes!(edit, delete)).routes(routes!(react))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryBody {
    lastid: i64,
}

/// A page of a room's history, newest first. `LastID` 0 (the default) starts
/// from the newest; otherwise the page has the messages with `ID <= LastID`.
/// Members only.
#[utoipa::path(get, path = "/messages/{roomID}", tag = "messages", security(("token" = [])),
    params(
        ("roomID" = i64, Path, minimum = 1, description = "the room's id"),
        ("LastID" = Option<i64>, Query, minimum = 0, description = "page from this id down (also `last_id`, or `LastID` in a JSON body, as the original took it)"),
        ("Limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 100"),
    ),
    responses(
        (status = 200, body = Vec<MessageBody>),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "not a member of the room", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn history(
    State(mut core): State<CoreClient>,
    token: Token,
    room_id: PathParam,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Vec<MessageBody>>, ApiError> {
    let room_id = parse_path_id(room_id, "room")?;
    let query = QueryParams::parse(query.as_deref().unwrap_or_default());
    let last_id = match query.number(&["lastid", "last_id"], "LastID")? {
        Some(last_id) => last_id,
        None if body.iter().all(u8::is_ascii_whitespace) => 0,
        None => parse_case_insensitive::<HistoryBody>(&body)?.lastid,
    };
    if last_id < 0 {
        return Err(ApiError::bad_request("invalid LastID"));
    }
    let limit = query.limit()?;
    let request = HistoryRequest { room_id, last_id, limit, after_id: None };
    let page = core.messages.history(token.request(request)).await?.into_inner();
    Ok(Json(page.messages.into_iter().map(MessageBody::from).collect()))
}

/// A change to an entry went through the message log.
#[derive(Serialize, ToSchema)]
struct ChangedBody {
    status: &'static str,
    /// The change's own id, in the message id space: where it sits among
    /// the room's events when resuming.
    #[serde(rename = "EventID")]
    event_id: i64,
}

#[derive(Deserialize, ToSchema)]
struct EditBody {
    // Missing reads as empty, which is refused as any invalid text is.
    #[serde(default)]
    #[schema(rename = "Text", required, schema_with = fields::message_text)]
    text: String,
}

/// Change the text of one's own message. Its entry in history reads the
/// new text (with `EditedAt`); the room sees an `edit` event.
#[utoipa::path(patch, path = "/messages/{roomID}/{messageID}", tag = "messages", security(("token" = [])),
    params(
        ("roomID" = i64, Path, minimum = 1, description = "the room's id"),
        ("messageID" = i64, Path, minimum = 1, description = "the message's id"),
    ),
    request_body = EditBody,
    responses(
        (status = 200, body = ChangedBody, example = json!({"status": "edited", "EventID": 43})),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "not a member of the room, or not the message's author (`not author`)", body = ErrorBody),
        (status = 404, description = "no such room, or no such message (`no such message`: unknown or deleted)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn edit(
    State(mut core): State<CoreClient>,
    token: Token,
    path: EntryPath,
    JsonBody(body): JsonBody<EditBody>,
) -> Result<Json<ChangedBody>, ApiError> {
    let (room_id, message_id) = parse_entry_path(path)?;
    let request = EditRequest { room_id, message_id, text: body.text };
    let event_id = core.messages.edit(token.request(request)).await?.into_inner().event_id;
    Ok(Json(ChangedBody { status: "edited", event_id }))
}

/// Delete a message: its author or the room's creator may. Its entry in
/// history stays, `Deleted`, without text or reactions; the room sees a
/// `delete` event.
#[utoipa::path(delete, path = "/messages/{roomID}/{messageID}", tag = "messages", security(("token" = [])),
    params(
        ("roomID" = i64, Path, minimum = 1, description = "the room's id"),
        ("messageID" = i64, Path, minimum = 1, description = "the message's id"),
    ),
    responses(
        (status = 200, body = ChangedBody, example = json!({"status": "deleted", "EventID": 44})),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "not a member, or neither the author nor the room's creator (`not author`)", body = ErrorBody),
        (status = 404, description = "no such room, or no such message (`no such message`: unknown or deleted)", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn delete(
    State(mut core): State<CoreClient>,
    token: Token,
    path: EntryPath,
) -> Result<Json<ChangedBody>, ApiError> {
    let (room_id, message_id) = parse_entry_path(path)?;
    let event_id =
        core.messages.delete(token.request(DeleteRequest { room_id, message_id })).await?.into_inner().event_id;
    Ok(Json(ChangedBody { status: "deleted", event_id }))
}

#[derive(Deserialize, ToSchema)]
struct ReactBody {
    #[serde(default)]
    #[schema(rename = "Emoji", required, schema_with = fields::emoji)]
    emoji: String,
    /// True to add the reaction, false to take it back.
    #[serde(default = "adding")]
    #[schema(rename = "Added", default = true)]
    added: bool,
}

fn adding() -> bool {
    true
}

/// Add (or, with `"Added": false`, take back) one's reaction to a message.
/// Members only; at most 20 distinct emoji on one message.
#[utoipa::path(put, path = "/messages/{roomID}/{messageID}/reactions", tag = "messages", security(("token" = [])),
    params(
        ("roomID" = i64, Path, minimum = 1, description = "the room's id"),
        ("messageID" = i64, Path, minimum = 1, description = "the message's id"),
    ),
    request_body = ReactBody,
    responses(
        (status = 200, body = ChangedBody, example = json!({"status": "ok", "EventID": 45})),
        (status = 400, description = "an invalid id, or an emoji that is empty or over 32 bytes", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "not a member of the room", body = ErrorBody),
        (status = 404, description = "no such room, or no such message (`no such message`: unknown or deleted)", body = ErrorBody),
        (status = 409, description = "the message has 20 distinct emoji already (`too many reactions`)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn react(
    State(mut core): State<CoreClient>,
    token: Token,
    path: EntryPath,
    JsonBody(body): JsonBody<ReactBody>,
) -> Result<Json<ChangedBody>, ApiError> {
    let (room_id, message_id) = parse_entry_path(path)?;
    let request = ReactRequest { room_id, message_id, emoji: body.emoji, added: body.added };
    let event_id = core.messages.react(token.request(request)).await?.into_inner().event_id;
    Ok(Json(ChangedBody { status: "ok", event_id }))
}
