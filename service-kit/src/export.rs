//! OTLP export of the spans, set up by the standard variables and nothing
//! else: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! neither set: nothing is exported), `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or
//! `http/protobuf`, the default), `OTEL_SERVICE_NAME` (the binary's name by
//! default), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`. An empty variable counts as unset, as the
//! specification says; a bad value stops the start with its name.
//!
//! Spans wait for export in a bounded queue and leave it in batches from a
//! thread of their own: a slow or dead collector never holds up a request
//! nor fails one. A span that finds the queue full is dropped and counted
//! ([`SPANS_DROPPED`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
    },
};

use crate::settings::Problems;

/// Spans the export queue had no room for.
pub const SPANS_DROPPED: &str = "chat_otel_spans_dropped_total";
/// The most spans that wait for export (the specification's default).
const QUEUE: usize = 2048;
const BATCH: usize = 512;
/// How long a stop waits for the last spans to leave.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The export settings, as the variables give them.
#[derive(Debug)]
pub struct Settings {
    /// Whether an endpoint is set; the exporter reads it itself.
    export: bool,
    protocol: Protocol,
    sampler: Sampler,
    /// Whether the variables name the service; else it is the binary's name.
    service_named: bool,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads and checks the variables that `var` gives, every problem at once.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str| var(name).filter(|value| !value.is_empty());
        let mut problems = Problems::default();
        let endpoints = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];
        for name in endpoints {
            if let Some(value) = var(name) {
                let ok = value
                    .parse::<http::Uri>()
                    .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some());
                problems.check(ok, || format!("{name} must be an http:// URL (this build has no TLS), not {value:?}"));
            }
        }
        let export = endpoints.iter().any(|name| var(name).is_some());
        let protocol_name = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match protocol_name.as_deref() {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                problems.check(false, || {
                    format!("OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, not {other:?}")
                });
                Protocol::HttpBinary
            }
        };
        let sampler = sampler(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"), &mut problems);
        let attributes = var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        let pairs: Vec<Option<(&str, &str)>> = attributes
            .split(',')
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| pair.split_once('=').filter(|(key, _)| !key.trim().is_empty()))
            .collect();
        problems.check(pairs.iter().all(Option::is_some), || {
            format!("OTEL_RESOURCE_ATTRIBUTES must be key=value pairs joined by commas, not {attributes:?}")
        });
        let service_named =
            var("OTEL_SERVICE_NAME").is_some() || pairs.iter().flatten().any(|(key, _)| key.trim() == "service.name");
        problems.into_result()?;
        Ok(Self { export, protocol, sampler, service_named })
    }
}

/// `OTEL_TRACES_SAMPLER` and its argument: the specification's samplers
/// but the remote ones; parent-based sampling of every trace by default.
fn sampler(name: Option<String>, arg: Option<String>, problems: &mut Problems) -> Sampler {
    let ratio = |problems: &mut Problems| match arg.as_deref().map(str::parse::<f64>) {
        None => 1.0,
        Some(Ok(ratio)) if (0.0..=1.0).contains(&ratio) => ratio,
        Some(_) => {
            problems.check(false, || {
                format!(
                    "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, not {:?}",
                    arg.as_deref().unwrap_or_default()
                )
            });
            1.0
        }
    };
    let parent_based = |root| Sampler::ParentBased(Box::new(root));
    match name.as_deref() {
        None | Some("parentbased_always_on") => parent_based(Sampler::AlwaysOn),
        Some("parentbased_always_off") => parent_based(Sampler::AlwaysOff),
        Some("parentbased_traceidratio") => parent_based(Sampler::TraceIdRatioBased(ratio(problems))),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio(problems)),
        Some(other) => {
            problems.check(false, || {
                format!(
                    "OTEL_TRACES_SAMPLER must be always_on, always_off, traceidratio or parentbased_ with one of them, not {other:?}"
                )
            });
            parent_based(Sampler::AlwaysOn)
        }
    }
}

/// The process's tracer provider: exporting when an endpoint is set; the
/// trace context flows either way. Flush it with [`Export::shutdown`].
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Must run inside the Tokio runtime: the gRPC exporter's connection lives there.
    pub fn start(settings: Settings, service: &'static str) -> anyhow::Result<Self> {
        let mut resource = Resource::builder();
        if !settings.service_named {
            resource = resource.with_service_name(service);
        }
        let mut provider = SdkTracerProvider::builder().with_sampler(settings.sampler).with_resource(resource.build());
        if settings.export {
            // The exporter reads the endpoint, timeout and headers variables itself.
            let exporter = match settings.protocol {
                Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
                _ => {
                    opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build()
                }
            };
            provider = provider.with_span_processor(Queue::new(exporter?));
        }
        Ok(Self { provider: provider.build() })
    }

    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Sends what still waits, giving up after a few seconds: part of a
    /// clean stop. Spans that end later are not exported.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The batch thread is told to finish and waited for: off the runtime.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_WAIT)).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "the last spans were not all exported");
        }
    }
}

/// The batch processor behind a bound of [`QUEUE`] spans waiting: those
/// handed to it and not yet to the exporter. Beyond it a span is dropped
/// and counted, never waited for. (The processor's own queue has room for
/// all of them, so that it never drops one uncounted.)
#[derive(Debug)]
struct Queue {
    batches: BatchSpanProcessor,
    waiting: Arc<AtomicUsize>,
}

impl Queue {
    fn new(exporter: impl SpanExporter + 'static) -> Self {
        let waiting = Arc::new(AtomicUsize::new(0));
        let config = BatchConfigBuilder::default().with_max_queue_size(QUEUE).with_max_export_batch_size(BATCH).build();
        let exporter = Counted { exporter, waiting: waiting.clone() };
        Self { batches: BatchSpanProcessor::builder(exporter).with_batch_config(config).build(), waiting }
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.batches.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(SPANS_DROPPED).increment(1);
            return;
        }
        self.batches.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.batches.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.batches.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batches.set_resource(resource);
    }
}

/// The exporter, counting the spans that leave the queue.
#[derive(Debug)]
struct Counted<E> {
    exporter: E,
    waiting: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        self.exporter.export(batch)
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_endpoint_no_export_and_the_defaults_of_the_specification() {
        let none = settings(&[]).unwrap();
        assert!(!none.export && !none.service_named);
        assert_eq!(none.protocol, Protocol::HttpBinary);
        assert!(matches!(none.sampler, Sampler::ParentBased(_)));
        let empty = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", ""), ("OTEL_TRACES_SAMPLER", "")]).unwrap();
        assert!(!empty.export, "empty is unset");
    }

    #[test]
    fn good_values_are_taken() {
        let set = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,service.name=edge"),
        ])
        .unwrap();
        assert!(set.export && set.service_named);
        assert_eq!(set.protocol, Protocol::Grpc);
        assert!(format!("{:?}", set.sampler).contains("TraceIdRatioBased(0.1)"), "{:?}", set.sampler);
        let traces_only = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")]);
        assert!(traces_only.unwrap().export);
        assert!(settings(&[("OTEL_SERVICE_NAME", "edge-1")]).unwrap().service_named);
    }

    #[test]
    fn bad_values_are_refused_naming_their_variable() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team"),
            ("OTEL_RESOURCE_ATTRIBUTES", "=x"),
        ] {
            crate::settings::assert_refused(settings(&[(name, value)]).map(drop), name);
        }
        for arg in ["2", "-0.5", "half"] {
            let ratio = settings(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", arg)]);
            crate::settings::assert_refused(ratio.map(drop), "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1");
        }
        let both = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"), ("OTEL_TRACES_SAMPLER", "x")]).unwrap_err();
        assert!(both.to_string().contains("; OTEL_TRACES_SAMPLER"), "every problem at once: {both}");
    }
}
