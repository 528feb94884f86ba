//! The metrics more than one binary exports, by the one naming scheme
//! (README, "Observability"): every name starts with `chat_`, counters end
//! in `_total`, units are in the name, histograms are in seconds, and no
//! label carries an id. Each binary describes its own beside these.

/// 1 when a dependency answered at the last check, by `dependency`.
pub const DEPENDENCY_UP: &str = "chat_dependency_up";
/// Rooms with at least one listener in this process (NATS subscriptions).
pub const ROOM_FEEDS: &str = "chat_room_feeds";
/// Event timestamp to its hand-over to this process's sockets or streams,
/// once per event, by `transport`.
pub const BROADCAST_LATENCY: &str = "chat_broadcast_latency_seconds";
/// Events written to sockets or streams, by `transport`.
pub const DELIVERIES: &str = "chat_deliveries_total";
/// Messages clients sent, by `transport`.
pub const MESSAGES_RECEIVED: &str = "chat_messages_received_total";
pub const NATS_RECONNECTS: &str = "chat_nats_reconnects_total";
/// Live publications that failed.
pub const NATS_PUBLISH_ERRORS: &str = "chat_nats_publish_errors_total";
/// Reads of a room's whole online list from Redis for the sockets entering
/// it (the gateway's; it starts it at zero).
pub const PRESENCE_LIST_READS: &str = "chat_presence_list_reads_total";
/// The archiver's records per stored batch: the one histogram of counts,
/// not seconds (its buckets are set where the recorder is made, in `ops`).
pub const ARCHIVER_BATCH_SIZE: &str = "chat_archiver_batch_size_messages";

/// The `transport` label of WebSocket clients and of gRPC ones.
pub const WS: &str = "ws";
pub const GRPC: &str = "grpc";

/// Describes the shared metrics (HELP lines), and starts the counters of
/// the `transport` a binary serves at zero, so that they are there before
/// their first event.
pub fn describe(transport: Option<&'static str>) {
    metrics::describe_gauge!(DEPENDENCY_UP, "1 when the dependency answered at the last check");
    metrics::describe_gauge!(ROOM_FEEDS, "Rooms with at least one listener in this process (NATS subscriptions)");
    metrics::describe_histogram!(
        BROADCAST_LATENCY,
        "Seconds from an event's timestamp to its hand-over to this process's sockets or streams, once per event"
    );
    metrics::describe_counter!(DELIVERIES, "Events written to sockets or streams");
    metrics::describe_counter!(MESSAGES_RECEIVED, "Messages clients sent");
    metrics::describe_counter!(NATS_RECONNECTS, "Reconnections of the NATS client");
    metrics::describe_counter!(NATS_PUBLISH_ERRORS, "Live publications that failed");
    metrics::describe_counter!(PRESENCE_LIST_READS, "Reads of a room's whole online list for the sockets entering it");
    metrics::describe_counter!(crate::export::SPANS_DROPPED, "Spans the export queue had no room for");
    metrics::counter!(crate::export::SPANS_DROPPED).increment(0);
    if let Some(transport) = transport {
        metrics::gauge!(ROOM_FEEDS).increment(0.0);
        metrics::counter!(NATS_RECONNECTS).increment(0);
        metrics::counter!(NATS_PUBLISH_ERRORS).increment(0);
        metrics::counter!(DELIVERIES, "transport" => transport).increment(0);
        metrics::counter!(MESSAGES_RECEIVED, "transport" => transport).increment(0);
    }
}
