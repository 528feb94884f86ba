//! What operators and orchestrators ask every binary: Prometheus metrics
//! (one recorder per process, installed once, since tests run several
//! services in one process), liveness and readiness, and the `healthcheck`
//! subcommand that asks them of a running process without a shell (the
//! container image has none).

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::metrics::ARCHIVER_BATCH_SIZE;

/// Latency buckets, in seconds, of every histogram but one.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Buckets of the archiver's batch sizes, in records.
const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// How often the recorder folds histogram samples into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide recorder, installed on first use, with its upkeep.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(ARCHIVER_BATCH_SIZE.to_owned()), &BATCH_SIZE_BUCKETS)
            })
            .expect("non-empty buckets")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        keep_up(handle.clone());
        handle
    })
}

/// The recorder keeps every histogram sample until a scrape or an upkeep
/// folds it into the buckets, and nothing but its caller runs the upkeep:
/// a process nobody scrapes (compose without its observability profile,
/// the soak) grew by 8 bytes a sample, 1.5 MiB every 10 minutes at the
/// soak's rate. A thread of its own, so that it needs no runtime; it lasts
/// as long as the process.
fn keep_up(handle: PrometheusHandle) {
    let upkeep = move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    };
    std::thread::Builder::new().name("metrics-upkeep".into()).spawn(upkeep).expect("a thread for the metrics upkeep");
}

/// The metrics in the Prometheus text format, as `GET /metrics` answers.
pub fn render_metrics() -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], recorder().render())
}

/// Whether a process without a port of its own for traffic (the archiver)
/// is ready; set by its main loop.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `/metrics`, `/healthz` (200 while the process runs) and `/readyz` (200
/// while `ready` says so), for a binary whose own port is not HTTP.
pub fn router(ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(|| async { render_metrics() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(ready): State<Readiness>| async move {
                if ready.get() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
            }),
        )
        .with_state(ready)
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ready)).with_graceful_shutdown(shutdown).await
}

/// Where a process listening on `listen` answers on this host: an
/// unspecified address (0.0.0.0, ::) is reached through loopback.
pub fn local(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        ip if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Whether `GET path` at `addr` answers 200 within 3 s: the `healthcheck`
/// subcommand of the HTTP binaries.
pub async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let ask = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        // "HTTP/1.1 200"
        Some(head.ends_with(b" 200"))
    };
    tokio::time::timeout(Duration::from_secs(3), ask).await.ok().flatten().unwrap_or(false)
}

/// The `healthcheck` subcommand of the binaries that serve HTTP: exits 0
/// when the process listening on `listen` here answers `/healthz`, else 1.
pub async fn healthcheck(listen: SocketAddr) -> ! {
    let healthy = http_ok(local(listen), "/healthz").await;
    std::process::exit(if healthy { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ops_endpoints_answer_and_readiness_follows_its_flag() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Readiness::default();
        tokio::spawn(serve(listener, ready.clone(), std::future::pending()));
        assert!(http_ok(addr, "/healthz").await);
        assert!(http_ok(addr, "/metrics").await);
        assert!(!http_ok(addr, "/readyz").await, "not ready until told");
        ready.set(true);
        assert!(http_ok(addr, "/readyz").await);
        assert!(!http_ok(addr, "/nope").await);
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(!http_ok(addr, "/healthz").await);
    }

    #[test]
    fn an_unspecified_listen_address_is_reached_through_loopback() {
        assert_eq!(local("0.0.0.0:8080".parse().unwrap()), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(local("[::]:8080".parse().unwrap()), "[::1]:8080".parse().unwrap());
        assert_eq!(local("10.1.2.3:8080".parse().unwrap()), "10.1.2.3:8080".parse().unwrap());
    }
}
