//! What core-svc exports on `/metrics` (METRICS_LISTEN_ADDR), by the scheme
//! of `service_kit::metrics`, besides the shared metrics and those of its
//! gRPC calls (`service_kit::grpc`).

use service_kit::metrics::GRPC;

/// Open `Subscribe` streams.
pub const GRPC_STREAMS: &str = "chat_grpc_streams";
/// Events the message log acknowledged.
pub const MESSAGES_LOGGED: &str = "chat_messages_logged_total";
/// Seconds from producing an event to the log's acknowledgement.
pub const KAFKA_PRODUCE_DURATION: &str = "chat_kafka_produce_duration_seconds";
/// Events the log did not take, by `reason` (`timeout`, `refused`).
pub const KAFKA_PRODUCE_ERRORS: &str = "chat_kafka_produce_errors_total";
pub const EVENTS_WITHDRAWN: &str = "chat_events_withdrawn_total";
pub const PASSWORD_HASHES_SHED: &str = "chat_password_hashes_shed_total";
/// Cache lookups, by `result` (`hit`, `miss`).
pub const CACHE_REQUESTS: &str = "chat_cache_requests_total";
pub const LOGIN_FAILURES: &str = "chat_login_failures_total";
/// Requests refused by a rate limit, by `limit` (`send`, `login`).
pub const RATE_LIMITED: &str = "chat_rate_limited_total";
/// Calls this replica took on, and those it refused at once (see [`crate::shed`]).
pub const GRPC_CALLS_ADMITTED: &str = "chat_grpc_calls_admitted_total";
pub const GRPC_CALLS_SHED: &str = "chat_grpc_calls_shed_total";

/// Installs the process's recorder and describes what core-svc exports,
/// every counter starting at zero.
pub fn init() {
    service_kit::ops::recorder();
    service_kit::metrics::describe(Some(GRPC));
    service_kit::grpc::describe();
    metrics::describe_gauge!(GRPC_STREAMS, "Open Subscribe streams");
    metrics::describe_counter!(MESSAGES_LOGGED, "Events the message log acknowledged");
    metrics::describe_histogram!(KAFKA_PRODUCE_DURATION, "Seconds from producing an event to its acknowledgement");
    metrics::describe_counter!(KAFKA_PRODUCE_ERRORS, "Events the message log did not take");
    metrics::describe_counter!(EVENTS_WITHDRAWN, "Refused events withdrawn from the message log");
    metrics::describe_counter!(PASSWORD_HASHES_SHED, "Password hashes refused for want of a turn");
    metrics::describe_counter!(CACHE_REQUESTS, "Cache lookups");
    metrics::describe_counter!(LOGIN_FAILURES, "Logins refused for a wrong e-mail or password");
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit");
    metrics::describe_counter!(GRPC_CALLS_ADMITTED, "gRPC calls taken on (health checks aside)");
    metrics::describe_counter!(GRPC_CALLS_SHED, "gRPC calls refused at once: too many in flight");
    metrics::gauge!(GRPC_STREAMS).increment(0.0);
    for name in [MESSAGES_LOGGED, EVENTS_WITHDRAWN, PASSWORD_HASHES_SHED, LOGIN_FAILURES] {
        metrics::counter!(name).increment(0);
    }
    for reason in ["timeout", "refused"] {
        metrics::counter!(KAFKA_PRODUCE_ERRORS, "reason" => reason).increment(0);
    }
    for result in ["hit", "miss"] {
        metrics::counter!(CACHE_REQUESTS, "result" => result).increment(0);
    }
    for limit in ["send", "login"] {
        metrics::counter!(RATE_LIMITED, "limit" => limit).increment(0);
    }
}
