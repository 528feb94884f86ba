//! client-input: what clients send, parsed and checked before anything acts
//! on it. The gateway and core-svc call these functions, and so do the fuzz
//! targets (`fuzz/`); the crate depends on nothing else of the stack, so
//! that their instrumented build stays small.
//!
//! - [`json`]: JSON object bodies whose field names match case-insensitively.
//! - [`frame`]: a client's WebSocket text frame.
//! - [`query`]: a request's query parameters.
//! - [`path`]: ids in a request's path.
//! - [`token`]: access tokens: an `Authorization` value as sent, its
//!   unverified expiry, and the keys that issue and verify tokens.
//! - [`error`]: the one error type.

pub mod error;
pub mod frame;
pub mod json;
pub mod path;
pub mod query;
pub mod token;

pub use error::Error;
