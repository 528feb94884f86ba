use chat_proto::v1::Message;
use chrono::{DateTime, Utc};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

/// Writes a batch in one statement; messages already stored are skipped, so
/// writing a batch twice is the same as writing it once.
pub async fn insert(db: &PgPool, batch: &[Message]) -> sqlx::Result<u64> {
    let mut ids = Vec::with_capacity(batch.len());
    let mut rooms = Vec::with_capacity(batch.len());
    let mut users = Vec::with_capacity(batch.len());
    let mut kinds = Vec::with_capacity(batch.len());
    let mut texts = Vec::with_capacity(batch.len());
    let mut times = Vec::with_capacity(batch.len());
    for message in batch {
        ids.push(message.id);
        rooms.push(message.room_id);
        users.push(message.uid);
        kinds.push(message.kind as i16);
        texts.push(message.text.as_str());
        let at = message.timestamp.unwrap_or_default();
        times.push(DateTime::<Utc>::from_timestamp(at.seconds, at.nanos.max(0) as u32).unwrap_or_default());
    }
    let done = sqlx::query(
        "INSERT INTO messages (id, room_id, user_id, kind, text, created_at)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::smallint[], $5::text[], $6::timestamptz[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&rooms)
    .bind(&users)
    .bind(&kinds)
    .bind(&texts)
    .bind(&times)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
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
