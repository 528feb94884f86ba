//! This gateway's live room feeds: one NATS subscription per room while at
//! least one of its sockets is in the room. Each event is decoded and turned
//! into its JSON frame once, here; every socket in the room then gets the
//! same bytes from a bounded broadcast queue.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use axum::extract::ws::Utf8Bytes;
use chat_proto::v1::Message;
use futures::StreamExt;
use prost::Message as _;
use tokio::{sync::broadcast, task::AbortHandle};

use crate::routes::MessageBody;

/// An event ready to be written to any socket.
#[derive(Clone, Debug)]
pub struct Frame {
    pub id: i64,
    pub json: Utf8Bytes,
}

impl Frame {
    pub fn new(message: Message) -> Self {
        let id = message.id;
        let json = serde_json::to_string(&MessageBody::from(message)).expect("a message serialises");
        Self { id, json: json.into() }
    }
}

pub struct Hub {
    nats: async_nats::Client,
    subject_prefix: String,
    queue_frames: usize,
    feeds: Arc<Mutex<HashMap<i64, Weak<Feed>>>>,
}

/// A room's feed; it lives as long as some socket holds it.
pub struct Feed {
    room_id: i64,
    sender: broadcast::Sender<Frame>,
    task: AbortHandle,
    feeds: Arc<Mutex<HashMap<i64, Weak<Feed>>>>,
}

impl Feed {
    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.sender.subscribe()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Ends the subscriber task, which unsubscribes from NATS.
        self.task.abort();
        let mut feeds = self.feeds.lock().expect("lock poisoned");
        // A new feed for the room may have replaced this one already.
        if feeds.get(&self.room_id).is_some_and(|feed| feed.strong_count() == 0) {
            feeds.remove(&self.room_id);
        }
    }
}

impl Hub {
    pub fn new(nats: async_nats::Client, subject_prefix: String, queue_frames: usize) -> Self {
        Self { nats, subject_prefix, queue_frames, feeds: Arc::default() }
    }

    /// The room's feed, subscribed to NATS before this returns, so that
    /// every event published afterwards reaches it.
    pub async fn feed(&self, room_id: i64) -> Result<Arc<Feed>, async_nats::Error> {
        if let Some(feed) = self.feeds.lock().expect("lock poisoned").get(&room_id).and_then(Weak::upgrade) {
            return Ok(feed);
        }
        let subject = format!("{}.room.{room_id}", self.subject_prefix);
        let mut subscriber = self.nats.subscribe(subject).await?;
        // The server has the subscription once it answers a ping after it.
        self.nats.flush().await?;
        let (sender, _) = broadcast::channel(self.queue_frames);
        let to_sockets = sender.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = subscriber.next().await {
                match Message::decode(event.payload) {
                    // No receivers only means every socket just left.
                    Ok(message) => drop(to_sockets.send(Frame::new(message))),
                    Err(error) => tracing::error!(%error, room_id, "undecodable live event"),
                }
            }
        })
        .abort_handle();
        let mut feeds = self.feeds.lock().expect("lock poisoned");
        // Another socket may have created the feed while this one subscribed.
        if let Some(existing) = feeds.get(&room_id).and_then(Weak::upgrade) {
            task.abort();
            return Ok(existing);
        }
        let feed = Arc::new(Feed { room_id, sender, task, feeds: self.feeds.clone() });
        feeds.insert(room_id, Arc::downgrade(&feed));
        Ok(feed)
    }

    pub fn nats_connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }
}
