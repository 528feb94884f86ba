//! What every binary of the stack shares, and nothing else.
//!
//! - [`logging`]: structured `tracing` output, one line per event, and the
//!   spans for OpenTelemetry beside it.
//! - [`telemetry`]: W3C trace context carried across every hop.
//! - [`export`]: OTLP export of the spans, set up by the `OTEL_*` variables.
//! - [`grpc`]: spans and metrics of gRPC calls, as tower layers.
//! - [`db`]: client spans of PostgreSQL and Redis calls.
//! - [`metrics`]: the metrics several binaries export, by the one scheme.
//! - [`shutdown`]: the signal that starts a graceful shutdown.
//! - [`feeds`]: live room feeds from NATS, shared by a process's listeners
//!   (the gateway's sockets, core-svc's gRPC streams).
//! - [`live`]: live-only events (presence, typing), published straight on
//!   a room's subject, and the throttle of presence frames.
//! - [`presence`]: who is online in each room, across every process
//!   (Redis, with leases).
//! - [`message_log`]: what a record of the message log (Kafka) carries.
//! - [`settings`]: checks of the settings the binaries share.
//! - [`cli`]: the command line: settings, and an optional subcommand.
//! - [`ops`]: metrics, liveness and readiness, and the `healthcheck`
//!   subcommand.

pub mod cli;
pub mod db;
pub mod export;
pub mod feeds;
pub mod grpc;
pub mod live;
pub mod logging;
pub mod message_log;
pub mod metrics;
pub mod ops;
pub mod presence;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
