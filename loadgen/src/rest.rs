//! The `rest` scenario: `GET /messages/{room}` from `concurrency` loops
//! over every gateway for a while, each loop sending its next request as
//! soon as the last is answered; the rate and the latency of each status,
//! and `GET /healthz` probed meanwhile. With few loops it measures REST
//! reads per second; with more than the gateways let through, that they
//! shed (503 with `Retry-After`) instead of queueing.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::SinkExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::Gateway;

/// The outcome of each request, by status ("refused" when it could not
/// connect, "timeout" past 30 s): each status's latencies, in µs.
type ByStatus = BTreeMap<String, Histogram<u64>>;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

pub async fn run(gateway: &Gateway, concurrency: usize, seconds: u64) -> anyhow::Result<()> {
    let tag = std::process::id() % 100_000;
    let tokens = gateway.users(2, &format!("r{tag}")).await?;
    let room = gateway.room_of(&tokens, &format!("rest-{tag}")).await?;
    // A page of history to read.
    let mut ws = gateway.connect_to(&tokens[0], 0).await?;
    ws.send(Message::text(json!({"Type": "enter", "RoomID": room}).to_string())).await?;
    for n in 0..20 {
        ws.send(Message::text(json!({"Type": "message", "Text": format!("page {n}")}).to_string())).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ws.close(None).await?;

    let outcomes = Arc::new(Mutex::new(ByStatus::new()));
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(concurrency).build()?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = gateway.cpu_of_both();
    let started = Instant::now();
    let loops = (0..concurrency).map(|n| {
        let (http, outcomes, token) = (http.clone(), outcomes.clone(), tokens[n % 2].clone());
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
                        if retry.is_empty() { status.to_string() } else { format!("{status} (Retry-After: {retry})") }
                    }
                    Err(error) if error.is_timeout() => "timeout".to_owned(),
                    Err(_) => "refused".to_owned(),
                };
                let _ =
                    local.entry(status).or_insert_with(histogram).record((began.elapsed().as_micros() as u64).max(1));
            }
            let mut all = outcomes.lock().expect("outcomes");
            for (status, h) in local {
                all.entry(status).or_insert_with(histogram).add(&h).expect("same bounds");
            }
        })
    });
    let loops: Vec<_> = loops.collect();
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
    for task in loops {
        task.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = gateway.cpu_of_both();
    let cpu = |i: usize| Some((cpu_after[i]? - cpu_before[i]?) / wall * 100.0);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "rest: {concurrency} loops of GET /messages over {} gateways for {seconds} s; CPU of one core: gateways {}, core-svc {}",
        gateway.bases.len(),
        crate::percent(cpu(0)),
        crate::percent(cpu(1)),
    );
    for (status, h) in outcomes.lock().expect("outcomes").iter() {
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
