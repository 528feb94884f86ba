//! Which core-svc replicas take calls: the addresses `CORE_GRPC_ADDR` names
//! (a list, or a DNS name with one address per replica, as a headless
//! Service has), re-resolved every `resolve_every` and after a failure, each
//! probed with `grpc.health.v1`. A replica joins the balancer once it answers
//! SERVING and leaves it when it answers NOT_SERVING, when a call to it
//! cannot connect, or when several probes in a row fail or are slow (see
//! [`leaves`]); left out, it is probed again after a backoff that doubles up
//! to [`MAX_BACKOFF`].
//!
//! The changes come out as a `tower::discover` stream for the balancer.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::join_all;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tower::discover::Change;

/// The longest an ejected replica waits for its next probe.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One entry of `CORE_GRPC_ADDR`: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

/// Parses `CORE_GRPC_ADDR`: one address or several, comma-separated, each
/// `http://host:port` or `https://host:port` (port 50051 when left out).
pub fn parse_targets(addrs: &str) -> Result<Vec<Target>, String> {
    let targets = addrs
        .split(',')
        .map(|addr| {
            let addr = addr.trim();
            let uri = addr.parse::<http::Uri>().map_err(|_| format!("{addr:?} is not an address"))?;
            let scheme = uri.scheme_str().filter(|s| matches!(*s, "http" | "https"));
            let authority = uri.authority().filter(|a| !a.host().is_empty());
            match (scheme, authority) {
                (Some(scheme), Some(authority)) => Ok(Target {
                    scheme: scheme.to_owned(),
                    host: authority.host().trim_matches(['[', ']']).to_owned(),
                    port: authority.port_u16().unwrap_or(50051),
                }),
                _ => Err(format!("{addr:?} is not an http:// or https:// address")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(targets)
}

/// How often to look again.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub resolve_every: Duration,
    /// Between probes of a replica in the balancer, and the first backoff
    /// of one out of it; also the longest a probe may take.
    pub probe_every: Duration,
    /// How many probes in a row must fail or be slow before a replica in
    /// the balancer leaves it.
    pub eject_after: u32,
}

/// What the balancer sees: a replica's channel, keyed by its address.
pub type Changes = ReceiverStream<Result<Change<SocketAddr, Channel>, Infallible>>;

/// The running discovery: the stream of changes for the balancer, where
/// calls report a replica they could not reach, and how many replicas are
/// in the balancer right now.
pub struct Discovery {
    pub changes: Changes,
    pub unreachable: mpsc::Sender<SocketAddr>,
    pub in_balancer: Arc<AtomicUsize>,
}

struct Replica {
    scheme: String,
    channel: Channel,
    in_balancer: bool,
    /// The probes in a row that failed or were slow while it was in the balancer.
    failed_probes: u32,
    backoff: Duration,
    next_probe: Instant,
}

/// Resolves and probes once (so that the first calls find the replicas that
/// answer), then goes on in a task until the balancer is dropped.
pub async fn spawn(targets: Vec<Target>, timing: Timing) -> Discovery {
    let (changes, changes_rx) = mpsc::channel(64);
    let (unreachable, mut unreachable_rx) = mpsc::channel(64);
    let in_balancer = Arc::new(AtomicUsize::new(0));
    let mut state = State { targets, timing, replicas: HashMap::new(), changes, in_balancer: in_balancer.clone() };
    state.round(true).await;
    tokio::spawn(async move {
        let mut resolve_at = Instant::now() + timing.resolve_every;
        let mut tick = tokio::time::interval(timing.probe_every.min(Duration::from_millis(250)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(addr) = unreachable_rx.recv() => {
                    if let Some(replica) = state.replicas.get_mut(&addr) {
                        eject(addr, replica, &state.changes, timing.probe_every).await;
                    }
                    resolve_at = Instant::now();
                }
            }
            if state.changes.is_closed() {
                return;
            }
            let resolve_now = Instant::now() >= resolve_at;
            if resolve_now {
                resolve_at = Instant::now() + timing.resolve_every;
            }
            state.round(resolve_now).await;
        }
    });
    Discovery { changes: ReceiverStream::new(changes_rx), unreachable, in_balancer }
}

struct State {
    targets: Vec<Target>,
    timing: Timing,
    replicas: HashMap<SocketAddr, Replica>,
    changes: ChangeTx,
    in_balancer: Arc<AtomicUsize>,
}

impl State {
    async fn round(&mut self, resolve_now: bool) {
        if resolve_now {
            resolve(&self.targets, &mut self.replicas, &self.changes).await;
        }
        probe_due(&mut self.replicas, &self.changes, self.timing).await;
        let taking_calls = self.replicas.values().filter(|r| r.in_balancer).count();
        self.in_balancer.store(taking_calls, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)] // a handful of replicas
        metrics::gauge!(crate::metrics::CORE_REPLICAS).set(taking_calls as f64);
    }
}

type ChangeTx = mpsc::Sender<Result<Change<SocketAddr, Channel>, Infallible>>;

/// Adds the addresses the names resolve to now and drops those they no
/// longer do. A name that does not resolve keeps what it had.
async fn resolve(targets: &[Target], replicas: &mut HashMap<SocketAddr, Replica>, changes: &ChangeTx) {
    let mut seen = HashSet::new();
    let mut failed = false;
    for target in targets {
        match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(addrs) => {
                for addr in addrs {
                    seen.insert(addr);
                    replicas.entry(addr).or_insert_with(|| Replica {
                        scheme: target.scheme.clone(),
                        channel: channel(&target.scheme, addr),
                        in_balancer: false,
                        failed_probes: 0,
                        backoff: Duration::ZERO,
                        next_probe: Instant::now(),
                    });
                }
            }
            Err(error) => {
                failed = true;
                tracing::warn!(host = %target.host, %error, "cannot resolve core-svc");
            }
        }
    }
    if failed {
        return;
    }
    let gone: Vec<SocketAddr> = replicas.keys().filter(|addr| !seen.contains(addr)).copied().collect();
    for addr in gone {
        if replicas.remove(&addr).is_some_and(|r| r.in_balancer) {
            tracing::info!(%addr, "core-svc replica no longer resolved");
            let _ = changes.send(Ok(Change::Remove(addr))).await;
        }
    }
}

fn channel(scheme: &str, addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("an address from the resolver is a valid URI")
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// Probes every replica whose probe is due, all at once, and moves each in
/// or out of the balancer by its answer.
async fn probe_due(replicas: &mut HashMap<SocketAddr, Replica>, changes: &ChangeTx, timing: Timing) {
    let now = Instant::now();
    let due: Vec<(SocketAddr, Channel)> =
        replicas.iter().filter(|(_, r)| r.next_probe <= now).map(|(addr, r)| (*addr, r.channel.clone())).collect();
    let answers = join_all(
        due.into_iter().map(|(addr, channel)| async move { (addr, probe(channel, timing.probe_every).await) }),
    )
    .await;
    for (addr, probe) in answers {
        let others_in_balancer = replicas.iter().filter(|(other, r)| **other != addr && r.in_balancer).count();
        let Some(replica) = replicas.get_mut(&addr) else { continue };
        if probe == Probe::Serving {
            if !replica.in_balancer {
                tracing::info!(%addr, "core-svc replica in the balancer");
                replica.in_balancer = true;
                // A fresh channel: the old one may hold a connection that a
                // stopped process left half open.
                replica.channel = channel(&replica.scheme, addr);
                let _ = changes.send(Ok(Change::Insert(addr, replica.channel.clone()))).await;
            }
            replica.failed_probes = 0;
            replica.backoff = Duration::ZERO;
            replica.next_probe = Instant::now() + timing.probe_every;
            continue;
        }
        if !replica.in_balancer {
            eject(addr, replica, changes, timing.probe_every).await;
            continue;
        }
        replica.failed_probes += 1;
        if leaves(probe, replica.failed_probes, timing.eject_after, others_in_balancer) {
            tracing::warn!(%addr, ?probe, failed_probes = replica.failed_probes, "core-svc replica fails its probes");
            eject(addr, replica, changes, timing.probe_every).await;
        } else {
            tracing::info!(%addr, ?probe, failed_probes = replica.failed_probes, "core-svc replica kept in the balancer");
            replica.next_probe = Instant::now() + timing.probe_every;
        }
    }
}

/// What one health check of a replica found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Serving,
    /// It answered, and says it cannot serve (a dependency down, its id
    /// lease lost).
    NotServing,
    /// No answer: it could not connect, or the call broke.
    Failed,
    /// No answer within the probe's limit: stopped, or only busy.
    Slow,
}

/// Whether a replica in the balancer leaves it after a probe that was not
/// SERVING, the `in_a_row`th such probe. NOT_SERVING is the replica's own
/// word and counts at once. A failed or slow probe counts once `eject_after`
/// have come in a row: one slow answer under load (a probe waits behind the
/// replica's calls) is no sign of a dead process, and ejecting on it turned
/// a busy replica into every call failing at once. And slowness alone never
/// takes the last replica out: with none in the balancer every call fails
/// at once, where a slow replica still answers most of them by their
/// deadline (one that is stopped holds each call until its deadline).
fn leaves(probe: Probe, in_a_row: u32, eject_after: u32, others_in_balancer: usize) -> bool {
    match probe {
        Probe::Serving => false,
        Probe::NotServing => true,
        Probe::Failed => in_a_row >= eject_after,
        Probe::Slow => in_a_row >= eject_after && others_in_balancer > 0,
    }
}

/// Takes a replica out of the balancer (if it is in) and sets its next probe
/// after a backoff that doubles each time.
async fn eject(addr: SocketAddr, replica: &mut Replica, changes: &ChangeTx, first_backoff: Duration) {
    replica.failed_probes = 0;
    if replica.in_balancer {
        tracing::warn!(%addr, "core-svc replica ejected");
        replica.in_balancer = false;
        let _ = changes.send(Ok(Change::Remove(addr))).await;
    }
    replica.backoff = (replica.backoff * 2).clamp(first_backoff, MAX_BACKOFF);
    replica.next_probe = Instant::now() + replica.backoff;
}

/// Asks the replica whether it is serving, waiting at most `limit`.
async fn probe(channel: Channel, limit: Duration) -> Probe {
    let mut health = HealthClient::new(channel);
    let check = health.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(answer)) if answer.get_ref().status() == ServingStatus::Serving => Probe::Serving,
        Ok(Ok(_)) => Probe::NotServing,
        Ok(Err(_)) => Probe::Failed,
        Err(_) => Probe::Slow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_addresses_is_parsed_and_bad_entries_named() {
        let targets = parse_targets("http://a:1, https://b.svc:2,http://[::1]:3,http://c").unwrap();
        let hosts: Vec<(&str, &str, u16)> =
            targets.iter().map(|t| (t.scheme.as_str(), t.host.as_str(), t.port)).collect();
        assert_eq!(hosts, [("http", "a", 1), ("https", "b.svc", 2), ("http", "::1", 3), ("http", "c", 50051)]);
        for bad in ["", "a:1", "ftp://a:1", "http://", "http://a:1,,http://b:2"] {
            assert!(parse_targets(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_replica_leaves_after_several_bad_probes_in_a_row_and_slowness_never_empties_the_balancer() {
        assert!(leaves(Probe::NotServing, 1, 3, 0), "NOT_SERVING is its own word: at once, even the last one");
        for probe in [Probe::Failed, Probe::Slow] {
            assert!(!leaves(probe, 1, 3, 2), "{probe:?}: one is not enough");
            assert!(!leaves(probe, 2, 3, 2), "{probe:?}: nor two");
            assert!(leaves(probe, 3, 3, 2), "{probe:?}: the third in a row");
            assert!(leaves(probe, 1, 1, 2), "{probe:?}: at once when set to 1");
        }
        assert!(leaves(Probe::Failed, 3, 3, 0), "a replica that cannot be reached leaves, even the last");
        assert!(!leaves(Probe::Slow, 3, 3, 0), "the last one is kept while it is only slow");
        assert!(!leaves(Probe::Slow, 100, 3, 0), "however long");
        assert!(!leaves(Probe::Serving, 5, 3, 2));
    }
}
