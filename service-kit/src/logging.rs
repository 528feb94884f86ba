use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber: JSON lines when `LOG_FORMAT=json` (what a
/// log collector wants), readable text otherwise. `RUST_LOG` sets the level.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(fmt::layer().json().flatten_event(true)).try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
    // Tests start several services in one process; the first one wins.
    if result.is_ok() {
        tracing::info!(service, "logging started");
    }
}
