//! `chat.v1.MessageService`: sending, changing (edit, delete, react),
//! history and live room streams.

use std::{
    collections::{HashSet, VecDeque},
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use chat_proto::{
    envelope,
    events::v1::{Deleted, Edited, Event, Posted, Reacted, Typing, event::Kind},
    v1::{
        DeleteRequest, DeleteResponse, EditRequest, EditResponse, HistoryRequest, HistoryResponse, Message,
        MessageKind, ReactRequest, ReactResponse, SearchRequest, SearchResponse, SendRequest, SendResponse,
        SubscribeRequest, TypingRequest, TypingResponse, message_service_server::MessageService,
    },
};
use chrono::Utc;
use futures::Stream;
use metrics::Counter;
use service_kit::{
    feeds::{Feed, Hub, Reconnects, Removal},
    live::{self, Cursor},
    metrics::{DELIVERIES, GRPC, MESSAGES_RECEIVED},
    presence::{Here, Presence},
};
use tokio::{
    sync::broadcast::{Receiver, error::RecvError},
    time::Sleep,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};

use crate::{
    auth,
    cache::Cache,
    domain::{Emoji, MessageText, SearchQuery, SendKey, parse_id},
    error::{Error, Result},
    events::Events,
    history::{HistoryStore, MAX_PAGE},
    limits::{RateLimit, WriteLimits},
    metrics::GRPC_STREAMS,
    rooms::{RoomRow, Rooms},
    send_keys::SendKeys,
};

/// How many distinct emoji one entry may carry.
pub const MAX_REACTIONS: usize = 20;

const NO_SUCH_MESSAGE: Error = Error::NotFound("no such message");

/// core-svc's room feeds, shared by every `Subscribe` stream. An event is
/// shared between streams, not copied.
pub type Feeds = Hub<Arc<Message>>;

/// core-svc's user feeds: a stream's caller removed from its room.
pub type UserFeeds = Hub<Removal>;

/// A live event as a stream shows it.
pub fn streamed(event: Event) -> Option<Arc<Message>> {
    envelope::public(event).map(Arc::new)
}

pub struct Messages {
    history: HistoryStore,
    rooms: Arc<Rooms>,
    events: Arc<Events>,
    keys: SendKeys,
    feeds: Arc<Feeds>,
    user_feeds: Arc<UserFeeds>,
    live: Live,
    nats_reconnects: Reconnects,
    /// Per user, shared by every replica: every write to a room's log but
    /// reactions (sends, edits, deletions) counts.
    send_limit: RateLimit,
    /// Per user and room, shared by every replica.
    typing_limit: RateLimit,
    /// Reactions and searches, per user.
    writes: Arc<WriteLimits>,
    /// Cancelled when the server starts to shut down; ends every stream.
    shutdown: CancellationToken,
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

/// What `Messages` reads and writes through.
pub struct MessageParts {
    pub history: HistoryStore,
    pub rooms: Arc<Rooms>,
    pub events: Arc<Events>,
    pub keys: SendKeys,
    pub feeds: Arc<Feeds>,
    pub user_feeds: Arc<UserFeeds>,
    pub live: Live,
    /// The NATS connection coming back.
    pub nats_reconnects: Reconnects,
}

impl Messages {
    pub fn new(
        parts: MessageParts,
        cache: Arc<Cache>,
        limit: SendLimit,
        writes: Arc<WriteLimits>,
        shutdown: CancellationToken,
    ) -> Self {
        // One relayed per user and room every 3 s, across every replica
        // (or, while Redis is away, per replica); the rest are dropped.
        let once = NonZeroU32::MIN;
        let typing_limit = RateLimit::new("typing", "typing too often", cache.clone(), once, TYPING_EVERY, once);
        let send_limit =
            RateLimit::new("send", "too many messages", cache, limit.per_second, Duration::from_secs(1), limit.burst);
        let MessageParts { history, rooms, events, keys, feeds, user_feeds, live, nats_reconnects } = parts;
        Self {
            history,
            rooms,
            events,
            keys,
            feeds,
            user_feeds,
            live,
            nats_reconnects,
            send_limit,
            typing_limit,
            writes,
            shutdown,
        }
    }

    /// The caller's room, once it is known that they may read it.
    async fn readable_room(&self, request_room_id: i64, uid: i64) -> Result<RoomRow> {
        self.rooms.readable(request_room_id, uid).await
    }

    /// A message of the room that is not deleted: what an edit, a deletion
    /// or a reaction may change.
    async fn live_message(&self, room_id: i64, request_message_id: i64) -> Result<Message> {
        let message_id = parse_id(request_message_id, "message").map_err(Error::invalid)?;
        match self.history.entry(room_id, message_id).await? {
            Some(entry) if entry.kind() == MessageKind::Message && !entry.deleted => Ok(entry),
            _ => Err(NO_SUCH_MESSAGE),
        }
    }

    /// Logs a change to an entry by `uid`, counted by `limit`; its event id.
    async fn change(&self, room_id: i64, uid: i64, kind: Kind, limit: &RateLimit) -> Result<i64> {
        limit.check(&uid.to_string()).await?;
        Ok(self.events.publish(room_id, uid, kind).await?.id)
    }
}

/// One `Subscribe` call: the replay of what the caller missed, then the
/// room's live events, skipping those the replay already gave.
struct Subscription {
    room_id: i64,
    /// The caller, who is not shown their own live-only events.
    uid: i64,
    history: HistoryStore,
    live: Receiver<Arc<Message>>,
    /// The other members' presence and typing, as they change.
    live_only: Cursor<Arc<Message>>,
    live_page: VecDeque<Arc<Message>>,
    _feed: Arc<Feed<Arc<Message>>>,
    /// The caller's removals from rooms: one from this room ends the stream.
    removals: Receiver<Removal>,
    _user_feed: Arc<Feed<Removal>>,
    /// The id the replay has reached, while it lasts.
    replay_after: Option<i64>,
    replay_page: VecDeque<Message>,
    replayed: HashSet<i64>,
    /// The newest id streamed (or the caller's `after_id`): after NATS
    /// comes back, which may have dropped events meanwhile (it is at most
    /// once), the stream replays history from here.
    last_id: i64,
    nats_reconnects: Reconnects,
    shutdown: CancellationToken,
    /// Made once: a fresh `cancelled()` per event would register with the
    /// token (one lock shared by every stream) each time.
    shutting_down: Pin<Box<WaitForCancellationFutureOwned>>,
    /// When the caller's token expires; the stream ends with it.
    expiry: Pin<Box<Sleep>>,
    ended: bool,
    deliveries: Counter,
    _open: OpenStream,
    /// Counts the stream in the room's presence while it is open.
    _here: Here,
}

/// Counts a `Subscribe` stream as open while it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!(GRPC_STREAMS).increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(GRPC_STREAMS).decrement(1.0);
    }
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
        if let Ok(message) = &item {
            self.last_id = self.last_id.max(message.id);
            self.deliveries.increment(1);
        }
        Some(item)
    }

    async fn step(&mut self) -> Result<Message, Status> {
        loop {
            self.reconnected();
            while let Ok(removal) = self.removals.try_recv() {
                self.check(removal)?;
            }
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
                    removal = self.removals.recv() => {
                        // A user feed that lagged or ended has only lost
                        // removals: the room's feed goes on.
                        if let Ok(removal) = removal {
                            self.check(removal)?;
                        }
                        continue;
                    }
                    () = &mut self.shutting_down => continue,
                    shown = self.live_only.next() => {
                        self.live_page.extend(shown);
                        continue;
                    }
                    // The loop's turn asks whether it came back.
                    () = self.nats_reconnects.announced() => continue,
                    () = &mut self.expiry => {
                        return Err(Status::unauthenticated("token expired; subscribe again with a new token and after_id"));
                    }
                }
            };
            if envelope::hidden_from(&event) == Some(self.uid) {
                continue;
            }
            // NATS may have come back while the event came: it may be the
            // new connection's first, newer than what was lost meanwhile;
            // the replay that begins gives it from history in its turn.
            if self.reconnected() && self.replay_after.is_some_and(|after| event.id > after) {
                continue;
            }
            if !self.replayed.remove(&event.id) {
                return Ok(Message::clone(&event));
            }
        }
    }

    /// Whether NATS came back since this was last asked; if so, the replay
    /// begins.
    fn reconnected(&mut self) -> bool {
        let came_back = self.nats_reconnects.came_back();
        if came_back {
            self.replay_from_newest();
        }
        came_back
    }

    /// NATS is at most once, so after it comes back the stream replays
    /// history after the newest id it has (streamed, or read and about to
    /// be), at once: a replica whose own connection was down publishes what
    /// it held back only once it is back, after newer events from other
    /// replicas, and a live event of the new connection streamed first
    /// would put the replay past what was lost. One already replaying reads
    /// on to history's end.
    fn replay_from_newest(&mut self) {
        let newest = self.replay_page.back().map_or(self.last_id, |message| message.id.max(self.last_id));
        if self.replay_after.is_none() && newest > 0 {
            self.replay_after = Some(newest);
        }
    }

    /// Ends the stream if the caller was removed from its room.
    fn check(&self, removal: Removal) -> Result<(), Status> {
        if removal.room_id == self.room_id {
            return Err(Error::Removed.into());
        }
        Ok(())
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
        metrics::counter!(MESSAGES_RECEIVED, "transport" => GRPC).increment(1);
        let SendRequest { room_id, text, reply_to, key } = request.into_inner();
        let room_id = parse_id(room_id, "room").map_err(Error::invalid)?;
        let text = MessageText::parse(text).map_err(Error::from)?;
        let key = SendKey::parse(key)?;
        if !self.rooms.is_member(room_id, uid).await? {
            return Err(Error::PermissionDenied("not room member").into());
        }
        if reply_to != 0 && (reply_to < 0 || self.history.entry(room_id, reply_to).await?.is_none()) {
            return Err(Error::InvalidReply.into());
        }
        let posted = Posted {
            text: text.into_inner(),
            reply_to,
            key: key.as_ref().map(ToString::to_string).unwrap_or_default(),
        };
        let event = match &key {
            None => {
                self.send_limit.check(&uid.to_string()).await?;
                self.events.publish(room_id, uid, Kind::Posted(posted)).await?
            }
            Some(key) => {
                let fresh = async || {
                    self.send_limit.check(&uid.to_string()).await?;
                    self.events.prepare(room_id, uid, Kind::Posted(posted))
                };
                self.keys.send(&self.events, uid, key, fresh).await?
            }
        };
        Ok(Response::new(SendResponse { message_id: event.id, timestamp: event.timestamp }))
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = self.readable_room(request.get_ref().room_id, uid).await?.id;
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
        // Subscribed before membership is checked: a removal after the check
        // reaches the stream.
        let user_feed = self.user_feeds.feed(uid).await.map_err(|error| {
            tracing::warn!(%error, uid, "cannot subscribe to a user feed");
            Error::Unavailable("temporarily unavailable")
        })?;
        let removals = user_feed.subscribe();
        let room_id = self.readable_room(room_id, uid).await?.id;
        // Subscribed before the replay is read, so nothing falls between them.
        let feed = self.feeds.feed(room_id).await.map_err(|error| {
            tracing::warn!(%error, room_id, "cannot subscribe to a room feed");
            Error::Unavailable("temporarily unavailable")
        })?;
        let subscription = Subscription {
            room_id,
            uid,
            history: self.history.clone(),
            live: feed.subscribe(),
            live_only: feed.live(uid),
            live_page: VecDeque::new(),
            _feed: feed,
            removals,
            _user_feed: user_feed,
            replay_after: after_id,
            replay_page: VecDeque::new(),
            replayed: HashSet::new(),
            last_id: after_id.unwrap_or(0),
            nats_reconnects: self.nats_reconnects.from_now(),
            shutdown: self.shutdown.clone(),
            shutting_down: Box::pin(self.shutdown.clone().cancelled_owned()),
            expiry: Box::pin(tokio::time::sleep(until(session.expires_at))),
            ended: false,
            deliveries: metrics::counter!(DELIVERIES, "transport" => GRPC),
            _open: OpenStream::new(),
            _here: self.live.presence.arrive(room_id, uid),
        };
        tracing::debug!(uid, room_id, "stream opened");
        Ok(Response::new(subscription.into_stream()))
    }

    async fn edit(&self, request: Request<EditRequest>) -> Result<Response<EditResponse>, Status> {
        let uid = auth::required(&request)?;
        let EditRequest { room_id, message_id, text } = request.into_inner();
        let text = MessageText::parse(text).map_err(Error::from)?;
        let room = self.readable_room(room_id, uid).await?;
        let message = self.live_message(room.id, message_id).await?;
        if message.uid != uid {
            return Err(Error::PermissionDenied("not author").into());
        }
        let edited = Edited { message_id: message.id, text: text.into_inner() };
        let event_id = self.change(room.id, uid, Kind::Edited(edited), &self.send_limit).await?;
        Ok(Response::new(EditResponse { event_id }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let uid = auth::required(&request)?;
        let DeleteRequest { room_id, message_id } = request.into_inner();
        let room = self.readable_room(room_id, uid).await?;
        let message = self.live_message(room.id, message_id).await?;
        if message.uid != uid && room.creator_id != uid {
            return Err(Error::PermissionDenied("not author").into());
        }
        let deleted = Kind::Deleted(Deleted { message_id: message.id });
        let event_id = self.change(room.id, uid, deleted, &self.send_limit).await?;
        Ok(Response::new(DeleteResponse { event_id }))
    }

    async fn react(&self, request: Request<ReactRequest>) -> Result<Response<ReactResponse>, Status> {
        let uid = auth::required(&request)?;
        let ReactRequest { room_id, message_id, emoji, added } = request.into_inner();
        let emoji = Emoji::parse(emoji).map_err(Error::invalid)?;
        let room = self.readable_room(room_id, uid).await?;
        let message = self.live_message(room.id, message_id).await?;
        // Two first reactions with new emoji at once may both pass: the
        // limit bounds an entry's reactions, it is no exact count.
        if added && !message.reactions.contains_key(emoji.as_ref()) && message.reactions.len() >= MAX_REACTIONS {
            return Err(Error::FailedPrecondition("too many reactions").into());
        }
        let reacted = Reacted { message_id: message.id, emoji: emoji.into_inner(), added };
        let event_id = self.change(room.id, uid, Kind::Reacted(reacted), &self.writes.react).await?;
        Ok(Response::new(ReactResponse { event_id }))
    }

    async fn typing(&self, request: Request<TypingRequest>) -> Result<Response<TypingResponse>, Status> {
        let uid = auth::required(&request)?;
        let room_id = self.readable_room(request.get_ref().room_id, uid).await?.id;
        if self.typing_limit.check(&format!("{room_id}:{uid}")).await.is_ok() {
            let event = Event { room_id, uid, kind: Some(Kind::Typing(Typing {})), ..live::event() };
            self.live.publisher.publish(event).await;
        }
        Ok(Response::new(TypingResponse {}))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        let uid = auth::required(&request)?;
        self.writes.search.check(&uid.to_string()).await?;
        let SearchRequest { query, room_id, last_id, limit } = request.into_inner();
        let query = SearchQuery::parse(query);
        let room_id = if room_id >= 0 { Ok(room_id) } else { Err("invalid room id".to_owned()) };
        let last_id = if last_id >= 0 { Ok(last_id) } else { Err("invalid last id".to_owned()) };
        let limit = match limit {
            0 => Ok(MAX_PAGE),
            1..=MAX_PAGE => Ok(limit),
            _ => Err(format!("limit must be 1 to {MAX_PAGE}")),
        };
        let (query, room_id, last_id, limit) = match (query, room_id, last_id, limit) {
            (Ok(query), Ok(room_id), Ok(last_id), Ok(limit)) => (query, room_id, last_id, limit),
            (query, room_id, last_id, limit) => {
                return Err(Error::collect([query.err(), room_id.err(), last_id.err(), limit.err()]).into());
            }
        };
        if room_id > 0 {
            self.readable_room(room_id, uid).await?;
        }
        let messages = self.history.search(uid, &query, room_id, last_id, limit).await?;
        Ok(Response::new(SearchResponse { messages }))
    }
}
