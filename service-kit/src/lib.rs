//! What every binary of the stack shares, and nothing else.
//!
//! - [`logging`]: structured `tracing` output, one line per event.
//! - [`shutdown`]: the signal that starts a graceful shutdown.

pub mod logging;
pub mod shutdown;
