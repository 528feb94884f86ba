//! The `grpc.health.v1` status of core-svc, kept current by probing its
//! dependencies. The overall status (service "") follows PostgreSQL, without
//! which nothing works; "redis" is reported on its own, because without it
//! everything still works, only slower.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::cache::Cache;

const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The service names a client can check, besides "" (the whole of core-svc).
pub const POSTGRES: &str = "postgres";
pub const REDIS: &str = "redis";

pub async fn probe_forever(reporter: HealthReporter, db: PgPool, cache: Arc<Cache>) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    loop {
        interval.tick().await;
        let postgres = tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&db))
            .await
            .is_ok_and(|result| result.is_ok());
        let redis = tokio::time::timeout(PROBE_TIMEOUT, cache.ping()).await.unwrap_or(false);
        for (service, up) in [("", postgres), (POSTGRES, postgres), (REDIS, redis)] {
            let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status(service, status).await;
        }
    }
}
