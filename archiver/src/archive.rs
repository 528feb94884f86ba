use std::collections::{HashMap, HashSet};

use sqlx::PgPool;

use chat_proto::v1::MessageKind;

use crate::{
    metrics::{DEAD_LETTERS, ID_COLLISIONS, MESSAGES_INSERTED, MESSAGES_WITHDRAWN, RECORDS_READ},
    store::{self, ChangeRow, DeadLetter, Row},
};

/// A record as read from the log.
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
    pub carried: Carried,
}

/// What a record of the log carries.
pub enum Carried {
    /// An entry of history: a message, a join, a leave.
    Entry(Row),
    /// A change to an entry: an edit, a deletion, a reaction.
    Change(ChangeRow),
    /// The id of a message whose send was refused: if its record reached the
    /// log all the same (a broker that hung, then took it), it must never
    /// reach history.
    Withdrawal(i64),
    /// Why it carries nothing that can be stored.
    Unstorable(String),
}

/// What storing a batch did.
pub struct Outcome {
    pub inserted: usize,
    pub set_aside: usize,
}

/// Stores a batch of `topic`: each entry not stored yet goes to history,
/// each change is stored and applied to its entry (now, or once the entry
/// comes), each record that can never be stored is set aside as a dead
/// letter. Fails only on errors that may pass (the database unreachable, a
/// timeout); every step is idempotent, so the batch is then written again
/// as a whole.
pub async fn archive(db: &PgPool, topic: &str, records: &[Record]) -> sqlx::Result<Outcome> {
    let mut dead = Vec::new();
    let mut rows = Vec::new();
    let mut changes = Vec::new();
    let mut withdrawn = Vec::new();
    for record in records {
        match &record.carried {
            Carried::Entry(row) => rows.push((record, row)),
            Carried::Change(change) => changes.push((record, change)),
            Carried::Withdrawal(id) => withdrawn.push(*id),
            Carried::Unstorable(error) => dead.push(dead_letter(record, None, "undecodable", error.clone())),
        }
    }
    // A withdrawal may come before or after its message's record (they are
    // written by two producers): either way the message stays out.
    if !withdrawn.is_empty() {
        store::withdraw(db, &withdrawn).await?;
        metrics::counter!(MESSAGES_WITHDRAWN).increment(withdrawn.len() as u64);
    }
    let ids: Vec<i64> = rows.iter().map(|(_, row)| row.id).collect();
    let withdrawn: HashSet<i64> = store::withdrawn(db, &ids).await?.into_iter().collect();
    rows.retain(|(_, row)| !withdrawn.contains(&row.id));
    let Insert { inserted, accepted, refused } = insert_isolating(db, &rows, store::insert).await?;
    dead.extend(refused);
    dead.extend(collisions(db, &accepted, &inserted).await?);
    let Insert { accepted: changed, refused, .. } = insert_isolating(db, &changes, store::insert_changes).await?;
    dead.extend(refused);
    let reactions: Vec<&ChangeRow> = changed
        .iter()
        .map(|(_, change)| *change)
        .filter(|change| change.kind == MessageKind::Reaction as i16)
        .collect();
    if !reactions.is_empty() {
        store::react(db, &reactions).await?;
    }
    // The entries just stored (changes may have come before them) and those
    // just edited or deleted.
    let settled: Vec<i64> = inserted
        .iter()
        .copied()
        .chain(
            changed
                .iter()
                .filter(|(_, change)| change.kind != MessageKind::Reaction as i16)
                .map(|(_, change)| change.message_id),
        )
        .collect();
    store::settle(db, &settled).await?;
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
        metrics::counter!(DEAD_LETTERS).increment(1);
        if letter.reason == COLLISION {
            metrics::counter!(ID_COLLISIONS).increment(1);
        }
    }
    metrics::counter!(RECORDS_READ).increment(records.len() as u64);
    metrics::counter!(MESSAGES_INSERTED).increment(inserted.len() as u64);
    Ok(Outcome { inserted: inserted.len(), set_aside: set_aside.len() })
}

const COLLISION: &str = "id collision";

/// What inserting a batch's rows did.
struct Insert<'a, R> {
    /// The ids of the rows inserted.
    inserted: HashSet<i64>,
    /// The rows PostgreSQL took (inserted, or skipped as their id is stored).
    accepted: Vec<(&'a Record, &'a R)>,
    /// The rows PostgreSQL refused for their data.
    refused: Vec<DeadLetter<'a>>,
}

/// A row of the log's events.
trait Identified {
    fn id(&self) -> i64;
}

impl Identified for Row {
    fn id(&self) -> i64 {
        self.id
    }
}

impl Identified for ChangeRow {
    fn id(&self) -> i64 {
        self.id
    }
}

/// Inserts the rows with `insert` (which answers the ids it inserted);
/// when PostgreSQL refuses a part of them for its data, halves that part
/// until each refused row stands alone, so that every other row is stored.
async fn insert_isolating<'a, R: Identified>(
    db: &PgPool,
    rows: &[(&'a Record, &'a R)],
    insert: impl AsyncFn(&PgPool, &[&R]) -> sqlx::Result<Vec<i64>>,
) -> sqlx::Result<Insert<'a, R>> {
    let mut done = Insert { inserted: HashSet::new(), accepted: Vec::new(), refused: Vec::new() };
    let mut parts = if rows.is_empty() { Vec::new() } else { vec![rows] };
    while let Some(part) = parts.pop() {
        let part_rows: Vec<&R> = part.iter().map(|(_, row)| *row).collect();
        match insert(db, &part_rows).await {
            Ok(ids) => {
                done.inserted.extend(ids);
                done.accepted.extend_from_slice(part);
            }
            Err(error) if store::refused_for_its_data(&error) => match part {
                [(record, row)] => done.refused.push(dead_letter(record, Some(row.id()), "refused", error.to_string())),
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

/// The accepted rows that were not stored as they are because a different
/// row has their id: two messages given one id. A row skipped because the
/// same row is stored (a record read again) is no collision.
async fn collisions<'a>(
    db: &PgPool,
    accepted: &[(&'a Record, &'a Row)],
    inserted: &HashSet<i64>,
) -> sqlx::Result<Vec<DeadLetter<'a>>> {
    let mut in_batch: HashMap<i64, usize> = HashMap::new();
    for (_, row) in accepted {
        *in_batch.entry(row.id).or_default() += 1;
    }
    // A row inserted now, whose id no other row of the batch has, is stored
    // as it is; any other is compared with the stored one.
    let unsure: Vec<_> =
        accepted.iter().filter(|(_, row)| !inserted.contains(&row.id) || in_batch[&row.id] > 1).collect();
    if unsure.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = unsure.iter().map(|(_, row)| row.id).collect();
    let stored: HashMap<i64, (Row, bool)> =
        store::stored(db, &ids).await?.into_iter().map(|stored| (stored.0.id, stored)).collect();
    let colliding = unsure.into_iter().filter(|(_, row)| !stored.get(&row.id).is_some_and(|stored| same(stored, row)));
    Ok(colliding
        .map(|(record, row)| {
            let error = format!("a different message is stored with id {}", row.id);
            dead_letter(record, Some(row.id), COLLISION, error)
        })
        .collect())
}

/// Whether a stored entry is the one `row` writes: equal, or, once edited
/// or deleted, equal but for the text.
fn same((stored, changed): &(Row, bool), row: &Row) -> bool {
    if *changed { &Row { text: row.text.clone(), ..stored.clone() } == row } else { stored == row }
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
