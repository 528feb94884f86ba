use std::net::SocketAddr;

use clap::Parser;
use service_kit::settings::Problems;
use sqlx::postgres::PgConnectOptions;

#[derive(Debug, Clone, Parser)]
#[command(name = "archiver", about = "Writes the message log to PostgreSQL")]
pub struct Config {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "ARCHIVER_LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub http_listen_addr: SocketAddr,

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

impl Config {
    /// Checks what the types of the fields do not, so that a bad setting
    /// stops the start with a message naming it. Every problem is reported
    /// at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Problems::default();
        problems.check(self.database_url.parse::<PgConnectOptions>().is_ok(), || {
            "DATABASE_URL must be a postgres:// URL".to_owned()
        });
        problems.kafka_brokers(&self.kafka_brokers);
        problems.kafka_topic(&self.kafka_topic);
        problems.check(!self.kafka_group.trim().is_empty(), || "KAFKA_GROUP must not be empty".to_owned());
        problems.check(self.kafka_instance_id.as_ref().is_none_or(|id| !id.trim().is_empty()), || {
            "KAFKA_GROUP_INSTANCE_ID must not be empty when set".to_owned()
        });
        problems.in_range("ARCHIVE_BATCH_SIZE", self.batch_size, 1..=100_000);
        problems.in_range("ARCHIVE_BATCH_WAIT_MS", self.batch_wait_ms, 0..=60_000);
        problems.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Config {
        Config::parse_from(["archiver"])
    }

    #[test]
    fn the_defaults_are_valid_and_bad_settings_are_named() {
        defaults().validate().unwrap();
        let bad = Config { batch_size: 0, kafka_group: " ".into(), ..defaults() };
        let expected = "KAFKA_GROUP must not be empty; ARCHIVE_BATCH_SIZE must be 1 to 100000, not 0";
        service_kit::settings::assert_refused(bad.validate(), expected);
    }
}
