//! The gateway's side of the mesh to core-svc: one service that every gRPC
//! client of [`crate::core_client`] calls through. Each concern is a layer of
//! its own, composed here, outermost first:
//!
//! 1. [`deadline`]: the call's deadline, sent as `grpc-timeout`;
//! 2. [`retry`]: idempotent calls retried within a budget, each answer
//!    read whole first;
//! 3. [`shed`]: a limit of calls in flight for the whole gateway, failing fast past it;
//! 4. a bounded buffer, then tower's power-of-two-choices balancer over the
//!    replicas [`discovery`] finds, each replica behind its own limit of
//!    calls in flight and its count of pending calls (the load p2c compares).

pub mod deadline;
pub mod discovery;
pub mod retry;
pub mod shed;

use std::{net::SocketAddr, time::Duration};

use futures::StreamExt;
use http::{Request, Response};
use tonic::{body::Body, transport::Channel};
use tower::{
    BoxError, ServiceBuilder, ServiceExt,
    balance::p2c::Balance,
    discover::Change,
    limit::ConcurrencyLimit,
    load::{CompleteOnResponse, PendingRequests},
    util::BoxCloneSyncService,
};

pub use discovery::{Target, Timing};

/// What every gRPC client of core-svc calls.
pub type Mesh = BoxCloneSyncService<Request<Body>, Response<Body>, tonic::Status>;

/// The mesh's settings (see the gateway's `Config`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub targets: Vec<Target>,
    pub timing: Timing,
    pub deadline: Duration,
    pub max_in_flight: usize,
    pub max_in_flight_per_replica: usize,
    pub retry_percent: f32,
}

/// Starts discovery (waiting for its first round of probes) and builds the stack.
pub async fn build(settings: Settings) -> Mesh {
    let discovery = discovery::spawn(settings.targets, settings.timing).await;
    let replicas = discovery.in_balancer.clone();
    let unreachable = discovery.unreachable;
    let per_replica = settings.max_in_flight_per_replica;
    let changes = discovery.changes.map(move |change| {
        Ok::<_, BoxError>(match change? {
            Change::Insert(addr, channel) => Change::Insert(addr, replica(addr, channel, per_replica, &unreachable)),
            Change::Remove(addr) => Change::Remove(addr),
        })
    });
    let balanced = tower::buffer::Buffer::new(Balance::new(changes), settings.max_in_flight);
    let retried = ServiceBuilder::new()
        .retry(retry::Idempotent::new(settings.retry_percent))
        .map_future(retry::whole_answer)
        .map_request(retry::into_body)
        .layer(shed::ShedLayer::new(settings.max_in_flight, replicas))
        .service(balanced);
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(deadline::DeadlineLayer(settings.deadline))
            .service(retry::collect(BoxCloneSyncService::new(retried))),
    )
}

type Replica = PendingRequests<ConcurrencyLimit<BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>>>;

/// One replica as the balancer sees it: its channel behind a limit of calls
/// in flight (past it, the replica is not ready and p2c picks another), which
/// reports a connection failure to discovery, and counts its pending calls.
fn replica(
    addr: SocketAddr,
    channel: Channel,
    max_in_flight: usize,
    unreachable: &tokio::sync::mpsc::Sender<SocketAddr>,
) -> Replica {
    let unreachable = unreachable.clone();
    let reporting = channel.map_err(move |error| {
        // The channel fails a call only when it cannot reach the replica;
        // what the replica answers comes back as a response.
        let _ = unreachable.try_send(addr);
        BoxError::from(error)
    });
    let limited = ConcurrencyLimit::new(BoxCloneSyncService::new(reporting), max_in_flight);
    PendingRequests::new(limited, CompleteOnResponse::default())
}
