//! The path of every message and join event, in the order that makes
//! resuming gap-free: the message log (Kafka, the durability point) first,
//! then the room's recent-history cache, then the live subject (NATS).
//! Once `publish` returns, the event will reach history, and anyone who
//! subscribed to the room before it returned will see it live or in the
//! cache.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chat_proto::v1::{Message, MessageKind};
use prost::Message as _;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::{FutureProducer, FutureRecord, Producer},
    types::RDKafkaErrorCode,
};
use service_kit::feeds::room_subject;

use crate::{
    cache::Cache,
    domain::timestamp,
    error::{Error, Result},
    ids::IdGenerator,
};

/// How long a send may wait for the message log before it is refused as
/// "temporarily unavailable"; nothing is stored then.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct KafkaSettings<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub partitions: i32,
}

pub struct Events {
    ids: Arc<IdGenerator>,
    producer: FutureProducer,
    topic: String,
    cache: Arc<Cache>,
    nats: async_nats::Client,
    subject_prefix: String,
}

impl Events {
    pub async fn connect(
        kafka: KafkaSettings<'_>,
        ids: Arc<IdGenerator>,
        cache: Arc<Cache>,
        nats: async_nats::Client,
        subject_prefix: &str,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", PRODUCE_TIMEOUT.as_millis().to_string())
            .create()
            .context("creating the Kafka producer (KAFKA_BROKERS)")?;
        ensure_topic(kafka.brokers, kafka.topic, kafka.partitions).await?;
        Ok(Self {
            ids,
            producer,
            topic: kafka.topic.to_owned(),
            cache,
            nats,
            subject_prefix: subject_prefix.to_owned(),
        })
    }

    pub async fn publish(&self, room_id: i64, uid: i64, kind: MessageKind, text: String) -> Result<Message> {
        let id = self.ids.next().ok_or(Error::Unavailable("temporarily unavailable"))?;
        let message =
            Message { id, room_id, uid, kind: kind.into(), text, timestamp: Some(timestamp(chrono::Utc::now())) };
        let payload = message.encode_to_vec();
        let key = room_id.to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        if let Err((error, _)) = self.producer.send(record, PRODUCE_TIMEOUT).await {
            tracing::warn!(%error, room_id, "the message log refused an event");
            return Err(Error::Unavailable("temporarily unavailable"));
        }
        self.cache.push_recent(room_id, id, &payload).await;
        let subject = room_subject(&self.subject_prefix, room_id);
        if let Err(error) = self.nats.publish(subject, payload.into()).await {
            // Durable already; live clients catch up from history.
            tracing::warn!(%error, room_id, id, "cannot publish a live event");
        }
        Ok(message)
    }

    /// Whether the message log answers, within `wait`.
    pub async fn log_reachable(self: &Arc<Self>, wait: Duration) -> bool {
        let events = self.clone();
        // librdkafka's metadata call blocks its thread.
        let probe =
            tokio::task::spawn_blocking(move || events.producer.client().fetch_metadata(Some(&events.topic), wait));
        matches!(probe.await, Ok(Ok(_)))
    }

    pub fn nats_connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Delivers what is queued for the message log; part of a clean stop.
    pub fn flush(&self) {
        if let Err(error) = self.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(%error, "Kafka producer did not flush");
        }
    }
}

async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating the Kafka admin client")?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
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
