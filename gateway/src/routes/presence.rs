//! Presence: `GET /room/{roomID}/online`. Its changes, and typing, travel
//! over the WebSocket at `/ws`.

use axum::{Json, extract::State};
use chat_proto::v1::ListOnlineRequest;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, PathParam, parse_path_id};
use crate::{
    core_client::CoreClient,
    error::{ApiError, ErrorBody},
    extract::Token,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(online))
}

#[derive(Serialize, ToSchema)]
struct OnlineBody {
    /// The members with at least one socket or stream open on the room, ascending.
    #[serde(rename = "Online")]
    online: Vec<i64>,
}

/// Who is in a room now: the members with at least one WebSocket (on any
/// gateway) or gRPC stream open on it. Members only.
#[utoipa::path(get, path = "/room/{roomID}/online", tag = "rooms", security(("token" = [])),
    params(("roomID" = i64, Path, minimum = 1, description = "the room's id")),
    responses(
        (status = 200, body = OnlineBody, example = json!({"Online": [1, 7]})),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "not a member of the room", body = ErrorBody),
        (status = 404, description = "no such room, or a private one and the caller is not a member", body = ErrorBody),
        (status = 503, description = "presence cannot be read right now; retry", body = ErrorBody),
    ))]
async fn online(
    State(mut core): State<CoreClient>,
    token: Token,
    room_id: PathParam,
) -> Result<Json<OnlineBody>, ApiError> {
    let room_id = parse_path_id(room_id, "room")?;
    let reply = core.rooms.list_online(token.request(ListOnlineRequest { room_id })).await?.into_inner();
    Ok(Json(OnlineBody { online: reply.uids }))
}
