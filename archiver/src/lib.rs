//! archiver: reads the message log (Kafka topic `chat.messages`) as one
//! consumer group and writes history to PostgreSQL, in batches, idempotently.
//! Offsets are committed only after the database commit, so a crash at any
//! point means some messages are read again, never that one is lost; and
//! reading one again is harmless (`ON CONFLICT (id) DO NOTHING`).
//!
//! - [`config`]: flags and environment.
//! - [`consumer`]: the loop: collect a batch, store it, commit its offsets.
//! - [`store`]: the batch insert.

pub mod config;
pub mod consumer;
pub mod store;

pub use config::Config;
pub use consumer::Archiver;
