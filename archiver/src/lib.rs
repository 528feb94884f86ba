//! archiver: reads the message log (Kafka topic `chat.messages`) as one
//! consumer group and writes history to PostgreSQL, in batches, idempotently.
//! Offsets are committed only once a batch is in the database, so a crash at
//! any point means some events are read again, never that one is lost; and
//! reading one again is harmless (`ON CONFLICT (id) DO NOTHING`).
//!
//! Entries (messages, joins, leaves) go to `messages`; changes to them
//! (edits, deletions, reactions) to `message_changes`, and each changed
//! entry is brought to the state all its stored changes make (the latest
//! edit by id, deletion for good, each user's latest reaction), so a change
//! read twice, late, or before its entry still ends in the same state.
//!
//! No record stops it: one that can never be stored as a message
//! (undecodable, refused by PostgreSQL for its data, or carrying the id of a
//! different stored message) is set aside in `dead_letters`, neither retried
//! for ever nor dropped silently.
//!
//! - [`config`]: flags and environment.
//! - [`consumer`]: the loop: collect a batch, store it, commit its offsets.
//! - [`archive`]: one batch into the database: the entries and changes to
//!   history, the records that cannot be stored set aside.
//! - [`metrics`]: what the archiver exports on `/metrics`, its lag among them.
//! - [`store`]: the SQL: the batch inserts, applying changes, the dead
//!   letters, the progress (`archive_progress`) that tells core-svc what
//!   PostgreSQL holds.

pub mod archive;
pub mod config;
pub mod consumer;
pub mod metrics;
pub mod store;

pub use config::Config;
pub use consumer::Archiver;
