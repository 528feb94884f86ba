//! Who is online in each room, across every gateway and core-svc replica: a
//! member is online in a room while they have at least one socket (on any
//! gateway) or `Subscribe` stream (on any replica) open on it.
//!
//! Each process counts its own sockets and streams per room and member
//! ([`Here`]), and tells Redis only when a member's first one here opens or
//! their last one here closes. Redis holds, per room, a sorted set of entries
//! `<uid>:<process>`, each scored by when its lease ends, and a hash of how
//! many entries each member has. One script changes both together, so a
//! count is always the number of its member's entries: an entry added twice
//! is counted once, and a member comes online when their count leaves 0 and
//! goes offline when it returns to 0, once each, however many processes they
//! are on. Every such change is announced as one small live event on the
//! room's subject, so its cost does not grow with the room.
//!
//! A process renews its entries every sixth of a lease. One that dies stops
//! renewing them, and the next script run on the room removes them once the
//! lease has passed: every process with listeners in a room runs one (its
//! renewal) at least every sixth of a lease, so a dead process's members go
//! offline within a lease and a sixth of it ([`MAX_LEASE`] keeps that under
//! 60 s).
//! A crash can never leave a member online for good: nothing but renewals
//! keeps an entry alive, and the keys themselves expire two leases after the
//! last write.
//!
//! The keys are named from `REDIS_KEY_PREFIX` alone (no deployment id, which
//! only core-svc can read from PostgreSQL): every process that shares the
//! room subjects must share them. What a stale key could mislead, a lease
//! undoes. While Redis is unreachable, each process knows only its own
//! sockets and streams; renewals bring Redis up to date when it is back.
//!
//! A room's whole online list is read from Redis at most once a second per
//! process for the sockets entering it ([`Presence::online_lately`]), each
//! of which brings it up to date with the changes its room feed heard since
//! (`feeds::Feed::online_since`): 5,000 members entering one room at once,
//! each reading every entry, made 12.5 million reads of Redis.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use chat_proto::events::v1::{Event, Presence as PresenceEvent, event::Kind};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::{
    sync::{Notify, OnceCell},
    time::{Instant, MissedTickBehavior, interval},
};
use tracing::Instrument;

use crate::{live, metrics::PRESENCE_LIST_READS};

/// The default lease of a process's entries.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The longest lease allowed: a dead process's members go offline within a
/// lease and a sixth of one, plus the second that presence frames may be
/// held back (see [`live::Throttle`]), which must stay under 60 s.
pub const MAX_LEASE: Duration = Duration::from_secs(45);
/// The shortest lease allowed: renewals every sixth of it must stay cheap.
pub const MIN_LEASE: Duration = Duration::from_secs(2);
/// The most members one script call adds or removes, so that no call holds
/// Redis up for long (a few ms) when thousands arrive at once. A room's
/// renewal is one call up to this many members here: a process's own entry
/// that ran out (Redis was away longer than a lease) and is renewed in the
/// same call is no news to anyone.
const BATCH: usize = 2000;
/// The most expired entries one script call removes, for the same reason.
const SWEEP_LIMIT: usize = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read of a room's online list is shared by the callers of
/// [`Presence::online_lately`]. With the longest a read may take it stays
/// well within what a room feed remembers ([`live::RECENT`]).
pub const SHARED_FOR: Duration = Duration::from_secs(1);

/// KEYS: the room's entries (sorted set) and members (hash). ARGV: the
/// process, the lease in ms, whether to list the online members, how many
/// uids arrive, then the arriving uids, then the leaving ones. First removes
/// the expired entries (of processes that stopped renewing them), then adds
/// or renews the arrivals, then removes the leavers. Answers the uids that
/// came online, those that went offline (in that order of events: a member
/// may be in both, gone with a dead process and back with this one), and,
/// when asked, every member online now. Time is Redis's own, one clock for
/// every process.
const APPLY: &str = r"
local entries, users = KEYS[1], KEYS[2]
local process, lease, list, arriving = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local sweep_limit = tonumber(ARGV[5])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local came, gone = {}, {}
local function remove(entry)
  local uid = string.match(entry, '^(%d+):')
  if redis.call('HINCRBY', users, uid, -1) <= 0 then
    redis.call('HDEL', users, uid)
    table.insert(gone, tonumber(uid))
  end
end
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', entries, '-inf', now, 'LIMIT', 0, sweep_limit)) do
  redis.call('ZREM', entries, entry)
  remove(entry)
end
for i = 6, 5 + arriving do
  if redis.call('ZADD', entries, now + lease, ARGV[i] .. ':' .. process) == 1 then
    if redis.call('HINCRBY', users, ARGV[i], 1) == 1 then table.insert(came, tonumber(ARGV[i])) end
  end
end
for i = 6 + arriving, #ARGV do
  local entry = ARGV[i] .. ':' .. process
  if redis.call('ZREM', entries, entry) == 1 then remove(entry) end
end
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < 2 * lease then redis.call('PEXPIRE', key, 2 * lease) end
end
local online = {}
if list then
  for _, uid in ipairs(redis.call('HKEYS', users)) do table.insert(online, tonumber(uid)) end
end
return {came, gone, online}
";

/// This process's share of presence: its sockets and streams, and the work
/// of keeping Redis told. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    shared: Arc<Shared>,
}

struct Shared {
    /// Names this process's entries.
    process: String,
    prefix: String,
    lease: Duration,
    client: Option<redis::Client>,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    live: live::Publisher,
    local: Mutex<Local>,
    /// Per room, its latest read of the online list; the lock is held while
    /// one is made, so that callers meanwhile wait for it and share it.
    lately: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Option<Lately>>>>>,
    /// Wakes the worker when a member's first socket or stream here opened
    /// or their last one closed.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct Local {
    /// Sockets and streams open here, per room and member.
    open: HashMap<i64, HashMap<i64, usize>>,
    /// Per room, the members whose count here went from 0 or to 0 since
    /// Redis was last told.
    changed: HashMap<i64, HashSet<i64>>,
}

/// A room's online members as Redis said when a read began.
#[derive(Clone)]
pub struct Lately {
    pub at: Instant,
    /// Ascending; `None` when Redis could not say.
    pub online: Option<Arc<Vec<i64>>>,
}

/// One socket or stream of `uid` on a room; dropping it closes it.
pub struct Here {
    shared: Arc<Shared>,
    room_id: i64,
    uid: i64,
}

impl Drop for Here {
    fn drop(&mut self) {
        let mut local = self.shared.local.lock().expect("lock poisoned");
        let Some(room) = local.open.get_mut(&self.room_id) else { return };
        let Some(count) = room.get_mut(&self.uid) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        room.remove(&self.uid);
        if room.is_empty() {
            local.open.remove(&self.room_id);
        }
        local.changed.entry(self.room_id).or_default().insert(self.uid);
        drop(local);
        self.shared.changed.notify_one();
    }
}

impl Presence {
    /// Presence kept in the Redis at `redis_url` under `key_prefix`, its
    /// changes announced through `live`. Starts
    /// the worker that tells Redis and renews the leases (sweeping the rooms);
    /// it stops once every clone of this and every [`Here`] is gone.
    pub fn new(redis_url: &str, key_prefix: &str, lease: Duration, live: live::Publisher) -> Self {
        let client = redis::Client::open(redis_url)
            .inspect_err(|error| tracing::error!(%error, "invalid REDIS_URL; presence is this process's alone"))
            .ok();
        let shared = Arc::new(Shared {
            process: uuid::Uuid::new_v4().simple().to_string(),
            prefix: format!("{key_prefix}presence:"),
            lease: lease.clamp(MIN_LEASE, MAX_LEASE),
            client,
            connection: OnceCell::new(),
            script: redis::Script::new(APPLY),
            live,
            local: Mutex::default(),
            lately: Mutex::default(),
            changed: Arc::new(Notify::new()),
        });
        tokio::spawn(work(Arc::downgrade(&shared), shared.changed.clone(), shared.lease));
        Self { shared }
    }

    /// A socket or stream of `uid` opened on a room; it counts until the
    /// returned [`Here`] is dropped.
    pub fn arrive(&self, room_id: i64, uid: i64) -> Here {
        let mut local = self.shared.local.lock().expect("lock poisoned");
        let count = local.open.entry(room_id).or_default().entry(uid).or_default();
        *count += 1;
        if *count == 1 {
            local.changed.entry(room_id).or_default().insert(uid);
            drop(local);
            self.shared.changed.notify_one();
        }
        Here { shared: self.shared.clone(), room_id, uid }
    }

    /// The members online in a room, ascending. Those with a socket or
    /// stream here count even before Redis has been told; an error when
    /// Redis cannot say about the others.
    pub async fn online(&self, room_id: i64) -> redis::RedisResult<Vec<i64>> {
        let mut online = self.shared.apply(room_id, &[], &[], true).await?;
        online.extend(self.online_here(room_id));
        online.sort_unstable();
        online.dedup();
        Ok(online)
    }

    /// The members online in a room as read from Redis less than
    /// [`SHARED_FOR`] ago, at an instant that `usable` accepts (else read
    /// now): one read per room and second in this process, however many
    /// ask, for callers that bring it up to date themselves. Unlike
    /// [`Presence::online`], the list lacks this process's own sockets
    /// and streams that Redis has not been told of yet.
    pub async fn online_lately(&self, room_id: i64, usable: impl Fn(Instant) -> bool) -> Lately {
        let slot = self.shared.lately.lock().expect("lock poisoned").entry(room_id).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(lately) = slot.as_ref()
            && lately.at.elapsed() < SHARED_FOR
            && usable(lately.at)
        {
            return lately.clone();
        }
        let at = Instant::now();
        metrics::counter!(PRESENCE_LIST_READS).increment(1);
        let online = match self.shared.apply(room_id, &[], &[], true).await {
            Ok(mut online) => {
                online.sort_unstable();
                Some(Arc::new(online))
            }
            Err(error) => {
                tracing::warn!(%error, room_id, "cannot read who is online");
                None
            }
        };
        slot.insert(Lately { at, online }).clone()
    }

    /// The members with a socket or stream open on the room in this
    /// process, ascending: what [`Presence::online`] falls back to.
    pub fn online_here(&self, room_id: i64) -> Vec<i64> {
        let local = self.shared.local.lock().expect("lock poisoned");
        let mut online: Vec<i64> = local.open.get(&room_id).into_iter().flat_map(HashMap::keys).copied().collect();
        online.sort_unstable();
        online
    }

    /// Tells Redis what has changed here and not been told yet: part of a
    /// clean stop, after the sockets and streams have closed, so that their
    /// members go offline at once rather than when the leases run out.
    pub async fn flush(&self) {
        self.shared.tell_changes().await;
    }
}

/// The worker: tells Redis of changes as they come, and renews this
/// process's entries (sweeping their rooms) every sixth of a lease.
async fn work(shared: Weak<Shared>, changed: Arc<Notify>, lease: Duration) {
    let mut renew = interval(lease / 6);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // `shared` is not held while waiting: the last handle going away ends
    // the worker.
    loop {
        let task = tokio::select! {
            () = changed.notified() => Task::Changes,
            _ = renew.tick() => Task::Renew,
        };
        let Some(shared) = shared.upgrade() else { return };
        match task {
            Task::Changes => shared.tell_changes().await,
            Task::Renew => shared.renew().await,
        }
    }
}

enum Task {
    Changes,
    Renew,
}

impl Shared {
    /// Tells Redis of the members whose first socket or stream here opened
    /// or last one closed. Each is told as things stand when it is told, so
    /// a socket that opened and closed meanwhile costs nothing. One that
    /// Redis did not take is left to the next renewal (an arrival) or to
    /// its lease (a departure).
    async fn tell_changes(&self) {
        let changes: Vec<(i64, Vec<i64>, Vec<i64>)> = {
            let mut local = self.local.lock().expect("lock poisoned");
            let changed = std::mem::take(&mut local.changed);
            changed
                .into_iter()
                .map(|(room_id, uids)| {
                    let open = local.open.get(&room_id);
                    let (arriving, leaving) =
                        uids.into_iter().partition(|uid| open.is_some_and(|o| o.contains_key(uid)));
                    (room_id, arriving, leaving)
                })
                .collect()
        };
        for (room_id, arriving, leaving) in changes {
            self.apply_all(room_id, &arriving, &leaving).await;
        }
    }

    /// Renews every entry of this process: the leases move on, an entry
    /// that Redis lost (or that was swept while this process stalled) is
    /// added again, and the expired entries of the rooms this process has
    /// listeners in go, announced offline.
    async fn renew(&self) {
        let rooms: Vec<(i64, Vec<i64>)> = {
            let local = self.local.lock().expect("lock poisoned");
            // The reads of rooms nobody here is in any more are no use.
            self.lately.lock().expect("lock poisoned").retain(|room_id, _| local.open.contains_key(room_id));
            local.open.iter().map(|(room_id, uids)| (*room_id, uids.keys().copied().collect())).collect()
        };
        for (room_id, uids) in rooms {
            self.apply_all(room_id, &uids, &[]).await;
        }
    }

    async fn apply_all(&self, room_id: i64, arriving: &[i64], leaving: &[i64]) {
        let (mut arriving, mut leaving) = (arriving.chunks(BATCH), leaving.chunks(BATCH));
        loop {
            let (arrive, leave) = (arriving.next().unwrap_or_default(), leaving.next().unwrap_or_default());
            if arrive.is_empty() && leave.is_empty() {
                return;
            }
            if let Err(error) = self.apply(room_id, arrive, leave, false).await {
                tracing::warn!(%error, room_id, "cannot record presence; the next renewal will");
                return;
            }
        }
    }

    /// One script call on a room; announces who came and went. The members
    /// online, when `list` asks for them (else none).
    async fn apply(&self, room_id: i64, arriving: &[i64], leaving: &[i64], list: bool) -> redis::RedisResult<Vec<i64>> {
        let mut connection = self.connection().await?;
        let room = format!("{}{{{room_id}}}", self.prefix);
        let mut invocation = self.script.key(format!("{room}:entries"));
        invocation
            .key(format!("{room}:users"))
            .arg(&self.process)
            .arg(self.lease.as_millis() as u64)
            .arg(u8::from(list))
            .arg(arriving.len())
            .arg(SWEEP_LIMIT)
            .arg(arriving)
            .arg(leaving);
        let (came, gone, online): (Vec<i64>, Vec<i64>, Vec<i64>) =
            invocation.invoke_async(&mut connection).instrument(crate::db::redis("EVALSHA")).await?;
        // Swept and back in one call (this process's own entry, after it
        // could not renew it for a lease): online all along, no news.
        let back: HashSet<i64> = came.iter().filter(|uid| gone.contains(uid)).copied().collect();
        for uid in gone.iter().filter(|uid| !back.contains(uid)) {
            self.announce(room_id, *uid, false).await;
        }
        for uid in came.iter().filter(|uid| !back.contains(uid)) {
            self.announce(room_id, *uid, true).await;
        }
        Ok(online)
    }

    /// Tells the room's listeners everywhere that `uid` came or went.
    async fn announce(&self, room_id: i64, uid: i64, online: bool) {
        let event = Event { room_id, uid, kind: Some(Kind::Presence(PresenceEvent { online })), ..live::event() };
        self.live.publish(event).await;
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let Some(client) = &self.client else {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "invalid REDIS_URL")));
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        let connection =
            self.connection.get_or_try_init(|| ConnectionManager::new_with_config(client.clone(), config)).await?;
        Ok(connection.clone())
    }
}
