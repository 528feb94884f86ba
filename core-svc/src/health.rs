//! The `grpc.health.v1` status of core-svc, kept current by probing its
//! dependencies. The overall status (service "") follows PostgreSQL, without
//! which nothing works. Each dependency is reported on its own too: without
//! Redis everything works, only slower; without the message log (Kafka)
//! sends are refused as "temporarily unavailable"; without NATS messages
//! are stored but not delivered live. None of those is a reason to take a
//! replica out of service, since every replica shares them.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{cache::Cache, events::Events};

const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The service names a client can check, besides "" (the whole of core-svc).
pub const POSTGRES: &str = "postgres";
pub const REDIS: &str = "redis";
pub const KAFKA: &str = "kafka";
pub const NATS: &str = "nats";

pub async fn probe_forever(reporter: HealthReporter, db: PgPool, cache: Arc<Cache>, events: Arc<Events>) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    loop {
        interval.tick().await;
        let (postgres, redis, kafka) = tokio::join!(
            async {
                tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&db))
                    .await
                    .is_ok_and(|result| result.is_ok())
            },
            async { tokio::time::timeout(PROBE_TIMEOUT, cache.ping()).await.unwrap_or(false) },
            events.log_reachable(PROBE_TIMEOUT),
        );
        let nats = events.nats_connected();
        for (service, up) in [("", postgres), (POSTGRES, postgres), (REDIS, redis), (KAFKA, kafka), (NATS, nats)] {
            let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status(service, status).await;
        }
    }
}
