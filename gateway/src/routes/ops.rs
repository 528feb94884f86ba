//! For operators and load balancers: liveness and readiness.

use std::{collections::BTreeMap, time::Duration};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use crate::{core_client::CoreClient, ws::Sockets};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// What is not ready, when something is not.
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Each dependency: `ok`, `unavailable`, or `degraded` for one the
    /// service works without (Redis is only a cache).
    #[serde(rename = "Checks")]
    checks: BTreeMap<&'static str, &'static str>,
}

/// 200 when the dependencies answer, else 503 naming the one that does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Readiness),
    (status = 503, body = Readiness),
))]
async fn readyz(State(core): State<CoreClient>, State(sockets): State<Sockets>) -> (StatusCode, Json<Readiness>) {
    let serving = async |service: &str| {
        let request = HealthCheckRequest { service: service.to_owned() };
        let answer = tokio::time::timeout(Duration::from_secs(2), core.health.clone().check(request)).await;
        match answer {
            Ok(Ok(reply)) => Some(reply.into_inner().status() == ServingStatus::Serving),
            _ => None,
        }
    };
    let mut checks = BTreeMap::new();
    let error = match serving("").await {
        None => {
            checks.insert("core-svc", "unavailable");
            Some("core-svc unavailable")
        }
        Some(core_up) => {
            checks.insert("core-svc", "ok");
            checks.insert("postgres", if core_up { "ok" } else { "unavailable" });
            let redis = if serving("redis").await == Some(true) { "ok" } else { "degraded" };
            checks.insert("redis", redis);
            (!core_up).then_some("postgres unavailable")
        }
    };
    let nats = sockets.hub.nats_connected();
    checks.insert("nats", if nats { "ok" } else { "unavailable" });
    let error = error.or((!nats).then_some("nats unavailable"));
    let status = if error.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(Readiness { error: error.map(str::to_owned), checks }))
}
