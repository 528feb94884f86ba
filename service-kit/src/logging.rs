//! The global subscriber, two layers side by side: log lines, as `RUST_LOG`
//! selects them (JSON when `LOG_FORMAT=json`, with the trace and span ids
//! of the span they are written in; readable text otherwise), and spans at
//! info and above for OpenTelemetry ([`crate::telemetry`], exported by
//! [`crate::export`]), whatever `RUST_LOG` says, so that traces do not
//! depend on the log level.

use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Level, Metadata, Subscriber, subscriber::Interest};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, filter_fn},
    fmt::{
        self, FmtContext, FormatEvent, FormatFields, MakeWriter,
        format::{Format, Json, Writer},
    },
    layer::{Context, Filter},
    prelude::*,
    registry::LookupSpan,
};

use crate::export::{self, Export};

/// Installs the global subscriber and starts the export of spans, if the
/// `OTEL_*` variables ask for it; refused when they are bad. Flush what it
/// returns at shutdown ([`Export::shutdown`]).
pub fn init(service: &'static str) -> anyhow::Result<Export> {
    let export = Export::start(export::Settings::from_env()?, service)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Tests start several services in one process; the first one wins.
    if subscriber(filter, json, export.provider(), std::io::stdout).try_init().is_ok() {
        tracing::info!(service, "logging started");
    }
    Ok(export)
}

/// For tests that run services in their own process: trace context without
/// log output or export.
pub fn init_without_output() {
    let spans = crate::telemetry::layer(&SdkTracerProvider::builder().build());
    let _ = tracing_subscriber::registry().with(spans.with_filter(AlwaysAsked(LevelFilter::INFO))).try_init();
}

fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    provider: &SdkTracerProvider,
    writer: W,
) -> impl Subscriber + Send + Sync + for<'span> LookupSpan<'span>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let spans = crate::telemetry::layer(provider).with_filter(AlwaysAsked(LevelFilter::INFO));
    // Lines show the spans they are written in (and their trace ids) whatever the level.
    let shown = || {
        let spans = filter_fn(|meta| meta.is_span() && *meta.level() <= Level::INFO);
        AlwaysAsked(spans.with_max_level_hint(LevelFilter::INFO).or(filter))
    };
    let lines = if json {
        let format = WithTraceIds(fmt::format().json().flatten_event(true));
        fmt::layer().json().event_format(format).with_writer(writer).with_filter(shown()).boxed()
    } else {
        fmt::layer().with_writer(writer).with_filter(shown()).boxed()
    };
    tracing_subscriber::registry().with(spans).with(lines)
}

/// A per-layer filter that is asked about each span and event, never only
/// once per call site. Per-layer filters keep what they decided in a
/// thread-local until the span or event arrives; a call site they all
/// enable for good is no longer asked, and takes whatever a check without
/// an event left there (`tracing::enabled!`, `log::log_enabled!`: sqlx asks
/// after every query). That dropped warnings when `RUST_LOG` was above info
/// (tokio-rs/tracing#2704 and its kin).
struct AlwaysAsked<F>(F);

impl<S, F: Filter<S>> Filter<S> for AlwaysAsked<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.0.callsite_enabled(meta).is_never() { Interest::never() } else { Interest::sometimes() }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx);
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx);
    }

    fn on_exit(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx);
    }

    fn on_close(&self, id: tracing::span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx);
    }
}

/// tracing-subscriber's JSON lines, each with the `trace_id` and `span_id`
/// of the span it was written in (whether or not `RUST_LOG` shows that span).
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The innermost span that is an OpenTelemetry span (RUST_LOG may show debug spans that are not).
        let ids = ctx.event_scope().into_iter().flatten().find_map(|span| {
            let extensions = span.extensions();
            let data = extensions.get::<OtelData>()?;
            Some((data.trace_id()?, data.span_id()?))
        });
        // The line is one JSON object: the ids go in before its end.
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace_id, span_id)), Some(object)) if trace_id != TraceId::INVALID => {
                writeln!(writer, r#"{object},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#)
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(rust_log: &str, json: bool, log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(EnvFilter::new(rust_log), json, &provider, move || writer.clone());
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_warning_is_written_with_rust_log_warn_even_after_a_check_without_an_event() {
        let text = logged("warn", false, || {
            let span = tracing::info_span!("request");
            let _in = span.enter();
            tracing::warn!("first warning");
            // What sqlx does after each query.
            let _ = tracing::enabled!(tracing::Level::INFO);
            tracing::warn!("second warning");
            tracing::info!("an info line");
        });
        assert!(text.contains("first warning") && text.contains("second warning"), "{text}");
        assert!(!text.contains("an info line"), "{text}");
    }

    #[test]
    fn json_lines_carry_the_trace_and_span_ids_of_their_span() {
        let text = logged("warn", true, || {
            tracing::warn!("outside");
            let span = tracing::info_span!("request");
            let _in = span.enter();
            tracing::warn!(room_id = 5, "inside");
        });
        let lines: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).expect(line)).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none(), "no span, no ids: {text}");
        assert_eq!((&lines[1]["message"], &lines[1]["room_id"]), (&Value::from("inside"), &Value::from(5)));
        let hex = |key: &str, len: usize| {
            let id = lines[1][key].as_str().unwrap_or_default();
            id.len() == len && id.chars().all(|c| c.is_ascii_hexdigit()) && id.chars().any(|c| c != '0')
        };
        assert!(hex("trace_id", 32) && hex("span_id", 16), "{text}");
    }
}
