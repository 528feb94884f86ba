//! The `rest` scenario: the REST reads the cache serves, measured by `wrk`
//! (Debian's package; `scripts/bench` installs it) on a few connections
//! kept open: a public profile, `GET /profile/{UID}`, and a room's first
//! history page of 100 messages, `GET /messages/{roomID}`. The load
//! generator sets them up, runs `wrk` (its CPU counts as the load
//! generator's) and reports each process's CPU per request.

use std::{process::Command, time::Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::Gateway;

/// Messages in the room: one whole page.
const PAGE: usize = 100;

pub async fn run(gateway: &Gateway, connections: u32, seconds: u64) -> anyhow::Result<()> {
    let tag = format!("rest{}", std::process::id() % 100_000);
    let token = gateway.user(&tag).await?;
    let uid = gateway.uid(&token).await?;
    let room = gateway.room_of(std::slice::from_ref(&token), &format!("bench-{tag}")).await?;
    fill(gateway, &token, room).await?;
    // Once before measuring, so that the cache holds both.
    for path in [format!("/profile/{uid}"), format!("/messages/{room}")] {
        gateway.http.get(format!("{}{path}", gateway.base)).header("Authorization", &token).send().await?;
    }
    let profile = format!("{}/profile/{uid}", gateway.base);
    let history = format!("{}/messages/{room}", gateway.base);
    wrk(gateway, "GET /profile/{UID}, cached", &profile, None, connections, seconds)?;
    wrk(gateway, "GET /messages/{roomID}, first page of 100", &history, Some(&token), connections, seconds)?;
    Ok(())
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

/// Runs `wrk` on one URL and prints its summary with the CPU each process
/// spent per request.
fn wrk(
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
