//! Live feeds: one NATS subscription per room (or per user) while something
//! in this process listens to it. Each event (a `chat.events.v1.Event`) is
//! decoded and turned into `E` (a ready-to-write frame, say) once; every
//! listener then gets a clone of it from a bounded broadcast queue, and one
//! that falls too far behind learns so from
//! [`broadcast::error::RecvError::Lagged`].
//!
//! Each event received is one span, `receive <prefix>.room.{id}` (the
//! subject's template: one name for every room), continuing the trace of
//! its publication and carrying how many listeners it went to: one span per
//! event and process, never one per listener.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime},
};

use chat_proto::events::v1::{Event, event::Kind};
use futures::StreamExt;
use prost::Message as _;
use tokio::{sync::broadcast, task::AbortHandle};

use metrics::Gauge;

use crate::{
    metrics::{BROADCAST_LATENCY, ROOM_FEEDS},
    telemetry,
};

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
    task: AbortHandle,
    feeds: Feeds<E>,
    open: Option<Gauge>,
}

impl<E> Feed<E> {
    pub fn subscribe(&self) -> broadcast::Receiver<E> {
        self.sender.subscribe()
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
        let mut subscriber = self.nats.subscribe(subject.clone()).await?;
        // The server has the subscription once it answers a ping after it.
        self.nats.flush().await?;
        let (sender, _) = broadcast::channel(self.queue);
        let to_listeners = sender.clone();
        let listen = self.listen;
        let (template, name) = (self.template.clone(), format!("receive {}", self.template));
        let latency = metrics::histogram!(BROADCAST_LATENCY, "transport" => self.transport);
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
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
                let carried = telemetry::fields_from(|field| Some(message.headers.as_ref()?.get(field)?.as_str()));
                telemetry::continue_trace(&span, &carried);
                let _in_span = span.enter();
                match Event::decode(message.payload) {
                    Ok(event) => {
                        span.record("chat.room.id", event.room_id);
                        let at = event.timestamp.and_then(|at| {
                            let since_epoch = Duration::new(at.seconds.try_into().ok()?, at.nanos.try_into().ok()?);
                            Some(SystemTime::UNIX_EPOCH + since_epoch)
                        });
                        // No receivers only means every listener just left.
                        let listeners = listen(event).map_or(0, |shown| to_listeners.send(shown).unwrap_or(0));
                        // As i64: OpenTelemetry has no unsigned integers.
                        span.record("chat.fanout.listeners", listeners as i64);
                        if let Some(waited) = at.and_then(|at| at.elapsed().ok()) {
                            latency.record(waited.as_secs_f64());
                        }
                    }
                    Err(error) => tracing::error!(%error, subject = subject.as_str(), "undecodable live event"),
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
        let feed = Arc::new(Feed { id, sender, task, feeds: self.feeds.clone(), open: self.open.clone() });
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
