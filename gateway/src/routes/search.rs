//! Search: `GET /search`, full-text over the caller's rooms.

use axum::{
    Json,
    extract::{RawQuery, State},
};
use chat_proto::v1::SearchRequest;
use client_input::query::QueryParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use crate::{
    core_client::CoreClient,
    error::{ApiError, ErrorBody},
    extract::Token,
    wire::MessageBody,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// The `message` entries of the caller's rooms (or of one) whose text holds
/// every word of `q`, newest first; `LastID` pages as in history. Words are
/// matched whole, ignoring case; `q` is only ever words (quotes, `&`, `|`,
/// `!` or `:*` in it are not operators). Deleted entries never match,
/// edited ones match their new text. Entries are found once the archiver
/// has stored them (normally milliseconds after they are sent).
//
// The pattern of `q` states core-svc's rules (`SearchQuery` in
// core-svc/src/domain.rs) as `fields` does for the bodies' fields: no
// control character but tab and newline, and one character that is not
// white space (as `str::trim` has it).
#[utoipa::path(get, path = "/search", tag = "messages", security(("token" = [])),
    params(
        ("q" = String, Query, min_length = 1, max_length = 200,
            pattern = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x08\x0B-\x1F\x7F-\x9F]*$",
            description = "the words to find, 1 to 200 characters"),
        ("RoomID" = Option<i64>, Query, minimum = 0, description = "only this room (0, the default: every room of the caller's)"),
        ("LastID" = Option<i64>, Query, minimum = 0, description = "entries with `ID <= LastID` (0, the default: from the newest)"),
        ("Limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 100"),
    ),
    responses(
        (status = 200, body = Vec<MessageBody>),
        (status = 400, description = "an empty, too long or invalid query, or an invalid number", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "not a member of the room `RoomID`", body = ErrorBody),
        (status = 404, description = "no room `RoomID`, or a private one and the caller is not a member", body = ErrorBody),
        (status = 429, description = "too many searches", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds until a search may succeed"))),
    ))]
async fn search(
    State(mut core): State<CoreClient>,
    token: Token,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<MessageBody>>, ApiError> {
    let query = QueryParams::parse(query.as_deref().unwrap_or_default());
    let request = SearchRequest {
        query: query.text(&["q"]).unwrap_or_default().to_owned(),
        room_id: query.number(&["roomid", "room_id"], "RoomID")?.unwrap_or(0),
        last_id: query.number(&["lastid", "last_id"], "LastID")?.unwrap_or(0),
        limit: query.limit()?,
    };
    let found = core.messages.search(token.request(request)).await?.into_inner();
    Ok(Json(found.messages.into_iter().map(MessageBody::from).collect()))
}
