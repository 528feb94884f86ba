//! Live-only events (presence, typing): `chat.events.v1.Event`s with id 0,
//! published straight on a room's subject, never through the message log
//! nor the recent-history cache; the [`Throttle`] that holds presence
//! frames back to one per member per second; the [`Board`] a room feed
//! keeps them on for its listeners; and the [`Recent`] presence changes it
//! heard, that bring an online list read a moment ago up to date.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_proto::events::v1::Event;
use futures::StreamExt;
use prost::Message as _;
use tokio::{sync::watch, time::Instant};
use tokio_stream::wrappers::WatchStream;

use crate::feeds::{self, room_subject, room_subject_template};

/// How often, at most, each listener hears of one member's presence.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// How long a member's typing is news: an older one is not passed on to a
/// listener that comes to it late.
pub const TYPING_NEWS: Duration = Duration::from_secs(3);
/// The most entries a listener takes from a board at once.
const TAKE: usize = 64;
/// How long a feed remembers the presence changes it heard: longer than an
/// online list is shared for plus the longest its read may take (see
/// `presence::SHARED_FOR`).
pub const RECENT: Duration = Duration::from_secs(10);

/// A live-only event as of now; the caller sets the room, the user and the kind.
pub fn event() -> Event {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let timestamp = prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 };
    Event { id: 0, timestamp: Some(timestamp), ..Event::default() }
}

/// Publishes live-only events on the room subjects under a prefix.
#[derive(Clone)]
pub struct Publisher {
    pub nats: async_nats::Client,
    pub subject_prefix: String,
}

impl Publisher {
    /// Publishes on the event's room's subject, in the trace of the current
    /// span. At most once, as NATS is: a lost one is not retried.
    pub async fn publish(&self, event: Event) {
        let subject = room_subject(&self.subject_prefix, event.room_id);
        let template = room_subject_template(&self.subject_prefix);
        if let Err(error) = feeds::publish(&self.nats, subject, &template, event.encode_to_vec()).await {
            tracing::warn!(%error, room_id = event.room_id, "cannot publish a live event");
        }
    }
}

/// Presence changes of one room, held back so that each member's reach the
/// listeners at most once per [`PRESENCE_EVERY`]: the first passes at once;
/// those that follow within the period wait for its end, and then only the
/// latest passes, if it differs from what passed before (a member who went
/// and came back meanwhile passes nothing). One per room feed, so every
/// socket and stream of the feed gets the same frames.
#[derive(Default)]
pub struct Throttle {
    /// The members whose presence passed within the period.
    members: HashMap<i64, Passed>,
    /// When each member's period ends, in the order they passed (which is
    /// the order their periods end in).
    ends: VecDeque<(Instant, i64)>,
}

struct Passed {
    at: Instant,
    online: bool,
    /// The latest change since, held back.
    held: Option<bool>,
}

impl Throttle {
    /// A change of `uid`'s presence: `true` if it passes now, `false` if it
    /// is held back.
    pub fn offer(&mut self, uid: i64, online: bool, now: Instant) -> bool {
        match self.members.get_mut(&uid) {
            Some(passed) if now < passed.at + PRESENCE_EVERY => {
                passed.held = Some(online);
                false
            }
            // The period is over (`due` not yet asked): the listeners know
            // this already, whatever was held.
            Some(passed) if passed.online == online => {
                self.members.remove(&uid);
                false
            }
            _ => {
                self.pass(uid, online, now);
                true
            }
        }
    }

    /// The held-back changes whose period has ended by `now`, to pass on.
    pub fn due(&mut self, now: Instant) -> Vec<(i64, bool)> {
        let mut due = Vec::new();
        while let Some(&(end, uid)) = self.ends.front()
            && end <= now
        {
            self.ends.pop_front();
            let Some(passed) = self.members.get_mut(&uid) else { continue };
            if passed.at + PRESENCE_EVERY != end {
                // A later period of the member's is still to end.
                continue;
            }
            match passed.held.take() {
                Some(online) if online != passed.online => {
                    self.pass(uid, online, now);
                    due.push((uid, online));
                }
                _ => drop(self.members.remove(&uid)),
            }
        }
        due
    }

    /// When the next period ends, if a change may be waiting for it.
    pub fn next_end(&self) -> Option<Instant> {
        self.ends.front().map(|(end, _)| *end)
    }

    fn pass(&mut self, uid: i64, online: bool, now: Instant) {
        self.members.insert(uid, Passed { at: now, online, held: None });
        self.ends.push_back((now + PRESENCE_EVERY, uid));
    }
}

/// The presence changes a room feed heard in the last [`RECENT`], as they
/// came (before the [`Throttle`]): an enter takes the room's online list
/// read up to a second ago, shared by every enter of that second, and
/// applies what changed since it was read, rather than reading the whole
/// list again for each of thousands of members entering at once.
pub struct Recent {
    /// Each change, when it was heard, oldest first.
    changes: VecDeque<(Instant, i64, bool)>,
    /// Nothing heard up to this instant is known any more: the feed was not
    /// listening yet, or it was forgotten.
    unknown_to: Instant,
}

impl Recent {
    /// The changes of a feed that began listening after `unknown_to`.
    pub fn new(unknown_to: Instant) -> Self {
        Self { changes: VecDeque::new(), unknown_to }
    }

    /// `uid` came online (or went offline) `now`.
    pub fn heard(&mut self, uid: i64, online: bool, now: Instant) {
        self.changes.push_back((now, uid, online));
        while let Some(&(at, ..)) = self.changes.front()
            && at + RECENT < now
        {
            self.changes.pop_front();
            self.unknown_to = at;
        }
    }

    /// Whether every change heard after `at` is still known.
    pub fn covers(&self, at: Instant) -> bool {
        at > self.unknown_to
    }

    /// `online` (ascending) as it stands once the changes heard after `at`
    /// are applied, in the order they came; `None` if some may have been
    /// forgotten (see [`Recent::covers`]).
    pub fn apply_since(&self, at: Instant, online: &[i64]) -> Option<Vec<i64>> {
        if !self.covers(at) {
            return None;
        }
        let first = self.changes.partition_point(|&(heard, ..)| heard < at);
        let latest: HashMap<i64, bool> = self.changes.range(first..).map(|&(_, uid, online)| (uid, online)).collect();
        let mut applied: Vec<i64> = online.iter().copied().filter(|uid| latest.get(uid) != Some(&false)).collect();
        let came: Vec<i64> = latest
            .into_iter()
            .filter(|&(uid, online)| online && applied.binary_search(&uid).is_err())
            .map(|(uid, _)| uid)
            .collect();
        applied.extend(came);
        applied.sort_unstable();
        Some(applied)
    }
}

/// What a board entry is about: one member's presence, or their typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum About {
    Presence(i64),
    Typing(i64),
}

impl About {
    fn uid(self) -> i64 {
        match self {
            About::Presence(uid) | About::Typing(uid) => uid,
        }
    }
}

/// A room feed's live-only events, as `E`s ready for its listeners: the
/// latest of each member's presence and typing. A listener reads what
/// changed since it last read ([`Cursor`]), so one that falls behind gets
/// each member's latest, not every change, and never has to be cut off
/// (presence is state: with 5,000 members arriving at once, a queue of
/// events would overflow a slow socket's). Holds one entry per member and
/// kind, whatever the number of listeners.
pub struct Board<E> {
    entries: Mutex<Entries<E>>,
    /// The newest entry's sequence number.
    newest: watch::Sender<u64>,
}

struct Entries<E> {
    next: u64,
    /// Each member's and kind's latest: its sequence number, when it came,
    /// and what listeners get of it.
    latest: HashMap<About, (u64, Instant, E)>,
    /// The sequence numbers of `latest`, in order.
    order: BTreeMap<u64, About>,
}

impl<E: Clone> Default for Board<E> {
    fn default() -> Self {
        let entries = Entries { next: 1, latest: HashMap::new(), order: BTreeMap::new() };
        Self { entries: Mutex::new(entries), newest: watch::Sender::new(0) }
    }
}

impl<E: Clone> Board<E> {
    /// The latest of what `about` says, for every listener.
    pub fn put(&self, about: About, shown: E) {
        let mut entries = self.entries.lock().expect("lock poisoned");
        let seq = entries.next;
        entries.next += 1;
        if let Some((old, ..)) = entries.latest.insert(about, (seq, Instant::now(), shown)) {
            entries.order.remove(&old);
        }
        entries.order.insert(seq, about);
        drop(entries);
        self.newest.send_replace(seq);
    }

    /// A listener from now on, reading on behalf of `uid`: it never gets
    /// what is about `uid` themself.
    pub fn cursor(self: &Arc<Self>, uid: i64) -> Cursor<E> {
        let newest = self.newest.subscribe();
        let read_to = *newest.borrow();
        Cursor { board: self.clone(), read_to, newest: WatchStream::from_changes(newest), behind: false, uid }
    }
}

/// Where one listener has read a [`Board`] to.
pub struct Cursor<E> {
    board: Arc<Board<E>>,
    read_to: u64,
    /// Yields each time the board has something newer: one wait that
    /// stays registered however often the listener's task polls it (a
    /// socket's task polls it on every frame it writes), where a new
    /// `changed()` each time would register anew with the board's watch.
    newest: WatchStream<u64>,
    /// Whether the board may hold entries past `read_to`: it said so, or a
    /// take stopped at [`TAKE`]. The board's lock is taken only then.
    behind: bool,
    uid: i64,
}

impl<E: Clone> Cursor<E> {
    /// What changed since the last read (a member's typing only while it is
    /// news), oldest first, waiting for something if nothing did.
    pub async fn next(&mut self) -> Vec<E> {
        loop {
            if std::mem::take(&mut self.behind) {
                let taken = self.take();
                if !taken.is_empty() {
                    return taken;
                }
            }
            if self.newest.next().await.is_none() {
                return std::future::pending().await;
            }
            self.behind = true;
        }
    }

    /// As [`Cursor::next`], without waiting.
    pub fn take(&mut self) -> Vec<E> {
        let entries = self.board.entries.lock().expect("lock poisoned");
        let mut taken = Vec::new();
        let mut read = 0;
        for (&seq, &about) in entries.order.range(self.read_to + 1..).take(TAKE) {
            read += 1;
            self.read_to = seq;
            let (_, at, shown) = &entries.latest[&about];
            let stale = matches!(about, About::Typing(_)) && at.elapsed() > TYPING_NEWS;
            if about.uid() != self.uid && !stale {
                taken.push(shown.clone());
            }
        }
        self.behind = read == TAKE;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_gets_each_members_latest_since_it_last_read_but_never_its_own() {
        let board = Arc::new(Board::default());
        board.put(About::Presence(7), "7 online before");
        let mut cursor = board.cursor(1);
        assert!(cursor.take().is_empty(), "only what comes after it");
        board.put(About::Presence(7), "7 offline");
        board.put(About::Typing(8), "8 typing");
        board.put(About::Presence(1), "1 online");
        board.put(About::Presence(7), "7 online");
        assert_eq!(cursor.next().await, ["8 typing", "7 online"], "the latest of each, not its own");
        assert!(cursor.take().is_empty());
        let reading = tokio::spawn(async move { cursor.next().await });
        tokio::task::yield_now().await;
        board.put(About::Typing(9), "9 typing");
        assert_eq!(reading.await.unwrap(), ["9 typing"], "a waiting listener wakes");
    }

    #[test]
    fn a_board_holds_one_entry_per_member_and_kind_however_many_changes() {
        let board = Board::default();
        for n in 0..1000 {
            board.put(About::Presence(n % 10), n);
            board.put(About::Typing(n % 10), n);
        }
        let entries = board.entries.lock().unwrap();
        assert_eq!((entries.latest.len(), entries.order.len()), (20, 20));
    }

    #[test]
    fn an_online_list_read_earlier_is_brought_up_to_date_by_the_changes_heard_since() {
        let start = Instant::now();
        let mut recent = Recent::new(start);
        let at = |ms| start + Duration::from_millis(ms);
        recent.heard(3, true, at(10));
        let read = at(20);
        recent.heard(9, true, at(30));
        recent.heard(1, false, at(40));
        recent.heard(5, true, at(50));
        recent.heard(5, false, at(60));
        recent.heard(4, false, at(70));
        recent.heard(4, true, at(80));
        // Read after 3 came: the list has 3, and 4 who went and came back.
        assert_eq!(recent.apply_since(read, &[1, 2, 3, 4]), Some(vec![2, 3, 4, 9]));
        assert_eq!(recent.apply_since(at(100), &[1, 2]), Some(vec![1, 2]), "nothing heard since");
        assert_eq!(recent.apply_since(start, &[]), None, "read before the feed listened");
    }

    #[test]
    fn changes_older_than_recent_are_forgotten_and_a_list_read_before_them_is_not_brought_up_to_date() {
        let start = Instant::now();
        let mut recent = Recent::new(start);
        let read = start + Duration::from_millis(5);
        recent.heard(7, true, start + Duration::from_millis(10));
        assert!(recent.covers(read));
        recent.heard(8, true, start + RECENT + Duration::from_millis(20));
        assert_eq!(recent.changes.len(), 1, "7's is forgotten");
        assert_eq!(recent.apply_since(read, &[]), None, "it would lack 7");
        let later = start + Duration::from_millis(15);
        assert_eq!(recent.apply_since(later, &[7]), Some(vec![7, 8]));
    }

    #[test]
    fn the_first_change_passes_and_those_within_a_second_wait_for_its_end() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        assert!(throttle.offer(7, true, start));
        assert!(!throttle.offer(7, false, start + Duration::from_millis(100)));
        assert!(throttle.offer(8, true, start + Duration::from_millis(200)), "another member is not held");
        assert_eq!(throttle.next_end(), Some(start + PRESENCE_EVERY));
        assert!(throttle.due(start + Duration::from_millis(999)).is_empty());
        assert_eq!(throttle.due(start + PRESENCE_EVERY), [(7, false)]);
        assert_eq!(throttle.due(start + Duration::from_millis(1200)), [], "8 had nothing held");
        assert!(!throttle.offer(7, true, start + Duration::from_millis(1500)), "a new period began with the release");
        assert_eq!(throttle.due(start + Duration::from_millis(2000)), [(7, true)]);
    }

    #[test]
    fn a_member_who_went_and_came_back_within_the_period_passes_nothing_more() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        assert!(throttle.offer(7, true, start));
        assert!(!throttle.offer(7, false, start + Duration::from_millis(100)));
        assert!(!throttle.offer(7, true, start + Duration::from_millis(200)));
        assert_eq!(throttle.due(start + PRESENCE_EVERY), []);
        assert!(throttle.members.is_empty() && throttle.ends.is_empty(), "nothing is kept once a period ends quietly");
        assert!(throttle.offer(7, false, start + PRESENCE_EVERY), "then a change passes at once");
        let later = start + 3 * PRESENCE_EVERY;
        assert!(!throttle.offer(7, false, later), "a repeat of what passed last is not news");
        assert!(throttle.offer(7, true, later), "nor does it start a period");
    }

    #[test]
    fn at_most_one_change_per_member_passes_per_second_however_many_come() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        let mut passed = Vec::new();
        for ms in 0..5000u64 {
            let now = start + Duration::from_millis(ms);
            passed.extend(throttle.due(now).into_iter().map(|_| ms));
            if throttle.offer(7, ms % 2 == 0, now) {
                passed.push(ms);
            }
        }
        assert!(passed.windows(2).all(|pair| pair[1] - pair[0] >= 1000), "{passed:?}");
        assert!(passed.len() >= 4, "{passed:?}");
    }
}
