//! Read state: how far the caller has read each room, and what is unread.

use axum::{Json, extract::State};
use chat_proto::v1::{ListUnreadRequest, MarkReadRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, users::StatusBody};
use crate::{
    core_client::CoreClient,
    error::{ApiError, ErrorBody},
    extract::{JsonBody, Token},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(mark_read)).routes(routes!(unread))
}

// A missing id reads as 0, which is refused as any invalid id is.
#[derive(Deserialize, ToSchema)]
struct ReadBody {
    #[serde(default)]
    #[schema(rename = "RoomID", required, minimum = 1)]
    roomid: i64,
    /// The newest entry the caller has read.
    #[serde(default)]
    #[schema(rename = "MessageID", required, minimum = 1)]
    messageid: i64,
}

/// The caller has read a room up to `MessageID`. The mark never moves
/// backwards: an older id is accepted and changes nothing. The room's other
/// members see a `read` frame on the WebSocket when it moves. Members only.
#[utoipa::path(put, path = "/read", tag = "rooms", security(("token" = [])), request_body = ReadBody, responses(
    (status = 200, body = StatusBody, example = json!({"status": "ok"})),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, description = "not a member of the room", body = ErrorBody),
    (status = 404, description = "no such room, or a private one and the caller is not a member", body = ErrorBody),
    (status = 413, body = ErrorBody),
))]
async fn mark_read(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<ReadBody>,
) -> Result<Json<StatusBody>, ApiError> {
    core.rooms.mark_read(token.request(MarkReadRequest { room_id: body.roomid, message_id: body.messageid })).await?;
    Ok(Json(StatusBody { status: "ok" }))
}

#[derive(Serialize, ToSchema)]
struct UnreadBody {
    /// Every room of the caller's, ascending by id.
    #[serde(rename = "Rooms")]
    rooms: Vec<UnreadRoomBody>,
}

#[derive(Serialize, ToSchema)]
struct UnreadRoomBody {
    #[serde(rename = "RoomID")]
    room_id: i64,
    /// `message` entries by others after `LastReadID` that are not
    /// deleted, at most 1000.
    #[serde(rename = "Unread")]
    #[schema(maximum = 1000)]
    unread: u32,
    /// How far the caller has read (`PUT /read`); 0 if never marked.
    #[serde(rename = "LastReadID")]
    last_read_id: i64,
    /// The room's newest `message` entry that is not deleted; 0 if none.
    #[serde(rename = "LastMessageID")]
    last_message_id: i64,
}

/// The caller's rooms with their unread counts. Entries count once the
/// archiver has stored them (normally milliseconds after they are sent).
#[utoipa::path(get, path = "/unread", tag = "rooms", security(("token" = [])), responses(
    (status = 200, body = UnreadBody),
    (status = 401, body = ErrorBody),
))]
async fn unread(State(mut core): State<CoreClient>, token: Token) -> Result<Json<UnreadBody>, ApiError> {
    let reply = core.rooms.list_unread(token.request(ListUnreadRequest {})).await?.into_inner();
    let rooms = reply
        .rooms
        .into_iter()
        .map(|room| UnreadRoomBody {
            room_id: room.room_id,
            unread: room.unread,
            last_read_id: room.last_read_id,
            last_message_id: room.last_message_id,
        })
        .collect();
    Ok(Json(UnreadBody { rooms }))
}
