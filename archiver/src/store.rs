use std::collections::HashMap;

use chat_proto::{
    events::v1::{Event, event::Kind},
    v1::MessageKind,
};
use chrono::{DateTime, SubsecRound, Utc};
use rdkafka::{Offset, TopicPartitionList};
use service_kit::db;
use sqlx::PgPool;
use tracing::Instrument;

/// An entry of history (a message, a join, a leave) as its row in
/// `messages` holds it. `kind` is its `chat.v1.MessageKind`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub room_id: i64,
    pub user_id: i64,
    pub kind: i16,
    pub text: String,
    pub reply_to: i64,
    pub created_at: DateTime<Utc>,
}

/// A change to an entry (an edit, a deletion, a reaction) as its row in
/// `message_changes` holds it.
#[derive(Debug, PartialEq)]
pub struct ChangeRow {
    pub id: i64,
    pub room_id: i64,
    pub user_id: i64,
    pub message_id: i64,
    pub kind: i16,
    pub text: String,
    pub emoji: String,
    pub added: bool,
    pub created_at: DateTime<Utc>,
}

/// What a record's event is stored as.
#[derive(Debug, PartialEq)]
pub enum Stored {
    Entry(Row),
    Change(ChangeRow),
}

impl Stored {
    /// The row of an event. An event should carry the time it happened;
    /// one that does not (or carries an impossible one) takes the time the
    /// log gave its record, never 1970. Live-only events are no history.
    pub fn new(event: Event, logged_at_ms: Option<i64>) -> Result<Self, String> {
        let sent_at =
            event.timestamp.and_then(|at| DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?));
        let created_at = sent_at
            .or_else(|| DateTime::<Utc>::from_timestamp_millis(logged_at_ms?))
            .ok_or("no timestamp, in the event or the log")?
            // PostgreSQL keeps microseconds: cut to them here, so that the
            // row read back is equal to this one.
            .trunc_subsecs(6);
        let (id, room_id, user_id) = (event.id, event.room_id, event.uid);
        let entry = |kind: MessageKind, text: String, reply_to: i64| {
            Self::Entry(Row { id, room_id, user_id, kind: kind as i16, text, reply_to, created_at })
        };
        let change = |kind: MessageKind, message_id: i64| ChangeRow {
            id,
            room_id,
            user_id,
            message_id,
            kind: kind as i16,
            text: String::new(),
            emoji: String::new(),
            added: false,
            created_at,
        };
        Ok(match event.kind {
            Some(Kind::Posted(posted)) => entry(MessageKind::Message, posted.text, posted.reply_to),
            Some(Kind::Joined(_)) => entry(MessageKind::Join, String::new(), 0),
            Some(Kind::Left(_)) => entry(MessageKind::Leave, String::new(), 0),
            Some(Kind::Edited(edited)) => {
                Self::Change(ChangeRow { text: edited.text, ..change(MessageKind::Edit, edited.message_id) })
            }
            Some(Kind::Deleted(deleted)) => Self::Change(change(MessageKind::Delete, deleted.message_id)),
            Some(Kind::Reacted(reacted)) => Self::Change(ChangeRow {
                emoji: reacted.emoji,
                added: reacted.added,
                ..change(MessageKind::Reaction, reacted.message_id)
            }),
            _ => return Err("not an event of history".to_owned()),
        })
    }
}

/// A record of the log that cannot be stored as a message.
pub struct DeadLetter<'a> {
    pub partition: i32,
    pub offset: i64,
    pub message_id: Option<i64>,
    pub payload: Option<&'a [u8]>,
    /// "undecodable", "refused" or "id collision".
    pub reason: &'static str,
    /// The details, for whoever looks into it. Never logged: a database
    /// error may quote the record.
    pub error: String,
}

/// Writes rows in one statement; the ids of those it inserted. A row whose
/// id is stored already is skipped, so writing a batch twice is the same as
/// writing it once.
pub async fn insert(db: &PgPool, rows: &[&Row]) -> sqlx::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut rooms = Vec::with_capacity(rows.len());
    let mut users = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    let mut texts = Vec::with_capacity(rows.len());
    let mut replies = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.id);
        rooms.push(row.room_id);
        users.push(row.user_id);
        kinds.push(row.kind);
        texts.push(row.text.as_str());
        replies.push(row.reply_to);
        times.push(row.created_at);
    }
    sqlx::query_scalar(
        "INSERT INTO messages (id, room_id, user_id, kind, text, reply_to, created_at)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::smallint[], $5::text[], $6::bigint[],
                              $7::timestamptz[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&rooms)
    .bind(&users)
    .bind(&kinds)
    .bind(&texts)
    .bind(&replies)
    .bind(&times)
    .fetch_all(db)
    .instrument(db::postgres("INSERT messages"))
    .await
}

/// The stored rows with these ids, each with whether it changed since it
/// was written (edited or deleted: its text is no longer the one written).
pub async fn stored(db: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<(Row, bool)>> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        #[sqlx(flatten)]
        row: Row,
        changed: bool,
    }
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT id, room_id, user_id, kind, text, reply_to, created_at, edit_id <> 0 OR deleted AS changed
           FROM messages WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(db)
    .instrument(db::postgres("SELECT messages"))
    .await?;
    Ok(rows.into_iter().map(|stored| (stored.row, stored.changed)).collect())
}

/// Writes changes in one statement; the ids of those it inserted. A change
/// whose id is stored already is skipped.
pub async fn insert_changes(db: &PgPool, changes: &[&ChangeRow]) -> sqlx::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(changes.len());
    let mut rooms = Vec::with_capacity(changes.len());
    let mut users = Vec::with_capacity(changes.len());
    let mut entries = Vec::with_capacity(changes.len());
    let mut kinds = Vec::with_capacity(changes.len());
    let mut texts = Vec::with_capacity(changes.len());
    let mut emoji = Vec::with_capacity(changes.len());
    let mut added = Vec::with_capacity(changes.len());
    let mut times = Vec::with_capacity(changes.len());
    for change in changes {
        ids.push(change.id);
        rooms.push(change.room_id);
        users.push(change.user_id);
        entries.push(change.message_id);
        kinds.push(change.kind);
        texts.push(change.text.as_str());
        emoji.push(change.emoji.as_str());
        added.push(change.added);
        times.push(change.created_at);
    }
    sqlx::query_scalar(
        "INSERT INTO message_changes (id, room_id, user_id, message_id, kind, text, emoji, added, created_at)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::smallint[], $6::text[],
                              $7::text[], $8::boolean[], $9::timestamptz[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&rooms)
    .bind(&users)
    .bind(&entries)
    .bind(&kinds)
    .bind(&texts)
    .bind(&emoji)
    .bind(&added)
    .bind(&times)
    .fetch_all(db)
    .instrument(db::postgres("INSERT message_changes"))
    .await
}

/// Applies reactions: each user's latest reaction event per emoji and
/// entry stands, whatever order they come in; none on a deleted entry.
pub async fn react(db: &PgPool, reactions: &[&ChangeRow]) -> sqlx::Result<()> {
    // One row per user, emoji and entry in one statement: the latest.
    let mut latest: HashMap<(i64, &str, i64), &ChangeRow> = HashMap::new();
    for reaction in reactions {
        let slot = latest.entry((reaction.message_id, reaction.emoji.as_str(), reaction.user_id)).or_insert(reaction);
        if reaction.id > slot.id {
            *slot = reaction;
        }
    }
    let (mut entries, mut emoji, mut users, mut ids, mut added) = (vec![], vec![], vec![], vec![], vec![]);
    for reaction in latest.values() {
        entries.push(reaction.message_id);
        emoji.push(reaction.emoji.as_str());
        users.push(reaction.user_id);
        ids.push(reaction.id);
        added.push(reaction.added);
    }
    sqlx::query(
        "INSERT INTO message_reactions (message_id, emoji, user_id, event_id, added)
         SELECT r.* FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::boolean[])
                  AS r (message_id, emoji, user_id, event_id, added)
          WHERE NOT EXISTS (SELECT 1 FROM message_changes d WHERE d.message_id = r.message_id AND d.kind = $6)
         ON CONFLICT (message_id, emoji, user_id) DO UPDATE SET event_id = EXCLUDED.event_id, added = EXCLUDED.added
          WHERE message_reactions.event_id < EXCLUDED.event_id",
    )
    .bind(&entries)
    .bind(&emoji)
    .bind(&users)
    .bind(&ids)
    .bind(&added)
    .bind(MessageKind::Delete as i16)
    .execute(db)
    .instrument(db::postgres("INSERT message_reactions"))
    .await?;
    Ok(())
}

/// Brings these entries to the state their stored changes make: the text
/// of the latest edit (by id); or once deleted no text, no edit and no
/// reactions. Made from every stored change each time, so it is the same
/// whatever order the changes and the entry came in, and however often.
pub async fn settle(db: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH target AS (SELECT DISTINCT unnest($1::bigint[]) AS id),
         edit AS (
             SELECT DISTINCT ON (c.message_id) c.message_id, c.id, c.text, c.created_at
               FROM message_changes c JOIN target t ON c.message_id = t.id
              WHERE c.kind = $2 ORDER BY c.message_id, c.id DESC),
         deletion AS (
             SELECT DISTINCT c.message_id FROM message_changes c JOIN target t ON c.message_id = t.id
              WHERE c.kind = $3)
         UPDATE messages m
            SET deleted = d.message_id IS NOT NULL,
                text = CASE WHEN d.message_id IS NOT NULL THEN '' ELSE e.text END,
                edit_id = CASE WHEN d.message_id IS NOT NULL THEN 0 ELSE e.id END,
                edited_at = CASE WHEN d.message_id IS NOT NULL THEN NULL ELSE e.created_at END
           FROM target t LEFT JOIN edit e ON e.message_id = t.id LEFT JOIN deletion d ON d.message_id = t.id
          WHERE m.id = t.id AND m.kind = $4 AND (e.id IS NOT NULL OR d.message_id IS NOT NULL)",
    )
    .bind(ids)
    .bind(MessageKind::Edit as i16)
    .bind(MessageKind::Delete as i16)
    .bind(MessageKind::Message as i16)
    .execute(db)
    .instrument(db::postgres("UPDATE messages"))
    .await?;
    sqlx::query(
        "DELETE FROM message_reactions r USING message_changes d
          WHERE d.message_id = ANY($1) AND d.kind = $2 AND r.message_id = d.message_id",
    )
    .bind(ids)
    .bind(MessageKind::Delete as i16)
    .execute(db)
    .instrument(db::postgres("DELETE message_reactions"))
    .await?;
    Ok(())
}

/// Writes dead letters of `topic` in one statement; the partition and
/// offset of each one that was not set aside before.
pub async fn set_aside(db: &PgPool, topic: &str, letters: &[DeadLetter<'_>]) -> sqlx::Result<Vec<(i32, i64)>> {
    let partitions: Vec<i32> = letters.iter().map(|letter| letter.partition).collect();
    let offsets: Vec<i64> = letters.iter().map(|letter| letter.offset).collect();
    let ids: Vec<Option<i64>> = letters.iter().map(|letter| letter.message_id).collect();
    let payloads: Vec<Option<&[u8]>> = letters.iter().map(|letter| letter.payload).collect();
    let reasons: Vec<&str> = letters.iter().map(|letter| letter.reason).collect();
    let errors: Vec<&str> = letters.iter().map(|letter| letter.error.as_str()).collect();
    sqlx::query_as(
        "INSERT INTO dead_letters (topic, partition, record_offset, message_id, payload, reason, error)
         SELECT $1, * FROM UNNEST($2::integer[], $3::bigint[], $4::bigint[], $5::bytea[], $6::text[], $7::text[])
         ON CONFLICT DO NOTHING
         RETURNING partition, record_offset",
    )
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&ids)
    .bind(&payloads)
    .bind(&reasons)
    .bind(&errors)
    .fetch_all(db)
    .instrument(db::postgres("INSERT dead_letters"))
    .await
}

/// Whether PostgreSQL refused a statement for the data it carried (SQLSTATE
/// class 22, data exception, or 23, integrity constraint violation): sending
/// it again can never succeed, unlike after a lost connection or a timeout.
pub fn refused_for_its_data(error: &sqlx::Error) -> bool {
    let sqlstate = error.as_database_error().and_then(|error| error.code());
    sqlstate.is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

/// Keeps the messages with these ids out of history for good: deletes any
/// stored, and remembers them so that a record read later is not stored.
pub async fn withdraw(db: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO withdrawn_messages (id) SELECT * FROM UNNEST($1::bigint[]) ON CONFLICT DO NOTHING")
        .bind(ids)
        .execute(&mut *tx)
        .instrument(db::postgres("INSERT withdrawn_messages"))
        .await?;
    sqlx::query("DELETE FROM messages WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *tx)
        .instrument(db::postgres("DELETE messages"))
        .await?;
    tx.commit().await
}

/// Which of these ids were withdrawn.
pub async fn withdrawn(db: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT id FROM withdrawn_messages WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .instrument(db::postgres("SELECT withdrawn_messages"))
        .await
}

/// Records that every record below these offsets is stored, for core-svc's
/// history reads (`archive_progress`). Written after the rows, so it is
/// never ahead of them; a progress that moves back (a batch read again
/// after a rebalance) is ignored.
pub async fn record_progress(db: &PgPool, next_offsets: &TopicPartitionList) -> sqlx::Result<()> {
    let (mut topics, mut partitions, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for element in next_offsets.elements() {
        if let Offset::Offset(next) = element.offset() {
            topics.push(element.topic().to_owned());
            partitions.push(element.partition());
            offsets.push(next);
        }
    }
    sqlx::query(
        "INSERT INTO archive_progress (topic, partition, next_offset)
         SELECT * FROM UNNEST($1::text[], $2::int[], $3::bigint[])
         ON CONFLICT (topic, partition)
         DO UPDATE SET next_offset = GREATEST(archive_progress.next_offset, EXCLUDED.next_offset)",
    )
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .execute(db)
    .instrument(db::postgres("INSERT archive_progress"))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(timestamp: Option<prost_types::Timestamp>) -> Event {
        let posted = chat_proto::events::v1::Posted { text: "hi".into(), ..Default::default() };
        Event { id: 1, room_id: 2, uid: 3, timestamp, kind: Some(Kind::Posted(posted)) }
    }

    #[track_caller]
    fn entry(stored: Result<Stored, String>) -> Row {
        match stored.unwrap() {
            Stored::Entry(row) => row,
            other => panic!("not an entry: {other:?}"),
        }
    }

    #[test]
    fn a_message_keeps_its_own_time() {
        let at = prost_types::Timestamp { seconds: 1_800_000_000, nanos: 123_456_789 };
        let row = entry(Stored::new(message(Some(at)), Some(0)));
        assert_eq!(row.created_at.timestamp(), 1_800_000_000);
        assert_eq!(row.created_at.timestamp_subsec_micros(), 123_456);
    }

    #[test]
    fn a_message_without_a_time_takes_the_logs_not_1970() {
        let row = entry(Stored::new(message(None), Some(1_800_000_000_000)));
        assert_eq!(row.created_at.timestamp(), 1_800_000_000);
        let impossible = prost_types::Timestamp { seconds: 0, nanos: -5 };
        assert_eq!(
            entry(Stored::new(message(Some(impossible)), Some(1_800_000_000_000))).created_at.timestamp(),
            1_800_000_000
        );
        assert!(Stored::new(message(None), None).is_err(), "no time at all is refused, not stored as 1970");
    }

    #[test]
    fn entries_keep_their_kind_and_what_they_answer() {
        let at = Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 });
        let posted = chat_proto::events::v1::Posted { text: "re".into(), reply_to: 7, ..Default::default() };
        let row = entry(Stored::new(Event { kind: Some(Kind::Posted(posted)), ..message(at) }, None));
        assert_eq!((row.kind, row.text.as_str(), row.reply_to), (MessageKind::Message as i16, "re", 7));
        let left = Event { kind: Some(Kind::Left(Default::default())), ..message(at) };
        assert_eq!(entry(Stored::new(left, None)).kind, MessageKind::Leave as i16);
        let joined = Event { kind: Some(Kind::Joined(Default::default())), ..message(at) };
        assert_eq!(entry(Stored::new(joined, None)).kind, MessageKind::Join as i16);
    }

    #[test]
    fn changes_name_their_entry() {
        use chat_proto::events::v1::{Reacted, Typing};
        let at = Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 });
        let reacted = Reacted { message_id: 1, emoji: "👍".into(), added: true };
        let Ok(Stored::Change(change)) = Stored::new(Event { kind: Some(Kind::Reacted(reacted)), ..message(at) }, None)
        else {
            panic!("a reaction is a change");
        };
        assert_eq!((change.message_id, change.kind, change.emoji.as_str(), change.added), (1, 6, "👍", true));
        let typing = Event { kind: Some(Kind::Typing(Typing {})), ..message(at) };
        assert!(Stored::new(typing, None).is_err(), "live-only events are no history");
    }
}
