//! What the archiver exports on `/metrics` (ARCHIVER_LISTEN_ADDR), by the
//! scheme of `service_kit::metrics`, and the lag it reads from the Kafka
//! client's statistics.

use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use rdkafka::{ClientContext, Statistics, consumer::ConsumerContext};
pub use service_kit::metrics::ARCHIVER_BATCH_SIZE as BATCH_SIZE;

/// The log's end minus what this archiver has committed, by `partition`.
pub const LAG_MESSAGES: &str = "chat_archiver_lag_messages";
/// Now minus the time of the newest record stored; 0 when caught up.
pub const LAG_SECONDS: &str = "chat_archiver_lag_seconds";
/// Seconds to store a batch, retries included.
pub const BATCH_DURATION: &str = "chat_archiver_batch_duration_seconds";
/// Seconds from each record's logging to its batch being stored.
pub const STORE_DELAY: &str = "chat_archiver_store_delay_seconds";
pub const RECORDS_READ: &str = "chat_archiver_records_read_total";
pub const MESSAGES_INSERTED: &str = "chat_archiver_messages_inserted_total";
pub const DEAD_LETTERS: &str = "chat_archiver_dead_letters_total";
pub const ID_COLLISIONS: &str = "chat_archiver_id_collisions_total";
pub const MESSAGES_WITHDRAWN: &str = "chat_archiver_messages_withdrawn_total";

/// Installs the process's recorder and describes what the archiver
/// exports, every counter starting at zero.
pub fn init() {
    service_kit::ops::recorder();
    service_kit::metrics::describe(None);
    metrics::describe_gauge!(LAG_MESSAGES, "Records of the log this archiver has not committed yet, by partition");
    metrics::describe_gauge!(LAG_SECONDS, "Seconds since the newest record stored was logged; 0 when caught up");
    metrics::describe_histogram!(BATCH_SIZE, "Records per stored batch");
    metrics::describe_histogram!(BATCH_DURATION, "Seconds to store a batch");
    metrics::describe_histogram!(STORE_DELAY, "Seconds from a record's logging to its storing, per record");
    metrics::describe_counter!(RECORDS_READ, "Records read from the message log");
    metrics::describe_counter!(MESSAGES_INSERTED, "Messages inserted into history");
    metrics::describe_counter!(DEAD_LETTERS, "Records set aside as dead letters");
    metrics::describe_counter!(ID_COLLISIONS, "Records set aside for a message id another message has");
    metrics::describe_counter!(MESSAGES_WITHDRAWN, "Messages kept out of history as withdrawn");
    for name in [RECORDS_READ, MESSAGES_INSERTED, DEAD_LETTERS, ID_COLLISIONS, MESSAGES_WITHDRAWN] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(LAG_SECONDS).set(0.0);
}

/// The consumer's context: the lag gauges, from the statistics the Kafka
/// client reports every few seconds.
pub struct Lag {
    topic: String,
    /// The log time of the newest record stored, in ms since the epoch (0: none yet).
    newest_stored_ms: AtomicI64,
    /// The partitions reported last time, so that one handed to another
    /// archiver is set to 0 rather than left at its last value.
    reported: Mutex<HashSet<i32>>,
}

impl Lag {
    pub fn new(topic: &str) -> Self {
        Self { topic: topic.to_owned(), newest_stored_ms: AtomicI64::new(0), reported: Mutex::default() }
    }

    /// A batch whose records were logged at `logged_ms` is stored.
    pub fn stored(&self, logged_ms: &[i64]) {
        let now = now_ms();
        let delay = metrics::histogram!(STORE_DELAY);
        for ms in logged_ms {
            delay.record((now - ms).max(0) as f64 / 1000.0);
        }
        if let Some(newest) = logged_ms.iter().max() {
            self.newest_stored_ms.fetch_max(*newest, Ordering::Relaxed);
        }
    }
}

impl ClientContext for Lag {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut behind = 0;
        let mut now_reported = HashSet::new();
        // The partitions this archiver consumes whose lag is known.
        let known = topic.partitions.iter().filter(|(id, p)| **id >= 0 && p.desired && p.consumer_lag >= 0);
        for (&partition, stats) in known {
            metrics::gauge!(LAG_MESSAGES, "partition" => partition.to_string()).set(stats.consumer_lag as f64);
            behind += stats.consumer_lag;
            now_reported.insert(partition);
        }
        let mut reported = self.reported.lock().expect("lock poisoned");
        for gone in reported.difference(&now_reported) {
            metrics::gauge!(LAG_MESSAGES, "partition" => gone.to_string()).set(0.0);
        }
        *reported = now_reported;
        let newest = self.newest_stored_ms.load(Ordering::Relaxed);
        if behind == 0 {
            metrics::gauge!(LAG_SECONDS).set(0.0);
        } else if newest > 0 {
            metrics::gauge!(LAG_SECONDS).set((now_ms() - newest).max(0) as f64 / 1000.0);
        }
    }
}

impl ConsumerContext for Lag {}

/// Now, in ms since the epoch (the log's clock).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |now| now.as_millis() as i64)
}
