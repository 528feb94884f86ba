//! Redis in front of the hot reads. It only ever accelerates: every read
//! falls back to PostgreSQL on a miss or when Redis is unreachable, and every
//! write path deletes the keys it affects after the database commit.
//!
//! The recent history of a room is the one place where Redis holds what
//! PostgreSQL may not have yet: events the archiver has not stored. It is
//! two sorted sets of the same members (each an event with its offset in
//! the message log): every event by id (entries and changes to them, as
//! resuming replays them), and the changes alone by the entry they change
//! (so that an entry's latest state is its stored state and its cached
//! changes). An event leaves only once the archiver has stored it, so the
//! reader can tell when the cache and PostgreSQL together cannot answer
//! (see `history`); and a change stays as long as its entry does, so an
//! entry read from the cache has all its changes beside it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Serialize, de::DeserializeOwned};
use service_kit::db;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::metrics::CACHE_REQUESTS;

/// How long a cached value lives at most; a bound on the damage of a
/// stale entry left behind by a write that raced a read.
const TTL_SECS: u64 = 600;
/// How many of a room's newest events the recent-history cache keeps,
/// besides those the archiver has not stored yet.
pub const RECENT_EVENTS: usize = 200;
/// The most a room's recent history holds even when the archiver is
/// behind: beyond this, the oldest go, and readers that would need them are
/// told to retry instead of getting a short page. Beyond this many cached
/// changes, the room's recent history goes whole.
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

/// The byte after a member's offset: whether it is an entry of history or
/// a change to one (the scripts tell them apart by it).
const ENTRY: u8 = 0;
const CHANGE: u8 = 1;

impl Recent {
    /// A cached member: its 8-byte big-endian offset, a byte saying whether
    /// it is a change ([`CHANGE`]) or not, then the event.
    fn member(offset: i64, change: bool, encoded: &[u8]) -> Vec<u8> {
        let kind = if change { CHANGE } else { ENTRY };
        [&offset.to_be_bytes()[..], &[kind], encoded].concat()
    }

    fn decode(member: Vec<u8>) -> Option<Self> {
        let (offset, rest) = member.split_first_chunk::<8>()?;
        let (_, encoded) = rest.split_first()?;
        Some(Self { offset: i64::from_be_bytes(*offset), encoded: encoded.to_vec() })
    }

    fn decode_all(members: Vec<Vec<u8>>) -> Vec<Self> {
        members.into_iter().filter_map(Self::decode).collect()
    }
}

/// The room's oldest cached event, its id and offset, from a `ZRANGE 0 0
/// WITHSCORES`.
fn oldest_of(first: Vec<(Vec<u8>, f64)>) -> Option<(i64, i64)> {
    first.into_iter().next().and_then(|(member, id)| Some((id as i64, Recent::decode(member)?.offset)))
}

/// What the recent history holds of a range, and where it begins.
pub struct RecentPage {
    pub entries: Vec<Recent>,
    /// The room's oldest cached event: its id and offset.
    pub oldest: Option<(i64, i64)>,
}

/// What the recent history holds of a room's newest entries up to an id.
pub struct RecentEntries {
    /// Newest first; at most the number asked for.
    pub entries: Vec<Recent>,
    /// Every cached change to an entry up to that id.
    pub changes: Vec<Recent>,
    /// The room's oldest cached event: its id and offset.
    pub oldest: Option<(i64, i64)>,
}

/// What the recent history holds of one entry.
pub struct RecentEntry {
    /// The event with its id, if cached (it may be no entry).
    pub event: Option<Recent>,
    pub changes: Vec<Recent>,
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
    recent_entries: redis::Script,
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

/// Adds a member (an event) to a room's recent history, then trims it.
/// KEYS are the room's events and its changes; a change (TARGET, the entry
/// it changes, not empty) goes into both. Of the events beyond the newest
/// KEEP, only what the archiver has stored (offset below ARCHIVED) goes;
/// beyond MAX the oldest go regardless. A change goes once stored, unless
/// its entry is still among the cached events. Beyond MAX changes, the
/// room's recent history goes whole. A member starts with its 8-byte
/// big-endian offset.
const PUSH_RECENT: &str = r"
local events, changes = KEYS[1], KEYS[2]
local member, id, target = ARGV[1], ARGV[2], ARGV[3]
local keep, archived, max, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local function offset_of(m)
  local offset = 0
  for i = 1, 8 do offset = offset * 256 + string.byte(m, i) end
  return offset
end
redis.call('ZADD', events, id, member)
if target ~= '' then redis.call('ZADD', changes, target, member) end
local extra = redis.call('ZCARD', events) - keep
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', events, 0, extra - 1)) do
    if offset_of(old) < archived then redis.call('ZREM', events, old) end
  end
  local over = redis.call('ZCARD', events) - max
  if over > 0 then redis.call('ZREMRANGEBYRANK', events, 0, over - 1) end
end
local oldest = redis.call('ZRANGE', events, 0, 0, 'WITHSCORES')[2]
for _, old in ipairs(redis.call('ZRANGEBYSCORE', changes, '-inf', '(' .. oldest)) do
  if offset_of(old) < archived then redis.call('ZREM', changes, old) end
end
if redis.call('ZCARD', changes) > max then
  redis.call('DEL', events, changes)
  return
end
redis.call('EXPIRE', events, ttl)
redis.call('EXPIRE', changes, ttl)
";

/// A room's newest cached entries with ids up to MAX, LIMIT at most,
/// skipping the changes among the events (the byte after a member's
/// offset says which it is); every cached change to an entry up to MAX;
/// and the oldest cached event. One script, so that what it reads is one
/// moment's state: an entry with all its changes.
const RECENT_ENTRIES: &str = r"
local events, changes = KEYS[1], KEYS[2]
local max, limit = ARGV[1], tonumber(ARGV[2])
local entries, skip = {}, 0
while #entries < limit do
  local chunk = redis.call('ZREVRANGEBYSCORE', events, max, '-inf', 'LIMIT', skip, limit)
  for _, member in ipairs(chunk) do
    if string.byte(member, 9) == 0 and #entries < limit then table.insert(entries, member) end
  end
  if #chunk < limit then break end
  skip = skip + #chunk
end
return {entries, redis.call('ZRANGEBYSCORE', changes, '-inf', max), redis.call('ZRANGE', events, 0, 0, 'WITHSCORES')}
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
    /// `chat.events.v1.Event`s, no longer `chat.v1.Message`s. v4: a byte
    /// after the offset tells changes from entries.
    pub fn recent(room_id: i64) -> String {
        format!("recent-v4:{room_id}")
    }
    /// The cached changes of a room, by the entry they change.
    pub fn recent_changes(room_id: i64) -> String {
        format!("recent-changes-v4:{room_id}")
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
            recent_entries: redis::Script::new(RECENT_ENTRIES),
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

    /// Runs one command (`name`, for its span); any failure is logged and
    /// reads as "no cache".
    async fn run<T>(
        &self,
        name: &'static str,
        command: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let connection = self.connection().await?;
        match command(connection).instrument(db::redis(name)).await {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(%error, "redis command failed; serving from PostgreSQL");
                None
            }
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let key = self.key(key);
        let raw = self.run("GET", async |mut c| c.get::<_, Option<String>>(&key).await).await.flatten();
        let value = raw.and_then(|raw| {
            serde_json::from_str(&raw).inspect_err(|error| tracing::warn!(%error, key, "undecodable cache entry")).ok()
        });
        metrics::counter!(CACHE_REQUESTS, "result" => if value.is_some() { "hit" } else { "miss" }).increment(1);
        value
    }

    pub async fn set<T: Serialize>(&self, key: &str, value: &T) {
        let key = self.key(key);
        let Ok(raw) = serde_json::to_string(value) else {
            return;
        };
        self.run("SET", async |mut c| c.set_ex::<_, _, ()>(&key, raw, TTL_SECS).await).await;
    }

    pub async fn delete(&self, keys: &[String]) {
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        self.run("DEL", async |mut c| c.del::<_, ()>(&keys).await).await;
    }

    /// Adds one to a counter that expires `window` after its first count.
    pub async fn increment(&self, key: &str, window: Duration) {
        let key = self.key(key);
        self.run("PIPELINE", async |mut c| {
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
            self.run("PIPELINE", async |mut c| redis::pipe().get(&key).ttl(&key).query_async(&mut c).await).await?;
        Some((count?, ttl.max(1) as u64))
    }

    /// Adds an event, at `offset` in the log, to its room's recent history,
    /// sorted sets scored by id (and, for a change, by the entry it
    /// changes: `changed_entry`). Adding the same member again changes
    /// nothing. `archived` is an offset below which the archiver is known to
    /// have stored everything (a stale value only keeps more). False when
    /// Redis did not take it.
    pub async fn push_recent(
        &self,
        room_id: i64,
        id: i64,
        offset: i64,
        encoded: &[u8],
        changed_entry: Option<i64>,
        archived: i64,
    ) -> bool {
        let (events, changes) = (self.key(&key::recent(room_id)), self.key(&key::recent_changes(room_id)));
        let member = Recent::member(offset, changed_entry.is_some(), encoded);
        let target = changed_entry.map(|id| id.to_string()).unwrap_or_default();
        self.run("EVALSHA", async |mut c| {
            self.push_recent
                .key(&events)
                .key(&changes)
                .arg(member)
                .arg(id)
                .arg(target)
                .arg(RECENT_EVENTS)
                .arg(archived)
                .arg(RECENT_MAX)
                .arg(RECENT_TTL_SECS)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
        .is_some()
    }

    /// Deletes a room's recent history after an event could not be added:
    /// with a hole in it, it would answer for a range it does not hold.
    /// Retries in the background until Redis takes it or the entries would
    /// have expired anyway.
    pub fn forget_recent(self: &Arc<Self>, room_id: i64) {
        if !self.forgetting.lock().expect("lock poisoned").insert(room_id) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let keys = [cache.key(&key::recent(room_id)), cache.key(&key::recent_changes(room_id))];
            let give_up = Instant::now() + Duration::from_secs(RECENT_TTL_SECS as u64);
            while cache.run("DEL", async |mut c| c.del::<_, ()>(&keys).await).await.is_none()
                && Instant::now() < give_up
            {
                tokio::time::sleep(RECONNECT_BACKOFF / 4).await;
            }
            cache.forgetting.lock().expect("lock poisoned").remove(&room_id);
        });
    }

    /// Up to `limit` cached events of a room in `range`, of every kind;
    /// `None` when Redis cannot say.
    pub async fn recent(&self, room_id: i64, range: RecentRange, limit: usize) -> Option<RecentPage> {
        let key = self.key(&key::recent(room_id));
        type Members = Vec<Vec<u8>>;
        let (members, oldest): (Members, Vec<(Vec<u8>, f64)>) = self
            .run("PIPELINE", async |mut c| {
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
        Some(RecentPage { entries: Recent::decode_all(members), oldest: oldest_of(oldest) })
    }

    /// Up to `limit` of a room's newest cached entries with ids up to
    /// `max_id`, with every cached change to them; `None` when Redis cannot
    /// say.
    pub async fn recent_entries(&self, room_id: i64, max_id: i64, limit: usize) -> Option<RecentEntries> {
        let (events, changes) = (self.key(&key::recent(room_id)), self.key(&key::recent_changes(room_id)));
        type Read = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<(Vec<u8>, f64)>);
        let (entries, found, oldest): Read = self
            .run("EVALSHA", async |mut c| {
                self.recent_entries.key(&events).key(&changes).arg(max_id).arg(limit).invoke_async(&mut c).await
            })
            .await?;
        Some(RecentEntries {
            entries: Recent::decode_all(entries),
            changes: Recent::decode_all(found),
            oldest: oldest_of(oldest),
        })
    }

    /// The cached event with this id, if any, and the cached changes to the
    /// entry with it, read at one moment; `None` when Redis cannot say.
    pub async fn recent_entry(&self, room_id: i64, id: i64) -> Option<RecentEntry> {
        let (events, changes) = (self.key(&key::recent(room_id)), self.key(&key::recent_changes(room_id)));
        type Read = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<(Vec<u8>, f64)>);
        let (event, found, oldest): Read = self
            .run("MULTI", async |mut c| {
                redis::pipe()
                    .atomic()
                    .zrangebyscore(&events, id, id)
                    .zrangebyscore(&changes, id, id)
                    .zrange_withscores(&events, 0, 0)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Some(RecentEntry {
            event: Recent::decode_all(event).into_iter().next(),
            changes: Recent::decode_all(found),
            oldest: oldest_of(oldest),
        })
    }

    /// One call against a rate of one per `interval` with bursts of
    /// `burst`, shared by every replica: `Ok` if it may go ahead, else how
    /// long to wait; `None` when Redis cannot say.
    pub async fn take_token(&self, key: &str, interval: Duration, burst: u32) -> Option<Result<(), Duration>> {
        let key = self.key(key);
        let interval_us = interval.as_micros().max(1) as u64;
        let wait_us: u64 = self
            .run("EVALSHA", async |mut c| {
                self.take_token.key(&key).arg(interval_us).arg(burst).invoke_async(&mut c).await
            })
            .await?;
        Some(if wait_us == 0 { Ok(()) } else { Err(Duration::from_micros(wait_us)) })
    }

    /// Whether Redis answers right now.
    pub async fn ping(&self) -> bool {
        self.run("PING", async |mut c| redis::cmd("PING").query_async::<String>(&mut c).await).await.is_some()
    }
}
