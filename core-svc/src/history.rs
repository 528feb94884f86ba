//! A room's history as readers see it, from the recent-history cache first
//! and PostgreSQL for what the cache does not hold (PostgreSQL is asked
//! only for what the archiver is known to have stored).
//!
//! Two views of the same events:
//! - entries (messages, joins, leaves), newest first, each in its latest
//!   state: its stored state (the archiver applies changes as it stores
//!   them) with the changes the archiver may not have stored yet applied
//!   over it, from the cache;
//! - every event after an id, oldest first, as resuming replays them: the
//!   entries, and the edits, deletions and reactions as events of their own.
//!
//! A change is applied by its id, so applying one again, or an older one
//! after a newer, changes nothing: an entry's text is its latest edit's
//! (by id), a deletion is for good, and each user's reaction with an emoji
//! is their latest reaction event's.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chat_proto::{
    envelope,
    events::v1::{Deleted, Edited, Event, Reacted, event::Kind},
    v1::{HistoryRequest, Message, MessageKind},
};
use chrono::{DateTime, Utc};
use prost::Message as _;
use service_kit::db;
use sqlx::PgPool;
use tracing::Instrument;

use crate::{
    archive::ArchiveProgress,
    cache::{Cache, Recent, RecentRange},
    domain::{SearchQuery, timestamp},
    error::{Error, Result},
    events::Events,
    metrics::CACHE_REQUESTS,
};

pub const MAX_PAGE: u32 = 100;

/// How long a read waits for the archiver to store what it needs before
/// answering "temporarily unavailable". It is normally milliseconds behind.
const ARCHIVE_WAIT: Duration = Duration::from_secs(2);
const ARCHIVE_POLL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct HistoryStore {
    db: PgPool,
    cache: Arc<Cache>,
    events: Arc<Events>,
    archive: Arc<ArchiveProgress>,
}

/// An entry, and what its state was built from, so that each change is
/// applied by its id.
struct Entry {
    message: Message,
    /// The edit its text comes from; 0 if never edited.
    edit_id: i64,
    reactions: Reactions,
}

/// Each user's latest reaction event per emoji (keyed by emoji, then user):
/// its id, and whether it added the reaction.
type Reactions = BTreeMap<(String, i64), (i64, bool)>;

impl Entry {
    /// An entry as the log carried it, before any change.
    fn logged(event: Event) -> Option<Self> {
        let message = envelope::public(event)?;
        Some(Self { message, edit_id: 0, reactions: BTreeMap::new() })
    }

    fn apply(&mut self, change: &Event) {
        let message = &mut self.message;
        match &change.kind {
            Some(Kind::Edited(edited)) if !message.deleted && change.id > self.edit_id => {
                message.text.clone_from(&edited.text);
                message.edited_at = change.timestamp;
                self.edit_id = change.id;
            }
            Some(Kind::Deleted(_)) => {
                message.deleted = true;
                message.text.clear();
                message.edited_at = None;
                self.reactions.clear();
            }
            Some(Kind::Reacted(reacted)) if !message.deleted => {
                let latest = self.reactions.entry((reacted.emoji.clone(), change.uid)).or_insert((0, false));
                if change.id > latest.0 {
                    *latest = (change.id, reacted.added);
                }
            }
            _ => {}
        }
    }

    fn into_message(self) -> Message {
        let mut message = self.message;
        // The keys are in order of emoji, then user: each list ascends.
        for ((emoji, uid), (_, added)) in self.reactions {
            if added {
                message.reactions.entry(emoji).or_default().uids.push(uid);
            }
        }
        message
    }
}

/// Applies the changes (to any entries) to those of `entries` they change,
/// in id order.
fn apply_all(entries: &mut [Entry], changes: &[Event]) {
    let at: HashMap<i64, usize> = entries.iter().enumerate().map(|(at, entry)| (entry.message.id, at)).collect();
    let mut changes: Vec<&Event> = changes.iter().collect();
    changes.sort_by_key(|change| change.id);
    for change in changes {
        if let Some(&at) = change.changed_entry().and_then(|id| at.get(&id)) {
            entries[at].apply(change);
        }
    }
}

fn decoded(recent: Vec<Recent>) -> Vec<Event> {
    recent.iter().filter_map(|recent| Event::decode(recent.encoded.as_slice()).ok()).collect()
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    id: i64,
    room_id: i64,
    user_id: i64,
    kind: i16,
    text: String,
    reply_to: i64,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
    deleted: bool,
    edit_id: i64,
}

#[derive(sqlx::FromRow)]
struct ReactionRow {
    message_id: i64,
    emoji: String,
    user_id: i64,
    event_id: i64,
    added: bool,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    id: i64,
    room_id: i64,
    user_id: i64,
    message_id: i64,
    kind: i16,
    text: String,
    emoji: String,
    added: bool,
    created_at: DateTime<Utc>,
}

impl ChangeRow {
    /// The change as the log carried it.
    fn into_event(self) -> Option<Event> {
        let message_id = self.message_id;
        let kind = match MessageKind::try_from(i32::from(self.kind)).ok()? {
            MessageKind::Edit => Kind::Edited(Edited { message_id, text: self.text }),
            MessageKind::Delete => Kind::Deleted(Deleted { message_id }),
            MessageKind::Reaction => Kind::Reacted(Reacted { message_id, emoji: self.emoji, added: self.added }),
            _ => return None,
        };
        Some(Event {
            id: self.id,
            room_id: self.room_id,
            uid: self.user_id,
            timestamp: Some(timestamp(self.created_at)),
            kind: Some(kind),
        })
    }
}

const ENTRY_COLUMNS: &str = "id, room_id, user_id, kind, text, reply_to, created_at, edited_at, deleted, edit_id";

impl HistoryStore {
    pub fn new(db: PgPool, cache: Arc<Cache>, events: Arc<Events>, archive: Arc<ArchiveProgress>) -> Self {
        Self { db, cache, events, archive }
    }

    /// A page of history (see `HistoryRequest`): entries newest first, or
    /// with `after_id` every event after it, oldest first.
    pub async fn page(&self, room_id: i64, request: &HistoryRequest) -> Result<Vec<Message>> {
        let limit = match request.limit {
            0 => MAX_PAGE,
            limit @ 1..=MAX_PAGE => limit,
            _ => return Err(Error::invalid(format!("limit must be 1 to {MAX_PAGE}"))),
        } as usize;
        match request.after_id {
            Some(after) => self.events_after(room_id, after, limit).await,
            None if request.last_id > 0 => self.entries(room_id, request.last_id, limit).await,
            None if request.last_id == 0 => self.entries(room_id, i64::MAX, limit).await,
            None => Err(Error::invalid("invalid last id")),
        }
    }

    /// Up to `limit` entries with ids up to `max_id`, newest first, each in
    /// its latest state. The cache holds a contiguous run of each room's
    /// newest events and every event not yet archived, so what it lacks is
    /// older than what it has, and is in PostgreSQL once the archiver has
    /// passed the oldest event's place in the log. When it has not (or
    /// Redis cannot say), the read waits a little for it, then fails rather
    /// than skip an entry. The cached changes are read before PostgreSQL:
    /// one that has left the cache since was stored first.
    async fn entries(&self, room_id: i64, max_id: i64, limit: usize) -> Result<Vec<Message>> {
        let recent = self.cache.recent_entries(room_id, max_id, limit).await;
        let oldest = recent.as_ref().and_then(|recent| recent.oldest);
        let (cached, changes) = recent.map(|recent| (recent.entries, recent.changes)).unwrap_or_default();
        let mut entries: Vec<Entry> = decoded(cached).into_iter().filter_map(Entry::logged).collect();
        counted(entries.len() >= limit);
        if entries.len() < limit {
            self.archived_before(room_id, oldest.map(|(_, offset)| offset)).await?;
            // Every cached event up to `max_id` was read: the rest is older
            // than the oldest.
            let below = max_id.min(oldest.map_or(i64::MAX, |(id, _)| id.saturating_sub(1)));
            entries.extend(self.stored_entries(room_id, i64::MIN, below, limit - entries.len(), true).await?);
        }
        apply_all(&mut entries, &decoded(changes));
        Ok(entries.into_iter().map(Entry::into_message).collect())
    }

    /// Up to `limit` events after `after`, oldest first: what the cache
    /// holds, and before it what PostgreSQL holds (the entries there in
    /// their stored state, the changes beside them).
    async fn events_after(&self, room_id: i64, after: i64, limit: usize) -> Result<Vec<Message>> {
        let recent = self.cache.recent(room_id, RecentRange::After(after), limit).await;
        let oldest = recent.as_ref().and_then(|page| page.oldest);
        let cached: Vec<Message> = decoded(recent.map(|page| page.entries).unwrap_or_default())
            .into_iter()
            .filter_map(envelope::public)
            .collect();
        let answered = oldest.is_some_and(|(id, _)| id <= after);
        counted(answered);
        if answered {
            return Ok(cached);
        }
        // What lies between `after` and the cache can only be in PostgreSQL.
        self.archived_before(room_id, oldest.map(|(_, offset)| offset)).await?;
        let below = cached.first().map_or(i64::MAX, |first| first.id - 1);
        let entries = self.stored_entries(room_id, after + 1, below, limit, false).await?;
        let changes = self.stored_changes(room_id, after + 1, below, limit).await?;
        let mut page: Vec<Message> = entries
            .into_iter()
            .map(Entry::into_message)
            .chain(changes.into_iter().filter_map(envelope::public))
            .collect();
        page.sort_by_key(|message| message.id);
        page.truncate(limit);
        page.extend(cached.into_iter().take(limit - page.len()));
        Ok(page)
    }

    /// The entry `id` of the room in its latest state; `None` if the room
    /// has no such entry (the id may be a change's).
    pub async fn entry(&self, room_id: i64, id: i64) -> Result<Option<Message>> {
        let recent = self.cache.recent_entry(room_id, id).await;
        let oldest = recent.as_ref().and_then(|recent| recent.oldest);
        let (cached, changes) = recent.map(|recent| (recent.event, recent.changes)).unwrap_or_default();
        let mut entry = match decoded(cached.into_iter().collect()).pop() {
            Some(event) if event.is_entry() => Entry::logged(event),
            Some(_) => None,
            None => match self.stored_entries(room_id, id, id, 1, false).await?.pop() {
                Some(entry) => Some(entry),
                // The cache holds every event from its oldest on.
                None if oldest.is_some_and(|(oldest, _)| oldest <= id) => None,
                None => {
                    self.archived_before(room_id, oldest.map(|(_, offset)| offset)).await?;
                    self.stored_entries(room_id, id, id, 1, false).await?.pop()
                }
            },
        };
        if let Some(entry) = &mut entry {
            apply_all(std::slice::from_mut(entry), &decoded(changes));
        }
        Ok(entry.map(Entry::into_message))
    }

    /// Waits until PostgreSQL holds every event of the room logged before
    /// `offset`, or (with `None`) before the log's end as of now.
    async fn archived_before(&self, room_id: i64, offset: Option<i64>) -> Result<()> {
        let partition = self.events.partition_of(room_id);
        let needed = match offset {
            Some(offset) => offset,
            None => self.events.log_end(partition).await?,
        };
        let deadline = tokio::time::Instant::now() + ARCHIVE_WAIT;
        loop {
            let stored = self.archive.stored_below(partition).await?;
            if stored >= needed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(room_id, partition, stored, needed, "history not archived yet; read refused");
                return Err(Error::Unavailable("temporarily unavailable"));
            }
            tokio::time::sleep(ARCHIVE_POLL).await;
        }
    }

    /// Stored entries with ids in `min_id..=max_id`, in their stored state.
    async fn stored_entries(
        &self,
        room_id: i64,
        min_id: i64,
        max_id: i64,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<Entry>> {
        if limit == 0 || min_id > max_id {
            return Ok(Vec::new());
        }
        let order = if newest_first { "DESC" } else { "ASC" };
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM messages
              WHERE room_id = $1 AND id BETWEEN $2 AND $3 ORDER BY id {order} LIMIT $4"
        ))
        .bind(room_id)
        .bind(min_id)
        .bind(max_id)
        .bind(limit as i64)
        .fetch_all(&self.db)
        .instrument(db::postgres("SELECT messages"))
        .await?;
        self.with_reactions(rows).await
    }

    /// Entries as PostgreSQL holds them: their rows, with the reactions
    /// stored for them.
    async fn with_reactions(&self, rows: Vec<EntryRow>) -> Result<Vec<Entry>> {
        let ids: Vec<i64> = rows.iter().filter(|row| !row.deleted).map(|row| row.id).collect();
        let mut reactions: HashMap<i64, Reactions> = HashMap::new();
        if !ids.is_empty() {
            let rows: Vec<ReactionRow> = sqlx::query_as(
                "SELECT message_id, emoji, user_id, event_id, added FROM message_reactions WHERE message_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&self.db)
            .instrument(db::postgres("SELECT message_reactions"))
            .await?;
            for row in rows {
                reactions
                    .entry(row.message_id)
                    .or_default()
                    .insert((row.emoji, row.user_id), (row.event_id, row.added));
            }
        }
        Ok(rows
            .into_iter()
            .map(|row| Entry {
                message: Message {
                    id: row.id,
                    room_id: row.room_id,
                    uid: row.user_id,
                    kind: row.kind.into(),
                    text: row.text,
                    timestamp: Some(timestamp(row.created_at)),
                    reply_to: row.reply_to,
                    edited_at: row.edited_at.map(timestamp),
                    deleted: row.deleted,
                    ..Message::default()
                },
                edit_id: row.edit_id,
                reactions: reactions.remove(&row.id).unwrap_or_default(),
            })
            .collect())
    }

    /// The `message` entries matching every word of `query`, newest first,
    /// at most `limit` with ids up to `last_id` (0: from the newest): of the
    /// one room (which `uid` may read) or of every room of `uid`'s. Only
    /// PostgreSQL is searched: an entry the archiver has not stored yet
    /// (normally milliseconds) is found once it has, with its latest text
    /// (the archiver applies edits and deletions to the row).
    ///
    /// Planned afresh for each query's words (not a prepared statement,
    /// whose generic plan would take every word for equally rare): through
    /// `messages_search_idx` for a rare word, by reading the newest entries
    /// for a common one (see migration 0012).
    pub async fn search(
        &self,
        uid: i64,
        query: &SearchQuery,
        room_id: i64,
        last_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // Membership is PostgreSQL's word here, also for the one room the
        // caller was found to be a member of (through the cache): a member
        // removed since finds nothing.
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM messages
              WHERE to_tsvector('simple', text) @@ plainto_tsquery('simple', $1)
                AND kind = 1 AND NOT deleted
                AND room_id IN (SELECT room_id FROM room_members WHERE user_id = $2) AND ($3 = 0 OR room_id = $3)
                AND id <= $4
              ORDER BY id DESC LIMIT $5"
        ))
        .bind(query.as_ref())
        .bind(uid)
        .bind(room_id)
        .bind(if last_id == 0 { i64::MAX } else { last_id })
        .bind(i64::from(limit))
        .persistent(false)
        .fetch_all(&self.db)
        .instrument(db::postgres("SELECT messages"))
        .await?;
        Ok(self.with_reactions(rows).await?.into_iter().map(Entry::into_message).collect())
    }

    /// Stored changes with ids in `min_id..=max_id`, oldest first.
    async fn stored_changes(&self, room_id: i64, min_id: i64, max_id: i64, limit: usize) -> Result<Vec<Event>> {
        if min_id > max_id {
            return Ok(Vec::new());
        }
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT id, room_id, user_id, message_id, kind, text, emoji, added, created_at FROM message_changes
              WHERE room_id = $1 AND id BETWEEN $2 AND $3 ORDER BY id LIMIT $4",
        )
        .bind(room_id)
        .bind(min_id)
        .bind(max_id)
        .bind(limit as i64)
        .fetch_all(&self.db)
        .instrument(db::postgres("SELECT message_changes"))
        .await?;
        Ok(rows.into_iter().filter_map(ChangeRow::into_event).collect())
    }
}

/// Counts a history read the cache answered whole (a hit) or not.
fn counted(hit: bool) {
    metrics::counter!(CACHE_REQUESTS, "result" => if hit { "hit" } else { "miss" }).increment(1);
}

#[cfg(test)]
mod tests {
    use chat_proto::events::v1::Posted;

    use super::*;

    fn event(id: i64, uid: i64, kind: Kind) -> Event {
        Event {
            id,
            room_id: 1,
            uid,
            timestamp: Some(prost_types::Timestamp { seconds: id, nanos: 0 }),
            kind: Some(kind),
        }
    }

    fn posted() -> Entry {
        Entry::logged(event(10, 7, Kind::Posted(Posted { text: "first".into(), ..Posted::default() }))).unwrap()
    }

    fn edit(id: i64, text: &str) -> Event {
        event(id, 7, Kind::Edited(Edited { message_id: 10, text: text.into() }))
    }

    fn react(id: i64, uid: i64, emoji: &str, added: bool) -> Event {
        event(id, uid, Kind::Reacted(Reacted { message_id: 10, emoji: emoji.into(), added }))
    }

    fn state(changes: &[Event]) -> Message {
        let mut entries = [posted()];
        apply_all(&mut entries, changes);
        let [entry] = entries;
        entry.into_message()
    }

    #[test]
    fn the_latest_edit_wins_whatever_the_order_and_however_often() {
        let shown = state(&[edit(12, "third"), edit(11, "second"), edit(12, "third"), edit(11, "second")]);
        assert_eq!((shown.text.as_str(), shown.edited_at.unwrap().seconds), ("third", 12));
    }

    #[test]
    fn a_deletion_is_for_good_and_takes_the_reactions() {
        let deleted = event(13, 7, Kind::Deleted(Deleted { message_id: 10 }));
        let shown = state(&[react(11, 9, "👍", true), deleted, edit(14, "back?"), react(15, 9, "🎉", true)]);
        assert!(shown.deleted);
        assert_eq!(shown.text, "");
        assert!(shown.reactions.is_empty());
    }

    #[test]
    fn each_users_latest_reaction_counts_and_the_lists_ascend() {
        let shown = state(&[
            react(14, 9, "👍", false),
            react(11, 9, "👍", true),
            react(12, 3, "👍", true),
            react(13, 8, "👍", true),
            react(15, 8, "🎉", true),
            react(16, 8, "🎉", false),
        ]);
        assert_eq!(shown.reactions.len(), 1, "{:?}", shown.reactions);
        assert_eq!(shown.reactions["👍"].uids, [3, 8]);
    }

    #[test]
    fn a_change_to_another_entry_changes_nothing() {
        let other = event(11, 7, Kind::Edited(Edited { message_id: 99, text: "elsewhere".into() }));
        assert_eq!(state(&[other]).text, "first");
    }
}
