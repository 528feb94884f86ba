use chat_proto::{
    events::v1::{Event, event::Kind},
    v1::MessageKind,
};
use chrono::{DateTime, SubsecRound, Utc};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

/// An entry of history (a message, a join, a leave) as its row in
/// `messages` holds it. `kind` is its `chat.v1.MessageKind`.
#[derive(Debug, PartialEq, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub room_id: i64,
    pub user_id: i64,
    pub kind: i16,
    pub text: String,
    pub reply_to: i64,
    pub created_at: DateTime<Utc>,
}

impl Row {
    /// The row of an entry. An event should carry the time it happened;
    /// one that does not (or carries an impossible one) takes the time the
    /// log gave its record, never 1970.
    pub fn new(event: Event, logged_at_ms: Option<i64>) -> Result<Self, String> {
        let (kind, text, reply_to) = match event.kind {
            Some(Kind::Posted(posted)) => (MessageKind::Message, posted.text, posted.reply_to),
            Some(Kind::Joined(_)) => (MessageKind::Join, String::new(), 0),
            Some(Kind::Left(_)) => (MessageKind::Leave, String::new(), 0),
            _ => return Err("not an entry of history".to_owned()),
        };
        let sent_at =
            event.timestamp.and_then(|at| DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?));
        let created_at = sent_at
            .or_else(|| DateTime::<Utc>::from_timestamp_millis(logged_at_ms?))
            .ok_or("no timestamp, in the event or the log")?;
        Ok(Self {
            id: event.id,
            room_id: event.room_id,
            user_id: event.uid,
            kind: kind as i16,
            text,
            reply_to,
            // PostgreSQL keeps microseconds: cut to them here, so that the
            // row read back is equal to this one.
            created_at: created_at.trunc_subsecs(6),
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
    .await
}

/// The stored rows with these ids.
pub async fn stored(db: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<Row>> {
    sqlx::query_as("SELECT id, room_id, user_id, kind, text, reply_to, created_at FROM messages WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
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
        .await?;
    sqlx::query("DELETE FROM messages WHERE id = ANY($1)").bind(ids).execute(&mut *tx).await?;
    tx.commit().await
}

/// Which of these ids were withdrawn.
pub async fn withdrawn(db: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT id FROM withdrawn_messages WHERE id = ANY($1)").bind(ids).fetch_all(db).await
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

    #[test]
    fn a_message_keeps_its_own_time() {
        let at = prost_types::Timestamp { seconds: 1_800_000_000, nanos: 123_456_789 };
        let row = Row::new(message(Some(at)), Some(0)).unwrap();
        assert_eq!(row.created_at.timestamp(), 1_800_000_000);
        assert_eq!(row.created_at.timestamp_subsec_micros(), 123_456);
    }

    #[test]
    fn a_message_without_a_time_takes_the_logs_not_1970() {
        let row = Row::new(message(None), Some(1_800_000_000_000)).unwrap();
        assert_eq!(row.created_at.timestamp(), 1_800_000_000);
        let impossible = prost_types::Timestamp { seconds: 0, nanos: -5 };
        assert_eq!(
            Row::new(message(Some(impossible)), Some(1_800_000_000_000)).unwrap().created_at.timestamp(),
            1_800_000_000
        );
        assert!(Row::new(message(None), None).is_err(), "no time at all is refused, not stored as 1970");
    }

    #[test]
    fn entries_keep_their_kind_and_what_they_answer() {
        let at = Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 });
        let posted = chat_proto::events::v1::Posted { text: "re".into(), reply_to: 7, ..Default::default() };
        let row = Row::new(Event { kind: Some(Kind::Posted(posted)), ..message(at) }, None).unwrap();
        assert_eq!((row.kind, row.text.as_str(), row.reply_to), (MessageKind::Message as i16, "re", 7));
        let left = Event { kind: Some(Kind::Left(Default::default())), ..message(at) };
        assert_eq!(Row::new(left, None).unwrap().kind, MessageKind::Leave as i16);
        let joined = Event { kind: Some(Kind::Joined(Default::default())), ..message(at) };
        assert_eq!(Row::new(joined, None).unwrap().kind, MessageKind::Join as i16);
    }
}
