use std::{future::Future, pin::pin, time::Duration};

use anyhow::Context;
use chat_proto::events::v1::Event;
use metrics::Gauge;
use prost::Message as _;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::Headers,
};
use service_kit::{message_log, metrics::DEPENDENCY_UP, telemetry};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::{
    sync::oneshot,
    time::{Instant, timeout},
};
use tracing::{Instrument, field::Empty};

use service_kit::ops::Readiness;
use tokio::net::TcpListener;

use crate::{
    archive::{self, Carried, Record},
    config::Config,
    metrics::{BATCH_DURATION, BATCH_SIZE, Lag},
    store::{self, Stored},
};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stop waits for the consumer to send its last commits.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// How often the Kafka client reports its statistics, the lag among them.
const STATISTICS_EVERY_MS: &str = "5000";

pub struct Archiver {
    consumer: LogConsumer,
    /// `/metrics`, `/healthz` and `/readyz` (ready while archiving).
    ops: Option<TcpListener>,
    ready: Readiness,
    topic: String,
    group: String,
    db: PgPool,
    /// Whether the last read from the log and the last write to PostgreSQL worked.
    kafka_up: Gauge,
    postgres_up: Gauge,
    batch_size: usize,
    batch_wait: Duration,
}

/// A batch read from the log: the records, and for each partition the
/// offset to commit once they are stored.
struct Batch {
    records: Vec<Record>,
    next_offsets: TopicPartitionList,
    /// `process <topic>`, linked to the trace of every message in the batch
    /// (OpenTelemetry's messaging conventions: no one message is its parent).
    span: tracing::Span,
    /// Each record's log time, in ms since the epoch.
    logged_ms: Vec<i64>,
}

impl Archiver {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        // Connects lazily: if PostgreSQL is down at start, the first batch
        // waits for it like any later one.
        let db = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(&config.database_url)
            .context("DATABASE_URL")?;
        let mut consumer_config = ClientConfig::new();
        consumer_config
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("group.id", &config.kafka_group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("socket.nagle.disable", "true")
            .set("statistics.interval.ms", STATISTICS_EVERY_MS);
        if let Some(instance_id) = &config.kafka_instance_id {
            consumer_config.set("group.instance.id", instance_id);
        }
        crate::metrics::init();
        let consumer: StreamConsumer<Lag> = consumer_config
            .create_with_context(Lag::new(&config.kafka_topic))
            .context("creating the Kafka consumer (KAFKA_BROKERS)")?;
        consumer.subscribe(&[&config.kafka_topic]).context("subscribing to the message topic")?;
        let ops = TcpListener::bind(config.http_listen_addr)
            .await
            .with_context(|| format!("binding {} (ARCHIVER_LISTEN_ADDR)", config.http_listen_addr))?;
        tracing::info!(topic = config.kafka_topic, group = config.kafka_group, "archiver consuming");
        Ok(Self {
            consumer: LogConsumer(Some(consumer)),
            ops: Some(ops),
            ready: Readiness::default(),
            topic: config.kafka_topic,
            group: config.kafka_group,
            db,
            kafka_up: metrics::gauge!(DEPENDENCY_UP, "dependency" => "kafka"),
            postgres_up: metrics::gauge!(DEPENDENCY_UP, "dependency" => "postgres"),
            batch_size: config.batch_size,
            batch_wait: Duration::from_millis(config.batch_wait_ms),
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn ops_addr(&self) -> std::net::SocketAddr {
        self.ops.as_ref().and_then(|ops| ops.local_addr().ok()).expect("bound until the archiver runs")
    }

    /// Archives until `shutdown` resolves. A batch being written when it
    /// does is finished and committed first.
    pub async fn run_until_stopped(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let stopped = tokio_util::sync::CancellationToken::new();
        let ops = self.ops.take().expect("run once");
        let serving = tokio::spawn(service_kit::ops::serve(ops, self.ready.clone(), stopped.clone().cancelled_owned()));
        self.ready.set(true);
        let archived = self.archive_until(shutdown).await;
        self.ready.set(false);
        if archived.is_ok() {
            self.consumer.close(CLOSE_WAIT).await;
            tracing::info!("archiver stopped");
        }
        stopped.cancel();
        let _ = serving.await;
        archived
    }

    async fn archive_until(&self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut shutdown = pin!(shutdown);
        loop {
            let batch = tokio::select! {
                batch = self.next_batch() => batch?,
                () = &mut shutdown => break,
            };
            if !self.store(&batch, &mut shutdown).await {
                break;
            }
            // Behind is safe: history only waits for the archiver longer.
            let progress = store::record_progress(&self.db, &batch.next_offsets).instrument(batch.span.clone());
            if let Err(error) = progress.await {
                tracing::warn!(%error, "cannot record the archiving progress");
            }
            // A failed commit only means these messages are read (and
            // harmlessly skipped) again after the next rebalance.
            if let Err(error) = self.commit(&batch.next_offsets) {
                tracing::warn!(error = format!("{error:#}"), "cannot commit offsets");
            }
        }
        Ok(())
    }

    async fn next_batch(&self) -> anyhow::Result<Batch> {
        let first = loop {
            match self.consumer.recv().await {
                Ok(first) => {
                    self.kafka_up.set(1.0);
                    break first;
                }
                // A fatal error (a static member fenced by another with its
                // id) leaves a consumer that never reads again: stop, so
                // that the process is restarted rather than idle.
                Err(error) if self.consumer.client().fatal_error().is_some() => {
                    return Err(error).context("the Kafka consumer failed for good");
                }
                // The topic may not exist yet, or the broker may be away:
                // the consumer retries by itself, so read on at once. (A
                // pause per error let an outage's burst of errors queue up
                // and hold back the records behind them for minutes.)
                Err(error) => {
                    self.kafka_up.set(0.0);
                    tracing::warn!(%error, "cannot read the message log");
                }
            }
        };
        let span = tracing::info_span!(
            "kafka.process",
            otel.name = format!("process {}", self.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = self.topic,
            messaging.consumer.group.name = self.group,
            messaging.batch.message_count = Empty,
        );
        let mut batch =
            Batch { records: Vec::new(), next_offsets: TopicPartitionList::new(), span, logged_ms: Vec::new() };
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
        batch.span.record("messaging.batch.message_count", batch.len() as i64);
        Ok(batch)
    }

    /// Writes the batch, retrying until it is stored (true) or the archiver
    /// is told to stop (false; the batch is then read again next time).
    /// Only an error that may pass is retried: a record that can never be
    /// stored is set aside, so that it holds back nothing behind it.
    async fn store(&self, batch: &Batch, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        let mut backoff = Duration::from_millis(100);
        let started = Instant::now();
        loop {
            match archive::archive(&self.db, &self.topic, &batch.records).instrument(batch.span.clone()).await {
                Ok(done) => {
                    self.postgres_up.set(1.0);
                    metrics::histogram!(BATCH_SIZE).record(batch.len() as f64);
                    metrics::histogram!(BATCH_DURATION).record(started.elapsed().as_secs_f64());
                    self.consumer.context().stored(&batch.logged_ms);
                    tracing::debug!(
                        read = batch.len(),
                        inserted = done.inserted,
                        set_aside = done.set_aside,
                        "batch archived"
                    );
                    return true;
                }
                Err(error) => {
                    self.postgres_up.set(0.0);
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

    /// Queues the commit and returns at once. A synchronous commit waits
    /// while the group rebalances, and a rebalance is served only while this
    /// task polls the consumer: after a broker restart the two waited on
    /// each other. Queued commits are sent when the consumer closes.
    fn commit(&self, offsets: &TopicPartitionList) -> anyhow::Result<()> {
        self.consumer.commit(offsets, CommitMode::Async).context("committing offsets")
    }
}

/// The consumer, closed on a thread of its own. Closing sends the queued
/// commits and leaves the group, and it waits for as long as the broker is
/// away: that must hold up neither a stop nor the runtime.
struct LogConsumer(Option<StreamConsumer<Lag>>);

impl LogConsumer {
    /// Closes the consumer, waiting at most `wait` for its last commits. A
    /// commit that does not go out means its batch is read again.
    async fn close(mut self, wait: Duration) {
        let (done, closed) = oneshot::channel();
        if let Some(consumer) = self.0.take() {
            close_aside(consumer, Some(done));
        }
        if timeout(wait, closed).await.is_err() {
            tracing::warn!("the Kafka consumer did not close in time; its last batch will be read again");
        }
    }
}

impl std::ops::Deref for LogConsumer {
    type Target = StreamConsumer<Lag>;

    fn deref(&self) -> &StreamConsumer<Lag> {
        self.0.as_ref().expect("open until closed")
    }
}

impl Drop for LogConsumer {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            close_aside(consumer, None);
        }
    }
}

fn close_aside(consumer: StreamConsumer<Lag>, done: Option<oneshot::Sender<()>>) {
    let closing = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        drop(consumer);
        if let Some(done) = done {
            let _ = done.send(());
        }
    });
    if let Err(error) = closing {
        tracing::warn!(%error, "cannot close the Kafka consumer on a thread of its own");
    }
}

impl Batch {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn add(&mut self, record: &impl rdkafka::Message) -> anyhow::Result<()> {
        let trace = telemetry::fields_from(|field| std::str::from_utf8(header(record, field)?).ok());
        telemetry::link(&self.span, &trace);
        self.logged_ms.push(record.timestamp().to_millis().unwrap_or(0));
        let withdrawn =
            header(record, message_log::WITHDRAWN).and_then(|id| std::str::from_utf8(id).ok()?.parse().ok());
        let carried = match (withdrawn, record.payload()) {
            (Some(id), _) => Carried::Withdrawal(id),
            (None, Some(payload)) => match Event::decode(payload)
                .map_err(|error| error.to_string())
                .and_then(|event| Stored::new(event, record.timestamp().to_millis()))
            {
                Ok(Stored::Entry(row)) => Carried::Entry(row),
                Ok(Stored::Change(change)) => Carried::Change(change),
                Err(error) => Carried::Unstorable(error),
            },
            (None, None) => Carried::Unstorable("no payload".to_owned()),
        };
        self.records.push(Record {
            partition: record.partition(),
            offset: record.offset(),
            payload: record.payload().map(<[u8]>::to_vec),
            carried,
        });
        let (topic, partition, next) = (record.topic(), record.partition(), Offset::Offset(record.offset() + 1));
        if self.next_offsets.set_partition_offset(topic, partition, next).is_err() {
            self.next_offsets.add_partition_offset(topic, partition, next).context("recording an offset")?;
        }
        Ok(())
    }
}

fn header<'a>(record: &'a impl rdkafka::Message, name: &str) -> Option<&'a [u8]> {
    record.headers()?.iter().find(|header| header.key == name)?.value
}
