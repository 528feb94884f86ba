use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use service_kit::settings::Problems;
use sqlx::postgres::PgConnectOptions;
use tonic::codegen::http::HeaderValue;
use tower_http::cors::AllowOrigin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// core-svc's settings: flags, each with an environment fallback, and
/// defaults that work with the services on their standard local ports.
#[derive(Debug, Clone, Parser)]
#[command(name = "core-svc", about = "The messenger's core gRPC service")]
pub struct Config {
    /// Where to serve gRPC and grpc-web.
    #[arg(long, env = "GRPC_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,

    /// Where `/metrics`, `/healthz` and `/readyz` are served, over HTTP.
    #[arg(long, env = "METRICS_LISTEN_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_listen_addr: SocketAddr,

    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/chat")]
    pub database_url: String,

    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// How long a call waits for a free PostgreSQL connection before it
    /// fails with UNAVAILABLE.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_acquire_timeout_ms: u64,

    /// Calls this replica runs at once; one more is refused at once with
    /// UNAVAILABLE (reason OVERLOADED, retry-after 1). Health checks are
    /// never refused.
    #[arg(long, env = "GRPC_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub grpc_max_in_flight: usize,

    /// The longest any call may take before its answer, whatever
    /// grpc-timeout the caller sent (the shorter of the two applies); its
    /// work stops there with DEADLINE_EXCEEDED. Streams are not cut.
    #[arg(long, env = "GRPC_CALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub grpc_call_timeout_ms: u64,

    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Prepended to every Redis key, so several deployments (or tests) can
    /// share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "chat:")]
    pub redis_key_prefix: String,

    /// The HS256 secret that signs access tokens. Required in production.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// How long an access token is valid, in seconds.
    #[arg(long, env = "TOKEN_LIFETIME_SECS", default_value_t = 24 * 3600)]
    pub token_lifetime_secs: u32,

    /// Failed logins for one account before it is locked for a while.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,

    /// How long, in seconds, failed logins are counted and an account stays locked.
    #[arg(long, env = "LOGIN_LOCKOUT_SECS", default_value_t = 300)]
    pub login_lockout_secs: u32,

    /// Login attempts one client address may make per minute, across every
    /// replica. A load test that logs in many users from one machine raises it.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_MINUTE_PER_IP", default_value = "30")]
    pub login_attempts_per_minute_per_ip: NonZeroU32,

    /// Peers (addresses or networks, comma-separated) trusted to name the
    /// client in `x-forwarded-for`: the gateways. Anyone else is limited by
    /// their own address.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', default_value = "127.0.0.0/8,::1/128")]
    pub trusted_proxies: Vec<IpNet>,

    /// Password hashes (logins, registrations) computed at once; each takes
    /// about 19 MiB for its time. Unset: one per CPU.
    #[arg(long, env = "PASSWORD_HASHES_AT_ONCE")]
    pub password_hashes_at_once: Option<NonZeroUsize>,

    /// How long, in milliseconds, a login waits for its turn to hash before
    /// it is refused as overloaded (429 / RESOURCE_EXHAUSTED).
    #[arg(long, env = "PASSWORD_HASH_WAIT_MS", default_value_t = 2000)]
    pub password_hash_wait_ms: u64,

    /// Kafka bootstrap servers of the message log.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// The message log's topic; created (with `KAFKA_PARTITIONS`) if missing.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "chat.messages")]
    pub kafka_topic: String,

    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 8)]
    pub kafka_partitions: i32,

    /// Copies of each partition of the topic core-svc creates when it is
    /// missing: 3 on a cluster of brokers (with `min.insync.replicas` 2),
    /// 1 on a single broker.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub kafka_replication_factor: i32,

    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Live events of room N go to `<prefix>.room.N`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "chat")]
    pub nats_subject_prefix: String,

    /// Messages one user may send per second, sustained.
    #[arg(long, env = "SEND_RATE_PER_SECOND", default_value = "10")]
    pub send_rate_per_second: NonZeroU32,

    /// Messages one user may send in a burst.
    #[arg(long, env = "SEND_BURST", default_value = "30")]
    pub send_burst: NonZeroU32,

    /// Registrations one client address may make per minute, across every
    /// replica (a burst of as many at once).
    #[arg(long, env = "REGISTER_PER_MINUTE_PER_IP", default_value = "10")]
    pub register_per_minute_per_ip: NonZeroU32,

    /// Rooms one user may create per minute, across every replica.
    #[arg(long, env = "CREATE_ROOM_PER_MINUTE", default_value = "10")]
    pub create_room_per_minute: NonZeroU32,

    /// Invitations one user may make per minute.
    #[arg(long, env = "INVITE_PER_MINUTE", default_value = "60")]
    pub invite_per_minute: NonZeroU32,

    /// Direct rooms one user may open (or look up) per minute.
    #[arg(long, env = "DIRECT_PER_MINUTE", default_value = "30")]
    pub direct_per_minute: NonZeroU32,

    /// Reactions one user may add or take back per minute.
    #[arg(long, env = "REACT_PER_MINUTE", default_value = "120")]
    pub react_per_minute: NonZeroU32,

    /// Searches one user may make per minute.
    #[arg(long, env = "SEARCH_PER_MINUTE", default_value = "60")]
    pub search_per_minute: NonZeroU32,

    /// How many live events a `Subscribe` stream may fall behind before it
    /// is cut off.
    #[arg(long, env = "SUBSCRIBE_QUEUE_MESSAGES", default_value_t = 1024)]
    pub subscribe_queue_messages: usize,

    /// How long, in seconds, this replica's streams keep their members
    /// online after it stops renewing them (it renews every sixth of this):
    /// a replica that dies takes its streams' members offline within a
    /// lease and a sixth. Every gateway and replica should use the same.
    #[arg(long, env = "PRESENCE_LEASE_SECS", default_value_t = 30)]
    pub presence_lease_secs: u64,

    /// Browser origins allowed to call the API through grpc-web,
    /// comma-separated; `*` allows any. Unset: any in development, none in
    /// production.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    #[arg(long, env = "APP_ENV", value_enum, default_value = "development")]
    pub environment: Environment,
}

/// The most a live stream (or a setting like it) may queue.
pub const MAX_QUEUE: usize = 65_536;

impl Config {
    /// Checks what the types of the fields do not, so that a bad setting
    /// stops the start with a message naming it (a stream queue of 0 would
    /// panic at the first `Subscribe`). Every problem is reported at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Problems::default();
        problems.check(self.database_url.parse::<PgConnectOptions>().is_ok(), || {
            "DATABASE_URL must be a postgres:// URL".to_owned()
        });
        problems.in_range("DATABASE_MAX_CONNECTIONS", self.database_max_connections, 1..=1000);
        problems.in_range("DATABASE_ACQUIRE_TIMEOUT_MS", self.database_acquire_timeout_ms, 10..=600_000);
        problems.in_range("GRPC_MAX_IN_FLIGHT", self.grpc_max_in_flight, 1..=1_000_000);
        problems.in_range("GRPC_CALL_TIMEOUT_MS", self.grpc_call_timeout_ms, 10..=3_600_000);
        problems.redis_url(&self.redis_url);
        problems.presence_lease_secs(self.presence_lease_secs);
        problems.in_range("TOKEN_LIFETIME_SECS", self.token_lifetime_secs, 60..=30 * 24 * 3600);
        problems.in_range("LOGIN_MAX_FAILURES", self.login_max_failures, 1..=u32::MAX);
        problems.in_range("LOGIN_LOCKOUT_SECS", self.login_lockout_secs, 1..=24 * 3600);
        problems.in_range("PASSWORD_HASH_WAIT_MS", self.password_hash_wait_ms, 0..=60_000);
        problems.kafka_brokers(&self.kafka_brokers);
        problems.kafka_topic(&self.kafka_topic);
        problems.in_range("KAFKA_PARTITIONS", self.kafka_partitions, 1..=10_000);
        problems.in_range("KAFKA_REPLICATION_FACTOR", self.kafka_replication_factor, 1..=32);
        problems.nats_url(&self.nats_url);
        problems.nats_subject_prefix(&self.nats_subject_prefix);
        problems.in_range("SUBSCRIBE_QUEUE_MESSAGES", self.subscribe_queue_messages, 1..=MAX_QUEUE);
        problems.into_result()
    }

    /// The token secret, or why there is none. A development start without
    /// one gets a random secret: tokens then die with the process.
    pub fn jwt_secret(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.jwt_secret, self.environment) {
            (Some(secret), _) if secret.len() >= 32 => Ok(secret.clone().into_bytes()),
            (Some(_), Environment::Production) => {
                anyhow::bail!("JWT_SECRET must be at least 32 bytes long in production")
            }
            (Some(secret), Environment::Development) => {
                tracing::warn!("JWT_SECRET is shorter than 32 bytes; acceptable only in development");
                Ok(secret.clone().into_bytes())
            }
            (None, Environment::Production) => anyhow::bail!(
                "JWT_SECRET is not set: a production start needs the secret that signs access tokens \
                 (set JWT_SECRET to 32 or more random bytes, or APP_ENV=development to generate one)"
            ),
            (None, Environment::Development) => {
                tracing::warn!(
                    "JWT_SECRET is not set: generated a random one for this development run; \
                     tokens will not survive a restart"
                );
                Ok(rand::random::<[u8; 32]>().to_vec())
            }
        }
    }
}

impl Config {
    /// The limits of the writes beyond sends and logins.
    pub fn writes_per_minute(&self) -> crate::limits::WritesPerMinute {
        crate::limits::WritesPerMinute {
            register_per_ip: self.register_per_minute_per_ip,
            create_room: self.create_room_per_minute,
            invite: self.invite_per_minute,
            direct: self.direct_per_minute,
            react: self.react_per_minute,
            search: self.search_per_minute,
        }
    }

    /// Which browser origins may call the API (see `cors_allowed_origins`).
    pub fn allowed_origins(&self) -> anyhow::Result<AllowOrigin> {
        let origins: Vec<&str> = self.cors_allowed_origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
        if origins.contains(&"*") {
            return Ok(AllowOrigin::any());
        }
        if origins.is_empty() && self.environment == Environment::Development {
            return Ok(AllowOrigin::mirror_request());
        }
        let origins = origins
            .into_iter()
            .map(|origin| {
                HeaderValue::from_str(origin).with_context(|| format!("CORS_ALLOWED_ORIGINS: bad origin {origin:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(AllowOrigin::list(origins))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("core-svc").chain(args.iter().copied()))
    }

    #[test]
    fn production_without_a_secret_fails_with_a_clear_message() {
        let error = config(&["--environment", "production"]).jwt_secret().unwrap_err();
        assert!(error.to_string().contains("JWT_SECRET is not set"), "{error}");
    }

    #[test]
    fn production_refuses_a_short_secret_and_accepts_a_long_one() {
        assert!(config(&["--environment", "production", "--jwt-secret", "short"]).jwt_secret().is_err());
        let long = "x".repeat(32);
        let secret = config(&["--environment", "production", "--jwt-secret", &long]).jwt_secret().unwrap();
        assert_eq!(secret, long.as_bytes());
    }

    /// Whether a browser preflight from `origin` is allowed under `args`.
    async fn preflight_allowed(args: &[&str], origin: &str) -> bool {
        use std::convert::Infallible;
        use tonic::codegen::http::{Method, Request, Response};
        use tower::{Layer, ServiceExt};
        let cors = tower_http::cors::CorsLayer::new()
            .allow_origin(config(args).allowed_origins().unwrap())
            .allow_methods([Method::POST]);
        let service = cors.layer(tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
        let preflight = Request::builder()
            .method(Method::OPTIONS)
            .uri("/chat.v1.UserService/Login")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap();
        let response = service.oneshot(preflight).await.unwrap();
        response.headers().get("access-control-allow-origin").is_some()
    }

    #[tokio::test]
    async fn cors_is_open_in_development_closed_in_production_and_follows_the_list() {
        let prod = ["--environment", "production"];
        assert!(preflight_allowed(&[], "http://localhost:5173").await);
        assert!(!preflight_allowed(&prod, "http://localhost:5173").await);
        let listed =
            ["--environment", "production", "--cors-allowed-origins", "https://app.example.com,https://x.example"];
        assert!(preflight_allowed(&listed, "https://app.example.com").await);
        assert!(!preflight_allowed(&listed, "https://evil.example").await);
        assert!(
            preflight_allowed(&["--environment", "production", "--cors-allowed-origins", "*"], "https://any.example")
                .await
        );
        assert!(config(&["--cors-allowed-origins", "bad\norigin"]).allowed_origins().is_err());
    }

    #[test]
    fn development_generates_a_secret() {
        assert_eq!(config(&[]).jwt_secret().unwrap().len(), 32);
    }

    use service_kit::settings::assert_refused;

    fn defaults() -> Config {
        config(&[])
    }

    #[test]
    fn settings_that_would_fail_later_are_refused_at_start() {
        defaults().validate().expect("the defaults are valid");
        assert_refused(
            Config { subscribe_queue_messages: 0, ..defaults() }.validate(),
            "SUBSCRIBE_QUEUE_MESSAGES must be 1 to 65536, not 0",
        );
        assert_refused(Config { kafka_partitions: 0, ..defaults() }.validate(), "KAFKA_PARTITIONS");
        assert_refused(Config { database_max_connections: 0, ..defaults() }.validate(), "DATABASE_MAX_CONNECTIONS");
        assert_refused(Config { database_url: "postgres//nowhere".into(), ..defaults() }.validate(), "DATABASE_URL");
        assert_refused(Config { redis_url: "127.0.0.1:6379".into(), ..defaults() }.validate(), "REDIS_URL");
        assert_refused(
            Config { presence_lease_secs: 1, ..defaults() }.validate(),
            "PRESENCE_LEASE_SECS must be 2 to 45, not 1",
        );
        assert_refused(Config { presence_lease_secs: 46, ..defaults() }.validate(), "PRESENCE_LEASE_SECS");
        assert_refused(Config { kafka_brokers: "kafka".into(), ..defaults() }.validate(), "KAFKA_BROKERS");
        assert_refused(Config { token_lifetime_secs: 0, ..defaults() }.validate(), "TOKEN_LIFETIME_SECS");
        let both = Config { kafka_topic: "a topic".into(), nats_subject_prefix: "chat.*".into(), ..defaults() };
        assert_refused(
            both.validate(),
            "KAFKA_TOPIC must be 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-', not \"a topic\"; NATS_SUBJECT_PREFIX",
        );
    }
}
