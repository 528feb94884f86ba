use std::collections::HashSet;

use sqlx::PgPool;

use crate::store::{self, DeadLetter, Row};

/// A record as read from the log.
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
    /// The message it carries, or why it carries none.
    pub row: Result<Row, String>,
}

/// What storing a batch did.
pub struct Outcome {
    pub inserted: usize,
    pub set_aside: usize,
}

/// Stores a batch of `topic`: each message not stored yet goes to history,
/// each record that can never be stored as one is set aside as a dead
/// letter. Fails only on errors that may pass (the database unreachable, a
/// timeout); every step is idempotent, so the batch is then written again
/// as a whole.
pub async fn archive(db: &PgPool, topic: &str, records: &[Record]) -> sqlx::Result<Outcome> {
    let mut dead = Vec::new();
    let mut rows = Vec::new();
    for record in records {
        match &record.row {
            Ok(row) => rows.push((record, row)),
            Err(error) => dead.push(dead_letter(record, None, "undecodable", error.clone())),
        }
    }
    let Insert { inserted, refused } = insert_isolating(db, &rows).await?;
    dead.extend(refused);
    let set_aside = if dead.is_empty() { Vec::new() } else { store::set_aside(db, topic, &dead).await? };
    // Only the first time a record is set aside: a batch read again says
    // nothing new.
    let set_aside: HashSet<(i32, i64)> = set_aside.into_iter().collect();
    for letter in dead.iter().filter(|letter| set_aside.contains(&(letter.partition, letter.offset))) {
        tracing::error!(
            message_id = letter.message_id,
            partition = letter.partition,
            offset = letter.offset,
            reason = letter.reason,
            "a record of the message log is set aside as a dead letter, not stored in history"
        );
        metrics::counter!("archiver_dead_letters_total").increment(1);
    }
    metrics::counter!("archiver_records_read_total").increment(records.len() as u64);
    metrics::counter!("archiver_messages_inserted_total").increment(inserted as u64);
    Ok(Outcome { inserted, set_aside: set_aside.len() })
}

/// What inserting a batch's rows did.
struct Insert<'a> {
    /// How many rows were inserted (not skipped as stored already).
    inserted: usize,
    /// The rows PostgreSQL refused for their data.
    refused: Vec<DeadLetter<'a>>,
}

/// Inserts the rows; when PostgreSQL refuses a part of them for its data,
/// halves that part until each refused row stands alone, so that every
/// other row is stored.
async fn insert_isolating<'a>(db: &PgPool, rows: &[(&'a Record, &'a Row)]) -> sqlx::Result<Insert<'a>> {
    let mut done = Insert { inserted: 0, refused: Vec::new() };
    let mut parts = if rows.is_empty() { Vec::new() } else { vec![rows] };
    while let Some(part) = parts.pop() {
        let part_rows: Vec<&Row> = part.iter().map(|(_, row)| *row).collect();
        match store::insert(db, &part_rows).await {
            Ok(ids) => done.inserted += ids.len(),
            Err(error) if store::refused_for_its_data(&error) => match part {
                [(record, row)] => done.refused.push(dead_letter(record, Some(row.id), "refused", error.to_string())),
                _ => {
                    // The first half first, so that rows go in log order.
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.extend([second, first]);
                }
            },
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

fn dead_letter<'a>(record: &'a Record, message_id: Option<i64>, reason: &'static str, error: String) -> DeadLetter<'a> {
    DeadLetter {
        partition: record.partition,
        offset: record.offset,
        message_id,
        payload: record.payload.as_deref(),
        reason,
        error,
    }
}
