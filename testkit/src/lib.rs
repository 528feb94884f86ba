//! Test support for the integration tests: each test gets its own database,
//! Redis key prefix, Kafka topic and NATS subjects on the real local
//! services, so tests run in parallel without seeing each other; and the
//! means to make those services fail: a [`Proxy`] to cut, a [`Broker`] to
//! pause or kill.
//!
//! `TEST_POSTGRES_URL`, `TEST_REDIS_URL`, `TEST_NATS_URL` and
//! `TEST_KAFKA_BROKERS` name the servers; the defaults are the local ones.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{Connection, Executor, PgConnection};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::AbortHandle,
};

pub fn postgres_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Test databases are named `chat_test_<unix seconds>_<random>`, so that
/// each run can drop what earlier runs left behind: those older than any
/// test lasts (a run makes about 150 of 8 MB each, and runs side by side
/// would otherwise fill a small disk within the hour).
const PREFIX: &str = "chat_test_";
const KEEP_SECS: u64 = 900;

/// Creates an empty database for one test and returns its URL. The service
/// under test migrates it, as it would in production.
pub async fn fresh_database() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let name = format!("{PREFIX}{now}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_url()))
        .await
        .expect("the local PostgreSQL must be running (TEST_POSTGRES_URL)");
    drop_stale_databases(&mut admin, now).await;
    admin.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("create a test database");
    format!("{}/{name}", postgres_url())
}

async fn drop_stale_databases(admin: &mut PgConnection, now: u64) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'chat\\_test\\_%'")
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    for name in names {
        let created: Option<u64> = name.strip_prefix(PREFIX).and_then(|rest| rest.split('_').next()?.parse().ok());
        if created.is_some_and(|created| created + KEEP_SECS < now) {
            // Another run may be dropping it at the same moment; either way it goes.
            let _ = admin.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str()).await;
        }
    }
}

/// A key prefix (Redis), subject prefix (NATS) or topic suffix no other test uses.
pub fn unique_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// A TCP proxy in front of a real service, that a test cuts (every
/// connection through it drops, and new ones are refused at once) and
/// restores, as a network failure between two services would.
pub struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    connections: Arc<AtomicU64>,
    task: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let (up, _) = watch::channel(true);
        let watching = up.clone();
        let connections = Arc::new(AtomicU64::new(0));
        let counting = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counting.fetch_add(1, Ordering::Relaxed);
                let mut up = watching.subscribe();
                if !*up.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        })
        .abort_handle();
        Self { addr, up, connections, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections clients have opened to the proxy, cut or not:
    /// while it is cut, a sign that a client has tried to reach the service.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An Apache Kafka broker of one test's own (`scripts/kafka-node`: KRaft,
/// one node), on free ports with its log folder in a folder of its own,
/// that the test can pause and resume (as if it hung), and kill and start
/// again on the same log folder (as if it crashed).
pub struct Broker {
    pub addr: String,
    ports: (u16, u16),
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("chat-test-kafka-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a folder for the broker");
        let ports = (free_port(), free_port());
        let mut broker = Self { addr: format!("127.0.0.1:{}", ports.0), ports, dir, child: None };
        broker.run().await;
        broker
    }

    /// Starts the broker process and waits until it says it has started.
    async fn run(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-node");
        let log_path = self.dir.join("broker.log");
        let log = std::fs::File::create(&log_path).expect("the broker's log file");
        let child = Command::new(&script)
            .args([self.ports.0.to_string(), self.ports.1.to_string(), self.dir.display().to_string()])
            .env("KAFKA_HEAP", "256m")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the broker's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", script.display()));
        // Owned at once, so that a broker that never starts is still killed.
        self.child = Some(child);
        for _ in 0..1200 {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("Kafka Server started") {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("the broker exited with {status}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the broker did not start within 120 s; its log is {}", log_path.display());
    }

    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL, as a crash would: nothing is flushed or closed cleanly.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            child.wait().expect("the broker exits");
        }
    }

    /// Starts a killed broker again on the same ports and log folder.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the broker first");
        self.run().await;
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the broker runs").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}
