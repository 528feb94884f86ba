//! Redis in front of the hot reads. It only ever accelerates: every read
//! falls back to PostgreSQL on a miss or when Redis is unreachable, and every
//! write path deletes the keys it affects after the database commit.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::OnceCell;

/// How long a cached value lives at most; a bound on the damage of a
/// stale entry left behind by a write that raced a read.
const TTL_SECS: u64 = 600;
/// How many of a room's newest messages the recent-history cache keeps.
pub const RECENT_MESSAGES: isize = 200;
/// A quiet room's recent history leaves the cache after this long.
const RECENT_TTL_SECS: i64 = 3600;
/// Redis is on the request path; a slow Redis must not make requests slow.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed connection attempt, requests go straight to PostgreSQL
/// for this long instead of each waiting for another attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Which part of a room's recent history to read.
#[derive(Debug, Clone, Copy)]
pub enum RecentRange {
    /// Newest first, ids at most this.
    AtMost(i64),
    /// Oldest first, ids above this.
    After(i64),
}

pub struct Cache {
    prefix: String,
    client: Option<redis::Client>,
    connection: OnceCell<ConnectionManager>,
    last_failure: Mutex<Option<Instant>>,
}

/// The keys, in one place, so writers delete exactly what readers fill.
pub mod key {
    pub fn user(uid: i64) -> String {
        format!("user:{uid}")
    }
    pub fn user_rooms(uid: i64) -> String {
        format!("user:{uid}:rooms")
    }
    pub fn room(room_id: i64) -> String {
        format!("room:{room_id}")
    }
    pub fn member(room_id: i64, uid: i64) -> String {
        format!("member:{room_id}:{uid}")
    }
    pub fn recent(room_id: i64) -> String {
        format!("recent:{room_id}")
    }
    pub fn login_failures(email: &str) -> String {
        format!("login-failures:{email}")
    }
}

impl Cache {
    pub fn new(url: &str, prefix: &str) -> Self {
        let client = redis::Client::open(url)
            .inspect_err(|error| tracing::error!(%error, "invalid REDIS_URL; running without a cache"))
            .ok();
        Self { prefix: prefix.to_owned(), client, connection: OnceCell::new(), last_failure: Mutex::new(None) }
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(connection) = self.connection.get() {
            return Some(connection.clone());
        }
        let client = self.client.as_ref()?;
        let backing_off =
            self.last_failure.lock().expect("lock poisoned").is_some_and(|at| at.elapsed() < RECONNECT_BACKOFF);
        if backing_off {
            return None;
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        let connected =
            self.connection.get_or_try_init(|| ConnectionManager::new_with_config(client.clone(), config)).await;
        match connected {
            Ok(connection) => Some(connection.clone()),
            Err(error) => {
                tracing::warn!(%error, "redis unreachable; serving from PostgreSQL");
                *self.last_failure.lock().expect("lock poisoned") = Some(Instant::now());
                None
            }
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs one command; any failure is logged and reads as "no cache".
    async fn run<T>(&self, command: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>) -> Option<T> {
        let connection = self.connection().await?;
        match command(connection).await {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(%error, "redis command failed; serving from PostgreSQL");
                None
            }
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let key = self.key(key);
        let raw = self.run(async |mut c| c.get::<_, Option<String>>(&key).await).await.flatten()?;
        serde_json::from_str(&raw).inspect_err(|error| tracing::warn!(%error, key, "undecodable cache entry")).ok()
    }

    pub async fn set<T: Serialize>(&self, key: &str, value: &T) {
        let key = self.key(key);
        let Ok(raw) = serde_json::to_string(value) else {
            return;
        };
        self.run(async |mut c| c.set_ex::<_, _, ()>(&key, raw, TTL_SECS).await).await;
    }

    pub async fn delete(&self, keys: &[String]) {
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        self.run(async |mut c| c.del::<_, ()>(&keys).await).await;
    }

    /// Adds one to a counter that expires `window` after its first count.
    pub async fn increment(&self, key: &str, window: Duration) {
        let key = self.key(key);
        self.run(async |mut c| {
            redis::pipe()
                .incr(&key, 1)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(window.as_secs())
                .arg("NX")
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await;
    }

    /// A counter's value and the seconds until it expires.
    pub async fn counter(&self, key: &str) -> Option<(u64, u64)> {
        let key = self.key(key);
        let (count, ttl): (Option<u64>, i64) =
            self.run(async |mut c| redis::pipe().get(&key).ttl(&key).query_async(&mut c).await).await?;
        Some((count?, ttl.max(1) as u64))
    }

    /// Adds an encoded message to its room's recent history, a sorted set
    /// scored by id that keeps the newest [`RECENT_MESSAGES`]. Adding the same
    /// message again changes nothing.
    pub async fn push_recent(&self, room_id: i64, id: i64, encoded: &[u8]) {
        let key = self.key(&key::recent(room_id));
        self.run(async |mut c| {
            redis::pipe()
                .zadd(&key, encoded, id)
                .ignore()
                .zremrangebyrank(&key, 0, -(RECENT_MESSAGES + 1))
                .ignore()
                .expire(&key, RECENT_TTL_SECS)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await;
    }

    /// Up to `limit` cached messages of a room: newest first with ids at most
    /// `max_id`, or (with `ascending`) oldest first with ids above `min_id`.
    pub async fn recent(&self, room_id: i64, range: RecentRange, limit: usize) -> Option<Vec<Vec<u8>>> {
        let key = self.key(&key::recent(room_id));
        self.run(async |mut c| match range {
            RecentRange::AtMost(max_id) => c.zrevrangebyscore_limit(&key, max_id, "-inf", 0, limit as isize).await,
            RecentRange::After(min_id) => {
                c.zrangebyscore_limit(&key, format!("({min_id}"), "+inf", 0, limit as isize).await
            }
        })
        .await
    }

    /// Whether Redis answers right now.
    pub async fn ping(&self) -> bool {
        self.run(async |mut c| redis::cmd("PING").query_async::<String>(&mut c).await).await.is_some()
    }
}
