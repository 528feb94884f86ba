//! History: `GET /messages/{roomID}`.

use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Query, State},
};
use chat_proto::v1::HistoryRequest;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, PathParam, parse_path_id};
use crate::{
    core_client::CoreClient,
    error::{ApiError, ErrorBody},
    extract::{Token, parse_case_insensitive},
    wire::MessageBody,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history))
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
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Vec<MessageBody>>, ApiError> {
    let room_id = parse_path_id(room_id, "room")?;
    let query: HashMap<String, String> = query.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
    let number = |names: &[&str], what: &str| -> Result<Option<i64>, ApiError> {
        match names.iter().find_map(|name| query.get(*name)) {
            None => Ok(None),
            Some(value) => value
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid {what}"))),
        }
    };
    let last_id = match number(&["lastid", "last_id"], "LastID")? {
        Some(last_id) => last_id,
        None if body.iter().all(u8::is_ascii_whitespace) => 0,
        None => parse_case_insensitive::<HistoryBody>(&body)?.lastid,
    };
    if last_id < 0 {
        return Err(ApiError::bad_request("invalid LastID"));
    }
    let limit = match number(&["limit"], "Limit")? {
        None => 0,
        Some(limit @ 1..=100) => limit as u32,
        Some(_) => return Err(ApiError::bad_request("Limit must be 1 to 100")),
    };
    let request = HistoryRequest { room_id, last_id, limit, after_id: None };
    let page = core.messages.history(token.request(request)).await?.into_inner();
    Ok(Json(page.messages.into_iter().map(MessageBody::from).collect()))
}
