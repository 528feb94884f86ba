//! Rooms and members: create, join, invite, leave, remove a member, list
//! mine, details, and the direct room of two users.

use axum::{Json, extract::State, http::StatusCode};
use chat_proto::v1::{
    CreateRoomRequest, GetRoomRequest, InviteRequest, JoinRoomRequest, LeaveRoomRequest, ListMyRoomsRequest,
    OpenDirectRequest, RemoveMemberRequest, RoomKind,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, PathParam, fields, parse_path_id, rfc3339, users::StatusBody};
use crate::{
    core_client::CoreClient,
    error::{ApiError, ErrorBody},
    extract::{JsonBody, Token, grpc_request},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_room))
        .routes(routes!(join))
        .routes(routes!(invite))
        .routes(routes!(leave))
        .routes(routes!(remove_member))
        .routes(routes!(my_rooms))
        .routes(routes!(room))
        .routes(routes!(direct))
}

#[derive(Deserialize, ToSchema)]
struct CreateRoomBody {
    // Missing reads as empty, which is refused as any invalid name is.
    #[serde(default)]
    #[schema(rename = "Name", required, schema_with = fields::room_name)]
    name: String,
    #[serde(default)]
    #[schema(rename = "IsPrivate", default = false)]
    isprivate: bool,
}

#[derive(Serialize, ToSchema)]
struct RoomIdBody {
    #[serde(rename = "RoomID")]
    room_id: i64,
}

/// Create a room; the caller becomes its creator and first member.
#[utoipa::path(post, path = "/create-room", tag = "rooms", security(("token" = [])), request_body = CreateRoomBody, responses(
    (status = 201, body = RoomIdBody),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 409, description = "room name taken", body = ErrorBody),
    (status = 413, body = ErrorBody),
    (status = 429, description = "over the limit of this write per user", body = ErrorBody,
        headers(("Retry-After" = u64, description = "seconds until it may succeed"))),
))]
async fn create_room(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<CreateRoomBody>,
) -> Result<(StatusCode, Json<RoomIdBody>), ApiError> {
    let request = CreateRoomRequest { name: body.name, is_private: body.isprivate };
    let reply = core.rooms.create_room(token.request(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(RoomIdBody { room_id: reply.room_id })))
}

#[derive(Deserialize, ToSchema)]
struct JoinBody {
    // Missing reads as 0, which is refused as any invalid id is.
    #[serde(default)]
    #[schema(rename = "RoomID", required, minimum = 1)]
    roomid: i64,
}

/// Join a public room.
#[utoipa::path(put, path = "/join", tag = "rooms", security(("token" = [])), request_body = JoinBody, responses(
    (status = 200, body = StatusBody, example = json!({"status": "joined"})),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, description = "the room is private", body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, description = "already a member", body = ErrorBody),
    (status = 413, body = ErrorBody),
))]
async fn join(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<JoinBody>,
) -> Result<Json<StatusBody>, ApiError> {
    core.rooms.join_room(token.request(JoinRoomRequest { room_id: body.roomid })).await?;
    Ok(Json(StatusBody { status: "joined" }))
}

// A missing id reads as 0, which is refused as any invalid id is.
#[derive(Deserialize, ToSchema)]
struct InviteBody {
    #[serde(default)]
    #[schema(rename = "RoomID", required, minimum = 1)]
    roomid: i64,
    /// The user to add (invite), or to remove (remove-member).
    #[serde(default)]
    #[schema(rename = "UID", required, minimum = 1)]
    uid: i64,
}

/// Add a user to a room; only the room's creator may.
#[utoipa::path(put, path = "/invite", tag = "rooms", security(("token" = [])), request_body = InviteBody, responses(
    (status = 200, body = StatusBody, example = json!({"status": "invited"})),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, description = "the caller is not the room's creator", body = ErrorBody),
    (status = 404, description = "no such room or user", body = ErrorBody),
    (status = 409, description = "already a member", body = ErrorBody),
    (status = 413, body = ErrorBody),
    (status = 429, description = "over the limit of this write per user", body = ErrorBody,
        headers(("Retry-After" = u64, description = "seconds until it may succeed"))),
))]
async fn invite(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<InviteBody>,
) -> Result<Json<StatusBody>, ApiError> {
    core.rooms.invite(token.request(InviteRequest { room_id: body.roomid, uid: body.uid })).await?;
    Ok(Json(StatusBody { status: "invited" }))
}

/// Leave a room; a `leave` entry is written, and the caller's sockets and
/// streams on the room stop receiving it.
#[utoipa::path(put, path = "/leave", tag = "rooms", security(("token" = [])), request_body = JoinBody, responses(
    (status = 200, body = StatusBody, example = json!({"status": "left"})),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, description = "a direct room cannot be left", body = ErrorBody),
    (status = 404, description = "no such room (a private one is unknown to non-members)", body = ErrorBody),
    (status = 409, description = "not a member", body = ErrorBody),
    (status = 413, body = ErrorBody),
))]
async fn leave(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<JoinBody>,
) -> Result<Json<StatusBody>, ApiError> {
    core.rooms.leave_room(token.request(LeaveRoomRequest { room_id: body.roomid })).await?;
    Ok(Json(StatusBody { status: "left" }))
}

/// Remove a member from a room; only the room's creator may. A `leave`
/// entry is written; the member's sockets in the room are sent
/// `{"Type":"enter","RoomID":0}` then `{"Type":"error","Error":"removed from room"}`,
/// and their streams on it end with PERMISSION_DENIED.
#[utoipa::path(put, path = "/remove-member", tag = "rooms", security(("token" = [])), request_body = InviteBody, responses(
    (status = 200, body = StatusBody, example = json!({"status": "removed"})),
    (status = 400, description = "an invalid id, or the creator removing themselves", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, description = "the caller is not the room's creator, or the room is a direct one", body = ErrorBody),
    (status = 404, description = "no such room", body = ErrorBody),
    (status = 409, description = "the user is not a member", body = ErrorBody),
    (status = 413, body = ErrorBody),
))]
async fn remove_member(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<InviteBody>,
) -> Result<Json<StatusBody>, ApiError> {
    core.rooms.remove_member(token.request(RemoveMemberRequest { room_id: body.roomid, uid: body.uid })).await?;
    Ok(Json(StatusBody { status: "removed" }))
}

#[derive(Serialize, ToSchema)]
struct RoomIdsBody {
    /// Ascending.
    #[serde(rename = "IDs")]
    ids: Vec<i64>,
}

/// The ids of the caller's rooms.
#[utoipa::path(get, path = "/rooms", tag = "rooms", security(("token" = [])), responses(
    (status = 200, body = RoomIdsBody),
    (status = 401, body = ErrorBody),
))]
async fn my_rooms(State(mut core): State<CoreClient>, token: Token) -> Result<Json<RoomIdsBody>, ApiError> {
    let reply = core.rooms.list_my_rooms(token.request(ListMyRoomsRequest {})).await?.into_inner();
    Ok(Json(RoomIdsBody { ids: reply.room_ids }))
}

#[derive(Serialize, ToSchema)]
struct RoomBody {
    #[serde(rename = "RoomID")]
    room_id: i64,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "CreatorUID")]
    creator_uid: i64,
    #[serde(rename = "IsPrivate")]
    is_private: bool,
    #[serde(rename = "CreatedAt")]
    #[schema(required = true)]
    created_at: Option<String>,
    #[serde(rename = "Kind")]
    kind: KindBody,
}

/// `direct`: the room of exactly two users (`POST /direct`); `group`: any other.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum KindBody {
    Group,
    Direct,
}

/// A room's details. A private room is shown only to its members.
#[utoipa::path(get, path = "/room/{roomID}", tag = "rooms", security((), ("token" = [])),
    params(("roomID" = i64, Path, minimum = 1, description = "the room's id")),
    responses(
        (status = 200, body = RoomBody),
        (status = 400, body = ErrorBody),
        (status = 401, description = "a token was sent and is invalid", body = ErrorBody),
        (status = 404, description = "no such room, or a private one and the caller is not a member", body = ErrorBody),
    ))]
async fn room(
    State(mut core): State<CoreClient>,
    token: Option<Token>,
    room_id: PathParam,
) -> Result<Json<RoomBody>, ApiError> {
    let room_id = parse_path_id(room_id, "room")?;
    let room = core.rooms.get_room(grpc_request(token.as_ref(), GetRoomRequest { room_id })).await?.into_inner();
    let kind = match room.kind() {
        RoomKind::Direct => KindBody::Direct,
        _ => KindBody::Group,
    };
    Ok(Json(RoomBody {
        room_id: room.room_id,
        name: room.name,
        creator_uid: room.creator_uid,
        is_private: room.is_private,
        created_at: rfc3339(room.created_at),
        kind,
    }))
}

#[derive(Deserialize, ToSchema)]
struct DirectBody {
    /// The other user. Missing reads as 0, which is refused as any invalid id is.
    #[serde(default)]
    #[schema(rename = "UID", required, minimum = 1)]
    uid: i64,
}

/// The one direct room of the caller and another user: created, with both
/// as members, by the first call from either side; the same room on every
/// later call. Private, and no one can be invited into it.
#[utoipa::path(post, path = "/direct", tag = "rooms", security(("token" = [])), request_body = DirectBody, responses(
    (status = 200, body = RoomIdBody),
    (status = 400, description = "invalid JSON or id, or the caller's own id", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 404, description = "no such user", body = ErrorBody),
    (status = 413, body = ErrorBody),
    (status = 429, description = "over the limit of this write per user", body = ErrorBody,
        headers(("Retry-After" = u64, description = "seconds until it may succeed"))),
))]
async fn direct(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<DirectBody>,
) -> Result<Json<RoomIdBody>, ApiError> {
    let reply = core.rooms.open_direct(token.request(OpenDirectRequest { uid: body.uid })).await?.into_inner();
    Ok(Json(RoomIdBody { room_id: reply.room_id }))
}
