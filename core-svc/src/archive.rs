//! What the archiver has stored: for each partition of the message log, the
//! offset below which every record is in PostgreSQL (`archive_progress`,
//! written by the archiver with the rows themselves). History reads ask it
//! fresh; the recent cache's trimming uses a copy refreshed every second,
//! which can only be behind, so that it keeps more, never less.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use service_kit::db;
use sqlx::PgPool;
use tracing::Instrument;

use crate::error::Result;

const REFRESH_EVERY: Duration = Duration::from_secs(1);

pub struct ArchiveProgress {
    db: PgPool,
    topic: String,
    known: RwLock<HashMap<i32, i64>>,
}

impl ArchiveProgress {
    pub fn new(db: PgPool, topic: &str) -> Self {
        Self { db, topic: topic.to_owned(), known: RwLock::new(HashMap::new()) }
    }

    /// The offset below which `partition` is stored, as PostgreSQL says now.
    pub async fn stored_below(&self, partition: i32) -> Result<i64> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT next_offset FROM archive_progress WHERE topic = $1 AND partition = $2")
                .bind(&self.topic)
                .bind(partition)
                .fetch_optional(&self.db)
                .instrument(db::postgres("SELECT archive_progress"))
                .await?;
        Ok(next.unwrap_or(0))
    }

    /// The last refreshed copy of [`ArchiveProgress::stored_below`].
    pub fn known_stored_below(&self, partition: i32) -> i64 {
        self.known.read().expect("lock poisoned").get(&partition).copied().unwrap_or(0)
    }

    pub async fn refresh_forever(&self) {
        let mut interval = tokio::time::interval(REFRESH_EVERY);
        loop {
            interval.tick().await;
            let rows: sqlx::Result<Vec<(i32, i64)>> =
                sqlx::query_as("SELECT partition, next_offset FROM archive_progress WHERE topic = $1")
                    .bind(&self.topic)
                    .fetch_all(&self.db)
                    .await;
            match rows {
                Ok(rows) => *self.known.write().expect("lock poisoned") = rows.into_iter().collect(),
                Err(error) => tracing::warn!(%error, "cannot read the archiver's progress"),
            }
        }
    }
}
