use tracing_subscriber::{EnvFilter, filter::LevelFilter, fmt, prelude::*};

/// Installs the global subscriber: JSON lines when `LOG_FORMAT=json` (what a
/// log collector wants), readable text otherwise. `RUST_LOG` sets the level.
/// Spans carry trace context ([`crate::telemetry`]).
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Trace context flows whatever the log level; libraries' debug spans stay out.
    let registry = tracing_subscriber::registry().with(crate::telemetry::layer().with_filter(LevelFilter::INFO));
    let result = if json {
        registry.with(fmt::layer().json().flatten_event(true).with_filter(filter)).try_init()
    } else {
        registry.with(fmt::layer().with_filter(filter)).try_init()
    };
    // Tests start several services in one process; the first one wins.
    if result.is_ok() {
        tracing::info!(service, "logging started");
    }
}

/// For tests that run services in their own process: trace context without
/// log output.
pub fn init_without_output() {
    let _ = tracing_subscriber::registry().with(crate::telemetry::layer().with_filter(LevelFilter::INFO)).try_init();
}
