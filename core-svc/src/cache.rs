//! Redis in front of the hot reads. It only ever accelerates: every read
//! falls back to PostgreSQL on a miss or when Redis is unreachable, and every
//! write path deletes the keys it affects after the database commit.
//!
//! The recent history of a room is the one place where Redis holds what
//! PostgreSQL may not have yet: messages the archiver has not stored. Its
//! entries carry their offset in the message log, and an entry leaves only
//! once the archiver has stored it, so the reader can tell when the cache
//! and PostgreSQL together cannot answer (see `messages`).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::OnceCell;

/// How long a cached value lives at most; a bound on the damage of a
/// stale entry left behind by a write that raced a read.
const TTL_SECS: u64 = 600;
/// How many of a room's newest messages the recent-history cache keeps,
/// besides those the archiver has not stored yet.
pub const RECENT_MESSAGES: usize = 200;
/// The most a room's recent history holds even when the archiver is
/// behind: beyond this, the oldest go, and readers that would need them are
/// told to retry instead of getting a short page.
pub const RECENT_MAX: usize = 10_000;
/// A quiet room's recent history leaves the cache after this long.
const RECENT_TTL_SECS: i64 = 3600;
/// Redis is on the request path; a slow Redis must not make requests slow.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed connection attempt, requests go straight to PostgreSQL
/// for this long instead of each waiting for another attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// An event in a room's recent history, as the message log has it.
pub struct Recent {
    /// Its offset in its partition of the message log.
    pub offset: i64,
    /// The encoded `chat.events.v1.Event`.
    pub encoded: Vec<u8>,
}

impl Recent {
    /// A cached member: its 8-byte big-endian offset, then the message.
    fn decode(member: Vec<u8>) -> Option<Self> {
        let (offset, encoded) = member.split_first_chunk::<8>()?;
        Some(Self { offset: i64::from_be_bytes(*offset), encoded: encoded.to_vec() })
    }
}

/// What the recent history holds of a range, and where it begins.
pub struct RecentPage {
    pub entries: Vec<Recent>,
    /// The room's oldest cached message: its id and offset.
    pub oldest: Option<(i64, i64)>,
}

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
    /// Rooms whose recent history lost an entry and is being deleted.
    forgetting: Mutex<HashSet<i64>>,
    push_recent: redis::Script,
    take_token: redis::Script,
}

/// A generic cell rate algorithm step on Redis's own clock (one clock for
/// every replica): the key holds the theoretical arrival time, in
/// microseconds. A call that conforms moves it on by INTERVAL and answers
/// 0; one that does not leaves it and answers how many microseconds to
/// wait. BURST calls may come at once.
const TAKE_TOKEN: &str = r"
local key, interval, burst = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = math.max(tonumber(redis.call('GET', key)) or now, now)
local wait = tat - interval * (burst - 1) - now
if wait > 0 then return wait end
tat = tat + interval
redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
return 0
";

/// Adds a member to a room's recent history, then trims it: of what lies
/// beyond the newest KEEP, only what the archiver has stored (offset below
/// ARCHIVED) goes; beyond MAX the oldest go regardless. A member starts
/// with its 8-byte big-endian offset.
const PUSH_RECENT: &str = r"
local key, member, id = KEYS[1], ARGV[1], ARGV[2]
local keep, archived, max, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
redis.call('ZADD', key, id, member)
local extra = redis.call('ZCARD', key) - keep
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', key, 0, extra - 1)) do
    local offset = 0
    for i = 1, 8 do offset = offset * 256 + string.byte(old, i) end
    if offset < archived then redis.call('ZREM', key, old) end
  end
  local over = redis.call('ZCARD', key) - max
  if over > 0 then redis.call('ZREMRANGEBYRANK', key, 0, over - 1) end
end
redis.call('EXPIRE', key, ttl)
";

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
    /// v2: members carry their log offset. v3: the events are
    /// `chat.events.v1.Event`s, no longer `chat.v1.Message`s.
    pub fn recent(room_id: i64) -> String {
        format!("recent-v3:{room_id}")
    }
    pub fn login_failures(email: &str) -> String {
        format!("login-failures:{email}")
    }
    pub fn rate(limit: &str, of: &str) -> String {
        format!("rate:{limit}:{of}")
    }
}

impl Cache {
    pub fn new(url: &str, prefix: &str) -> Self {
        let client = redis::Client::open(url)
            .inspect_err(|error| tracing::error!(%error, "invalid REDIS_URL; running without a cache"))
            .ok();
        Self {
            prefix: prefix.to_owned(),
            client,
            connection: OnceCell::new(),
            last_failure: Mutex::new(None),
            forgetting: Mutex::new(HashSet::new()),
            push_recent: redis::Script::new(PUSH_RECENT),
            take_token: redis::Script::new(TAKE_TOKEN),
        }
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

    /// Adds a message, at `offset` in the log, to its room's recent history,
    /// a sorted set scored by id. Adding the same message again changes
    /// nothing. `archived` is an offset below which the archiver is known to
    /// have stored everything (a stale value only keeps more). False when
    /// Redis did not take it.
    pub async fn push_recent(&self, room_id: i64, id: i64, offset: i64, encoded: &[u8], archived: i64) -> bool {
        let key = self.key(&key::recent(room_id));
        let member = [&offset.to_be_bytes()[..], encoded].concat(); // as `Recent::decode` reads it
        self.run(async |mut c| {
            self.push_recent
                .key(&key)
                .arg(member)
                .arg(id)
                .arg(RECENT_MESSAGES)
                .arg(archived)
                .arg(RECENT_MAX)
                .arg(RECENT_TTL_SECS)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
        .is_some()
    }

    /// Deletes a room's recent history after an entry could not be added:
    /// with a hole in it, it would answer for a range it does not hold.
    /// Retries in the background until Redis takes it or the entries would
    /// have expired anyway.
    pub fn forget_recent(self: &Arc<Self>, room_id: i64) {
        if !self.forgetting.lock().expect("lock poisoned").insert(room_id) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let key = cache.key(&key::recent(room_id));
            let give_up = Instant::now() + Duration::from_secs(RECENT_TTL_SECS as u64);
            while cache.run(async |mut c| c.del::<_, ()>(&key).await).await.is_none() && Instant::now() < give_up {
                tokio::time::sleep(RECONNECT_BACKOFF / 4).await;
            }
            cache.forgetting.lock().expect("lock poisoned").remove(&room_id);
        });
    }

    /// Up to `limit` cached messages of a room in `range`; `None` when Redis
    /// cannot say.
    pub async fn recent(&self, room_id: i64, range: RecentRange, limit: usize) -> Option<RecentPage> {
        let key = self.key(&key::recent(room_id));
        type Members = Vec<Vec<u8>>;
        let (members, oldest): (Members, Vec<(Vec<u8>, f64)>) = self
            .run(async |mut c| {
                let mut pipe = redis::pipe();
                match range {
                    RecentRange::AtMost(max_id) => pipe.zrevrangebyscore_limit(&key, max_id, "-inf", 0, limit as isize),
                    RecentRange::After(min_id) => {
                        pipe.zrangebyscore_limit(&key, format!("({min_id}"), "+inf", 0, limit as isize)
                    }
                };
                pipe.zrange_withscores(&key, 0, 0).query_async(&mut c).await
            })
            .await?;
        let entries = members.into_iter().filter_map(Recent::decode).collect();
        let oldest =
            oldest.into_iter().next().and_then(|(member, id)| Some((id as i64, Recent::decode(member)?.offset)));
        Some(RecentPage { entries, oldest })
    }

    /// One call against a rate of one per `interval` with bursts of
    /// `burst`, shared by every replica: `Ok` if it may go ahead, else how
    /// long to wait; `None` when Redis cannot say.
    pub async fn take_token(&self, key: &str, interval: Duration, burst: u32) -> Option<Result<(), Duration>> {
        let key = self.key(key);
        let interval_us = interval.as_micros().max(1) as u64;
        let wait_us: u64 = self
            .run(async |mut c| self.take_token.key(&key).arg(interval_us).arg(burst).invoke_async(&mut c).await)
            .await?;
        Some(if wait_us == 0 { Ok(()) } else { Err(Duration::from_micros(wait_us)) })
    }

    /// Whether Redis answers right now.
    pub async fn ping(&self) -> bool {
        self.run(async |mut c| redis::cmd("PING").query_async::<String>(&mut c).await).await.is_some()
    }
}
