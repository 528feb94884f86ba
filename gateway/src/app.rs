use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath},
    http::{HeaderName, Request, Response},
    serve::{ListenerExt, TapIo},
};
use service_kit::{
    live,
    metrics::{DELIVERIES, MESSAGES_RECEIVED, WS},
    presence::Presence,
    telemetry,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::{
    classify::{
        ClassifiedResponse, ClassifyResponse, NeverClassifyEos, ServerErrorsAsFailures, ServerErrorsFailureClass,
        SharedClassifier,
    },
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tracing::{Span, field::Empty};

use crate::{
    config::Config,
    core_client::CoreClient,
    extract::{BODY_LIMIT, TrustForwardedFor},
    routes::{self, AppState},
    ws::{ENTERS_AT_ONCE, Hub, Sockets, USER_FEED_QUEUE, UserHub, frames::Frame},
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway, built and bound but not yet serving. Binding happens in
/// [`Application::build`] so tests can ask for port 0.
pub struct Application {
    listener: TcpListener,
    router: Router,
    sockets: Sockets,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        crate::metrics::init();
        // Starts even while NATS is down (the client keeps reconnecting and
        // /readyz says so), but gives it a moment to connect first.
        let (options, nats_reconnects) = service_kit::feeds::counting_connects();
        let nats = options
            .retry_on_initial_connect()
            .connect(service_kit::settings::nats_servers(&config.nats_url))
            .await
            .context("NATS_URL")?;
        let nats_reconnects = service_kit::feeds::Reconnects::new(nats.statistics(), nats_reconnects);
        let connected = async {
            while nats.connection_state() != async_nats::connection::State::Connected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(3), connected).await.is_err() {
            tracing::warn!("NATS is not reachable yet; live messages wait for it");
        }
        let core = CoreClient::new(config.mesh()).await;
        let live = live::Publisher { nats: nats.clone(), subject_prefix: config.nats_subject_prefix.clone() };
        let lease = Duration::from_secs(config.presence_lease_secs);
        let presence = Presence::new(&config.redis_url, &config.redis_key_prefix, lease, live);
        let sockets = Sockets {
            core: Arc::new(core.clone()),
            users: Arc::new(UserHub::users(
                nats.clone(),
                config.nats_subject_prefix.clone(),
                USER_FEED_QUEUE,
                service_kit::feeds::removal,
                WS,
            )),
            hub: Arc::new(Hub::rooms(nats, config.nats_subject_prefix, config.ws_queue_frames, Frame::of_event, WS)),
            presence,
            enters: Arc::new(Semaphore::new(ENTERS_AT_ONCE)),
            nats_reconnects,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            deliveries: metrics::counter!(DELIVERIES, "transport" => WS),
            messages_received: metrics::counter!(MESSAGES_RECEIVED, "transport" => WS),
        };
        let state = AppState {
            core,
            sockets: sockets.clone(),
            trust_forwarded_for: TrustForwardedFor(config.trust_forwarded_for),
        };
        let trace = TraceLayer::new(SharedClassifier::new(Faults)).make_span_with(http_span).on_response(
            |response: &Response<_>, _: Duration, span: &Span| {
                span.record("http.response.status_code", i64::from(response.status().as_u16()));
                if response.status().is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            },
        );
        let router = routes::router(state, &config.web_dir)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::GATEWAY_TIMEOUT, Duration::from_secs(30)))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(trace)
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
        let listener =
            TcpListener::bind(config.listen_addr).await.with_context(|| format!("binding {}", config.listen_addr))?;
        Ok(Self { listener, router, sockets })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes the requests in
    /// flight and closes every WebSocket with 1001 once what was queued
    /// for it is written.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let close_sockets = self.sockets.shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            close_sockets.cancel();
        };
        axum::serve(accept_nodelay(self.listener), service).with_graceful_shutdown(shutdown).await?;
        self.sockets.tracker.close();
        self.sockets.tracker.wait().await;
        // The sockets' members go offline now, not when the lease runs out.
        self.sockets.presence.flush().await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// The server span of a request, by the OpenTelemetry HTTP conventions:
/// named by its route's template (`GET /room/{roomID}`), continuing the
/// caller's trace. The query string, where a WebSocket's token may travel,
/// is left out.
fn http_span<B>(request: &Request<B>) -> Span {
    let method = request.method().as_str();
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let headers = request.headers();
    let request_id = headers.get(REQUEST_ID).and_then(|id| id.to_str().ok()).unwrap_or("");
    let span = tracing::info_span!(
        "http",
        otel.name = route.map_or_else(|| method.to_owned(), |route| format!("{method} {route}")),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        url.path = request.uri().path(),
        request_id,
    );
    telemetry::continue_trace(&span, &telemetry::fields_from(|f| headers.get(f)?.to_str().ok()));
    span
}

/// The trace layer's failure classifier: a 5xx answer is a failure, which
/// the layer logs at ERROR, except a 503. That one is an expected answer,
/// not a fault: `/readyz` while the gateway starts or core-svc is out of
/// reach, or a call whose dependency is down (logged at WARN where it is
/// seen). Its span is still marked as an error.
#[derive(Clone, Copy)]
struct Faults;

impl ClassifyResponse for Faults {
    type FailureClass = ServerErrorsFailureClass;
    type ClassifyEos = NeverClassifyEos<ServerErrorsFailureClass>;

    fn classify_response<B>(self, response: &Response<B>) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            return ClassifiedResponse::Ready(Ok(()));
        }
        ServerErrorsAsFailures::new().classify_response(response)
    }

    fn classify_error<E: std::fmt::Display + 'static>(self, error: &E) -> Self::FailureClass {
        ServerErrorsAsFailures::new().classify_error(error)
    }
}

/// The listener, setting `TCP_NODELAY` on every accepted socket: a frame
/// leaves as soon as it is written instead of waiting on Nagle's algorithm
/// for the client's delayed ACK (in the fan-out benchmark at 30,000
/// deliveries/s, p99 41.8 ms without it, 17.5 ms with it).
fn accept_nodelay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(|socket| {
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    })
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn the_builder_refuses_invalid_settings() {
        use clap::Parser;
        let config = Config {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            ws_queue_frames: 0,
            ..Config::parse_from(["gateway"])
        };
        let error = Application::build(config).await.err().expect("refused");
        assert!(error.to_string().contains("WS_QUEUE_FRAMES must be 1 to 65536, not 0"), "{error:#}");
    }

    #[test]
    fn a_503_is_no_failure_but_other_server_errors_are() {
        let failure = |status: u16| {
            let response = Response::builder().status(status).body(()).unwrap();
            matches!(Faults.classify_response(&response), ClassifiedResponse::Ready(Err(_)))
        };
        assert!(!failure(503), "not ready, or a dependency down: expected");
        assert!(failure(500) && failure(502) && failure(504));
        assert!(!failure(200) && !failure(404));
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_set() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = accept_nodelay(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY on the accepted socket");
    }
}
