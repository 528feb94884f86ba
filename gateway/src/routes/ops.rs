//! For operators and load balancers: liveness and readiness.

use std::{collections::BTreeMap, time::Duration};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use service_kit::metrics::DEPENDENCY_UP;

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
    /// Why this gateway cannot serve, when it cannot.
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Each dependency: `ok`, `unavailable`, or `degraded` for one the
    /// service works without (Redis is only a cache).
    #[serde(rename = "Checks")]
    checks: BTreeMap<&'static str, &'static str>,
}

/// Whether this gateway can serve: 503 only when it cannot reach core-svc or
/// is shutting down. A dependency every replica shares (PostgreSQL, Redis,
/// Kafka, NATS) being down is reported in the body and in the
/// `chat_dependency_up` gauge, but does not fail readiness: taking every gateway
/// out of its load balancer at once would turn a partial outage (live chat
/// and sends go on without PostgreSQL, reads go on without Kafka) into a
/// total one.
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
    let (core_up, postgres, redis, kafka) =
        tokio::join!(serving(""), serving("postgres"), serving("redis"), serving("kafka"));
    let nats = sockets.hub.nats_connected();
    // What core-svc reports is unknown while it does not answer.
    let state = |up: Option<bool>, when_down| match up {
        Some(true) => "ok",
        Some(false) => when_down,
        None => "unknown",
    };
    let checks = BTreeMap::from([
        ("core-svc", if core_up.is_some() { "ok" } else { "unavailable" }),
        ("postgres", state(postgres, "unavailable")),
        ("redis", state(redis, "degraded")),
        ("kafka", state(kafka, "unavailable")),
        ("nats", if nats { "ok" } else { "unavailable" }),
    ]);
    for (dependency, state) in &checks {
        // The metric names core-svc as the scheme does.
        let dependency = if *dependency == "core-svc" { "core" } else { *dependency };
        metrics::gauge!(DEPENDENCY_UP, "dependency" => dependency).set(if *state == "ok" { 1.0 } else { 0.0 });
    }
    let error = if sockets.shutdown.is_cancelled() {
        Some("shutting down")
    } else if core_up.is_none() {
        Some("core-svc unavailable")
    } else {
        None
    };
    let status = if error.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(Readiness { error: error.map(str::to_owned), checks }))
}
