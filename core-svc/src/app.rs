use std::{future::Future, net::SocketAddr, num::NonZeroUsize, sync::Arc, time::Duration};

use anyhow::Context;
use chat_proto::v1::{
    message_service_server::MessageServiceServer, room_service_server::RoomServiceServer,
    user_service_server::UserServiceServer,
};
use client_input::token::TokenKeys;
use service_kit::{
    grpc::{self, CallLayer},
    live,
    metrics::GRPC,
    ops::Readiness,
    presence::Presence,
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::{net::TcpListener, task::AbortHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{
    codegen::http::{HeaderName, Method},
    transport::Server,
};
use tonic_web::GrpcWebLayer;
use tower::layer::util::{Identity, Stack};
use tower_http::cors::CorsLayer;

use crate::{
    archive::ArchiveProgress,
    auth::AuthLayer,
    cache::Cache,
    config::Config,
    events::{Events, KafkaSettings},
    health,
    history::HistoryStore,
    ids::{IdGenerator, NodeLease},
    limits::{RateLimit, WriteLimits},
    messages::{self, Feeds, Live, MessageParts, Messages, SendLimit, UserFeeds},
    password::Hasher,
    rooms::Rooms,
    send_keys::SendKeys,
    shed::ShedLayer,
    users::{LoginLimit, LoginLimits, Users},
};

/// core-svc, built and bound but not yet serving. Binding happens in
/// [`Application::build`] so that tests can ask for port 0 and read the
/// port that was given.
pub struct Application {
    listener: TcpListener,
    /// `/metrics`, `/healthz` and `/readyz`.
    ops: TcpListener,
    router: tonic::transport::server::Router<Layers>,
    db: PgPool,
    events: Arc<Events>,
    lease: Arc<NodeLease>,
    ids: Arc<IdGenerator>,
    /// The lease's renewal, stopped before the lease is released.
    renewing: AbortHandle,
    /// Ends the live streams, which would otherwise hold shutdown up forever.
    streams_shutdown: CancellationToken,
    presence: Presence,
}

/// How many removals a stream's user feed may fall behind: they are rare.
const USER_FEED_QUEUE: usize = 16;

/// What every call passes through before its service: CORS, then the
/// grpc-web translation, then its span and metrics (which read the status
/// in gRPC's own trailers), then load shedding (so a shed call is counted).
type Layers = Stack<AuthLayer, Stack<ShedLayer, Stack<CallLayer, Stack<GrpcWebLayer, Stack<CorsLayer, Identity>>>>>;

/// What a browser's grpc-web call sends and may read back.
const GRPC_WEB_REQUEST_HEADERS: [&str; 5] =
    ["authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"];
const GRPC_WEB_RESPONSE_HEADERS: [&str; 4] = ["grpc-status", "grpc-message", "grpc-status-details-bin", "retry-after"];

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        crate::metrics::init();
        let secret = config.jwt_secret()?;
        let db = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_millis(config.database_acquire_timeout_ms))
            .connect(&config.database_url)
            .await
            .context("connecting to PostgreSQL (DATABASE_URL)")?;
        migrate(&db).await?;
        let deployment: String = sqlx::query_scalar("SELECT left(replace(id::text, '-', ''), 12) FROM deployment")
            .fetch_one(&db)
            .await
            .context("reading the deployment id")?;
        let cache = Arc::new(Cache::new(&config.redis_url, &format!("{}{deployment}:", config.redis_key_prefix)));

        let (lease, ids) = NodeLease::acquire(db.clone()).await?;
        let (lease, ids) = (Arc::new(lease), Arc::new(ids));
        let renewing = tokio::spawn({
            let (lease, ids) = (lease.clone(), ids.clone());
            async move { lease.renew_forever(&ids).await }
        })
        .abort_handle();
        let (nats_options, nats_reconnects) = service_kit::feeds::counting_connects();
        let nats = nats_options
            .connect(service_kit::settings::nats_servers(&config.nats_url))
            .await
            .context("connecting to NATS (NATS_URL)")?;
        let nats_reconnects = service_kit::feeds::Reconnects::new(nats.statistics(), nats_reconnects);
        let feeds = Arc::new(Feeds::rooms(
            nats.clone(),
            config.nats_subject_prefix.clone(),
            config.subscribe_queue_messages,
            messages::streamed,
            GRPC,
        ));
        let live = live::Publisher { nats: nats.clone(), subject_prefix: config.nats_subject_prefix.clone() };
        let presence_lease = Duration::from_secs(config.presence_lease_secs);
        let presence = Presence::new(&config.redis_url, &config.redis_key_prefix, presence_lease, live.clone());
        let user_feeds = Arc::new(UserFeeds::users(
            nats.clone(),
            config.nats_subject_prefix.clone(),
            USER_FEED_QUEUE,
            service_kit::feeds::removal,
            GRPC,
        ));
        let kafka = KafkaSettings {
            brokers: &config.kafka_brokers,
            topic: &config.kafka_topic,
            partitions: config.kafka_partitions,
            replication_factor: config.kafka_replication_factor,
        };
        let archive = Arc::new(ArchiveProgress::new(db.clone(), &config.kafka_topic));
        tokio::spawn({
            let archive = archive.clone();
            async move { archive.refresh_forever().await }
        });
        let events =
            Events::connect(kafka, ids.clone(), cache.clone(), archive.clone(), nats, &config.nats_subject_prefix);
        let events = Arc::new(events.await?);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let probe = health::Probe {
            reporter: health_reporter,
            db: db.clone(),
            cache: cache.clone(),
            events: events.clone(),
            ids: ids.clone(),
        };
        probe.once().await;
        tokio::spawn(probe.forever());
        // Both versions of reflection: grpcurl and newer tools ask for v1,
        // many existing clients still only know v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().context("building the reflection service")?;
        let reflection_v1alpha = reflection().build_v1alpha().context("building the reflection service")?;

        let login_limits = LoginLimits {
            failures: LoginLimit {
                max_failures: config.login_max_failures.into(),
                window: Duration::from_secs(config.login_lockout_secs.into()),
            },
            per_address: RateLimit::new(
                "login",
                "too many attempts, try again later",
                cache.clone(),
                config.login_attempts_per_minute_per_ip,
                Duration::from_secs(60),
                config.login_attempts_per_minute_per_ip,
            ),
            trusted_proxies: config.trusted_proxies.clone(),
        };
        let writes = Arc::new(WriteLimits::new(&cache, config.writes_per_minute()));
        let hashes_at_once = config
            .password_hashes_at_once
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let hasher = Hasher::new(hashes_at_once, Duration::from_millis(config.password_hash_wait_ms));
        let users = Users::new(
            db.clone(),
            cache.clone(),
            TokenKeys::new(&secret),
            chrono::Duration::seconds(config.token_lifetime_secs.into()),
            login_limits,
            hasher,
            writes.clone(),
        )
        .await?;
        let rooms = Arc::new(Rooms::new(db.clone(), cache.clone(), events.clone(), presence.clone(), writes.clone()));
        let streams_shutdown = CancellationToken::new();
        let keys = SendKeys::new(db.clone());
        tokio::spawn({
            let keys = SendKeys::new(db.clone());
            async move { keys.forget_expired_forever().await }
        });
        let parts = MessageParts {
            history: HistoryStore::new(db.clone(), cache.clone(), events.clone(), archive),
            rooms: rooms.clone(),
            events: events.clone(),
            keys,
            feeds,
            user_feeds,
            live: Live { presence: presence.clone(), publisher: live },
            nats_reconnects,
        };
        let messages = Messages::new(
            parts,
            cache,
            SendLimit { per_second: config.send_rate_per_second, burst: config.send_burst },
            writes,
            streams_shutdown.clone(),
        );

        let cors = CorsLayer::new()
            .allow_origin(config.allowed_origins()?)
            .allow_methods([Method::POST])
            .allow_headers(GRPC_WEB_REQUEST_HEADERS.map(HeaderName::from_static))
            .expose_headers(GRPC_WEB_RESPONSE_HEADERS.map(HeaderName::from_static))
            .max_age(Duration::from_secs(24 * 3600));

        // grpc-web arrives over HTTP/1.1 as well as HTTP/2, on the same port.
        let router = Server::builder()
            .accept_http1(true)
            .timeout(Duration::from_millis(config.grpc_call_timeout_ms))
            .layer(cors)
            .layer(GrpcWebLayer::new())
            .layer(grpc::SERVER)
            .layer(ShedLayer::new(config.grpc_max_in_flight))
            .layer(AuthLayer::new(TokenKeys::new(&secret), db.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(UserServiceServer::new(users))
            .add_service(RoomServiceServer::from_arc(rooms))
            .add_service(MessageServiceServer::new(messages));

        let listener =
            TcpListener::bind(config.listen_addr).await.with_context(|| format!("binding {}", config.listen_addr))?;
        let ops = TcpListener::bind(config.metrics_listen_addr)
            .await
            .with_context(|| format!("binding {} (METRICS_LISTEN_ADDR)", config.metrics_listen_addr))?;
        Ok(Self { listener, ops, router, db, events, lease, ids, renewing, streams_shutdown, presence })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then ends the live streams,
    /// finishes the calls in flight, flushes the message log and gives back
    /// the id node.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let incoming = accept_nodelay(self.listener);
        let ready = Readiness::default();
        ready.set(true);
        let ops = tokio::spawn(service_kit::ops::serve(
            self.ops,
            ready.clone(),
            self.streams_shutdown.clone().cancelled_owned(),
        ));
        let streams_shutdown = self.streams_shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            ready.set(false);
            streams_shutdown.cancel();
        };
        self.router.serve_with_incoming_shutdown(incoming, shutdown).await?;
        // The streams' members go offline now, not when the lease runs out.
        self.presence.flush().await;
        let _ = ops.await;
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || events.flush()).await?;
        self.renewing.abort();
        self.lease.release(&self.ids).await;
        self.db.close().await;
        tracing::info!("core-svc stopped");
        Ok(())
    }
}

/// `core-svc migrate`: connects, migrates and returns (a deployment's hook
/// Job, before the new replicas start; they would migrate too).
pub async fn migrate_only(database_url: &str) -> anyhow::Result<()> {
    let db =
        PgPoolOptions::new().max_connections(1).connect(database_url).await.context("connecting (DATABASE_URL)")?;
    migrate(&db).await?;
    db.close().await;
    Ok(())
}

/// `core-svc healthcheck`: whether the core-svc listening on `listen` on
/// this host reports itself serving (`grpc.health.v1`, service "").
pub async fn healthy(listen: SocketAddr) -> bool {
    let addr = service_kit::ops::local(listen);
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?.connect().await.ok()?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
        let status = client.check(request).await.ok()?.into_inner().status();
        Some(status == tonic_health::pb::health_check_response::ServingStatus::Serving)
    };
    tokio::time::timeout(Duration::from_secs(3), check).await.ok().flatten().unwrap_or(false)
}

/// Brings the schema up to date. core-svc owns it; concurrent replicas
/// serialise on sqlx's advisory lock.
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations").run(db).await.context("migrating the database")
}

/// The accepted connections, each with `TCP_NODELAY`: an answer or a stream
/// event leaves at once instead of waiting on Nagle's algorithm for the
/// peer's delayed ACK.
fn accept_nodelay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay_set() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = accept_nodelay(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY on the accepted socket");
    }
}
