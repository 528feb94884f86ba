//! `GET /metrics`: the gateway's metrics in the Prometheus text format, by
//! the scheme of `service_kit::metrics`. Requests are counted by route
//! pattern (not by raw path, which would make one series per id).

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::{IntoResponse, Response},
};
use service_kit::metrics::WS;

pub const HTTP_REQUESTS: &str = "chat_http_requests_total";
pub const HTTP_DURATION: &str = "chat_http_request_duration_seconds";
/// Sockets open now.
pub const WS_CONNECTIONS: &str = "chat_ws_connections";
/// A client's `message` frame received to its `sent` written.
pub const SEND_LATENCY: &str = "chat_send_latency_seconds";
/// Sockets closed by the server, by `reason` (`too_slow`, `shutdown`, ...).
pub const WS_CLOSED_BY_SERVER: &str = "chat_ws_closed_by_server_total";
/// Calls to core-svc refused at once because this gateway had too many in flight.
pub const CORE_CALLS_SHED: &str = "chat_core_calls_shed_total";
/// Calls to core-svc tried again on another replica.
pub const CORE_RETRIES: &str = "chat_core_retries_total";
/// Retries not made because the retry budget was spent.
pub const CORE_RETRIES_REFUSED: &str = "chat_core_retries_over_budget_total";
/// core-svc replicas taking calls now.
pub const CORE_REPLICAS: &str = "chat_core_replicas";

/// Installs the process's recorder, so that counting starts before the
/// first request, and describes what the gateway exports.
pub fn init() {
    service_kit::ops::recorder();
    service_kit::metrics::describe(Some(WS));
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    metrics::describe_histogram!(HTTP_DURATION, "Seconds to answer an HTTP request");
    metrics::describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections");
    metrics::describe_histogram!(SEND_LATENCY, "Seconds from a client's message frame to its sent frame");
    metrics::describe_counter!(WS_CLOSED_BY_SERVER, "WebSocket connections the server closed");
    metrics::describe_counter!(CORE_CALLS_SHED, "Calls to core-svc refused at once: too many in flight");
    metrics::describe_counter!(CORE_RETRIES, "Calls to core-svc tried again on another replica");
    metrics::describe_counter!(CORE_RETRIES_REFUSED, "Retries to core-svc not made: the retry budget was spent");
    metrics::describe_gauge!(CORE_REPLICAS, "core-svc replicas taking calls");
    metrics::gauge!(WS_CONNECTIONS).increment(0.0);
    metrics::counter!(CORE_CALLS_SHED).increment(0);
    metrics::counter!(CORE_RETRIES).increment(0);
    metrics::counter!(CORE_RETRIES_REFUSED).increment(0);
    metrics::counter!(service_kit::metrics::PRESENCE_LIST_READS).increment(0);
    for reason in crate::ws::connection::CLOSE_REASONS {
        metrics::counter!(WS_CLOSED_BY_SERVER, "reason" => reason).increment(0);
    }
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
