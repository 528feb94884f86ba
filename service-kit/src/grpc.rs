//! gRPC calls as spans and metrics, by a tower layer around the services
//! and channels: [`SERVER`] gives each call core-svc serves a server span
//! (continuing the caller's trace) and counts it by service, method and
//! status; [`CLIENT`] gives each call the gateway makes a client span,
//! whose context the call carries. Spans follow the OpenTelemetry RPC
//! conventions: named `chat.v1.MessageService/Send`, with `rpc.system`,
//! `rpc.service`, `rpc.method` and `rpc.grpc.status_code`. A call's status
//! is its `grpc-status`, from the response headers or the trailers; a call
//! whose response is dropped before its end (a stream its client left) is
//! `CANCELLED`. A call lasts until its response has ended, so a stream's
//! span and count come when the stream ends.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tracing::{Instrument, Span, field::Empty};

use crate::telemetry;

/// Calls answered, by `service`, `method` and `code`.
pub const SERVER_REQUESTS: &str = "chat_grpc_server_requests_total";
/// Seconds from a call to its response's headers, by `service` and
/// `method`: a unary call's latency (a stream's is the time to open it).
pub const SERVER_DURATION: &str = "chat_grpc_server_request_duration_seconds";

/// The canonical names of the gRPC status codes, by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: u16 = 1;
const UNKNOWN: u16 = 2;
const UNIMPLEMENTED: u16 = 12;
const UNAVAILABLE: u16 = 14;

pub fn describe() {
    metrics::describe_counter!(SERVER_REQUESTS, "gRPC calls answered (streams counted when they end)");
    metrics::describe_histogram!(SERVER_DURATION, "Seconds from a gRPC call to its response headers (unary latency)");
}

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Spans (and on a server, metrics) of every call through a service:
/// [`SERVER`] around a tonic server's services, [`CLIENT`] around a channel.
#[derive(Clone, Copy, Debug)]
pub struct CallLayer(Side);

/// A server span per call served, continuing the caller's trace; the call
/// counted and timed.
pub const SERVER: CallLayer = CallLayer(Side::Server);
/// A client span per call made, whose trace context the call carries.
pub const CLIENT: CallLayer = CallLayer(Side::Client);

impl<S> tower::Layer<S> for CallLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls { inner, side: self.0 }
    }
}

#[derive(Clone, Debug)]
pub struct Calls<S> {
    inner: S,
    side: Side,
}

impl<S, B, R> tower::Service<Request<B>> for Calls<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<Traced<R>>;
    type Error = S::Error;
    type Future = Boxed<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let call = Call::new(request.uri().path(), self.side);
        match self.side {
            Side::Server => {
                let carried = telemetry::fields_from(|f| request.headers().get(f)?.to_str().ok());
                telemetry::continue_trace(&call.span, &carried);
            }
            Side::Client => {
                for (field, value) in telemetry::context_of(&call.span) {
                    if let (Ok(name), Ok(value)) = (HeaderName::try_from(field), HeaderValue::try_from(value)) {
                        request.headers_mut().insert(name, value);
                    }
                }
            }
        }
        let response = self.inner.call(request).instrument(call.span.clone());
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    if call.side == Side::Server {
                        let labels = [("service", call.service.clone()), ("method", call.method.clone())];
                        metrics::histogram!(SERVER_DURATION, &labels).record(call.started.elapsed().as_secs_f64());
                    }
                    Ok(call.into_response(response))
                }
                Err(error) => {
                    // No answer at all: tonic makes it UNAVAILABLE.
                    call.finish(UNAVAILABLE);
                    Err(error)
                }
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Server,
    Client,
}

/// A call in flight: its span, and what its metrics need.
struct Call {
    span: Span,
    side: Side,
    service: String,
    method: String,
    started: Instant,
}

impl Call {
    fn new(path: &str, side: Side) -> Self {
        // A path that names no method (a stranger's probe) gets no name of its own.
        let (service, method) = rpc_of(path).unwrap_or(("unknown", "unknown"));
        let kind = if side == Side::Server { "server" } else { "client" };
        // Health checks and reflection come every few seconds and say nothing of the architecture.
        let span = if service.starts_with("grpc.") {
            Span::none()
        } else {
            tracing::info_span!(
                "grpc",
                otel.name = format!("{service}/{method}"),
                otel.kind = kind,
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = Empty,
            )
        };
        Self { span, side, service: service.to_owned(), method: method.to_owned(), started: Instant::now() }
    }

    fn into_response<R>(self, response: Response<R>) -> Response<Traced<R>> {
        // A status in the headers ends the call there (a "trailers-only" answer).
        let status = status_of(response.headers());
        response.map(|body| {
            let mut traced = Traced { body: Box::pin(body), call: Some(self) };
            if let Some(code) = status {
                traced.finish(code);
            }
            traced
        })
    }

    fn finish(self, code: u16) {
        // As i64: OpenTelemetry has no unsigned integers (a u64 would become a string).
        self.span.record("rpc.grpc.status_code", i64::from(code));
        // The conventions' errors: any failure of a call made, only the server's own failures of a call served.
        let name = CODES[usize::from(code)];
        let error = match self.side {
            Side::Client => name != "OK",
            Side::Server => {
                matches!(
                    name,
                    "UNKNOWN" | "DEADLINE_EXCEEDED" | "UNIMPLEMENTED" | "INTERNAL" | "UNAVAILABLE" | "DATA_LOSS"
                )
            }
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        if self.side == Side::Server {
            // An unknown method would otherwise name a series of its own.
            let (service, method) =
                if code == UNIMPLEMENTED { ("unknown".into(), "unknown".into()) } else { (self.service, self.method) };
            let labels = [("service", service), ("method", method), ("code", name.to_owned())];
            metrics::counter!(SERVER_REQUESTS, &labels).increment(1);
        }
    }
}

/// The service and method that a request path (`/chat.v1.MessageService/Send`) names.
fn rpc_of(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let name = |name: &str, dot: bool| {
        (1..=100).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || (dot && c == '.'))
    };
    (name(service, true) && name(method, false)).then_some((service, method))
}

/// The `grpc-status` in `headers` (or trailers); one out of range is UNKNOWN.
fn status_of(headers: &HeaderMap) -> Option<u16> {
    let code: u16 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(if usize::from(code) < CODES.len() { code } else { UNKNOWN })
}

/// A response body that ends its call when it ends, or is dropped.
pub struct Traced<B> {
    body: Pin<Box<B>>,
    call: Option<Call>,
}

impl<B> Traced<B> {
    fn finish(&mut self, code: u16) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B: Body> Body for Traced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        // A stream's work (its replay's reads) happens as it is polled: in its call's span.
        let entered = this.call.as_ref().map(|call| call.span.enter());
        let polled = this.body.as_mut().poll_frame(cx);
        drop(entered);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Traced<B> {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_service_and_method_or_nothing() {
        assert_eq!(rpc_of("/chat.v1.MessageService/Send"), Some(("chat.v1.MessageService", "Send")));
        assert_eq!(rpc_of("/grpc.health.v1.Health/Check"), Some(("grpc.health.v1.Health", "Check")));
        for stranger in ["/", "", "/x", "/a/b/c", "/a b/c", "/a/", "//b", "/a/b.c", &format!("/{}/x", "s".repeat(101))]
        {
            assert_eq!(rpc_of(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn statuses_are_read_and_named_canonically() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(status_of(&headers).map(|code| CODES[usize::from(code)]), Some("UNAVAILABLE"));
        headers.insert("grpc-status", HeaderValue::from_static("99"));
        assert_eq!(status_of(&headers), Some(UNKNOWN));
        assert_eq!((CODES[8], CODES[16]), ("RESOURCE_EXHAUSTED", "UNAUTHENTICATED"));
    }
}
