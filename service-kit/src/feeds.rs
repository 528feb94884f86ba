//! Live feeds: one NATS subscription per room (or per user) while something
//! in this process listens to it. Each event (a `chat.events.v1.Event`) is
//! decoded and turned into `E` (a ready-to-write frame, say) once; every
//! listener then gets a clone of it from a bounded broadcast queue, and one
//! that falls too far behind learns so from
//! [`broadcast::error::RecvError::Lagged`]. Presence and typing go on the
//! feed's [`Board`] instead, each member's latest for every listener to read
//! when it can (presence held to one change per member per second first),
//! and each presence change is remembered for a while ([`Recent`]).
//!
//! Each event received is one span, `receive <prefix>.room.{id}` (the
//! subject's template: one name for every room), continuing the trace of
//! its publication and carrying how many listeners it went to: one span per
//! event and process, never one per listener.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak, atomic::Ordering},
    time::SystemTime,
};

use chat_proto::events::v1::{Event, Presence, event::Kind};
use futures::StreamExt;
use prost::Message as _;
use tokio::{
    sync::{broadcast, watch},
    task::AbortHandle,
    time::{Duration, Instant, sleep_until},
};

use metrics::Gauge;

use crate::{
    live::{self, About, Board, Cursor, Recent, Throttle},
    metrics::{BROADCAST_LATENCY, NATS_PUBLISH_ERRORS, NATS_RECONNECTS, ROOM_FEEDS},
    telemetry,
};

/// The first attempt to reconnect is at once, each next one this much later
/// than the one before, up to [`RECONNECT_AT_MOST`].
const RECONNECT_STEP: Duration = Duration::from_millis(50);
const RECONNECT_AT_MOST: Duration = Duration::from_millis(500);

/// Options for a NATS connection that announce its connects: the receiver
/// changes each time the connection is made again (see [`Reconnects`]);
/// every connect but the first is counted in `chat_nats_reconnects_total`.
/// A lost connection is tried again every [`RECONNECT_AT_MOST`] at most
/// (the client's own backoff reaches 4 s): while it is down, live events
/// wait, and a core-svc replica holds its writes' answers for them.
pub fn counting_connects() -> (async_nats::ConnectOptions, watch::Receiver<u64>) {
    let (connected, connects) = watch::channel(0_u64);
    let backoff = |attempts: usize| (RECONNECT_STEP * attempts.saturating_sub(1) as u32).min(RECONNECT_AT_MOST);
    let options = async_nats::ConnectOptions::new().reconnect_delay_callback(backoff).event_callback(move |event| {
        if matches!(event, async_nats::Event::Connected) {
            connected.send_modify(|count| {
                if *count > 0 {
                    metrics::counter!(NATS_RECONNECTS).increment(1);
                }
                *count += 1;
            });
        }
        std::future::ready(())
    });
    (options, connects)
}

/// How a listener learns that the NATS connection was made again, after
/// which its feed refills from history what NATS (at most once) dropped
/// meanwhile. Asked as each frame is taken, it reads the client's own count
/// of connects, which the client raises before it passes on any message of
/// the new connection: a frame of the new connection is never taken before
/// the reconnect is seen. (The connect event comes through a task of its
/// own, maybe after the new connection's first messages: it only wakes a
/// listener that has no frame to take.)
#[derive(Clone)]
pub struct Reconnects {
    stats: Arc<async_nats::Statistics>,
    seen: u64,
    wake: watch::Receiver<u64>,
}

impl Reconnects {
    /// A client's reconnects (its `statistics()`), with `wake` from the
    /// options of [`counting_connects`] it was made with.
    pub fn new(stats: Arc<async_nats::Statistics>, wake: watch::Receiver<u64>) -> Self {
        let mut reconnects = Self { stats, seen: 0, wake };
        reconnects.came_back();
        reconnects
    }

    /// The reconnects from now on.
    pub fn from_now(&self) -> Self {
        let mut reconnects = self.clone();
        reconnects.came_back();
        reconnects
    }

    /// Whether the connection was made again since this was last asked;
    /// marks it asked.
    pub fn came_back(&mut self) -> bool {
        self.wake.mark_unchanged();
        let connects = self.stats.connects.load(Ordering::Relaxed);
        std::mem::replace(&mut self.seen, connects) != connects
    }

    /// Resolves when a connect is announced (call [`Self::came_back`] then);
    /// never if the client is gone.
    pub async fn announced(&mut self) {
        if self.wake.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The NATS subject of a room's live events.
pub fn room_subject(prefix: &str, room_id: i64) -> String {
    format!("{prefix}.room.{room_id}")
}

/// The NATS subject of the live events addressed to one user (`Removed`).
pub fn user_subject(prefix: &str, uid: i64) -> String {
    format!("{prefix}.user.{uid}")
}

/// What every room's subject looks like, to name spans by (OpenTelemetry's
/// `messaging.destination.template`): a room id would make a span name per room.
pub fn room_subject_template(prefix: &str) -> String {
    format!("{prefix}.room.{{id}}")
}

/// What every user's subject looks like.
pub fn user_subject_template(prefix: &str) -> String {
    format!("{prefix}.user.{{uid}}")
}

/// Publishes `payload` on `subject`, in a span of its own whose trace goes
/// on in the message's headers, to every listener. The span is named by the
/// subject's `template` (`publish chat.room.{id}`), not the subject: one
/// span name, not one per room. At most once, as NATS is.
pub async fn publish(
    nats: &async_nats::Client,
    subject: String,
    template: &str,
    payload: Vec<u8>,
) -> Result<(), async_nats::PublishError> {
    let span = tracing::info_span!(
        "nats.publish",
        otel.name = format!("publish {template}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = subject.as_str(),
        messaging.destination.template = template,
    );
    let mut headers = async_nats::HeaderMap::new();
    for (key, value) in &telemetry::context_of(&span) {
        headers.insert(key.as_str(), value.as_str());
    }
    let published = nats.publish_with_headers(subject, headers, payload.into()).await;
    if published.is_err() {
        metrics::counter!(NATS_PUBLISH_ERRORS).increment(1);
        span.record("otel.status_code", "ERROR");
    }
    published
}

/// What a listener gets of an event; `None` for one it does not show.
pub type Listen<E> = fn(Event) -> Option<E>;

/// A user's event saying they are no longer a member of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    pub room_id: i64,
    /// Who removed them; 0 when they left.
    pub removed_by: i64,
}

/// The [`Listen`] of a user's feed: their removals from rooms.
pub fn removal(event: Event) -> Option<Removal> {
    match event.kind {
        Some(Kind::Removed(removed)) => Some(Removal { room_id: event.room_id, removed_by: removed.removed_by }),
        _ => None,
    }
}

type Feeds<E> = Arc<Mutex<HashMap<i64, Weak<Feed<E>>>>>;

/// The feeds of one kind of subject: rooms' or users'.
pub struct Hub<E> {
    nats: async_nats::Client,
    subject_prefix: String,
    subject: fn(&str, i64) -> String,
    /// The subjects' template, that names the spans.
    template: String,
    listen: Listen<E>,
    queue: usize,
    /// The `transport` label of the broadcast latency: who listens.
    transport: &'static str,
    /// `chat_room_feeds`, for the feeds of rooms.
    open: Option<Gauge>,
    feeds: Feeds<E>,
}

/// A room's (or user's) feed; it lives as long as some listener holds it.
pub struct Feed<E> {
    /// The room's (or user's) id.
    id: i64,
    sender: broadcast::Sender<E>,
    board: Arc<Board<E>>,
    recent: Arc<Mutex<Recent>>,
    task: AbortHandle,
    feeds: Feeds<E>,
    open: Option<Gauge>,
}

impl<E: Clone> Feed<E> {
    pub fn subscribe(&self) -> broadcast::Receiver<E> {
        self.sender.subscribe()
    }

    /// The presence and typing of the room's members from now on, for a
    /// listener of `uid`'s: never their own.
    pub fn live(&self, uid: i64) -> Cursor<E> {
        self.board.cursor(uid)
    }

    /// Whether an online list read at `at` can be brought up to date by
    /// [`Feed::online_since`]: it was read after this feed began listening,
    /// and not too long ago.
    pub fn covers(&self, at: Instant) -> bool {
        self.recent.lock().expect("lock poisoned").covers(at)
    }

    /// `online`, the room's members online as read at `at` (ascending),
    /// with the presence changes this feed heard since applied; `None`
    /// when it does not [cover](Feed::covers) `at`.
    pub fn online_since(&self, at: Instant, online: &[i64]) -> Option<Vec<i64>> {
        self.recent.lock().expect("lock poisoned").apply_since(at, online)
    }
}

impl<E> Drop for Feed<E> {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.decrement(1.0);
        }
        // Ends the subscriber task, which unsubscribes from NATS.
        self.task.abort();
        let mut feeds = self.feeds.lock().expect("lock poisoned");
        // A new feed for the room may have replaced this one already.
        if feeds.get(&self.id).is_some_and(|feed| feed.strong_count() == 0) {
            feeds.remove(&self.id);
        }
    }
}

impl<E: Clone + Send + 'static> Hub<E> {
    /// Room N's events come from `<subject_prefix>.room.N`, each turned
    /// into what listeners get by `listen`; each listener may fall `queue`
    /// events behind. The listeners are of `transport` (`ws`, `grpc`).
    pub fn rooms(
        nats: async_nats::Client,
        subject_prefix: String,
        queue: usize,
        listen: Listen<E>,
        transport: &'static str,
    ) -> Self {
        let template = room_subject_template(&subject_prefix);
        let open = Some(metrics::gauge!(ROOM_FEEDS));
        Self { subject: room_subject, template, open, ..Self::users(nats, subject_prefix, queue, listen, transport) }
    }

    /// As [`Hub::rooms`], for user N's events, from `<subject_prefix>.user.N`.
    pub fn users(
        nats: async_nats::Client,
        subject_prefix: String,
        queue: usize,
        listen: Listen<E>,
        transport: &'static str,
    ) -> Self {
        Self {
            template: user_subject_template(&subject_prefix),
            nats,
            subject_prefix,
            subject: user_subject,
            listen,
            queue,
            transport,
            open: None,
            feeds: Arc::default(),
        }
    }

    /// The room's (or user's) feed, subscribed to NATS before this returns,
    /// so that every event published afterwards reaches it.
    pub async fn feed(&self, id: i64) -> Result<Arc<Feed<E>>, async_nats::Error> {
        if let Some(feed) = self.feeds.lock().expect("lock poisoned").get(&id).and_then(Weak::upgrade) {
            return Ok(feed);
        }
        let subject = (self.subject)(&self.subject_prefix, id);
        let recent = Arc::new(Mutex::new(Recent::new(Instant::now())));
        let mut subscriber = self.nats.subscribe(subject.clone()).await?;
        // The server has the subscription once it answers a ping after it.
        self.nats.flush().await?;
        let (sender, _) = broadcast::channel(self.queue);
        let board = Arc::new(Board::default());
        let mut fanout = Fanout {
            id,
            listen: self.listen,
            to_listeners: sender.clone(),
            board: board.clone(),
            recent: recent.clone(),
            throttle: Throttle::default(),
        };
        let (template, name) = (self.template.clone(), format!("receive {}", self.template));
        let latency = metrics::histogram!(BROADCAST_LATENCY, "transport" => self.transport);
        let task = tokio::spawn(async move {
            loop {
                // Far off when nothing is held back; the branch is off then.
                let held = fanout.throttle.next_end();
                let release = sleep_until(held.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
                tokio::select! {
                    message = subscriber.next() => {
                        let Some(message) = message else { return };
                        let span = tracing::info_span!(
                            "nats.receive",
                            otel.name = name.as_str(),
                            otel.kind = "consumer",
                            messaging.system = "nats",
                            messaging.operation.type = "receive",
                            messaging.operation.name = "receive",
                            messaging.destination.name = subject.as_str(),
                            messaging.destination.template = template.as_str(),
                            chat.room.id = tracing::field::Empty,
                            chat.fanout.listeners = tracing::field::Empty,
                        );
                        let carried =
                            telemetry::fields_from(|field| Some(message.headers.as_ref()?.get(field)?.as_str()));
                        telemetry::continue_trace(&span, &carried);
                        let _in_span = span.enter();
                        match Event::decode(message.payload) {
                            Ok(event) => {
                                span.record("chat.room.id", event.room_id);
                                let at = event.timestamp.and_then(|at| {
                                    let since = Duration::new(at.seconds.try_into().ok()?, at.nanos.try_into().ok()?);
                                    Some(SystemTime::UNIX_EPOCH + since)
                                });
                                // Presence and typing go on the board, for listeners to read when they can.
                                if let Some(listeners) = fanout.pass(event) {
                                    // As i64: OpenTelemetry has no unsigned integers.
                                    span.record("chat.fanout.listeners", listeners as i64);
                                    if let Some(waited) = at.and_then(|at| at.elapsed().ok()) {
                                        latency.record(waited.as_secs_f64());
                                    }
                                }
                            }
                            Err(error) => tracing::error!(%error, subject = subject.as_str(), "undecodable live event"),
                        }
                    }
                    () = release, if held.is_some() => fanout.release(),
                }
            }
        })
        .abort_handle();
        let mut feeds = self.feeds.lock().expect("lock poisoned");
        // Another listener may have created the feed while this one subscribed.
        if let Some(existing) = feeds.get(&id).and_then(Weak::upgrade) {
            task.abort();
            return Ok(existing);
        }
        if let Some(open) = &self.open {
            open.increment(1.0);
        }
        let feed =
            Arc::new(Feed { id, sender, board, recent, task, feeds: self.feeds.clone(), open: self.open.clone() });
        feeds.insert(id, Arc::downgrade(&feed));
        Ok(feed)
    }

    /// How many events each listener may fall behind.
    pub fn queue(&self) -> usize {
        self.queue
    }

    pub fn nats_connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }
}

/// A feed's task: each event from NATS to the listeners.
struct Fanout<E> {
    id: i64,
    listen: Listen<E>,
    to_listeners: broadcast::Sender<E>,
    board: Arc<Board<E>>,
    recent: Arc<Mutex<Recent>>,
    throttle: Throttle,
}

impl<E: Clone> Fanout<E> {
    /// Passes an event on: how many listeners it went to, or `None` for
    /// one put on the board.
    fn pass(&mut self, event: Event) -> Option<usize> {
        match &event.kind {
            Some(Kind::Presence(presence)) => {
                let now = Instant::now();
                self.recent.lock().expect("lock poisoned").heard(event.uid, presence.online, now);
                if self.throttle.offer(event.uid, presence.online, now) {
                    self.show(About::Presence(event.uid), event);
                }
                None
            }
            Some(Kind::Typing(_)) => {
                self.show(About::Typing(event.uid), event);
                None
            }
            // No receivers only means every listener just left.
            _ => Some((self.listen)(event).map_or(0, |shown| self.to_listeners.send(shown).unwrap_or(0))),
        }
    }

    /// The presence changes held back whose second is over.
    fn release(&mut self) {
        for (uid, online) in self.throttle.due(Instant::now()) {
            let event =
                Event { room_id: self.id, uid, kind: Some(Kind::Presence(Presence { online })), ..live::event() };
            self.show(About::Presence(uid), event);
        }
    }

    fn show(&self, about: About, event: Event) {
        if let Some(shown) = (self.listen)(event) {
            self.board.put(about, shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_is_seen_from_the_clients_count_before_its_event_comes() {
        let stats = Arc::new(async_nats::Statistics::default());
        stats.connects.store(1, Ordering::Relaxed);
        let (announce, wake) = watch::channel(1_u64);
        let mut reconnects = Reconnects::new(stats.clone(), wake);
        assert!(!reconnects.came_back(), "the first connect is no reconnect");
        let mut later = reconnects.from_now();
        // The client counts the new connection before it passes on its
        // first message; the event has not come yet.
        stats.connects.store(2, Ordering::Relaxed);
        assert!(reconnects.came_back());
        assert!(!reconnects.came_back(), "seen once");
        announce.send_replace(2);
        assert!(!reconnects.came_back(), "the late event is the same reconnect");
        assert!(later.came_back(), "every listener sees it");
        assert!(!later.from_now().came_back());
    }
}
