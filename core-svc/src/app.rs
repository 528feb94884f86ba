use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use chat_proto::v1::{
    room_service_server::RoomServiceServer, user_service_server::UserServiceServer,
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::{
    auth::Authenticator,
    cache::Cache,
    config::Config,
    health,
    rooms::Rooms,
    token::TokenKeys,
    users::{LoginLimit, Users},
};

/// core-svc, built and bound but not yet serving. Binding happens in
/// [`Application::build`] so that tests can ask for port 0 and read the
/// port that was given.
pub struct Application {
    listener: TcpListener,
    router: tonic::transport::server::Router,
    db: PgPool,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let secret = config.jwt_secret()?;
        let db = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&config.database_url)
            .await
            .context("connecting to PostgreSQL (DATABASE_URL)")?;
        // core-svc owns the schema; concurrent replicas serialise on sqlx's
        // advisory lock.
        sqlx::migrate!("../migrations")
            .run(&db)
            .await
            .context("migrating the database")?;
        let cache = Arc::new(Cache::new(&config.redis_url, &config.redis_key_prefix));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        tokio::spawn(health::probe_forever(
            health_reporter,
            db.clone(),
            cache.clone(),
        ));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;

        let users = Users::new(
            db.clone(),
            cache.clone(),
            TokenKeys::new(&secret),
            chrono::Duration::seconds(config.token_lifetime_secs.into()),
            LoginLimit {
                max_failures: config.login_max_failures.into(),
                window: Duration::from_secs(config.login_lockout_secs.into()),
            },
        )
        .await?;
        let rooms = Rooms::new(db.clone(), cache);
        let authenticator = Authenticator::new(TokenKeys::new(&secret));

        let router = Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(UserServiceServer::with_interceptor(
                users,
                authenticator.clone(),
            ))
            .add_service(RoomServiceServer::with_interceptor(rooms, authenticator));

        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding {}", config.listen_addr))?;
        Ok(Self {
            listener,
            router,
            db,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes the calls in flight.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let incoming = TcpListenerStream::new(self.listener);
        self.router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        self.db.close().await;
        tracing::info!("core-svc stopped");
        Ok(())
    }
}
