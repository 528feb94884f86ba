//! The path of every event of a room's history (a `chat.events.v1.Event`:
//! a message, a join, a leave, or a change to one of them), in the order
//! that makes resuming gap-free: the message log (Kafka, the durability
//! point) first, then the room's recent-history cache, then the live
//! subject (NATS).
//! Once `publish` returns, the event will reach history, and anyone who
//! subscribed to the room before it returned will see it live or in the
//! cache. A room's events all go to one partition, `room_id` modulo the
//! partition count, so that the log keeps them in order and a reader knows
//! which partition's archiving to ask about.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use chat_proto::events::v1::{Event, event::Kind};
use prost::Message as _;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    types::RDKafkaErrorCode,
};
use service_kit::{
    feeds::{self, room_subject, room_subject_template, user_subject, user_subject_template},
    message_log, telemetry,
};
use tracing::{Instrument, field::Empty};

use crate::{
    archive::ArchiveProgress,
    cache::Cache,
    domain::timestamp,
    error::{Error, Result},
    ids::IdGenerator,
    metrics::{EVENTS_WITHDRAWN, KAFKA_PRODUCE_DURATION, KAFKA_PRODUCE_ERRORS, MESSAGES_LOGGED},
};

/// Runs a write of the event path on a task of its own, and waits for it.
/// A call's future is dropped when its client goes away (a gateway that
/// died, a socket closed mid-send) or its deadline passes; a write cut off
/// between the log's acknowledgement and the live subject would leave an
/// event that history holds but no live reader ever sees, and that the
/// recent history lacks below newer ones (a hole a resume would skip). Once
/// begun, a write goes to its end, whoever still waits for it.
pub async fn to_the_end<T: Send + 'static>(write: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    match tokio::spawn(write.in_current_span()).await {
        Ok(done) => done,
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        // Only a runtime that shuts down cancels it.
        Err(_) => Err(Error::Unavailable("temporarily unavailable")),
    }
}

/// How long a send may wait for the message log before it is refused as
/// "temporarily unavailable"; nothing is stored then.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the answer to a write waits for its live copy to be out on
/// NATS. A connection that is down holds what is published until it is
/// back: answered meanwhile, a client's next send could go out through
/// another replica's connection first, and live readers would see the two
/// out of order. Past this wait the answer goes anyway (the event is
/// durable; history has it).
pub const LIVE_WAIT: Duration = Duration::from_secs(5);

/// An event the message log acknowledged: where it is, and what the rest
/// of its path carries.
pub struct Logged {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

/// Whether an event goes down the path for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    First,
    /// Logged again (a send retried after its first attempt was cut short,
    /// see `send_keys`): the room's recent history, which may lack it or
    /// hold it below its newest, is dropped rather than given an old id.
    Again,
}

pub struct KafkaSettings<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub partitions: i32,
    pub replication_factor: i32,
}

pub struct Events {
    ids: Arc<IdGenerator>,
    /// Replaced by a new producer after a fatal error (see `publish`).
    producer: RwLock<FutureProducer>,
    producer_config: ClientConfig,
    /// Writes withdrawals; waits for the log as long as it takes.
    withdrawals: FutureProducer,
    topic: String,
    partitions: i32,
    cache: Arc<Cache>,
    archive: Arc<ArchiveProgress>,
    nats: async_nats::Client,
    subject_prefix: String,
    /// What the rooms' and the users' live subjects look like, to name
    /// their spans by.
    room_template: String,
    user_template: String,
}

impl Events {
    pub async fn connect(
        kafka: KafkaSettings<'_>,
        ids: Arc<IdGenerator>,
        cache: Arc<Cache>,
        archive: Arc<ArchiveProgress>,
        nats: async_nats::Client,
        subject_prefix: &str,
    ) -> anyhow::Result<Self> {
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("socket.nagle.disable", "true")
            .set("message.timeout.ms", PRODUCE_TIMEOUT.as_millis().to_string());
        let producer: FutureProducer =
            producer_config.create().context("creating the Kafka producer (KAFKA_BROKERS)")?;
        // A withdrawal must get through however long the log is away: no
        // delivery timeout.
        let withdrawals: FutureProducer = producer_config
            .clone()
            .set("message.timeout.ms", "0")
            .create()
            .context("creating the Kafka producer of withdrawals")?;
        ensure_topic(&kafka).await?;
        let partitions = partition_count(&producer, kafka.topic).await?;
        Ok(Self {
            ids,
            producer: RwLock::new(producer),
            producer_config,
            withdrawals,
            topic: kafka.topic.to_owned(),
            partitions,
            cache,
            archive,
            nats,
            subject_prefix: subject_prefix.to_owned(),
            room_template: room_subject_template(subject_prefix),
            user_template: user_subject_template(subject_prefix),
        })
    }

    /// Gives the event by `uid` in `room_id` an id and a time, and sends it
    /// down the path; the event as logged. An entry the log refused is
    /// withdrawn ([`Events::withdraw`]). A change is not: a change sets a
    /// state (a text, a deletion, one user's reaction), so one the log takes
    /// after all, late, only sets what the client asked for, and never over
    /// a newer change (the archiver applies the one with the highest id).
    pub async fn publish(self: &Arc<Self>, room_id: i64, uid: i64, kind: Kind) -> Result<Event> {
        let event = self.prepare(room_id, uid, kind)?;
        let events = self.clone();
        to_the_end(async move {
            match events.log(&event).await {
                Ok(logged) => {
                    events.spread(&event, logged, Spread::First).await;
                    Ok(event)
                }
                Err(refused) => {
                    if event.is_entry() {
                        events.withdraw(room_id, event.id);
                    }
                    Err(refused)
                }
            }
        })
        .await
    }

    /// The event by `uid` in `room_id`, with its id and time, not sent yet.
    pub fn prepare(&self, room_id: i64, uid: i64, kind: Kind) -> Result<Event> {
        let id = self.ids.next().ok_or(Error::Unavailable("temporarily unavailable"))?;
        Ok(Event { id, room_id, uid, timestamp: Some(timestamp(chrono::Utc::now())), kind: Some(kind) })
    }

    /// Writes the event to the message log and waits for its
    /// acknowledgement: from then on it will reach history. Refused as
    /// "temporarily unavailable" when the log does not take it in time;
    /// the caller decides whether to withdraw it. Its span, `send
    /// chat.messages`, goes on in the record's headers, to the archiver.
    pub async fn log(&self, event: &Event) -> Result<Logged> {
        let (room_id, id) = (event.room_id, event.id);
        let payload = event.encode_to_vec();
        let key = room_id.to_string();
        let partition = self.partition_of(room_id);
        let span = tracing::info_span!(
            "kafka.send",
            otel.name = format!("send {}", self.topic),
            otel.kind = "producer",
            otel.status_code = Empty,
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = self.topic,
            messaging.destination.partition.id = partition.to_string(),
            messaging.message.id = id.to_string(),
            messaging.kafka.offset = Empty,
            error.type = Empty,
        );
        let kafka_headers = telemetry::context_of(&span)
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| headers.insert(Header { key, value: Some(value) }));
        let record =
            FutureRecord::to(&self.topic).partition(partition).key(&key).payload(&payload).headers(kafka_headers);
        let producer = self.producer();
        let started = Instant::now();
        // librdkafka's own timeout was seen to answer only after twice its
        // value when the broker had just died: the caller waits no longer
        // than PRODUCE_TIMEOUT whatever librdkafka does.
        let refusal = match tokio::time::timeout(PRODUCE_TIMEOUT, producer.send(record, PRODUCE_TIMEOUT)).await {
            Ok(Ok(delivery)) => {
                metrics::histogram!(KAFKA_PRODUCE_DURATION).record(started.elapsed().as_secs_f64());
                metrics::counter!(MESSAGES_LOGGED).increment(1);
                span.record("messaging.kafka.offset", delivery.offset);
                return Ok(Logged { partition, offset: delivery.offset, payload });
            }
            Ok(Err((error, _))) => {
                tracing::warn!(parent: &span, %error, room_id, id, "the message log refused an event");
                if producer_is_done(&producer, &error) {
                    self.replace(&producer);
                }
                let timed_out = error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
                if timed_out { "timeout" } else { "refused" }
            }
            Err(_) => {
                tracing::warn!(parent: &span, room_id, id, "the message log did not acknowledge an event in time");
                "timeout"
            }
        };
        metrics::counter!(KAFKA_PRODUCE_ERRORS, "reason" => refusal).increment(1);
        span.record("error.type", refusal);
        span.record("otel.status_code", "ERROR");
        Err(Error::Unavailable("temporarily unavailable"))
    }

    /// After the log's acknowledgement: the event into the room's recent
    /// history, then out on the room's live subject (see [`LIVE_WAIT`]).
    pub async fn spread(&self, event: &Event, logged: Logged, spread: Spread) {
        let Logged { partition, offset, payload } = logged;
        let (room_id, id) = (event.room_id, event.id);
        match spread {
            Spread::First => {
                let archived = self.archive.known_stored_below(partition);
                if !self.cache.push_recent(room_id, id, offset, &payload, event.changed_entry(), archived).await {
                    self.cache.forget_recent(room_id);
                }
            }
            Spread::Again => self.cache.forget_recent(room_id),
        }
        let subject = room_subject(&self.subject_prefix, room_id);
        let live = async {
            feeds::publish(&self.nats, subject, &self.room_template, payload).await?;
            self.nats.flush().await.map_err(async_nats::Error::from)
        };
        match tokio::time::timeout(LIVE_WAIT, live).await {
            Ok(Ok(())) => {}
            // Durable already; live clients catch up from history.
            Ok(Err(error)) => tracing::warn!(%error, room_id, id, "cannot publish a live event"),
            Err(_) => tracing::warn!(room_id, id, "NATS did not take a live event in time; it may come late"),
        }
    }

    /// Tells one user, wherever their sockets and streams are, a live event
    /// (`Removed`): on `<prefix>.user.<uid>`, never through the log.
    pub async fn notify_user(&self, uid: i64, event: &Event) {
        let subject = user_subject(&self.subject_prefix, uid);
        if let Err(error) = feeds::publish(&self.nats, subject, &self.user_template, event.encode_to_vec()).await {
            tracing::warn!(%error, uid, room_id = event.room_id, "cannot tell a user a live event");
        }
    }

    /// Publishes a live-only event by `uid` (a read mark) straight on its
    /// room's subject, with id 0: never through the message log or the
    /// recent-history cache. At most once, as NATS is: one that is lost is
    /// not retried, and what it tells stays true where it is stored.
    pub async fn publish_live(&self, room_id: i64, uid: i64, kind: Kind) {
        let event = Event { id: 0, room_id, uid, timestamp: Some(timestamp(chrono::Utc::now())), kind: Some(kind) };
        let subject = room_subject(&self.subject_prefix, room_id);
        if let Err(error) = feeds::publish(&self.nats, subject, &self.room_template, event.encode_to_vec()).await {
            tracing::warn!(%error, room_id, uid, "cannot publish a live-only event");
        }
    }

    /// The client is told that a refused entry was not stored; but a broker
    /// that hung may still take the record it had been sent. A withdrawal
    /// behind it, in the same partition, tells the archiver to keep it out
    /// of history. It was never in the cache nor live: those come after the
    /// log's acknowledgement.
    pub fn withdraw(&self, room_id: i64, id: i64) {
        metrics::counter!(EVENTS_WITHDRAWN).increment(1);
        let withdrawals = self.withdrawals.clone();
        let (topic, key, partition) = (self.topic.clone(), room_id.to_string(), self.partition_of(room_id));
        tokio::spawn(async move {
            let id = id.to_string();
            let header = Header { key: message_log::WITHDRAWN, value: Some(id.as_str()) };
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic)
                .partition(partition)
                .key(key.as_str())
                .headers(OwnedHeaders::new().insert(header));
            if let Err((error, _)) = withdrawals.send(record, Duration::from_secs(0)).await {
                tracing::error!(%error, id, "cannot withdraw a refused event; it may reach history");
            }
        });
    }

    /// The partition of the message log that holds a room's events.
    pub fn partition_of(&self, room_id: i64) -> i32 {
        room_id.rem_euclid(self.partitions.into()) as i32
    }

    /// The offset below which a partition's records are acknowledged: what
    /// the archiver must have reached for PostgreSQL to hold all of them.
    pub async fn log_end(self: &Arc<Self>, partition: i32) -> Result<i64> {
        let events = self.clone();
        // librdkafka's offset query blocks its thread.
        let ends = tokio::task::spawn_blocking(move || {
            events.producer().client().fetch_watermarks(&events.topic, partition, Duration::from_secs(2))
        });
        match ends.await {
            Ok(Ok((_, high))) => Ok(high),
            Ok(Err(error)) => {
                tracing::warn!(%error, partition, "cannot read the message log's end");
                Err(Error::Unavailable("temporarily unavailable"))
            }
            Err(error) => Err(Error::Internal(error.into())),
        }
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().expect("lock poisoned").clone()
    }

    /// Puts a new producer, with a new producer id, in place of `failed`,
    /// unless another send has done so already.
    fn replace(&self, failed: &FutureProducer) {
        let mut current = self.producer.write().expect("lock poisoned");
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match self.producer_config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!("replaced the Kafka producer after it was fenced");
                *current = fresh;
            }
            Err(error) => tracing::error!(%error, "cannot replace the failed Kafka producer"),
        }
    }

    /// Whether the message log answers, within `wait`.
    pub async fn log_reachable(self: &Arc<Self>, wait: Duration) -> bool {
        let events = self.clone();
        // librdkafka's metadata call blocks its thread.
        let probe =
            tokio::task::spawn_blocking(move || events.producer().client().fetch_metadata(Some(&events.topic), wait));
        matches!(probe.await, Ok(Ok(_)))
    }

    pub fn nats_connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Delivers what is queued for the message log; part of a clean stop.
    pub fn flush(&self) {
        if let Err(error) = self.producer().flush(Duration::from_secs(10)) {
            tracing::warn!(%error, "Kafka producer did not flush");
        }
    }
}

/// Whether an idempotent producer will never send again. After sends timed
/// out, a broker may fence the producer for good (seen with a Kafka-compatible
/// broker that hung for a while: every later send failed with ProducerFenced); only a
/// new producer, with a new producer id, recovers.
fn producer_is_done(producer: &FutureProducer, error: &KafkaError) -> bool {
    use RDKafkaErrorCode::{
        InvalidProducerEpoch, InvalidProducerIdMapping, OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId,
    };
    producer.client().fatal_error().is_some()
        || matches!(
            error.rdkafka_error_code(),
            Some(
                ProducerFenced
                    | InvalidProducerEpoch
                    | InvalidProducerIdMapping
                    | OutOfOrderSequenceNumber
                    | UnknownProducerId
            )
        )
}

/// How many partitions the topic has. A topic just created shows none (or
/// is unknown) in the metadata until its partitions have leaders: asks
/// again for a while.
async fn partition_count(producer: &FutureProducer, topic: &str) -> anyhow::Result<i32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (producer, name) = (producer.clone(), topic.to_owned());
        let metadata =
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&name), Duration::from_secs(5)))
                .await?;
        let count = match &metadata {
            Ok(metadata) => metadata
                .topics()
                .first()
                .filter(|topic| topic.error().is_none())
                .map_or(0, |topic| topic.partitions().len()),
            Err(_) => 0,
        };
        if count > 0 {
            return Ok(count as i32);
        }
        if tokio::time::Instant::now() >= deadline {
            metadata.context("reading the message topic's partitions")?;
            anyhow::bail!("the message topic {topic} shows no partitions");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ensure_topic(kafka: &KafkaSettings<'_>) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka.brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let replication = TopicReplication::Fixed(kafka.replication_factor);
    let new_topic = NewTopic::new(kafka.topic, kafka.partitions, replication);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new_topic], &options).await.context("creating the message topic")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create Kafka topic {topic}: {code}"),
        }
    }
    Ok(())
}
