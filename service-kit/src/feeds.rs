//! Live room feeds: one NATS subscription per room while something in this
//! process listens to the room. Each event is decoded and turned into `E`
//! (a ready-to-write frame, say) once; every listener then gets a clone of it
//! from a bounded broadcast queue, and one that falls too far behind learns
//! so from [`broadcast::error::RecvError::Lagged`].
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

use chat_proto::v1::Message;
use futures::StreamExt;
use prost::Message as _;
use tokio::{sync::broadcast, task::AbortHandle};

use crate::{
    metrics::{BROADCAST_LATENCY, ROOM_FEEDS},
    telemetry,
};

/// The NATS subject of a room's live events.
pub fn room_subject(prefix: &str, room_id: i64) -> String {
    format!("{prefix}.room.{room_id}")
}

/// What every room's subject looks like, to name spans by (OpenTelemetry's
/// `messaging.destination.template`): a room id would make a span name per room.
pub fn room_subject_template(prefix: &str) -> String {
    format!("{prefix}.room.{{id}}")
}

type Feeds<E> = Arc<Mutex<HashMap<i64, Weak<Feed<E>>>>>;

pub struct Hub<E> {
    nats: async_nats::Client,
    subject_prefix: String,
    queue: usize,
    /// The `transport` label of the broadcast latency: who listens.
    transport: &'static str,
    feeds: Feeds<E>,
}

/// A room's feed; it lives as long as some listener holds it.
pub struct Feed<E> {
    room_id: i64,
    sender: broadcast::Sender<E>,
    task: AbortHandle,
    feeds: Feeds<E>,
}

impl<E> Feed<E> {
    pub fn subscribe(&self) -> broadcast::Receiver<E> {
        self.sender.subscribe()
    }
}

impl<E> Drop for Feed<E> {
    fn drop(&mut self) {
        metrics::gauge!(ROOM_FEEDS).decrement(1.0);
        // Ends the subscriber task, which unsubscribes from NATS.
        self.task.abort();
        let mut feeds = self.feeds.lock().expect("lock poisoned");
        // A new feed for the room may have replaced this one already.
        if feeds.get(&self.room_id).is_some_and(|feed| feed.strong_count() == 0) {
            feeds.remove(&self.room_id);
        }
    }
}

impl<E: From<Message> + Clone + Send + 'static> Hub<E> {
    /// Room N's events come from `<subject_prefix>.room.N`; each listener
    /// may fall `queue` events behind. The listeners are of `transport`.
    pub fn new(nats: async_nats::Client, subject_prefix: String, queue: usize, transport: &'static str) -> Self {
        Self { nats, subject_prefix, queue, transport, feeds: Arc::default() }
    }

    /// The room's feed, subscribed to NATS before this returns, so that
    /// every event published afterwards reaches it.
    pub async fn feed(&self, room_id: i64) -> Result<Arc<Feed<E>>, async_nats::Error> {
        if let Some(feed) = self.feeds.lock().expect("lock poisoned").get(&room_id).and_then(Weak::upgrade) {
            return Ok(feed);
        }
        let mut subscriber = self.nats.subscribe(room_subject(&self.subject_prefix, room_id)).await?;
        // The server has the subscription once it answers a ping after it.
        self.nats.flush().await?;
        let (sender, _) = broadcast::channel(self.queue);
        let to_listeners = sender.clone();
        let template = room_subject_template(&self.subject_prefix);
        let name = format!("receive {template}");
        let latency = metrics::histogram!(BROADCAST_LATENCY, "transport" => self.transport);
        let task = tokio::spawn(async move {
            while let Some(event) = subscriber.next().await {
                let span = tracing::info_span!(
                    "nats.receive",
                    otel.name = name.as_str(),
                    otel.kind = "consumer",
                    messaging.system = "nats",
                    messaging.operation.type = "receive",
                    messaging.operation.name = "receive",
                    messaging.destination.name = %event.subject,
                    messaging.destination.template = template.as_str(),
                    chat.room.id = room_id,
                    chat.fanout.listeners = tracing::field::Empty,
                );
                let carried = telemetry::fields_from(|field| Some(event.headers.as_ref()?.get(field)?.as_str()));
                telemetry::continue_trace(&span, &carried);
                let _in_span = span.enter();
                match Message::decode(event.payload) {
                    Ok(message) => {
                        let sent = message.timestamp.and_then(|at| {
                            Some(
                                SystemTime::UNIX_EPOCH
                                    + Duration::new(at.seconds.try_into().ok()?, at.nanos.try_into().ok()?),
                            )
                        });
                        // No receivers only means every listener just left.
                        let listeners = to_listeners.send(E::from(message)).unwrap_or(0);
                        span.record("chat.fanout.listeners", listeners as i64);
                        if let Some(waited) = sent.and_then(|sent| sent.elapsed().ok()) {
                            latency.record(waited.as_secs_f64());
                        }
                    }
                    Err(error) => tracing::error!(%error, room_id, "undecodable live event"),
                }
            }
        })
        .abort_handle();
        let mut feeds = self.feeds.lock().expect("lock poisoned");
        // Another listener may have created the feed while this one subscribed.
        if let Some(existing) = feeds.get(&room_id).and_then(Weak::upgrade) {
            task.abort();
            return Ok(existing);
        }
        let feed = Arc::new(Feed { room_id, sender, task, feeds: self.feeds.clone() });
        metrics::gauge!(ROOM_FEEDS).increment(1.0);
        feeds.insert(room_id, Arc::downgrade(&feed));
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
