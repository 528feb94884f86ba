use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use stack_tests::{Settings, Shared, TestApp, spawn_core, spawn_gateway};

#[tokio::test]
async fn healthz_and_readyz_answer_when_everything_is_up() {
    let app = TestApp::spawn().await;
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Checks"]["postgres"], "ok");
    assert_eq!(body["Checks"]["redis"], "ok");
    assert_eq!(body["Checks"]["nats"], "ok");
}

#[tokio::test]
async fn readyz_names_a_missing_redis_as_degraded_but_stays_ready() {
    let app = TestApp::spawn_with(Settings { redis_url: "redis://127.0.0.1:1".into(), ..Settings::default() }).await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Checks"]["redis"], "degraded");
}

/// PostgreSQL is shared by every replica: its outage is reported, but a
/// gateway that can reach core-svc stays in its load balancer, where sends
/// and cached reads still work.
#[tokio::test]
async fn readyz_reports_a_shared_outage_but_stays_ready() {
    let mut shared = Shared::new().await;
    let postgres = testkit::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    shared.database_url = shared.database_url.replacen("127.0.0.1:5432", &postgres.addr().to_string(), 1);
    let settings = Settings::default();
    let (core, _stop_core) = spawn_core(&shared, &settings).await;
    let (base, _stop_gateway) = spawn_gateway(&shared, &settings, core).await;
    let app = TestApp::at(base, core, &shared);
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!((status, &body["Checks"]["postgres"]), (StatusCode::OK, &Value::from("ok")), "{body}");

    postgres.cut();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = app.get("/readyz", None).await;
        assert_eq!(status, StatusCode::OK, "a shared outage keeps the gateway ready: {body}");
        if body["Checks"]["postgres"] == "unavailable" {
            break body;
        }
        assert!(Instant::now() < deadline, "the outage is reported: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["Checks"]["core-svc"], "ok");
    assert!(body.get("Error").is_none(), "{body}");
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(metrics.as_str().unwrap().contains(r#"chat_dependency_up{dependency="core"} 1"#), "{metrics}");
}

#[tokio::test]
async fn readyz_is_503_naming_core_svc_when_it_is_unreachable() {
    // No database, broker or topic: the gateway uses none of them.
    let shared = Shared {
        database_url: String::new(),
        redis_prefix: format!("{}:", testkit::unique_prefix()),
        kafka_brokers: String::new(),
        topic: String::new(),
        nats_prefix: testkit::unique_prefix(),
    };
    let settings = Settings { ws_queue_frames: 16, ..Settings::default() };
    let unreachable_core = "127.0.0.1:1".parse().unwrap();
    let config = stack_tests::gateway_config(&shared, &settings, unreachable_core);
    let gateway = gateway::Application::build(config).await.unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run_until_stopped(std::future::pending()));
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["Error"], "core-svc unavailable");
    // Any API call is a clean 503 without internals.
    let response = reqwest::get(format!("{base}/profile/1")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert!(!body["Error"].as_str().unwrap().contains("127.0.0.1"), "{body}");
}

/// The OpenAPI document lists every route the gateway answers, with the
/// status codes it really returns.
#[tokio::test]
async fn openapi_document_describes_the_api() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/register", "post", "201"),
        ("/login", "put", "200"),
        ("/profile", "get", "200"),
        ("/profile/{UID}", "get", "200"),
        ("/change-name", "put", "200"),
        ("/create-room", "post", "201"),
        ("/join", "put", "409"),
        ("/invite", "put", "403"),
        ("/rooms", "get", "200"),
        ("/room/{roomID}", "get", "404"),
        ("/messages/{roomID}", "get", "403"),
        ("/healthz", "get", "200"),
        ("/readyz", "get", "503"),
    ];
    for (path, method, code) in expected {
        let operation = &doc["paths"][path][method];
        assert!(operation["responses"][code].is_object(), "{method} {path} {code} missing");
    }
    let register = &doc["components"]["schemas"]["RegisterBody"]["properties"];
    assert!(register["Username"].is_object() && register["Password"].is_object(), "{register}");
    assert!(doc["components"]["schemas"]["UidBody"]["properties"]["UID"].is_object());
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["Error"].is_string());
    let (status, body) = app.get("/register", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["Error"].is_string());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_open_sockets() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    app.get(&format!("/profile/{}", alice.uid), None).await;
    let ws = stack_tests::Ws::connect(&app.base, &alice.token).await;
    let (status, body) = app.get("/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("plain text");
    // The route pattern, not the raw path: one series for every profile.
    let profile = text
        .lines()
        .find(|line| line.starts_with("chat_http_requests_total") && line.contains(r#"route="/profile/{UID}""#))
        .unwrap_or_else(|| panic!("no profile requests counted in\n{text}"));
    assert!(profile.contains(r#"status="200""#), "{profile}");
    let open: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("chat_ws_connections "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no chat_ws_connections in\n{text}"));
    // Tests in this process share the recorder; this one's socket is open.
    assert!(open >= 1.0, "{open}");
    ws.close().await;
}
