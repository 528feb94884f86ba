use std::{net::SocketAddr, num::NonZeroU32};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";

/// core-svc and the gateway, started in this process on free ports.
pub struct TestApp {
    pub base: String,
    pub redis_prefix: String,
    client: reqwest::Client,
    _stop: Vec<oneshot::Sender<()>>,
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub uid: i64,
    pub token: String,
}

pub struct Settings {
    pub redis_url: String,
    pub login_per_ip: u32,
    pub login_max_failures: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { redis_url: testkit::redis_url(), login_per_ip: 10_000, login_max_failures: 5 }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Settings::default()).await
    }

    pub async fn spawn_with(settings: Settings) -> Self {
        let redis_prefix = format!("{}:", testkit::unique_prefix());
        let core = core_svc::Application::build(core_svc::Config {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: testkit::fresh_database().await,
            database_max_connections: 5,
            redis_url: settings.redis_url,
            redis_key_prefix: redis_prefix.clone(),
            jwt_secret: Some(JWT_SECRET.into()),
            token_lifetime_secs: 3600,
            login_max_failures: settings.login_max_failures,
            login_lockout_secs: 60,
            environment: core_svc::config::Environment::Development,
        })
        .await
        .expect("core-svc starts");
        let core_addr = core.local_addr();
        let gateway = gateway::Application::build(gateway::Config {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            core_grpc_addr: format!("http://{core_addr}"),
            login_attempts_per_minute_per_ip: NonZeroU32::new(settings.login_per_ip).unwrap(),
            trust_forwarded_for: false,
        })
        .await
        .expect("gateway starts");
        let gateway_addr: SocketAddr = gateway.local_addr();
        let (stop_core, core_stopped) = oneshot::channel::<()>();
        let (stop_gateway, gateway_stopped) = oneshot::channel::<()>();
        tokio::spawn(core.run_until_stopped(async move {
            let _ = core_stopped.await;
        }));
        tokio::spawn(gateway.run_until_stopped(async move {
            let _ = gateway_stopped.await;
        }));
        Self {
            base: format!("http://{gateway_addr}"),
            redis_prefix,
            client: reqwest::Client::new(),
            _stop: vec![stop_core, stop_gateway],
        }
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
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str, auth: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, auth, None).await
    }

    pub async fn put(&self, path: &str, auth: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, auth, Some(&body.to_string())).await
    }

    pub async fn post(&self, path: &str, auth: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, auth, Some(&body.to_string())).await
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

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(testkit::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("the local Redis must be running")
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
