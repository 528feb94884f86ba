//! The `grpc.health.v1` status of core-svc, kept current by probing its
//! dependencies. The overall status (service "") says whether this replica
//! can serve: it can while it holds its message id lease (without it, its
//! sends fail though other replicas' succeed). Each dependency is reported
//! on its own: without Redis everything works, only slower; without the
//! message log (Kafka) sends are refused as "temporarily unavailable";
//! without NATS messages are stored but not delivered live; without
//! PostgreSQL sends and cached reads go on. None of those is a reason to
//! take a replica out of service, since every replica shares them. Each is
//! also the `chat_dependency_up` gauge.

use std::{sync::Arc, time::Duration};

use service_kit::metrics::DEPENDENCY_UP;
use sqlx::PgPool;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{cache::Cache, events::Events, ids::IdGenerator};

const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The service names a client can check, besides "" (the whole of core-svc).
pub const POSTGRES: &str = "postgres";
pub const REDIS: &str = "redis";
pub const KAFKA: &str = "kafka";
pub const NATS: &str = "nats";

/// What the probes look at.
pub struct Probe {
    pub reporter: HealthReporter,
    pub db: PgPool,
    pub cache: Arc<Cache>,
    pub events: Arc<Events>,
    pub ids: Arc<IdGenerator>,
}

impl Probe {
    /// Probes once, so that every status is set before the server serves.
    pub async fn once(&self) {
        let (postgres, redis, kafka) = tokio::join!(
            async {
                tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&self.db))
                    .await
                    .is_ok_and(|result| result.is_ok())
            },
            async { tokio::time::timeout(PROBE_TIMEOUT, self.cache.ping()).await.unwrap_or(false) },
            self.events.log_reachable(PROBE_TIMEOUT),
        );
        let nats = self.events.nats_connected();
        let issuing = self.ids.issuing();
        for (service, up) in [("", issuing), (POSTGRES, postgres), (REDIS, redis), (KAFKA, kafka), (NATS, nats)] {
            let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
            self.reporter.set_service_status(service, status).await;
            if !service.is_empty() {
                metrics::gauge!(DEPENDENCY_UP, "dependency" => service).set(if up { 1.0 } else { 0.0 });
            }
        }
    }

    pub async fn forever(self) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            self.once().await;
        }
    }
}
