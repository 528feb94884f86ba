//! The test harness: the stack's services started in this process on free
//! ports, each test with its own database, key prefix, topic and subjects
//! ([`Shared`]), and the clients a user or another service would use.
//!
//! - [`spawn_core`], [`spawn_gateway`], [`spawn_archiver`] (and
//!   [`spawn_archiver_in`], in another consumer group): one service each.
//! - [`TestApp`]: the whole stack, and a REST client of its gateway.
//! - [`Pair`]: two gateways, each before a core-svc replica of its own.
//! - [`TwoInARoom`]: two users in a room, each with a socket in it.
//! - [`Ws`]: a WebSocket client of a gateway.
//! - [`Grpc`]: gRPC clients of core-svc.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use chat_proto::v1::{
    CreateRoomRequest, LoginRequest, Message, RegisterRequest, SendRequest, SubscribeRequest,
    message_service_client::MessageServiceClient, room_service_client::RoomServiceClient,
    user_service_client::UserServiceClient,
};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tonic::{Streaming, transport::Channel};

pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";

/// What one test's services share: a fresh database, and a Redis key
/// prefix, Kafka topic and NATS subject prefix of its own, on the shared
/// broker unless the test brings its own.
#[derive(Clone)]
pub struct Shared {
    pub database_url: String,
    pub redis_prefix: String,
    pub kafka_brokers: String,
    pub topic: String,
    pub nats_prefix: String,
}

impl Shared {
    pub async fn new() -> Self {
        // Spans get trace context, as in the binaries, so that it can be
        // seen crossing the hops. `TEST_LOG=1` (with `RUST_LOG` and
        // `--nocapture`) shows the services' logs, to debug a test.
        if std::env::var("TEST_LOG").is_ok() {
            // Nothing exported: the spans' provider stays with the subscriber.
            drop(service_kit::logging::init("test").expect("valid OTEL_* settings"));
        } else {
            service_kit::logging::init_without_output()
        }
        let unique = testkit::unique_prefix();
        Self {
            database_url: testkit::fresh_database().await,
            redis_prefix: format!("{unique}:"),
            kafka_brokers: testkit::kafka_brokers(),
            topic: format!("{unique}.messages"),
            nats_prefix: unique,
        }
    }
}

pub struct Settings {
    pub redis_url: String,
    /// The NATS server (by default the shared one); a test may put a
    /// [`testkit::Proxy`] in front of it for one replica.
    pub nats_url: String,
    pub login_per_ip: u32,
    pub login_max_failures: u32,
    pub send_per_second: u32,
    /// The other writes' limits, each per minute.
    pub writes: Writes,
    /// 0: one per CPU.
    pub password_hashes_at_once: usize,
    pub password_hash_wait_ms: u64,
    pub ws_queue_frames: usize,
    pub subscribe_queue: usize,
    /// How long a process's sockets and streams keep their members online
    /// after it stops renewing them.
    pub presence_lease_secs: u64,
    /// Whether the archiver starts with the rest ([`TestApp::start_archiver`]
    /// starts it later).
    pub archiver: bool,
    /// core-svc's PostgreSQL pool, and how long a call waits for one of
    /// its connections.
    pub database_max_connections: u32,
    pub database_acquire_timeout_ms: u64,
    /// How often the gateway probes core-svc, and how long a probe may take
    /// before it counts as failed.
    pub core_probe_interval_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            redis_url: testkit::redis_url(),
            nats_url: testkit::nats_url(),
            login_per_ip: 10_000,
            login_max_failures: 5,
            send_per_second: 10_000,
            writes: Writes::default(),
            password_hashes_at_once: 0,
            password_hash_wait_ms: 10_000,
            ws_queue_frames: 512,
            subscribe_queue: 512,
            presence_lease_secs: 30,
            archiver: true,
            database_max_connections: 5,
            database_acquire_timeout_ms: 3000,
            core_probe_interval_ms: 1000,
        }
    }
}

/// How many of each write (beyond sends and logins) one client may make per
/// minute: by default more than any test makes.
#[derive(Clone, Copy)]
pub struct Writes {
    pub register_per_ip: u32,
    pub create_room: u32,
    pub invite: u32,
    pub direct: u32,
    pub react: u32,
    pub search: u32,
}

impl Default for Writes {
    fn default() -> Self {
        let many = 100_000;
        Self { register_per_ip: many, create_room: many, invite: many, direct: many, react: many, search: many }
    }
}

fn per_minute(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a limit above zero")
}

/// Starts core-svc in this process; stops when the sender is dropped.
pub async fn spawn_core(shared: &Shared, settings: &Settings) -> (SocketAddr, oneshot::Sender<()>) {
    let core = core_svc::Application::build(core_svc::Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_listen_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: shared.database_url.clone(),
        database_max_connections: settings.database_max_connections,
        database_acquire_timeout_ms: settings.database_acquire_timeout_ms,
        grpc_max_in_flight: 1024,
        grpc_call_timeout_ms: 30_000,
        redis_url: settings.redis_url.clone(),
        redis_key_prefix: shared.redis_prefix.clone(),
        jwt_secret: Some(JWT_SECRET.into()),
        token_lifetime_secs: 3600,
        login_max_failures: settings.login_max_failures,
        login_lockout_secs: 60,
        login_attempts_per_minute_per_ip: NonZeroU32::new(settings.login_per_ip).unwrap(),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        password_hashes_at_once: NonZeroUsize::new(settings.password_hashes_at_once),
        password_hash_wait_ms: settings.password_hash_wait_ms,
        kafka_brokers: shared.kafka_brokers.clone(),
        kafka_topic: shared.topic.clone(),
        kafka_partitions: 4,
        kafka_replication_factor: 1,
        nats_url: settings.nats_url.clone(),
        nats_subject_prefix: shared.nats_prefix.clone(),
        send_rate_per_second: NonZeroU32::new(settings.send_per_second).unwrap(),
        send_burst: NonZeroU32::new(settings.send_per_second).unwrap(),
        register_per_minute_per_ip: per_minute(settings.writes.register_per_ip),
        create_room_per_minute: per_minute(settings.writes.create_room),
        invite_per_minute: per_minute(settings.writes.invite),
        direct_per_minute: per_minute(settings.writes.direct),
        react_per_minute: per_minute(settings.writes.react),
        search_per_minute: per_minute(settings.writes.search),
        subscribe_queue_messages: settings.subscribe_queue,
        presence_lease_secs: settings.presence_lease_secs,
        cors_allowed_origins: vec![],
        environment: core_svc::config::Environment::Development,
    })
    .await
    .expect("core-svc starts");
    let addr = core.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(core.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Starts a gateway in this process in front of the core-svc at `core`.
pub async fn spawn_gateway(shared: &Shared, settings: &Settings, core: SocketAddr) -> (String, oneshot::Sender<()>) {
    let gateway = gateway::Application::build(gateway_config(shared, settings, core)).await.expect("gateway starts");
    let base = format!("http://{}", gateway.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// A gateway's settings on a free port in front of the core-svc at `core`,
/// with the mesh's defaults.
pub fn gateway_config(shared: &Shared, settings: &Settings, core: SocketAddr) -> gateway::Config {
    gateway::Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        core_grpc_addr: format!("http://{core}"),
        core_resolve_interval_ms: 5000,
        core_probe_interval_ms: settings.core_probe_interval_ms,
        core_eject_after_probes: 3,
        core_deadline_ms: 10_000,
        core_max_in_flight: 1024,
        core_max_in_flight_per_replica: 256,
        core_retry_percent: 20,
        nats_url: settings.nats_url.clone(),
        nats_subject_prefix: shared.nats_prefix.clone(),
        redis_url: settings.redis_url.clone(),
        redis_key_prefix: shared.redis_prefix.clone(),
        presence_lease_secs: settings.presence_lease_secs,
        ws_queue_frames: settings.ws_queue_frames,
        trust_forwarded_for: false,
        web_dir: "web/dist".into(),
    }
}

/// A gateway on a runtime of its own, which [`DoomedGateway::kill`] ends
/// as a crash would end its process: every task it runs (its sockets, its
/// presence renewals, its Redis and NATS connections) stops where it is,
/// with no shutdown code run, and its connections drop.
pub struct DoomedGateway {
    pub base: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DoomedGateway {
    pub async fn spawn(shared: &Shared, settings: &Settings, core: SocketAddr) -> Self {
        let config = gateway_config(shared, settings, core);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the gateway");
        let gateway = runtime
            .spawn(async move { gateway::Application::build(config).await.expect("gateway starts") })
            .await
            .expect("the gateway is built");
        let base = format!("http://{}", gateway.local_addr());
        runtime.spawn(gateway.run_until_stopped(std::future::pending()));
        Self { base, runtime: Some(runtime) }
    }

    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for DoomedGateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts an archiver in this process, in the test's consumer group
/// ([`archiver_group`]); it stops when the sender is used or dropped.
pub async fn spawn_archiver(shared: &Shared) -> oneshot::Sender<()> {
    spawn_archiver_in(shared, &archiver_group(shared)).await
}

/// The consumer group of the archivers [`spawn_archiver`] starts.
pub fn archiver_group(shared: &Shared) -> String {
    format!("{}-archiver", shared.nats_prefix)
}

/// Starts an archiver in the consumer group `group`: in a group of its own,
/// it reads the test's whole log again.
pub async fn spawn_archiver_in(shared: &Shared, group: &str) -> oneshot::Sender<()> {
    let (stop, _) = start_archiver(shared, group).await;
    stop
}

/// Starts an archiver in the test's consumer group that can be killed: its
/// task aborted wherever it is, in the middle of a batch say, as a process
/// killed with SIGKILL would stop.
pub async fn spawn_killable_archiver(shared: &Shared) -> tokio::task::AbortHandle {
    let (stop, task) = start_archiver(shared, &archiver_group(shared)).await;
    // Dropping the sender would stop it cleanly.
    std::mem::forget(stop);
    task
}

async fn start_archiver(shared: &Shared, group: &str) -> (oneshot::Sender<()>, tokio::task::AbortHandle) {
    let archiver = archiver::Archiver::build(archiver::Config {
        http_listen_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: shared.database_url.clone(),
        kafka_brokers: shared.kafka_brokers.clone(),
        kafka_topic: shared.topic.clone(),
        kafka_group: group.to_owned(),
        kafka_instance_id: None,
        batch_size: 500,
        batch_wait_ms: 10,
    })
    .await
    .expect("archiver starts");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        // A test that needs the archiver then fails on what it did not store.
        if let Err(error) = archiver.run_until_stopped(stopped).await {
            eprintln!("the archiver stopped with an error: {error:#}");
        }
    });
    (stop, task.abort_handle())
}

/// core-svc, a gateway and an archiver, started in this process on free
/// ports; they stop when this is dropped.
pub struct TestApp {
    pub base: String,
    pub core: SocketAddr,
    pub redis_prefix: String,
    pub shared: Shared,
    client: reqwest::Client,
    /// Dropped in order: the gateway, the archiver, core-svc.
    stops: Vec<oneshot::Sender<()>>,
}

/// Two gateways, each in front of a core-svc replica of its own, and an
/// archiver, on one test's engines: what a client sees through either.
/// They stop when this is dropped.
pub struct Pair {
    pub a: TestApp,
    pub b: TestApp,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Pair {
    pub async fn spawn() -> Self {
        let shared = Shared::new().await;
        let settings = Settings::default();
        let (core_a, stop_core_a) = spawn_core(&shared, &settings).await;
        let (core_b, stop_core_b) = spawn_core(&shared, &settings).await;
        let (gateway_a, stop_a) = spawn_gateway(&shared, &settings, core_a).await;
        let (gateway_b, stop_b) = spawn_gateway(&shared, &settings, core_b).await;
        let stop_archiver = spawn_archiver(&shared).await;
        Self {
            a: TestApp::at(gateway_a, core_a, &shared),
            b: TestApp::at(gateway_b, core_b, &shared),
            _stops: vec![stop_a, stop_b, stop_archiver, stop_core_a, stop_core_b],
        }
    }
}

/// Alice created a public room, Bob joined it, and both are in it over
/// WebSockets.
pub struct TwoInARoom {
    pub app: TestApp,
    pub alice: User,
    pub bob: User,
    pub room: i64,
    pub a: Ws,
    pub b: Ws,
}

pub async fn two_in_a_room() -> TwoInARoom {
    two_in_a_room_with(Settings::default()).await
}

pub async fn two_in_a_room_with(settings: Settings) -> TwoInARoom {
    let app = TestApp::spawn_with(settings).await;
    let (alice, bob, room, a, b) = alice_and_bob_in_a_room(&app, &app).await;
    TwoInARoom { app, alice, bob, room, a, b }
}

/// Alice registered on gateway `on_a` creates a room, Bob registered on
/// `on_b` (the same gateway or another) joins it, and each enters it on a
/// WebSocket of their gateway: the users, the room and the two sockets.
pub async fn alice_and_bob_in_a_room(on_a: &TestApp, on_b: &TestApp) -> (User, User, i64, Ws, Ws) {
    let alice = on_a.register("alice").await;
    let bob = on_b.register("bob").await;
    let room = on_a.create_room(&alice, "General", false).await;
    on_b.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let mut a = Ws::connect(&on_a.base, &alice.token).await;
    let mut b = Ws::connect(&on_b.base, &bob.token).await;
    a.enter(room).await;
    b.enter(room).await;
    (alice, bob, room, a, b)
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub uid: i64,
    pub token: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Settings::default()).await
    }

    pub async fn spawn_with(settings: Settings) -> Self {
        let shared = Shared::new().await;
        let (core, stop_core) = spawn_core(&shared, &settings).await;
        let (base, stop_gateway) = spawn_gateway(&shared, &settings, core).await;
        let mut app = Self {
            base,
            core,
            redis_prefix: shared.redis_prefix.clone(),
            shared,
            client: reqwest::Client::new(),
            stops: vec![stop_gateway, stop_core],
        };
        if settings.archiver {
            app.start_archiver().await;
        }
        app
    }

    pub async fn start_archiver(&mut self) {
        let stop = spawn_archiver(&self.shared).await;
        self.stops.insert(1, stop);
    }

    /// A client of the gateway at `base` (another gateway, say), in front of
    /// the core-svc at `core`.
    pub fn at(base: String, core: SocketAddr, shared: &Shared) -> Self {
        Self {
            base,
            core,
            redis_prefix: shared.redis_prefix.clone(),
            shared: shared.clone(),
            client: reqwest::Client::new(),
            stops: vec![],
        }
    }

    pub async fn grpc(&self) -> Grpc {
        Grpc::connect(self.core).await
    }

    /// Sends a request with a raw body (as clients do, often without a
    /// Content-Type) and an optional `Authorization` value.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        self.answer(method, path, auth, body).await.0
    }

    /// [`TestApp::call`] with a JSON body, and the answer's `Retry-After`.
    pub async fn call_with_retry_after(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: &Value,
    ) -> ((StatusCode, Value), Option<u64>) {
        self.answer(method, path, auth, Some(&body.to_string())).await
    }

    async fn answer(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> ((StatusCode, Value), Option<u64>) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("the gateway answers");
        let retry_after = response.headers().get("retry-after").and_then(|value| value.to_str().ok()?.parse().ok());
        let status = response.status();
        let text = response.text().await.unwrap();
        ((status, serde_json::from_str(&text).unwrap_or(Value::String(text))), retry_after)
    }

    pub async fn get(&self, path: &str, auth: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, auth, None).await
    }

    /// The value of one series of the gateway's `/metrics` (`name{labels}`),
    /// 0 while it is not there. The metrics recorder is shared by every
    /// gateway and core-svc of the test process.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, metrics) = self.get("/metrics", None).await;
        let metrics = metrics.as_str().expect("plain text");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }

    pub async fn put(&self, path: &str, auth: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, auth, Some(&body.to_string())).await
    }

    pub async fn post(&self, path: &str, auth: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, auth, Some(&body.to_string())).await
    }

    pub async fn patch(&self, path: &str, auth: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, auth, Some(&body.to_string())).await
    }

    pub async fn delete(&self, path: &str, auth: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, auth, None).await
    }

    pub async fn register(&self, name: &str) -> User {
        let email = format!("{name}@example.com");
        let (status, body) =
            self.post("/register", None, json!({"Username": name, "Email": email, "Password": "password"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let uid = body["UID"].as_i64().expect("UID");
        let (status, body) = self.put("/login", None, json!({"Email": email, "Password": "password"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        User { uid, token: body["token"].as_str().unwrap().into() }
    }

    pub async fn create_room(&self, owner: &User, name: &str, private: bool) -> i64 {
        let (status, body) =
            self.post("/create-room", Some(&owner.token), json!({"Name": name, "IsPrivate": private})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["RoomID"].as_i64().unwrap()
    }

    /// Deletes a membership in PostgreSQL only, as a leave leaves it before
    /// its cache deletions: Redis may still say the user is a member.
    pub async fn delete_membership_row(&self, room_id: i64, uid: i64) {
        let mut db = sqlx::PgConnection::connect(&self.shared.database_url).await.expect("the test database");
        sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(uid)
            .execute(&mut db)
            .await
            .expect("deleted");
    }

    /// `count` new members of a room, written straight to PostgreSQL with
    /// tokens signed as core-svc signs them: registering them would hash
    /// two passwords each. None of them is in the cache yet.
    pub async fn members(&self, room_id: i64, count: usize) -> Vec<User> {
        let mut db = sqlx::PgConnection::connect(&self.shared.database_url).await.expect("the test database");
        let uids: Vec<i64> = sqlx::query_scalar(
            "WITH added AS (
                 INSERT INTO users (username, email, password_hash)
                 SELECT format('member-%s-%s', $1, n), format('member-%s-%s@example.com', $1, n), 'not a hash'
                   FROM generate_series(1, $2) n RETURNING id),
             joined AS (INSERT INTO room_members (room_id, user_id) SELECT $1, id FROM added)
             SELECT id FROM added ORDER BY id",
        )
        .bind(room_id)
        .bind(count as i64)
        .fetch_all(&mut db)
        .await
        .expect("members added");
        let keys = client_input::token::TokenKeys::new(JWT_SECRET.as_bytes());
        uids.into_iter().map(|uid| User { uid, token: keys.issue(uid, chrono::Duration::hours(1)).token }).collect()
    }

    /// The Redis key of a cache entry: core-svc puts this test's prefix and
    /// its database's deployment id before `key`.
    pub async fn cache_key(&self, key: &str) -> String {
        let keys: Vec<String> =
            redis::AsyncCommands::keys(&mut self.redis().await, format!("{}*:{key}", self.redis_prefix)).await.unwrap();
        assert_eq!(keys.len(), 1, "one cache entry for {key}: {keys:?}");
        keys.into_iter().next().unwrap()
    }

    /// Deletes every room's recent history from the cache, so that history
    /// is read from PostgreSQL.
    pub async fn forget_recent_history(&self) {
        let mut redis = self.redis().await;
        let keys: Vec<String> =
            redis::AsyncCommands::keys(&mut redis, format!("{}*:recent*", self.redis_prefix)).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::AsyncCommands::del(&mut redis, keys).await.unwrap();
        }
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(testkit::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("the local Redis must be running")
    }
}

/// The longest [`eventually`] waits.
pub const EVENTUALLY: Duration = Duration::from_secs(30);

/// Waits until `done` holds, checking every 100 ms for at most
/// [`EVENTUALLY`]: for what the stack does in the background, such as the
/// archiver storing what was sent.
pub async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {EVENTUALLY:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts an error answer: its status, and that its body is
/// `{"Error": "..."}` containing `text`.
#[track_caller]
pub fn assert_error(answer: (StatusCode, Value), status: StatusCode, text: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    let message = body["Error"].as_str().unwrap_or_else(|| panic!("no Error field in {body}"));
    assert!(message.contains(text), "{message:?} does not contain {text:?}");
}

/// A WebSocket client of the gateway, as a browser or wscat would be.
///
/// Frames about who is in the room and typing ([`SIDE_FRAMES`]) come
/// whenever other members come, go and type: [`Ws::recv`] and the methods
/// built on it pass over them, for [`Ws::side`] to read.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Frames read ahead (by [`Ws::say`], [`Ws::side`]), for [`Ws::recv`]
    /// to return first.
    pending: VecDeque<Value>,
    /// Side frames read ahead, for [`Ws::side`] to return first.
    side: VecDeque<Value>,
}

/// The `Type`s of the frames [`Ws::side`] reads.
pub const SIDE_FRAMES: [&str; 3] = ["online", "presence", "typing"];

fn is_side(frame: &Value) -> bool {
    frame["Type"].as_str().is_some_and(|kind| SIDE_FRAMES.contains(&kind))
}

const WS_WAIT: Duration = Duration::from_secs(10);

impl Ws {
    /// Connects with `?token=` and reads the lobby frame.
    pub async fn connect(base: &str, token: &str) -> Self {
        let url = format!("{}/ws?token={token}", base.replacen("http", "ws", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("the upgrade succeeds");
        Self::opened(stream).await
    }

    /// Connects over a socket with a tiny receive buffer, as a client on a
    /// slow link would have.
    pub async fn connect_with_small_buffer(base: &str, token: &str) -> Self {
        let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}/ws?token={token}");
        let (stream, _) = tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("the upgrade succeeds");
        Self::opened(stream).await
    }

    async fn opened(
        stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) -> Self {
        let mut ws = Self { stream, pending: VecDeque::new(), side: VecDeque::new() };
        assert_eq!(ws.recv().await, json!({"Type": "enter", "RoomID": 0}));
        ws
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_raw(WsMessage::text(frame.to_string())).await;
    }

    pub async fn send_raw(&mut self, message: WsMessage) {
        self.stream.send(message).await.expect("the socket is open");
    }

    /// The next text frame other than a side frame, as JSON.
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        self.read_main().await
    }

    /// The next side frame ([`SIDE_FRAMES`]), as JSON.
    pub async fn side(&mut self) -> Value {
        if let Some(frame) = self.side.pop_front() {
            return frame;
        }
        loop {
            let frame = self.read().await;
            if is_side(&frame) {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// Asserts that no side frame arrives for a while (other frames are
    /// kept for [`Ws::recv`]).
    pub async fn expect_no_side(&mut self, wait: Duration) {
        if let Some(frame) = self.side.front() {
            panic!("expected no side frame, got {frame}");
        }
        let quiet_until = tokio::time::Instant::now() + wait;
        while let Ok(frame) = tokio::time::timeout_at(quiet_until, self.read()).await {
            assert!(!is_side(&frame), "expected no side frame, got {frame}");
            self.pending.push_back(frame);
        }
    }

    async fn read_main(&mut self) -> Value {
        loop {
            let frame = self.read().await;
            if !is_side(&frame) {
                return frame;
            }
            self.side.push_back(frame);
        }
    }

    async fn read(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WS_WAIT, self.stream.next()).await.expect("a frame within 10 s");
            match next.expect("the socket is open").expect("a valid frame") {
                WsMessage::Text(text) => return serde_json::from_str(&text).expect("frames are JSON"),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Enters a room and waits for the answer.
    pub async fn enter(&mut self, room_id: i64) {
        self.send(json!({"Type": "enter", "RoomID": room_id})).await;
        assert_eq!(self.recv().await, json!({"Type": "enter", "RoomID": room_id}));
    }

    /// Sends a message; its `sent` frame and the copy the room delivers
    /// back (in either order). Other frames stay queued for [`Ws::recv`].
    pub async fn say(&mut self, text: &str) -> (Value, Value) {
        self.say_frame(json!({"Type": "message", "Text": text})).await
    }

    /// [`Ws::say`] with a message frame of the caller's (a reply, a key).
    pub async fn say_frame(&mut self, message: Value) -> (Value, Value) {
        self.send(message.clone()).await;
        let mut sent: Option<Value> = None;
        let mut copies: Vec<Value> = Vec::new();
        loop {
            if let Some(sent) = &sent
                && let Some(at) = copies.iter().position(|c| c["ID"] == sent["MessageID"])
            {
                let copy = copies.remove(at);
                self.pending.extend(copies);
                return (sent.clone(), copy);
            }
            let frame = self.read_main().await;
            match frame["Type"].as_str() {
                Some("sent") if sent.is_none() => sent = Some(frame),
                Some("error") => panic!("{message} refused: {frame}"),
                _ => copies.push(frame),
            }
        }
    }

    /// Asserts that nothing but side frames arrives for a while, and that
    /// the socket is still open then: a ping sent after the wait is
    /// answered. (A closed socket receives nothing either.)
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(frame) = self.pending.front() {
            panic!("expected nothing, got {frame}");
        }
        let quiet_until = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(quiet_until, self.stream.next()).await {
                Err(_) => break,
                // The server's keep-alive.
                Ok(Some(Ok(WsMessage::Ping(_)))) => continue,
                Ok(Some(Ok(WsMessage::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                    assert!(is_side(&frame), "expected nothing, got {frame}");
                    self.side.push_back(frame);
                }
                Ok(other) => panic!("expected nothing, got {other:?}"),
            }
        }
        const PROBE: &str = "still open?";
        self.send_raw(WsMessage::Ping(PROBE.into())).await;
        loop {
            match tokio::time::timeout(WS_WAIT, self.stream.next()).await.expect("the ping answered within 10 s") {
                Some(Ok(WsMessage::Pong(payload))) if payload == PROBE.as_bytes() => return,
                Some(Ok(WsMessage::Ping(_))) => continue,
                other => panic!("expected the answer to the ping, got {other:?}"),
            }
        }
    }

    /// Goes on writing (the frames `frame` makes, one after another) until
    /// the server's close frame arrives; its close code. Every write must
    /// succeed: a server that drops the connection with the client's bytes
    /// unread resets it, and the writes that follow fail.
    pub async fn write_until_closed(&mut self, mut frame: impl FnMut(usize) -> Value) -> Option<u16> {
        for n in 0.. {
            self.send(frame(n)).await;
            while let Some(next) = futures::FutureExt::now_or_never(self.stream.next()) {
                match next {
                    Some(Ok(WsMessage::Close(close))) => return close.map(|f| f.code.into()),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return None,
                }
            }
        }
        unreachable!("more writes than a usize counts")
    }

    /// Reads until the server closes the connection; its close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        self.close_frame().await.map(|(code, _)| code)
    }

    /// Reads until the server closes the connection; its close code and
    /// reason.
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        loop {
            let next = tokio::time::timeout(WS_WAIT, self.stream.next()).await.expect("closed within 10 s");
            match next {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| (f.code.into(), f.reason.to_string())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// gRPC clients of one core-svc, as another service would hold them.
#[derive(Clone)]
pub struct Grpc {
    pub users: UserServiceClient<Channel>,
    pub rooms: RoomServiceClient<Channel>,
    pub messages: MessageServiceClient<Channel>,
}

impl Grpc {
    pub async fn connect(core: SocketAddr) -> Self {
        let channel =
            Channel::from_shared(format!("http://{core}")).unwrap().connect().await.expect("core-svc answers");
        Self {
            users: UserServiceClient::new(channel.clone()),
            rooms: RoomServiceClient::new(channel.clone()),
            messages: MessageServiceClient::new(channel),
        }
    }

    /// Registers `name` and logs in, over gRPC.
    pub async fn register(&mut self, name: &str) -> User {
        let email = format!("{name}@example.com");
        let password = "password".to_owned();
        let registered = self
            .users
            .register(RegisterRequest { username: name.into(), email: email.clone(), password: password.clone() })
            .await
            .expect("registered")
            .into_inner();
        let login = self.users.login(LoginRequest { email, password }).await.expect("logged in").into_inner();
        assert_eq!(login.uid, registered.uid);
        User { uid: login.uid, token: login.token }
    }
}

impl Grpc {
    /// Creates a room owned by `owner`; its id.
    pub async fn create_room(&mut self, owner: &User, name: &str, is_private: bool) -> i64 {
        let request = authed(owner, CreateRoomRequest { name: name.into(), is_private });
        self.rooms.create_room(request).await.expect("room created").into_inner().room_id
    }

    /// `user`'s live stream of a room.
    pub async fn subscribe(&mut self, user: &User, room_id: i64) -> Streaming<Message> {
        let request = authed(user, SubscribeRequest { room_id, after_id: None });
        self.messages.subscribe(request).await.expect("subscribed").into_inner()
    }

    /// Sends `text` to a room as `user`: the message's id, or why not.
    pub async fn send(&mut self, user: &User, room_id: i64, text: &str) -> Result<i64, tonic::Status> {
        let request = authed(user, SendRequest { room_id, text: text.into(), ..SendRequest::default() });
        self.messages.send(request).await.map(|sent| sent.into_inner().message_id)
    }
}

/// The next event of a `Subscribe` stream that `wanted` picks (each within
/// 10 s), passing over the others.
pub async fn next_event(stream: &mut Streaming<Message>, wanted: impl Fn(&Message) -> bool) -> Message {
    loop {
        let item = tokio::time::timeout(WS_WAIT, stream.message()).await.expect("an event within 10 s");
        let event = item.expect("the stream goes on").expect("the stream is open");
        if wanted(&event) {
            return event;
        }
    }
}

/// A request that acts for `user`: `authorization: Bearer <token>`.
pub fn authed<T>(user: &User, message: T) -> tonic::Request<T> {
    bearer(&format!("Bearer {}", user.token), message)
}

/// A request with `authorization` set to exactly `value`.
pub fn bearer<T>(value: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value.parse().expect("ASCII metadata"));
    request
}

/// Asserts a failed call: its code, and that its message contains `text`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, text: &str) {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(text), "{:?} does not contain {text:?}", status.message());
}
