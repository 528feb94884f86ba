//! core-svc: the one gRPC service behind every client. It owns the schema
//! and answers for users, sessions, rooms and messages.
//!
//! - [`config`]: flags and environment.
//! - [`app`]: wires everything together and serves it ([`Application`]).
//! - [`users`], [`rooms`], [`messages`]: the gRPC services, one module per
//!   resource.
//! - [`events`]: the path of every event of a room's history: Kafka, then
//!   the recent-history cache, then NATS; and live events to one user.
//! - [`history`]: a room's history as readers see it (entries in their
//!   latest state, or every event after an id), from the cache and
//!   PostgreSQL.
//! - [`send_keys`]: idempotent sends, by a key every replica sees.
//! - [`ids`]: message ids (53-bit Snowflakes) and the node leases behind them.
//! - [`domain`]: the input types, parsed and validated at the edge.
//! - [`auth`]: who the caller is, from the bearer token in the metadata.
//! - [`limits`]: rate limits shared by every replica (through Redis).
//! - [`password`]: password hashes (access tokens are `client_input::token`).
//! - [`cache`]: Redis in front of the hot reads; never the source of truth.
//! - [`membership`]: membership lookups in PostgreSQL, one query for the
//!   concurrent checks of a room.
//! - [`archive`]: how far the archiver has stored the message log, so that
//!   history knows what PostgreSQL holds.
//! - [`health`]: the `grpc.health.v1` status, from probing the dependencies.
//! - [`metrics`]: what core-svc exports on `/metrics`.
//! - [`shed`]: the limit of calls at once, past which calls are refused at once.
//! - [`error`]: the one error type, and how it maps to gRPC status codes.

pub mod app;
pub mod archive;
pub mod auth;
pub mod cache;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod health;
pub mod history;
pub mod ids;
pub mod limits;
pub mod membership;
pub mod messages;
pub mod metrics;
pub mod password;
pub mod rooms;
pub mod send_keys;
pub mod shed;
pub mod users;

pub use app::Application;
pub use config::Config;
