//! What every binary of the stack shares, and nothing else.
//!
//! - [`logging`]: structured `tracing` output, one line per event.
//! - [`shutdown`]: the signal that starts a graceful shutdown.
//! - [`token`]: the access tokens (HS256 JWTs) that core-svc issues and that
//!   every service verifies.

pub mod logging;
pub mod shutdown;
pub mod token;
