//! `chat.v1.MessageService`: sending, history and live room streams.

use std::{
    collections::{HashSet, VecDeque},
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use chat_proto::{
    envelope,
    events::v1::{Event, Posted, Typing, event::Kind},
    v1::{
        DeleteRequest, DeleteResponse, EditRequest, EditResponse, HistoryRequest, HistoryResponse, Message,
        ReactRequest, ReactResponse, SearchRequest, SearchResponse, SendRequest, SendResponse, SubscribeRequest,
        TypingRequest, TypingResponse, message_service_server::MessageService,
    },
};
use chrono::{DateTime, Utc};
use futures::Stream;
use prost::Message as _;
use service_kit::{
    feeds::{Feed, Hub},
    live::{self, Cursor},
    presence::{Here, Presence},
};
use sqlx::PgPool;
use tokio::{
    sync::broadcast::{Receiver, error::RecvError},
    time::Sleep,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};

use crate::{
    archive::ArchiveProgress,
    auth,
    cache::{Cache, RecentRange},
    domain::{MessageText, parse_id, timestamp},
    error::{Error, Result},
    events::Events,
    limits::RateLimit,
    rooms::Rooms,
};

pub const MAX_PAGE: u32 = 100;

/// core-svc's room feeds, shared by every `Subscribe` stream. An event is
/// shared between streams, not copied.
pub type Feeds = Hub<Arc<Message>>;

/// A live event as a stream shows it.
pub fn streamed(event: Event) -> Option<Arc<Message>> {
    envelope::public(event).map(Arc::new)
}

pub struct Messages {
    history: HistoryStore,
    rooms: Arc<Rooms>,
    events: Arc<Events>,
    feeds: Arc<Feeds>,
    live: Live,
    /// Per user, shared by every replica.
    send_limit: RateLimit,
    /// Per user and room, shared by every replica.
    typing_limit: RateLimit,
    /// Cancelled when the server starts to shut down; ends every stream.
    shutdown: CancellationToken,
}

/// Where history is read from: the recent-history cache, then PostgreSQL,
/// which is asked only for what the archiver is known to have stored.
#[derive(Clone)]
struct HistoryStore {
    db: PgPool,
    cache: Arc<Cache>,
    events: Arc<Events>,
    archive: Arc<ArchiveProgress>,
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
            ..Message::default()
        }
    }
}

/// What streams and typing need beyond the log: who is online, and the
/// live-only events.
pub struct Live {
    pub presence: Presence,
    pub publisher: live::Publisher,
}

/// How often a user's typing in a room is relayed, at most.
const TYPING_EVERY: Duration = Duration::from_secs(3);

/// How fast one user may send: `per_second` sustained, `burst` at once.
pub struct SendLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Messages {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: PgPool,
        cache: Arc<Cache>,
        archive: Arc<ArchiveProgress>,
        rooms: Arc<Rooms>,
        events: Arc<Events>,
        feeds: Arc<Feeds>,
        live: Live,
        limit: SendLimit,
        shutdown: CancellationToken,
    ) -> Self {
        let send_limit = RateLimit::new(
            "send",
            "too many messages",
            cache.clone(),
            limit.per_second,
            Duration::from_secs(1),
            limit.burst,
        );
        // One relayed per user and room every 3 s, across every replica
        // (or, while Redis is away, per replica); the rest are dropped.
        let once = NonZeroU32::MIN;
        let typing_limit = RateLimit::new("typing", "typing too often", cache.clone(), once, TYPING_EVERY, once);
        let history = HistoryStore { db, cache, events: events.clone(), archive };
        Self { history, rooms, events, feeds, live, send_limit, typing_limit, shutdown }
    }

    /// The caller's room, once it is known that they may read it.
    async fn readable_room(&self, request_room_id: i64, uid: i64) -> Result<i64> {
        self.rooms.readable(request_room_id, uid).await
    }
}

/// How long a read waits for the archiver to store what it needs before
/// answering "temporarily unavailable". It is normally milliseconds behind.
const ARCHIVE_WAIT: Duration = Duration::from_secs(2);
const ARCHIVE_POLL: Duration = Duration::from_millis(50);

impl HistoryStore {
    /// A page of history: the recent-history cache first, PostgreSQL for
    /// what the cache does not hold. The cache holds a contiguous run of
    /// each room's newest messages and every message not yet archived, so
    /// what it lacks is older than what it has, and is in PostgreSQL once
    /// the archiver has passed the oldest entry's place in the log. When it
    /// has not (or Redis cannot say), the read waits a little for it, then
    /// fails rather than skip a message.
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
        let recent = self.cache.recent(room_id, range, limit).await;
        // Below the cache's oldest entry, PostgreSQL must answer.
        let oldest = recent.as_ref().and_then(|page| page.oldest);
        let cached: Vec<Message> = recent
            .map(|page| page.entries)
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| Event::decode(entry.encoded.as_slice()).ok().and_then(envelope::public))
            .collect();
        let oldest_offset = oldest.map(|(_, offset)| offset);
        let oldest_cached = cached.iter().map(|m| m.id).min().unwrap_or(i64::MAX);
        let cached = cached.into_iter();
        match range {
            RecentRange::AtMost(_) if cached.len() == limit => Ok(cached.collect()),
            RecentRange::After(after) if oldest.is_some_and(|(id, _)| id <= after) => Ok(cached.collect()),
            RecentRange::AtMost(max_id) => {
                self.archived_before(room_id, oldest_offset).await?;
                let below = max_id.min(oldest_cached.saturating_sub(1));
                let older = self.stored(room_id, i64::MIN, below, limit - cached.len(), true).await?;
                Ok(cached.chain(older).collect())
            }
            // Catching up: what lies between `after` and the cache can only
            // be in PostgreSQL.
            RecentRange::After(after) => {
                self.archived_before(room_id, oldest_offset).await?;
                let mut page = self.stored(room_id, after + 1, oldest_cached - 1, limit, false).await?;
                page.extend(cached.take(limit - page.len()));
                Ok(page)
            }
        }
    }

    /// Waits until PostgreSQL holds every message of the room logged before
    /// `offset`, or (with `None`) before the log's end as of now.
    async fn archived_before(&self, room_id: i64, offset: Option<i64>) -> Result<()> {
        let partition = self.events.partition_of(room_id);
        let needed = match offset {
            Some(offset) => offset,
            None => self.events.log_end(partition).await?,
        };
        let deadline = tokio::time::Instant::now() + ARCHIVE_WAIT;
        loop {
            let stored = self.archive.stored_below(partition).await?;
            if stored >= needed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(room_id, partition, stored, needed, "history not archived yet; read refused");
                return Err(Error::Unavailable("temporarily unavailable"));
            }
            tokio::time::sleep(ARCHIVE_POLL).await;
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

/// One `Subscribe` call: the replay of what the caller missed, then the
/// room's live events, skipping those the replay already gave.
struct Subscription {
    room_id: i64,
    history: HistoryStore,
    live: Receiver<Arc<Message>>,
    /// The other members' presence and typing, as they change.
    live_only: Cursor<Arc<Message>>,
    live_page: VecDeque<Arc<Message>>,
    _feed: Arc<Feed<Arc<Message>>>,
    /// The id the replay has reached, while it lasts.
    replay_after: Option<i64>,
    replay_page: VecDeque<Message>,
    replayed: HashSet<i64>,
    shutdown: CancellationToken,
    /// Made once: a fresh `cancelled()` per event would register with the
    /// token (one lock shared by every stream) each time.
    shutting_down: Pin<Box<WaitForCancellationFutureOwned>>,
    /// When the caller's token expires; the stream ends with it.
    expiry: Pin<Box<Sleep>>,
    ended: bool,
    /// Counts the stream in the room's presence while it is open.
    _here: Here,
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>;

impl Subscription {
    fn into_stream(self) -> MessageStream {
        Box::pin(futures::stream::unfold(self, |mut subscription| async move {
            let item = subscription.next().await?;
            Some((item, subscription))
        }))
    }

    async fn next(&mut self) -> Option<Result<Message, Status>> {
        if self.ended {
            return None;
        }
        let item = self.step().await;
        // A stream ends after its first error.
        self.ended = item.is_err();
        Some(item)
    }

    async fn step(&mut self) -> Result<Message, Status> {
        loop {
            if let Some(message) = self.replay_page.pop_front() {
                return Ok(message);
            }
            if let Some(after) = self.replay_after {
                self.next_replay_page(after).await?;
                continue;
            }
            if let Some(event) = self.live_page.pop_front() {
                return Ok(Message::clone(&event));
            }
            let event = if self.shutdown.is_cancelled() {
                // What is already queued still goes out, then the stream ends.
                self.live.try_recv().map_err(|_| shutting_down())?
            } else {
                tokio::select! {
                    event = self.live.recv() => event.map_err(|error| match error {
                        RecvError::Lagged(_) => Status::resource_exhausted(
                            "the stream fell too far behind; subscribe again with after_id",
                        ),
                        RecvError::Closed => Status::unavailable("the room feed ended; subscribe again with after_id"),
                    })?,
                    () = &mut self.shutting_down => continue,
                    shown = self.live_only.next() => {
                        self.live_page.extend(shown);
                        continue;
                    }
                    () = &mut self.expiry => {
                        return Err(Status::unauthenticated("token expired; subscribe again with a new token and after_id"));
                    }
                }
            };
            if !self.replayed.remove(&event.id) {
                return Ok(Message::clone(&event));
            }
        }
    }

    async fn next_replay_page(&mut self, after: i64) -> Result<(), Status> {
        let request = HistoryRequest { room_id: self.room_id, last_id: 0, limit: MAX_PAGE, after_id: Some(after) };
        let page = self.history.page(self.room_id, &request).await?;
        self.replay_after = match page.last() {
            Some(last) if page.len() == MAX_PAGE as usize => Some(last.id),
            _ => None,
        };
        self.replayed.extend(page.iter().map(|message| message.id));
        self.replay_page.extend(page);
        Ok(())
    }
}

/// How long until a Unix time in seconds.
fn until(unix_secs: i64) -> std::time::Duration {
    let left = unix_secs.saturating_sub(Utc::now().timestamp());
    std::time::Duration::from_secs(left.max(0).unsigned_abs())
}

fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; subscribe again with after_id")
}

#[tonic::async_trait]
impl MessageService for Messages {
    type SubscribeStream = MessageStream;

    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let uid = auth::required(&request)?;
        let SendRequest { room_id, text, .. } = request.into_inner();
        let room_id = parse_id(room_id, "room").map_err(Error::invalid)?;
        let text = MessageText::parse(text).map_err(Error::from)?;
        if !self.rooms.is_member(room_id, uid).await? {
            return Err(Error::PermissionDenied("not room member").into());
        }
        self.send_limit.check(&uid.to_string()).await?;
        let posted = Posted { text: text.into_inner(), ..Posted::default() };
        let event = self.events.publish(room_id, uid, Kind::Posted(posted)).await?;
        Ok(Response::new(SendResponse { message_id: event.id, timestamp: event.timestamp }))
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = self.readable_room(request.get_ref().room_id, uid).await?;
        let messages = self.history.page(room_id, request.get_ref()).await?;
        Ok(Response::new(HistoryResponse { messages }))
    }

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let session = auth::session(&request)?;
        let uid = session.uid;
        let SubscribeRequest { room_id, after_id } = request.into_inner();
        if after_id.is_some_and(|id| id < 0) {
            return Err(Error::invalid("invalid after id").into());
        }
        let room_id = self.readable_room(room_id, uid).await?;
        // Subscribed before the replay is read, so nothing falls between them.
        let feed = self.feeds.feed(room_id).await.map_err(|error| {
            tracing::warn!(%error, room_id, "cannot subscribe to a room feed");
            Error::Unavailable("temporarily unavailable")
        })?;
        let subscription = Subscription {
            room_id,
            history: self.history.clone(),
            live: feed.subscribe(),
            live_only: feed.live(uid),
            live_page: VecDeque::new(),
            _feed: feed,
            replay_after: after_id,
            replay_page: VecDeque::new(),
            replayed: HashSet::new(),
            shutdown: self.shutdown.clone(),
            shutting_down: Box::pin(self.shutdown.clone().cancelled_owned()),
            expiry: Box::pin(tokio::time::sleep(until(session.expires_at))),
            ended: false,
            _here: self.live.presence.arrive(room_id, uid),
        };
        tracing::debug!(uid, room_id, "stream opened");
        Ok(Response::new(subscription.into_stream()))
    }

    async fn edit(&self, _: Request<EditRequest>) -> Result<Response<EditResponse>, Status> {
        Err(Status::unimplemented("edit"))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::unimplemented("delete"))
    }

    async fn react(&self, _: Request<ReactRequest>) -> Result<Response<ReactResponse>, Status> {
        Err(Status::unimplemented("react"))
    }

    async fn typing(&self, request: Request<TypingRequest>) -> Result<Response<TypingResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = self.readable_room(request.get_ref().room_id, uid).await?;
        if self.typing_limit.check(&format!("{room_id}:{uid}")).await.is_ok() {
            let event = Event { room_id, uid, kind: Some(Kind::Typing(Typing {})), ..live::event() };
            self.live.publisher.publish(event).await;
        }
        Ok(Response::new(TypingResponse {}))
    }

    async fn search(&self, _: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        Err(Status::unimplemented("search"))
    }
}
