//! `chat.v1.RoomService`: rooms and their members.

use std::sync::Arc;

use chat_proto::{
    events::v1::{Joined, event::Kind},
    v1::{
        CheckMembershipRequest, CheckMembershipResponse, CreateRoomRequest, CreateRoomResponse, GetRoomRequest,
        InviteRequest, InviteResponse, JoinRoomRequest, JoinRoomResponse, LeaveRoomRequest, LeaveRoomResponse,
        ListMyRoomsRequest, ListMyRoomsResponse, ListOnlineRequest, ListOnlineResponse, ListUnreadRequest,
        ListUnreadResponse, MarkReadRequest, MarkReadResponse, OpenDirectRequest, OpenDirectResponse,
        RemoveMemberRequest, RemoveMemberResponse, Room, RoomKind, room_service_server::RoomService,
    },
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::presence::Presence;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    auth,
    cache::{Cache, key},
    domain::{RoomName, parse_id, timestamp},
    error::{Error, Result, ResultExt},
    events::Events,
};

const ROOM_NOT_FOUND: Error = Error::NotFound("room not found");

/// A room as stored. Cached whole under [`key::room`].
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RoomRow {
    pub id: i64,
    pub name: String,
    pub creator_id: i64,
    pub is_private: bool,
    pub created_at: DateTime<Utc>,
}

pub struct Rooms {
    db: PgPool,
    cache: Arc<Cache>,
    events: Arc<Events>,
    presence: Presence,
}

impl Rooms {
    pub fn new(db: PgPool, cache: Arc<Cache>, events: Arc<Events>, presence: Presence) -> Self {
        Self { db, cache, events, presence }
    }

    /// Tells the room that `uid` joined. The membership is committed already;
    /// if the message log is down the announcement is lost, not the join.
    async fn announce_join(&self, room_id: i64, uid: i64) {
        if let Err(error) = self.events.publish(room_id, uid, Kind::Joined(Joined {})).await {
            tracing::warn!(%error, room_id, uid, "join not announced");
        }
    }

    pub async fn find(&self, room_id: i64) -> Result<Option<RoomRow>> {
        if let Some(room) = self.cache.get::<RoomRow>(&key::room(room_id)).await {
            return Ok(Some(room));
        }
        let room: Option<RoomRow> =
            sqlx::query_as("SELECT id, name, creator_id, is_private, created_at FROM rooms WHERE id = $1")
                .bind(room_id)
                .fetch_optional(&self.db)
                .await?;
        if let Some(room) = &room {
            self.cache.set(&key::room(room_id), room).await;
        }
        Ok(room)
    }

    /// Whether `uid` is a member. Only "yes" is cached: a cached "no" (from
    /// a read that raced a join, or left by a delete that failed) would
    /// keep a new member out for the entry's lifetime.
    pub async fn is_member(&self, room_id: i64, uid: i64) -> Result<bool> {
        let key = key::member(room_id, uid);
        if self.cache.get::<bool>(&key).await == Some(true) {
            return Ok(true);
        }
        let member: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2)")
                .bind(room_id)
                .bind(uid)
                .fetch_one(&self.db)
                .await?;
        if member {
            self.cache.set(&key, &true).await;
        }
        Ok(member)
    }

    /// The room, if `caller` may know it exists: a private room is hidden
    /// from everyone but its members.
    pub async fn visible(&self, room_id: i64, caller: Option<i64>) -> Result<RoomRow> {
        let room = self.find(room_id).await?.ok_or(ROOM_NOT_FOUND)?;
        if !room.is_private {
            return Ok(room);
        }
        match caller {
            Some(uid) if self.is_member(room_id, uid).await? => Ok(room),
            _ => Err(ROOM_NOT_FOUND),
        }
    }

    /// The room, once it is known that `uid` may read it: NOT_FOUND when it
    /// is hidden from them, PERMISSION_DENIED when they are not a member.
    pub async fn readable(&self, request_room_id: i64, uid: i64) -> Result<i64> {
        let room_id = room_id(request_room_id)?;
        self.visible(room_id, Some(uid)).await?;
        if !self.is_member(room_id, uid).await? {
            return Err(Error::PermissionDenied("not room member"));
        }
        Ok(room_id)
    }

    /// Adds a member; `AlreadyExists` if they were one.
    async fn add_member(&self, room_id: i64, uid: i64) -> Result<()> {
        let added = sqlx::query("INSERT INTO room_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(room_id)
            .bind(uid)
            .execute(&self.db)
            .await
            .on_constraint(|constraint| {
                (constraint == "room_members_user_id_fkey").then_some(Error::NotFound("user not found"))
            })?
            .rows_affected();
        self.forget_membership(room_id, uid).await;
        if added == 0 {
            return Err(Error::AlreadyExists("already a member"));
        }
        Ok(())
    }

    async fn forget_membership(&self, room_id: i64, uid: i64) {
        self.cache.delete(&[key::member(room_id, uid), key::user_rooms(uid)]).await;
    }
}

fn room_id(id: i64) -> Result<i64> {
    parse_id(id, "room").map_err(Error::invalid)
}

#[tonic::async_trait]
impl RoomService for Rooms {
    async fn create_room(&self, request: Request<CreateRoomRequest>) -> Result<Response<CreateRoomResponse>, Status> {
        let uid = auth::required(&request)?;
        let CreateRoomRequest { name, is_private } = request.into_inner();
        let name = RoomName::parse(&name).map_err(Error::invalid)?;
        let mut tx = self.db.begin().await.map_err(Error::from)?;
        let room_id: i64 =
            sqlx::query_scalar("INSERT INTO rooms (name, creator_id, is_private) VALUES ($1, $2, $3) RETURNING id")
                .bind(name.as_ref())
                .bind(uid)
                .bind(is_private)
                .fetch_one(&mut *tx)
                .await
                .on_constraint(|constraint| match constraint {
                    "rooms_name_key" => Some(Error::AlreadyExists("room name already taken")),
                    "rooms_creator_id_fkey" => Some(Error::NotFound("user not found")),
                    _ => None,
                })?;
        sqlx::query("INSERT INTO room_members (room_id, user_id) VALUES ($1, $2)")
            .bind(room_id)
            .bind(uid)
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        tx.commit().await.map_err(Error::from)?;
        self.forget_membership(room_id, uid).await;
        tracing::info!(uid, room_id, is_private, "room created");
        Ok(Response::new(CreateRoomResponse { room_id }))
    }

    async fn join_room(&self, request: Request<JoinRoomRequest>) -> Result<Response<JoinRoomResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = room_id(request.get_ref().room_id)?;
        let room = self.find(room_id).await?.ok_or(ROOM_NOT_FOUND)?;
        if room.is_private && !self.is_member(room_id, uid).await? {
            return Err(Error::PermissionDenied("room is private").into());
        }
        self.add_member(room_id, uid).await?;
        self.announce_join(room_id, uid).await;
        tracing::info!(uid, room_id, "joined");
        Ok(Response::new(JoinRoomResponse {}))
    }

    async fn invite(&self, request: Request<InviteRequest>) -> Result<Response<InviteResponse>, Status> {
        let caller = auth::required(&request)?;
        let InviteRequest { room_id, uid } = *request.get_ref();
        let (room_id, uid) = match (parse_id(room_id, "room"), parse_id(uid, "user")) {
            (Ok(room_id), Ok(uid)) => (room_id, uid),
            (room_id, uid) => return Err(Error::collect([room_id.err(), uid.err()]).into()),
        };
        let room = self.visible(room_id, Some(caller)).await?;
        if room.creator_id != caller {
            return Err(Error::PermissionDenied("only the room's creator can invite").into());
        }
        self.add_member(room_id, uid).await?;
        self.announce_join(room_id, uid).await;
        tracing::info!(caller, uid, room_id, "invited");
        Ok(Response::new(InviteResponse {}))
    }

    async fn get_room(&self, request: Request<GetRoomRequest>) -> Result<Response<Room>, Status> {
        let room_id = room_id(request.get_ref().room_id)?;
        let room = self.visible(room_id, auth::optional(&request)).await?;
        Ok(Response::new(Room {
            room_id: room.id,
            name: room.name,
            creator_uid: room.creator_id,
            is_private: room.is_private,
            created_at: Some(timestamp(room.created_at)),
            kind: RoomKind::Group.into(),
        }))
    }

    async fn list_my_rooms(
        &self,
        request: Request<ListMyRoomsRequest>,
    ) -> Result<Response<ListMyRoomsResponse>, Status> {
        let uid = auth::required(&request)?;
        let key = key::user_rooms(uid);
        let room_ids = match self.cache.get::<Vec<i64>>(&key).await {
            Some(room_ids) => room_ids,
            None => {
                let room_ids: Vec<i64> =
                    sqlx::query_scalar("SELECT room_id FROM room_members WHERE user_id = $1 ORDER BY room_id")
                        .bind(uid)
                        .fetch_all(&self.db)
                        .await
                        .map_err(Error::from)?;
                self.cache.set(&key, &room_ids).await;
                room_ids
            }
        };
        Ok(Response::new(ListMyRoomsResponse { room_ids }))
    }

    async fn check_membership(
        &self,
        request: Request<CheckMembershipRequest>,
    ) -> Result<Response<CheckMembershipResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = room_id(request.get_ref().room_id)?;
        let member = self.is_member(room_id, uid).await?;
        Ok(Response::new(CheckMembershipResponse { member }))
    }

    async fn open_direct(&self, _: Request<OpenDirectRequest>) -> Result<Response<OpenDirectResponse>, Status> {
        Err(Status::unimplemented("open_direct"))
    }

    async fn leave_room(&self, _: Request<LeaveRoomRequest>) -> Result<Response<LeaveRoomResponse>, Status> {
        Err(Status::unimplemented("leave_room"))
    }

    async fn remove_member(&self, _: Request<RemoveMemberRequest>) -> Result<Response<RemoveMemberResponse>, Status> {
        Err(Status::unimplemented("remove_member"))
    }

    async fn list_online(&self, request: Request<ListOnlineRequest>) -> Result<Response<ListOnlineResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = self.readable(request.get_ref().room_id, uid).await?;
        let uids = self.presence.online(room_id).await.map_err(|error| {
            tracing::warn!(%error, room_id, "presence unknown");
            Error::Unavailable("temporarily unavailable")
        })?;
        Ok(Response::new(ListOnlineResponse { uids }))
    }

    async fn mark_read(&self, _: Request<MarkReadRequest>) -> Result<Response<MarkReadResponse>, Status> {
        Err(Status::unimplemented("mark_read"))
    }

    async fn list_unread(&self, _: Request<ListUnreadRequest>) -> Result<Response<ListUnreadResponse>, Status> {
        Err(Status::unimplemented("list_unread"))
    }
}
