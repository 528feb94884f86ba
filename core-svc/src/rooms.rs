//! `chat.v1.RoomService`: rooms and their members, direct rooms, and how
//! far each member has read.

use std::{sync::Arc, time::Duration};

use chat_proto::{
    events::v1::{Event, Joined, Left, Read, Removed, event::Kind},
    v1::{
        CheckMembershipRequest, CheckMembershipResponse, CreateRoomRequest, CreateRoomResponse, GetRoomRequest,
        InviteRequest, InviteResponse, JoinRoomRequest, JoinRoomResponse, LeaveRoomRequest, LeaveRoomResponse,
        ListMyRoomsRequest, ListMyRoomsResponse, ListOnlineRequest, ListOnlineResponse, ListUnreadRequest,
        ListUnreadResponse, MarkReadRequest, MarkReadResponse, OpenDirectRequest, OpenDirectResponse,
        RemoveMemberRequest, RemoveMemberResponse, Room, RoomKind, UnreadRoom, room_service_server::RoomService,
    },
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::{db, presence::Presence};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    auth,
    cache::{Cache, key},
    domain::{RoomName, parse_id, timestamp},
    error::{Error, Result, ResultExt},
    events::Events,
    limits::WriteLimits,
    membership::MemberLookups,
};

const ROOM_NOT_FOUND: Error = Error::NotFound("room not found");
const NOT_A_MEMBER: Error = Error::FailedPrecondition("not room member");
/// When a membership's cache entries are deleted a second time after it
/// ends: a read that found it in PostgreSQL just before, and writes it to
/// the cache just after the first delete, is undone.
const FORGET_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// `rooms.kind` (migration 0008).
const GROUP: i16 = 1;
const DIRECT: i16 = 2;
/// `Unread` counts at most this many entries.
pub const UNREAD_CAP: i64 = 1000;

/// A room as stored. Cached whole under [`key::room`].
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RoomRow {
    pub id: i64,
    pub name: String,
    pub creator_id: i64,
    pub is_private: bool,
    pub created_at: DateTime<Utc>,
    /// Entries cached before rooms had kinds are all of group rooms.
    #[serde(default = "group")]
    pub kind: i16,
}

fn group() -> i16 {
    GROUP
}

impl RoomRow {
    pub fn kind(&self) -> RoomKind {
        if self.kind == DIRECT { RoomKind::Direct } else { RoomKind::Group }
    }
}

/// A room of the caller's, as `ListUnread` reports it.
#[derive(sqlx::FromRow)]
struct UnreadRow {
    room_id: i64,
    last_read_id: i64,
    last_message_id: i64,
    unread: i64,
}

pub struct Rooms {
    db: PgPool,
    lookups: MemberLookups,
    cache: Arc<Cache>,
    events: Arc<Events>,
    presence: Presence,
    /// Room creations, invitations and direct rooms, per user.
    writes: Arc<WriteLimits>,
}

impl Rooms {
    pub fn new(
        db: PgPool,
        cache: Arc<Cache>,
        events: Arc<Events>,
        presence: Presence,
        writes: Arc<WriteLimits>,
    ) -> Self {
        Self { lookups: MemberLookups::new(db.clone()), db, cache, events, presence, writes }
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
            sqlx::query_as("SELECT id, name, creator_id, is_private, created_at, kind FROM rooms WHERE id = $1")
                .bind(room_id)
                .fetch_optional(&self.db)
                .instrument(db::postgres("SELECT rooms"))
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
        let member = self.lookups.is_member(room_id, uid).await?;
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
    pub async fn readable(&self, request_room_id: i64, uid: i64) -> Result<RoomRow> {
        let room_id = room_id(request_room_id)?;
        let room = self.visible(room_id, Some(uid)).await?;
        if !self.is_member(room_id, uid).await? {
            return Err(Error::PermissionDenied("not room member"));
        }
        Ok(room)
    }

    /// Adds a member; `AlreadyExists` if they were one.
    async fn add_member(&self, room_id: i64, uid: i64) -> Result<()> {
        let added = sqlx::query("INSERT INTO room_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(room_id)
            .bind(uid)
            .execute(&self.db)
            .instrument(db::postgres("INSERT room_members"))
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

    /// Ends `uid`'s membership (`removed_by` the creator, or 0 when they
    /// leave): the cache entries go, their sockets and streams on the room
    /// end (on the user's live subject), and a `leave` entry goes through the
    /// log. The membership is committed first: if the log is down the entry
    /// is lost, not the leave.
    async fn end_membership(&self, room_id: i64, uid: i64, removed_by: i64) -> Result<()> {
        let ended = sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(uid)
            .execute(&self.db)
            .instrument(db::postgres("DELETE room_members"))
            .await?
            .rows_affected();
        if ended == 0 {
            return Err(NOT_A_MEMBER);
        }
        self.forget_membership(room_id, uid).await;
        let cache = self.cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FORGET_AGAIN_AFTER).await;
            cache.delete(&[key::member(room_id, uid), key::user_rooms(uid)]).await;
        });
        let removed = Event {
            id: 0,
            room_id,
            uid,
            timestamp: Some(timestamp(Utc::now())),
            kind: Some(Kind::Removed(Removed { removed_by })),
        };
        self.events.notify_user(uid, &removed).await;
        if let Err(error) = self.events.publish(room_id, uid, Kind::Left(Left { removed_by })).await {
            tracing::warn!(%error, room_id, uid, "leave not announced");
        }
        Ok(())
    }

    /// The direct room of two users, if it exists.
    async fn direct_room(&self, low_uid: i64, high_uid: i64) -> Result<Option<i64>> {
        let room_id = sqlx::query_scalar("SELECT room_id FROM direct_rooms WHERE low_uid = $1 AND high_uid = $2")
            .bind(low_uid)
            .bind(high_uid)
            .fetch_optional(&self.db)
            .instrument(db::postgres("SELECT direct_rooms"))
            .await?;
        Ok(room_id)
    }

    /// Creates the direct room of `caller` and `other`, both its members;
    /// `None` when another call created it first. The pair's primary key in
    /// `direct_rooms` decides between concurrent first calls: the insert of
    /// the second waits for the first's transaction, then inserts nothing,
    /// and the second rolls its own room back.
    async fn create_direct(&self, caller: i64, other: i64) -> Result<Option<i64>> {
        let mut tx = self.db.begin().await?;
        let room_id: i64 = sqlx::query_scalar(
            "INSERT INTO rooms (name, creator_id, is_private, kind) VALUES ('', $1, true, $2) RETURNING id",
        )
        .bind(caller)
        .bind(DIRECT)
        .fetch_one(&mut *tx)
        .instrument(db::postgres("INSERT rooms"))
        .await
        .on_constraint(|constraint| {
            (constraint == "rooms_creator_id_fkey").then_some(Error::NotFound("user not found"))
        })?;
        let (low_uid, high_uid) = (caller.min(other), caller.max(other));
        let inserted = sqlx::query(
            "INSERT INTO direct_rooms (low_uid, high_uid, room_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(low_uid)
        .bind(high_uid)
        .bind(room_id)
        .execute(&mut *tx)
        .instrument(db::postgres("INSERT direct_rooms"))
        .await
        .on_constraint(|constraint| {
            matches!(constraint, "direct_rooms_low_uid_fkey" | "direct_rooms_high_uid_fkey")
                .then_some(Error::NotFound("user not found"))
        })?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        sqlx::query("INSERT INTO room_members (room_id, user_id) VALUES ($1, $2), ($1, $3)")
            .bind(room_id)
            .bind(caller)
            .bind(other)
            .execute(&mut *tx)
            .instrument(db::postgres("INSERT room_members"))
            .await?;
        tx.commit().await?;
        Ok(Some(room_id))
    }
}

fn room_id(id: i64) -> Result<i64> {
    parse_id(id, "room").map_err(Error::invalid)
}

/// Two ids of a request (each with what it names), or every problem with them.
fn two_ids((a, what_a): (i64, &'static str), (b, what_b): (i64, &'static str)) -> Result<(i64, i64)> {
    match (parse_id(a, what_a), parse_id(b, what_b)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(Error::collect([a.err(), b.err()])),
    }
}

#[tonic::async_trait]
impl RoomService for Rooms {
    async fn create_room(&self, request: Request<CreateRoomRequest>) -> Result<Response<CreateRoomResponse>, Status> {
        let uid = auth::required(&request)?;
        self.writes.create_room.check(&uid.to_string()).await?;
        let CreateRoomRequest { name, is_private } = request.into_inner();
        let name = RoomName::parse(&name).map_err(Error::invalid)?;
        let mut tx = self.db.begin().await.map_err(Error::from)?;
        let room_id: i64 =
            sqlx::query_scalar("INSERT INTO rooms (name, creator_id, is_private) VALUES ($1, $2, $3) RETURNING id")
                .bind(name.as_ref())
                .bind(uid)
                .bind(is_private)
                .fetch_one(&mut *tx)
                .instrument(db::postgres("INSERT rooms"))
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
            .instrument(db::postgres("INSERT room_members"))
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
        self.writes.invite.check(&caller.to_string()).await?;
        let InviteRequest { room_id, uid } = *request.get_ref();
        let (room_id, uid) = two_ids((room_id, "room"), (uid, "user"))?;
        let room = self.visible(room_id, Some(caller)).await?;
        if room.kind() == RoomKind::Direct {
            return Err(Error::PermissionDenied("cannot invite into a direct room").into());
        }
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
        let kind = room.kind().into();
        Ok(Response::new(Room {
            room_id: room.id,
            name: room.name,
            creator_uid: room.creator_id,
            is_private: room.is_private,
            created_at: Some(timestamp(room.created_at)),
            kind,
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
                        .instrument(db::postgres("SELECT room_members"))
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

    async fn open_direct(&self, request: Request<OpenDirectRequest>) -> Result<Response<OpenDirectResponse>, Status> {
        let caller = auth::required(&request)?;
        self.writes.direct.check(&caller.to_string()).await?;
        let other = parse_id(request.get_ref().uid, "user").map_err(Error::invalid)?;
        if other == caller {
            return Err(Error::invalid("cannot open a direct room with oneself").into());
        }
        let (low_uid, high_uid) = (caller.min(other), caller.max(other));
        if let Some(room_id) = self.direct_room(low_uid, high_uid).await? {
            return Ok(Response::new(OpenDirectResponse { room_id }));
        }
        let room_id = match self.create_direct(caller, other).await? {
            Some(room_id) => {
                for uid in [caller, other] {
                    self.forget_membership(room_id, uid).await;
                }
                tracing::info!(caller, other, room_id, "direct room created");
                for uid in [caller, other] {
                    self.announce_join(room_id, uid).await;
                }
                room_id
            }
            None => self.direct_room(low_uid, high_uid).await?.ok_or_else(|| {
                Error::Internal(anyhow::anyhow!("a direct room that another call created is missing"))
            })?,
        };
        Ok(Response::new(OpenDirectResponse { room_id }))
    }

    async fn leave_room(&self, request: Request<LeaveRoomRequest>) -> Result<Response<LeaveRoomResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = room_id(request.get_ref().room_id)?;
        let room = self.visible(room_id, Some(uid)).await?;
        if room.kind() == RoomKind::Direct {
            return Err(Error::PermissionDenied("cannot leave a direct room").into());
        }
        self.end_membership(room_id, uid, 0).await?;
        tracing::info!(uid, room_id, "left");
        Ok(Response::new(LeaveRoomResponse {}))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let caller = auth::required(&request)?;
        let RemoveMemberRequest { room_id, uid } = *request.get_ref();
        let (room_id, uid) = two_ids((room_id, "room"), (uid, "user"))?;
        let room = self.visible(room_id, Some(caller)).await?;
        if room.creator_id != caller {
            return Err(Error::PermissionDenied("only the room's creator can remove members").into());
        }
        if room.kind() == RoomKind::Direct {
            return Err(Error::PermissionDenied("cannot remove a member of a direct room").into());
        }
        if uid == caller {
            return Err(Error::invalid("the creator cannot remove themselves; leave the room instead").into());
        }
        self.end_membership(room_id, uid, caller).await?;
        tracing::info!(caller, uid, room_id, "removed");
        Ok(Response::new(RemoveMemberResponse {}))
    }

    async fn list_online(&self, request: Request<ListOnlineRequest>) -> Result<Response<ListOnlineResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = self.readable(request.get_ref().room_id, uid).await?.id;
        let uids = self.presence.online(room_id).await.map_err(|error| {
            tracing::warn!(%error, room_id, "presence unknown");
            Error::Unavailable("temporarily unavailable")
        })?;
        Ok(Response::new(ListOnlineResponse { uids }))
    }

    /// The update moves the mark only forwards, in one statement: of two
    /// racing calls the later id wins whatever their order, and an older id
    /// changes nothing (not even a new row version). A mark that moved is
    /// told to the room live (a `read` event, which the reader's own
    /// sockets and streams do not show).
    async fn mark_read(&self, request: Request<MarkReadRequest>) -> Result<Response<MarkReadResponse>, Status> {
        let uid = auth::required(&request)?;
        let MarkReadRequest { room_id, message_id } = *request.get_ref();
        let (room_id, message_id) = two_ids((room_id, "room"), (message_id, "message"))?;
        self.visible(room_id, Some(uid)).await?;
        // Whether the caller is a member is read in the same statement, so
        // it is PostgreSQL's word, as of the update.
        let (advanced, member): (bool, bool) = sqlx::query_as(
            "WITH moved AS (
                 UPDATE room_members SET last_read_id = $3
                  WHERE room_id = $1 AND user_id = $2 AND last_read_id < $3 RETURNING 1)
             SELECT EXISTS (SELECT FROM moved),
                    EXISTS (SELECT FROM room_members WHERE room_id = $1 AND user_id = $2)",
        )
        .bind(room_id)
        .bind(uid)
        .bind(message_id)
        .fetch_one(&self.db)
        .instrument(db::postgres("UPDATE room_members"))
        .await
        .map_err(Error::from)?;
        if !member {
            return Err(Error::PermissionDenied("not room member").into());
        }
        if advanced {
            self.events.publish_live(room_id, uid, Kind::Read(Read { message_id })).await;
        }
        Ok(Response::new(MarkReadResponse {}))
    }

    /// One query, each room answered from `messages_unread_idx`: its newest
    /// entry, and at most [`UNREAD_CAP`] entries after the caller's mark.
    /// What the archiver has not stored yet (it is normally milliseconds
    /// behind) is counted once it has.
    async fn list_unread(&self, request: Request<ListUnreadRequest>) -> Result<Response<ListUnreadResponse>, Status> {
        let uid = auth::required(&request)?;
        let rows: Vec<UnreadRow> = sqlx::query_as(
            "SELECT m.room_id, m.last_read_id, COALESCE(newest.id, 0) AS last_message_id, unread.count AS unread
               FROM room_members m
               LEFT JOIN LATERAL (
                    SELECT id FROM messages
                     WHERE room_id = m.room_id AND kind = 1 AND NOT deleted
                     ORDER BY id DESC LIMIT 1) newest ON true
              CROSS JOIN LATERAL (
                    SELECT count(*) FROM (
                        SELECT FROM messages
                         WHERE room_id = m.room_id AND kind = 1 AND NOT deleted
                           AND id > m.last_read_id AND user_id <> m.user_id
                         ORDER BY id LIMIT $2) capped) unread
              WHERE m.user_id = $1
              ORDER BY m.room_id",
        )
        .bind(uid)
        .bind(UNREAD_CAP)
        .fetch_all(&self.db)
        .instrument(db::postgres("SELECT room_members"))
        .await
        .map_err(Error::from)?;
        let rooms = rows
            .into_iter()
            .map(|row| UnreadRoom {
                room_id: row.room_id,
                unread: row.unread as u32,
                last_read_id: row.last_read_id,
                last_message_id: row.last_message_id,
            })
            .collect();
        Ok(Response::new(ListUnreadResponse { rooms }))
    }
}
