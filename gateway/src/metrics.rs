//! `GET /metrics`: the gateway's counters in the Prometheus text format.
//! Requests are counted by route pattern (not by raw path, which would make
//! one series per id), WebSocket connections by what happened to them.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::{IntoResponse, Response},
};

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
/// Sockets open now.
pub const WS_CONNECTIONS: &str = "ws_connections";
/// Messages clients sent that were acknowledged with `sent`.
pub const WS_MESSAGES_SENT: &str = "ws_messages_sent_total";
/// 1 while a dependency answers, by `dependency`, as `/readyz` last saw it.
pub const DEPENDENCY_UP: &str = "dependency_up";
/// Sockets closed by the server, by reason (`too slow`, `shutdown`, ...).
pub const WS_CLOSED_BY_SERVER: &str = "ws_closed_by_server_total";
/// Calls to core-svc refused at once because this gateway had too many in flight.
pub const CORE_CALLS_SHED: &str = "core_calls_shed_total";
/// Calls to core-svc tried again on another replica.
pub const CORE_RETRIES: &str = "core_retries_total";
/// Retries not made because the retry budget was spent.
pub const CORE_RETRIES_REFUSED: &str = "core_retries_over_budget_total";
/// core-svc replicas taking calls now.
pub const CORE_REPLICAS: &str = "core_replicas_in_balancer";

/// Installs the process's recorder, so that counting starts before the
/// first request.
pub fn init() {
    service_kit::ops::recorder();
}

pub async fn render() -> impl IntoResponse {
    service_kit::ops::render_metrics()
}

/// Counts and times every request that matched a route.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels[..2]).record(started.elapsed().as_secs_f64());
    response
}
