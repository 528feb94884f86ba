//! The `rest` scenario: REST reads, set up once (two users in a room of a
//! whole page of messages), then measured one of two ways, each reporting
//! every process's CPU per request:
//!
//! - [`wrk`]: the reads the cache serves, by `wrk` (Debian's package;
//!   `scripts/bench` installs it) on a few connections kept open to the
//!   first gateway: a public profile, `GET /profile/{UID}`, and the room's
//!   first history page of 100 messages, `GET /messages/{roomID}`. `wrk`'s
//!   CPU counts as the load generator's.
//! - [`loops`]: `GET /messages/{room}` from `loops` closed loops of the load
//!   generator's own over every gateway for a while, each sending its next
//!   request as soon as the last is answered; the rate and the latency of
//!   each status, and `GET /healthz` probed meanwhile. With few loops it
//!   measures REST reads per second over a mesh; with more than the
//!   gateways let through, that they shed (503 with `Retry-After`) instead
//!   of queueing.

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::Gateway;

/// Messages in the room: one whole page.
const PAGE: usize = 100;

/// What both ways read: two members' tokens, the first one's id, their room.
struct Setup {
    tokens: Vec<String>,
    uid: i64,
    room: i64,
}

/// Two users in a room of [`PAGE`] messages, both read once, so that the
/// cache holds them before the measurement.
async fn setup(gateway: &Gateway) -> anyhow::Result<Setup> {
    let tag = format!("rest{}", std::process::id() % 100_000);
    let tokens = gateway.users(2, &tag).await?;
    let uid = gateway.uid(&tokens[0]).await?;
    let room = gateway.room_of(&tokens, &format!("bench-{tag}")).await?;
    fill(gateway, &tokens[0], room).await?;
    for path in [format!("/profile/{uid}"), format!("/messages/{room}")] {
        gateway.http.get(format!("{}{path}", gateway.base)).header("Authorization", &tokens[0]).send().await?;
    }
    Ok(Setup { tokens, uid, room })
}

/// Sends a page of messages into the room over a WebSocket, each answered
/// with `sent` (stored) before the next.
async fn fill(gateway: &Gateway, token: &str, room: i64) -> anyhow::Result<()> {
    let mut ws = gateway.connect(token).await?;
    ws.send(Message::text(json!({"Type": "enter", "RoomID": room}).to_string())).await?;
    let mut sent = 0;
    for n in 0..PAGE {
        ws.send(Message::text(json!({"Type": "message", "Text": format!("rest message {n}")}).to_string())).await?;
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame? {
                if text.starts_with(r#"{"Type":"sent""#) {
                    sent += 1;
                    break;
                }
                if text.starts_with(r#"{"Type":"error""#) {
                    bail!("sending refused: {text}");
                }
            }
        }
    }
    println!("rest setup: {sent} messages in room {room}");
    Ok(())
}

/// The cached profile and the first history page, each by `wrk` on
/// `connections` connections for `seconds`.
pub async fn wrk(gateway: &Gateway, connections: u32, seconds: u64) -> anyhow::Result<()> {
    let Setup { tokens, uid, room } = setup(gateway).await?;
    let profile = format!("{}/profile/{uid}", gateway.base);
    let history = format!("{}/messages/{room}", gateway.base);
    run_wrk(gateway, "GET /profile/{UID}, cached", &profile, None, connections, seconds)?;
    run_wrk(gateway, "GET /messages/{roomID}, first page of 100", &history, Some(&tokens[0]), connections, seconds)?;
    Ok(())
}

/// Runs `wrk` on one URL and prints its summary with the CPU each process
/// spent per request.
fn run_wrk(
    gateway: &Gateway,
    name: &str,
    url: &str,
    token: Option<&str>,
    connections: u32,
    seconds: u64,
) -> anyhow::Result<()> {
    let mut command = Command::new("wrk");
    command.args(["--threads", "2", "--latency", "--connections", &connections.to_string()]);
    command.args(["--duration", &format!("{seconds}s")]);
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: {token}")]);
    }
    let before = gateway.processes.sample();
    let started = Instant::now();
    let output = command.arg(url).output().context("running wrk (Debian's package wrk)")?;
    let wall = started.elapsed().as_secs_f64();
    let after = gateway.processes.sample();
    let report = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {report}{}", String::from_utf8_lossy(&output.stderr));
    }
    // "  123456 requests in 10.00s, 35.2MB read"
    let (requests, measured): (u64, f64) = report
        .lines()
        .find_map(|line| {
            let (count, rest) = line.trim().split_once(" requests in ")?;
            Some((count.parse().ok()?, rest.split_once("s,")?.0.parse().ok()?))
        })
        .context("no request count in wrk's output")?;
    let failed = report.lines().find(|line| line.contains("Non-2xx") || line.contains("Socket errors"));
    let latency = |q: &str| {
        report.lines().find_map(|line| line.trim().strip_prefix(q)).map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    println!(
        "{name}: {requests} in {measured:.1}s, {:.0}/s over {connections} connections; latency p50 {} p90 {} p99 {}; {}; {}",
        requests as f64 / measured,
        latency("50%"),
        latency("90%"),
        latency("99%"),
        failed.map_or("none failed".to_owned(), |line| line.trim().to_owned()),
        gateway.processes.report(&before, &after, wall, requests, "request"),
    );
    Ok(())
}

/// The outcome of each request, by status ("refused" when it could not
/// connect, "timeout" past 30 s): each status's latencies, in µs.
type ByStatus = BTreeMap<String, Histogram<u64>>;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

/// `loops` closed loops of `GET /messages/{room}?Limit=20` spread over the
/// gateways for `seconds`, `GET /healthz` on the first probed meanwhile.
pub async fn loops(gateway: &Gateway, loops: usize, seconds: u64) -> anyhow::Result<()> {
    let Setup { tokens, room, .. } = setup(gateway).await?;
    let outcomes = Arc::new(Mutex::new(ByStatus::new()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(loops).build()?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = gateway.processes.sample();
    let started = Instant::now();
    let tasks: Vec<_> = (0..loops)
        .map(|n| {
            let (http, outcomes, token) = (http.clone(), outcomes.clone(), tokens[n % tokens.len()].clone());
            let url = format!("{}/messages/{room}?Limit=20", gateway.bases[n % gateway.bases.len()]);
            tokio::spawn(async move {
                let mut local = ByStatus::new();
                while Instant::now() < until {
                    let began = Instant::now();
                    let status = match http.get(&url).header("Authorization", &token).send().await {
                        Ok(answer) => {
                            let retry = answer
                                .headers()
                                .get("retry-after")
                                .map_or(String::new(), |v| v.to_str().unwrap_or("?").to_owned());
                            let status = answer.status().as_u16();
                            let _ = answer.bytes().await;
                            if retry.is_empty() {
                                status.to_string()
                            } else {
                                format!("{status} (Retry-After: {retry})")
                            }
                        }
                        Err(error) if error.is_timeout() => "timeout".to_owned(),
                        Err(_) => "refused".to_owned(),
                    };
                    let latency = (began.elapsed().as_micros() as u64).max(1);
                    let _ = local.entry(status).or_insert_with(histogram).record(latency);
                }
                let mut all = outcomes.lock().expect("outcomes");
                for (status, h) in local {
                    all.entry(status).or_insert_with(histogram).add(&h).expect("same bounds");
                }
            })
        })
        .collect();
    // The health check, meanwhile, on the first gateway.
    let health_url = format!("{}/healthz", gateway.bases[0]);
    let mut health = histogram();
    let mut health_failed = 0;
    while Instant::now() < until {
        let began = Instant::now();
        match http.get(&health_url).send().await {
            Ok(answer) if answer.status() == 200 => {
                let _ = health.record((began.elapsed().as_micros() as u64).max(1));
            }
            _ => health_failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for task in tasks {
        task.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let outcomes = outcomes.lock().expect("outcomes");
    let requests = outcomes.values().map(Histogram::len).sum();
    let cpu = gateway.processes.report(&cpu_before, &gateway.processes.sample(), wall, requests, "request");
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("rest: {loops} loops of GET /messages over {} gateways for {seconds} s; {cpu}", gateway.bases.len());
    for (status, h) in outcomes.iter() {
        println!(
            "  {status}: {} ({:.0}/s); latency ms p50 {:.1} p99 {:.1} max {:.1}",
            h.len(),
            h.len() as f64 / wall,
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "  GET /healthz meanwhile: {} answered 200, {health_failed} not; latency ms p50 {:.1} p99 {:.1} max {:.1}",
        health.len(),
        ms(&health, 0.5),
        ms(&health, 0.99),
        health.max() as f64 / 1000.0
    );
    Ok(())
}
