//! gateway: the REST and WebSocket front door. It holds no state of its
//! own: every request becomes a call to core-svc, made with the caller's own
//! token.
//!
//! - [`config`]: flags and environment.
//! - [`app`]: wires everything together and serves it ([`Application`]).
//! - [`routes`]: the HTTP API, one module per resource, with its OpenAPI
//!   description beside each handler.
//! - [`ws`]: the WebSocket protocol, and the room feeds from NATS behind it.
//! - [`wire`]: the JSON shapes of a room's entries and events, shared by
//!   the REST answers and the WebSocket frames.
//! - [`core_client`]: the gRPC clients of core-svc.
//! - [`mesh`]: what those clients call through: discovery of the replicas,
//!   balancing, deadlines, retries and load shedding.
//! - [`extract`]: what handlers take from a request: JSON bodies with
//!   case-insensitive field names, the caller's token, the client's address.
//! - [`metrics`]: `GET /metrics`, counters in the Prometheus text format.
//! - [`web`]: the browser chat client's files (`web/`), served at `/`.
//! - [`error`]: the one error type and its JSON body.

pub mod app;
pub mod config;
pub mod core_client;
pub mod error;
pub mod extract;
pub mod mesh;
pub mod metrics;
pub mod routes;
pub mod web;
pub mod wire;
pub mod ws;

pub use app::Application;
pub use config::Config;
