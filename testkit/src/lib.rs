//! Test support for the integration tests: each test gets its own database,
//! Redis key prefix, Kafka topic and NATS subjects on the real local
//! services, so tests run in parallel without seeing each other.
//!
//! `TEST_POSTGRES_URL`, `TEST_REDIS_URL`, `TEST_NATS_URL` and
//! `TEST_KAFKA_BROKERS` name the servers; the defaults are the local ones.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

pub fn postgres_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Test databases are named `chat_test_<unix seconds>_<random>`, so that
/// each run can drop what earlier runs left behind.
const PREFIX: &str = "chat_test_";
const KEEP_SECS: u64 = 3600;

/// Creates an empty database for one test and returns its URL. The service
/// under test migrates it, as it would in production.
pub async fn fresh_database() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let name = format!("{PREFIX}{now}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_url()))
        .await
        .expect("the local PostgreSQL must be running (TEST_POSTGRES_URL)");
    drop_stale_databases(&mut admin, now).await;
    admin.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("create a test database");
    format!("{}/{name}", postgres_url())
}

async fn drop_stale_databases(admin: &mut PgConnection, now: u64) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'chat\\_test\\_%'")
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    for name in names {
        let created: Option<u64> = name.strip_prefix(PREFIX).and_then(|rest| rest.split('_').next()?.parse().ok());
        if created.is_some_and(|created| created + KEEP_SECS < now) {
            // Another run may be dropping it at the same moment; either way it goes.
            let _ = admin.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str()).await;
        }
    }
}

/// A key prefix (Redis), subject prefix (NATS) or topic suffix no other test uses.
pub fn unique_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}
