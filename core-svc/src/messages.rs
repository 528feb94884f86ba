//! `chat.v1.MessageService`: sending and history.

use std::{num::NonZeroU32, sync::Arc};

use chat_proto::v1::{
    HistoryRequest, HistoryResponse, Message, MessageKind, SendRequest, SendResponse,
    message_service_server::MessageService,
};
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prost::Message as _;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    auth,
    cache::{Cache, RecentRange},
    domain::{MessageText, parse_id, timestamp},
    error::{Error, Result},
    events::Events,
    rooms::Rooms,
};

pub const MAX_PAGE: u32 = 100;

pub struct Messages {
    db: PgPool,
    cache: Arc<Cache>,
    rooms: Arc<Rooms>,
    events: Arc<Events>,
    send_limit: DefaultKeyedRateLimiter<i64>,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    room_id: i64,
    user_id: i64,
    kind: i16,
    text: String,
    created_at: DateTime<Utc>,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Message {
            id: row.id,
            room_id: row.room_id,
            uid: row.user_id,
            kind: row.kind.into(),
            text: row.text,
            timestamp: Some(timestamp(row.created_at)),
        }
    }
}

impl Messages {
    /// `per_second` sends per user, with bursts up to `burst`.
    pub fn new(
        db: PgPool,
        cache: Arc<Cache>,
        rooms: Arc<Rooms>,
        events: Arc<Events>,
        per_second: NonZeroU32,
        burst: NonZeroU32,
    ) -> Self {
        let send_limit = RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst));
        Self { db, cache, rooms, events, send_limit }
    }

    /// A page of history: the recent-history cache first, PostgreSQL for
    /// what the cache does not hold. The cache holds a contiguous run of
    /// each room's newest messages, so what it lacks is older than what it
    /// has.
    async fn page(&self, room_id: i64, request: &HistoryRequest) -> Result<Vec<Message>> {
        let limit = match request.limit {
            0 => MAX_PAGE,
            limit @ 1..=MAX_PAGE => limit,
            _ => return Err(Error::invalid(format!("limit must be 1 to {MAX_PAGE}"))),
        } as usize;
        let range = match request.after_id {
            Some(after) => RecentRange::After(after),
            None if request.last_id > 0 => RecentRange::AtMost(request.last_id),
            None if request.last_id == 0 => RecentRange::AtMost(i64::MAX),
            None => return Err(Error::invalid("invalid last id")),
        };
        let cached: Vec<Message> = self
            .cache
            .recent(room_id, range, limit)
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|bytes| Message::decode(bytes.as_slice()).ok())
            .collect();
        let oldest_cached = cached.iter().map(|m| m.id).min().unwrap_or(i64::MAX);
        match range {
            RecentRange::AtMost(_) if cached.len() == limit => Ok(cached),
            RecentRange::AtMost(max_id) => {
                let below = max_id.min(oldest_cached.saturating_sub(1));
                let older = self.stored(room_id, i64::MIN, below, limit - cached.len(), true).await?;
                Ok(cached.into_iter().chain(older).collect())
            }
            // Catching up: what lies between `after` and the cache can only
            // be in PostgreSQL.
            RecentRange::After(after) => {
                let mut page = self.stored(room_id, after + 1, oldest_cached - 1, limit, false).await?;
                page.extend(cached.into_iter().take(limit - page.len()));
                Ok(page)
            }
        }
    }

    async fn stored(
        &self,
        room_id: i64,
        min_id: i64,
        max_id: i64,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<Message>> {
        if limit == 0 || min_id > max_id {
            return Ok(Vec::new());
        }
        let order = if newest_first { "DESC" } else { "ASC" };
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT id, room_id, user_id, kind, text, created_at FROM messages
              WHERE room_id = $1 AND id BETWEEN $2 AND $3 ORDER BY id {order} LIMIT $4"
        ))
        .bind(room_id)
        .bind(min_id)
        .bind(max_id)
        .bind(limit as i64)
        .fetch_all(&self.db)
        .await?;
        Ok(rows.into_iter().map(Message::from).collect())
    }
}

#[tonic::async_trait]
impl MessageService for Messages {
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let uid = auth::required(&request)?;
        let SendRequest { room_id, text } = request.into_inner();
        let room_id = parse_id(room_id, "room").map_err(Error::invalid)?;
        let text = MessageText::parse(text).map_err(Error::invalid)?;
        if !self.rooms.is_member(room_id, uid).await? {
            return Err(Error::PermissionDenied("not room member").into());
        }
        if self.send_limit.check_key(&uid).is_err() {
            return Err(Error::RateLimited { retry_after_secs: 1, what: "too many messages" }.into());
        }
        let message = self.events.publish(room_id, uid, MessageKind::Message, text.into_inner()).await?;
        Ok(Response::new(SendResponse { message_id: message.id, timestamp: message.timestamp }))
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = parse_id(request.get_ref().room_id, "room").map_err(Error::invalid)?;
        self.rooms.visible(room_id, Some(uid)).await?;
        if !self.rooms.is_member(room_id, uid).await? {
            return Err(Error::PermissionDenied("not room member").into());
        }
        let messages = self.page(room_id, request.get_ref()).await?;
        Ok(Response::new(HistoryResponse { messages }))
    }
}
