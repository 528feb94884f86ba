//! Trace context across every hop (W3C `traceparent` and `tracestate`):
//! HTTP headers, gRPC metadata, Kafka record headers and NATS message
//! headers, so that one trace follows a message from the sender's socket to
//! history and to the gateways that deliver it. Each process turns its
//! `tracing` spans into OpenTelemetry spans ([`crate::export`] sends them
//! on, when asked to).

use std::collections::HashMap;

use opentelemetry::{
    global,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, registry::LookupSpan};

/// The carrier fields of the W3C trace context.
pub const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// The layer that turns `tracing` spans into OpenTelemetry spans of
/// `provider`, and the propagator that writes and reads their context.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    global::set_text_map_propagator(TraceContextPropagator::new());
    // No thread and busy/idle time attributes: every enter and exit would pay for them.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("chat"))
        .with_threads(false)
        .with_tracked_inactivity(false)
}

/// The trace context of `span`, as carrier fields to copy into a request's
/// headers or a record's. Empty where spans carry no context.
pub fn context_of(span: &Span) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&span.context(), &mut fields));
    fields
}

/// Makes `span` continue the trace that `fields` (read from a carrier)
/// name; without valid fields it stays the root of a trace of its own.
pub fn continue_trace(span: &Span, fields: &HashMap<String, String>) {
    if fields.is_empty() {
        return;
    }
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(fields));
    // Fails only when the span is disabled, and then there is nothing to trace.
    let _ = span.set_parent(parent);
}

/// Links `span` to the trace that `fields` name: for a span that handles
/// many traced things at once (a batch), where none is its parent.
pub fn link(span: &Span, fields: &HashMap<String, String>) {
    let context = global::get_text_map_propagator(|propagator| propagator.extract(fields));
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// The carrier fields found by `get`, for [`continue_trace`].
pub fn fields_from<'a>(get: impl Fn(&str) -> Option<&'a str>) -> HashMap<String, String> {
    FIELDS.iter().filter_map(|field| Some((field.to_string(), get(field)?.to_owned()))).collect()
}
