use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "archiver", about = "Writes the message log to PostgreSQL")]
pub struct Config {
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/chat")]
    pub database_url: String,

    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    #[arg(long, env = "KAFKA_TOPIC", default_value = "chat.messages")]
    pub kafka_topic: String,

    /// Every archiver in one group shares the topic's partitions.
    #[arg(long, env = "KAFKA_GROUP", default_value = "chat-archiver")]
    pub kafka_group: String,

    /// A stable identity in the group (static membership, e.g. the pod name
    /// of a StatefulSet): a restarted archiver takes its old partitions back
    /// at once instead of after the session timeout. Unset: dynamic
    /// membership, right for replicas with changing names.
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID")]
    pub kafka_instance_id: Option<String>,

    /// The most messages written in one database transaction.
    #[arg(long, env = "ARCHIVE_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: usize,

    /// How long a batch waits to fill once its first message is in.
    #[arg(long, env = "ARCHIVE_BATCH_WAIT_MS", default_value_t = 20)]
    pub batch_wait_ms: u64,
}
