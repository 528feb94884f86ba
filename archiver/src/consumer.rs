use std::{future::Future, pin::pin, sync::Arc, time::Duration};

use anyhow::Context;
use chat_proto::v1::Message;
use prost::Message as _;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::Headers,
};
use service_kit::telemetry;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use crate::{config::Config, store};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Archiver {
    consumer: Arc<StreamConsumer>,
    db: PgPool,
    batch_size: usize,
    batch_wait: Duration,
}

/// A batch read from the log: the messages, and for each partition the
/// offset to commit once they are stored.
struct Batch {
    messages: Vec<Message>,
    next_offsets: TopicPartitionList,
    /// Linked to the trace of every message in the batch.
    span: tracing::Span,
}

impl Archiver {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Connects lazily: if PostgreSQL is down at start, the first batch
        // waits for it like any later one.
        let db = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(&config.database_url)
            .context("DATABASE_URL")?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("group.id", &config.kafka_group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Static membership: a restarted archiver takes its old place in
            // the group at once instead of waiting for the dead member to be
            // expelled, which some brokers are slow to do.
            .set("group.instance.id", &config.kafka_instance_id)
            .create()
            .context("creating the Kafka consumer (KAFKA_BROKERS)")?;
        consumer.subscribe(&[&config.kafka_topic]).context("subscribing to the message topic")?;
        tracing::info!(topic = config.kafka_topic, group = config.kafka_group, "archiver consuming");
        Ok(Self {
            consumer: Arc::new(consumer),
            db,
            batch_size: config.batch_size.max(1),
            batch_wait: Duration::from_millis(config.batch_wait_ms),
        })
    }

    /// Archives until `shutdown` resolves. A batch being written when it
    /// does is finished and committed first.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut shutdown = pin!(shutdown);
        loop {
            let batch = tokio::select! {
                batch = self.next_batch() => batch?,
                () = &mut shutdown => break,
            };
            if !self.store(&batch, &mut shutdown).await {
                break;
            }
            // A failed commit only means these messages are read (and
            // harmlessly skipped) again after the next rebalance.
            if let Err(error) = self.commit(batch.next_offsets).await {
                tracing::warn!(error = format!("{error:#}"), "cannot commit offsets");
            }
        }
        tracing::info!("archiver stopped");
        Ok(())
    }

    async fn next_batch(&self) -> anyhow::Result<Batch> {
        let mut batch = Batch {
            messages: Vec::new(),
            next_offsets: TopicPartitionList::new(),
            span: tracing::info_span!("archive.batch"),
        };
        let first = loop {
            match self.consumer.recv().await {
                Ok(first) => break first,
                // The topic may not exist yet, or the broker may be away:
                // neither is a reason to stop.
                Err(error) => {
                    tracing::warn!(%error, "cannot read the message log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let deadline = Instant::now() + self.batch_wait;
        batch.add(&first)?;
        while batch.len() < self.batch_size {
            match timeout(deadline.saturating_duration_since(Instant::now()), self.consumer.recv()).await {
                Ok(Ok(message)) => batch.add(&message)?,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot read the message log");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Writes the batch, retrying until it is stored (true) or the archiver
    /// is told to stop (false; the batch is then read again next time).
    async fn store(&self, batch: &Batch, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match store::insert(&self.db, &batch.messages).instrument(batch.span.clone()).await {
                Ok(inserted) => {
                    tracing::debug!(read = batch.len(), inserted, "batch archived");
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "cannot write a batch; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = &mut *shutdown => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn commit(&self, offsets: TopicPartitionList) -> anyhow::Result<()> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await?
            .context("committing offsets")
    }
}

impl Batch {
    fn len(&self) -> usize {
        self.messages.len()
    }

    fn add(&mut self, record: &impl rdkafka::Message) -> anyhow::Result<()> {
        let carried = telemetry::fields_from(|field| {
            let header = record.headers()?.iter().find(|header| header.key == field)?;
            std::str::from_utf8(header.value?).ok()
        });
        telemetry::link(&self.span, &carried);
        match record.payload().map(Message::decode) {
            Some(Ok(message)) => self.messages.push(message),
            // Nothing can ever store it; log it and move past it.
            _ => {
                tracing::error!(partition = record.partition(), offset = record.offset(), "undecodable record skipped")
            }
        }
        let (topic, partition, next) = (record.topic(), record.partition(), Offset::Offset(record.offset() + 1));
        if self.next_offsets.set_partition_offset(topic, partition, next).is_err() {
            self.next_offsets.add_partition_offset(topic, partition, next).context("recording an offset")?;
        }
        Ok(())
    }
}
