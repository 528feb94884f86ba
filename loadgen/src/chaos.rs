//! The `chaos` scenario: a steady load of sockets in rooms over every
//! gateway while faults are injected one after another, and after each the
//! checks of the fault suite (`scripts/chaos`); also the kill-a-replica
//! run of `scripts/bench mesh` (one fault, a line per second around it).
//!
//! Each of `users` users has a socket in each of `rooms` rooms. One socket
//! per room sends, one message in flight at a time, each with a `Key`, and
//! sends the same frame again (same `Key`) after `temporarily unavailable`
//! or a lost connection until it is `sent`. Every socket that loses its
//! connection connects again, to the next gateway, and enters its room with
//! the last id it received (`LastID`). One sender per room makes the room's
//! order the order of its sends, so every socket must receive its room's
//! messages in increasing id order.
//!
//! A phase per fault: the load for `warmup`, the fault's command (run by
//! `sh -c`, which `scripts/chaos` makes from its own functions), the load
//! until sends and deliveries are back to normal (and `after` at least);
//! then the senders stop, every socket must have received every
//! acknowledged message of its room, and the cluster's PostgreSQL, once the
//! archiver has caught up, must hold each exactly once.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::Gateway;

/// How the load is shaped.
pub struct Load {
    pub users: usize,
    pub rooms: usize,
    /// Sends per second of each room's sender (one in flight at a time).
    pub rate: f64,
    /// Concurrent `GET /messages` loops, spread over the gateways.
    pub rest_readers: usize,
}

/// One fault: its name in the table and the shell command that injects it.
pub struct Fault {
    pub name: String,
    pub command: String,
}

pub struct Plan {
    pub faults: Vec<Fault>,
    pub warmup: Duration,
    /// The load goes on at least this long after the fault's command.
    pub after: Duration,
    /// A line per second of the phase (the kill-a-replica benchmark).
    pub per_second: bool,
    /// The cluster's database, read once the archiver has caught up.
    pub database_url: String,
}

/// A send, a delivery or a request slower than this is not "normal".
const NORMAL: Duration = Duration::from_secs(1);
/// Every wait of a phase is bounded by this.
const BOUND: Duration = Duration::from_secs(120);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What every task shares.
struct Shared {
    /// The gateways' WebSocket URLs, without the token.
    ws: Vec<String>,
    started: Instant,
    sending: AtomicBool,
    stopping: AtomicBool,
    phase: AtomicUsize,
    log: Mutex<Log>,
}

/// Everything that happened, with its time (since `Shared::started`).
#[derive(Default)]
struct Log {
    /// Acknowledged sends: (phase of the first try, room, key, id, first try, ack).
    acks: Vec<Ack>,
    /// (phase, when, what): every error a client saw, documented or not.
    errors: Vec<(usize, Duration, String)>,
    /// When a disruption ended, and what it was: errors, slow sends, slow
    /// deliveries and reads, reconnections.
    abnormal: Vec<(Duration, &'static str)>,
    /// Per second: deliveries' latencies, REST reads' latencies.
    deliveries: BTreeMap<u64, Histogram<u64>>,
    reads: BTreeMap<u64, Histogram<u64>>,
    acked_per_second: BTreeMap<u64, u64>,
    errors_per_second: BTreeMap<u64, u64>,
}

struct Ack {
    phase: usize,
    room: usize,
    key: String,
    id: i64,
}

/// Client-visible errors the contract documents: refusals to retry, the
/// close codes of a gateway going away (1001) or dying (1006, or a reset),
/// and a gateway that is not there.
fn documented(error: &str) -> bool {
    error.contains("temporarily unavailable")
        || error.starts_with("close 1001")
        || error.starts_with("close 1006")
        || error.starts_with("connect: refused")
        || error.starts_with("connect: 503")
        || error.starts_with("rest: 503")
        || error.starts_with("rest: refused")
        || error.starts_with("rest: connection lost")
}

impl Shared {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn error(&self, what: String) {
        let now = self.now();
        let phase = self.phase.load(Ordering::Relaxed);
        let mut log = self.log.lock().expect("log");
        *log.errors_per_second.entry(now.as_secs()).or_default() += 1;
        log.abnormal.push((now, "an error"));
        log.errors.push((phase, now, what));
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

/// A room's socket: whose, which room, the gateway it tries first.
struct Socket {
    token: String,
    room_id: i64,
    room: usize,
    sender: bool,
    gateway: usize,
    /// Every message id it received, in order, across its connections.
    received: Arc<Mutex<Vec<i64>>>,
}

/// A send until it is acknowledged: its key, text and first try.
struct Pending {
    key: String,
    frame: String,
    first_try: Duration,
    phase: usize,
    retry_at: Option<tokio::time::Instant>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Socket {
    async fn run(mut self, shared: Arc<Shared>, rate: f64) {
        let mut pending: Option<Pending> = None;
        let mut seq = 0u64;
        let mut period = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.01)));
        period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconnecting = false;
        while !shared.stopping.load(Ordering::Relaxed) {
            let Some(mut ws) = self.connect(&shared, reconnecting).await else { break };
            match self.serve(&shared, &mut ws, &mut pending, &mut seq, &mut period).await {
                Some(error) => {
                    shared.error(error);
                    self.gateway += 1;
                    reconnecting = true;
                }
                None => {
                    let _ = ws.close(None).await;
                }
            }
        }
    }

    /// Connects and enters the room (with the last id received), retrying
    /// on the next gateway; None when the run stops meanwhile.
    async fn connect(&mut self, shared: &Shared, reconnecting: bool) -> Option<Ws> {
        let mut first = true;
        while !shared.stopping.load(Ordering::Relaxed) {
            if !first {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            first = false;
            let url = format!("{}?token={}", shared.ws[self.gateway % shared.ws.len()], self.token);
            let connected = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url)).await;
            let mut ws = match connected {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(error)) => {
                    shared.error(format!("connect: {}", connect_error(&error)));
                    self.gateway += 1;
                    continue;
                }
                Err(_) => {
                    shared.error("connect: timed out".to_owned());
                    self.gateway += 1;
                    continue;
                }
            };
            match self.enter(shared, &mut ws).await {
                Ok(()) => {
                    if reconnecting {
                        shared.log.lock().expect("log").abnormal.push((shared.now(), "a reconnection"));
                    }
                    return Some(ws);
                }
                Err(error) => {
                    shared.error(error);
                    self.gateway += 1;
                }
            }
        }
        None
    }

    async fn enter(&mut self, shared: &Shared, ws: &mut Ws) -> Result<(), String> {
        let last = self.received.lock().expect("received").last().copied();
        let mut frame = json!({"Type": "enter", "RoomID": self.room_id, "Ref": "enter"});
        if let Some(last) = last {
            frame["LastID"] = json!(last);
        }
        for _ in 0..50 {
            ws.send(Message::text(frame.to_string())).await.map_err(|e| format!("enter: {e}"))?;
            loop {
                let next = tokio::time::timeout(Duration::from_secs(15), ws.next()).await;
                let Ok(Some(Ok(Message::Text(text)))) = next else {
                    match next {
                        Ok(Some(Ok(_))) => continue,
                        Ok(Some(Err(error))) => return Err(read_error(&error)),
                        Ok(None) => return Err("close 1006 (no close frame)".to_owned()),
                        Err(_) => return Err("enter: no answer within 15 s".to_owned()),
                    }
                };
                let frame: Value = serde_json::from_str(&text).map_err(|e| format!("bad frame: {e}"))?;
                match frame["Type"].as_str() {
                    Some("enter") if frame["RoomID"] == json!(self.room_id) => return Ok(()),
                    Some("error") if frame["Ref"] == "enter" => {
                        let error = frame["Error"].as_str().unwrap_or_default().to_owned();
                        shared.error(format!("enter: {error}"));
                        tokio::time::sleep(RETRY_PAUSE).await;
                        break;
                    }
                    // Replayed messages come after the answer; what comes
                    // before it (the lobby's enter, side frames) is not ours.
                    _ => {}
                }
            }
        }
        Err("enter: refused 50 times".to_owned())
    }

    /// Serves one connection until it ends (Some(why)) or the run stops.
    async fn serve(
        &mut self,
        shared: &Shared,
        ws: &mut Ws,
        pending: &mut Option<Pending>,
        seq: &mut u64,
        period: &mut tokio::time::Interval,
    ) -> Option<String> {
        // A send cut off with the last connection goes again at once.
        if let Some(pending) = pending.as_mut() {
            pending.retry_at = Some(tokio::time::Instant::now());
        }
        loop {
            if shared.stopping.load(Ordering::Relaxed) {
                return None;
            }
            let retry_at = pending.as_ref().and_then(|p| p.retry_at);
            let may_send = self.sender && pending.is_none() && shared.sending.load(Ordering::Relaxed);
            tokio::select! {
                next = tokio::time::timeout(Duration::from_millis(200), ws.next()) => {
                    let Ok(next) = next else { continue };
                    match next {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(error) = self.on_frame(shared, &text, pending) {
                                shared.error(error);
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map_or(1005, |f| u16::from(f.code));
                            return Some(format!("close {code}"));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Some(read_error(&error)),
                        None => return Some("close 1006 (no close frame)".to_owned()),
                    }
                }
                _ = async { tokio::time::sleep_until(retry_at.expect("checked")).await }, if retry_at.is_some() => {
                    let p = pending.as_mut().expect("a retry is of a pending send");
                    p.retry_at = None;
                    if let Err(error) = ws.send(Message::text(p.frame.clone())).await {
                        return Some(format!("send: {error}"));
                    }
                }
                _ = period.tick(), if may_send => {
                    *seq += 1;
                    let first_try = shared.now();
                    let key = format!("r{}-{}", self.room, seq);
                    let text = format!("{key} {}", first_try.as_micros());
                    let frame = json!({"Type": "message", "Text": text, "Key": key, "Ref": key}).to_string();
                    let phase = shared.phase.load(Ordering::Relaxed);
                    *pending = Some(Pending { key, frame: frame.clone(), first_try, phase, retry_at: None });
                    if let Err(error) = ws.send(Message::text(frame)).await {
                        return Some(format!("send: {error}"));
                    }
                }
            }
        }
    }

    fn on_frame(&mut self, shared: &Shared, text: &str, pending: &mut Option<Pending>) -> Result<(), String> {
        let frame: Value = serde_json::from_str(text).map_err(|e| format!("bad frame: {e}"))?;
        match frame["Type"].as_str().unwrap_or_default() {
            "message" => {
                let id = frame["ID"].as_i64().ok_or("a message without an id")?;
                self.received.lock().expect("received").push(id);
                // The text is "<key> <first try, µs>".
                let sent_us = frame["Text"].as_str().and_then(|t| t.split(' ').nth(1)).and_then(|t| t.parse().ok());
                if let Some(sent_us) = sent_us {
                    let now = shared.now();
                    let latency = (now.as_micros() as u64).saturating_sub(sent_us).max(1);
                    let mut log = shared.log.lock().expect("log");
                    let _ = log.deliveries.entry(now.as_secs()).or_insert_with(histogram).record(latency);
                    if Duration::from_micros(latency) > NORMAL {
                        log.abnormal.push((now, "a slow delivery"));
                    }
                }
            }
            "sent" => {
                let Some(p) = pending.take_if(|p| frame["Ref"] == p.key.as_str()) else { return Ok(()) };
                let id = frame["MessageID"].as_i64().ok_or("sent without an id")?;
                let now = shared.now();
                let mut log = shared.log.lock().expect("log");
                *log.acked_per_second.entry(now.as_secs()).or_default() += 1;
                if now - p.first_try > NORMAL {
                    log.abnormal.push((now, "a slow send"));
                }
                log.acks.push(Ack { phase: p.phase, room: self.room, key: p.key, id });
            }
            "error" => {
                let error = frame["Error"].as_str().unwrap_or_default().to_owned();
                match pending.as_mut() {
                    Some(p) if frame["Ref"] == p.key.as_str() => {
                        if error == "temporarily unavailable" {
                            p.retry_at = Some(tokio::time::Instant::now() + RETRY_PAUSE);
                        } else {
                            // Not to be retried: the send is given up.
                            *pending = None;
                        }
                        return Err(format!("send: {error}"));
                    }
                    _ => return Err(format!("frame: {error}")),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn connect_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16().to_string(),
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        other => other.to_string(),
    }
}

fn read_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)
        | tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed => "close 1006 (reset)".to_owned(),
        tungstenite::Error::Io(_) => "close 1006 (reset)".to_owned(),
        other => format!("read: {other}"),
    }
}

/// `GET /messages/{room}` in a loop over the gateways, until the run stops.
async fn read_rest(shared: Arc<Shared>, bases: Arc<Vec<String>>, token: String, room_id: i64, n: usize) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
    let mut gateway = n;
    while !shared.stopping.load(Ordering::Relaxed) {
        let started = shared.now();
        let url = format!("{}/messages/{room_id}?Limit=20", bases[gateway % bases.len()]);
        let answer = http.get(url).header("Authorization", &token).send().await;
        let outcome = match answer {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(format!("rest: {}", r.status().as_u16())),
            Err(error) if error.is_connect() => Err("rest: refused".to_owned()),
            Err(error) if error.is_timeout() => Err("rest: no answer within 15 s".to_owned()),
            // The gateway went away with the request (as a socket's 1006).
            Err(_) => Err("rest: connection lost".to_owned()),
        };
        let now = shared.now();
        match outcome {
            Ok(()) => {
                let mut log = shared.log.lock().expect("log");
                let latency = (now - started).as_micros() as u64;
                let _ = log.reads.entry(now.as_secs()).or_insert_with(histogram).record(latency.max(1));
                if now - started > NORMAL {
                    log.abnormal.push((now, "a slow read"));
                }
            }
            Err(error) => {
                shared.error(error);
                gateway += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// One row of the table.
#[derive(Default)]
struct Row {
    acknowledged: usize,
    lost_history: usize,
    lost_deliveries: usize,
    duplicated_history: usize,
    duplicated_deliveries: usize,
    out_of_order: usize,
    errors: BTreeMap<String, usize>,
    undocumented: usize,
    /// From the fault to the end of the last disruption, and what that was.
    to_normal: Option<(Duration, &'static str)>,
    /// How long the fault's command took (a restarted engine's start included).
    fault_took: Duration,
}

pub async fn run(gateway: &Gateway, load: Load, plan: Plan) -> anyhow::Result<()> {
    let db =
        PgPoolOptions::new().max_connections(2).connect(&plan.database_url).await.context("the cluster's database")?;
    let tag = std::process::id() % 100_000;
    println!(
        "setup: {} users, {} rooms, {} sockets over {} gateways",
        load.users,
        load.rooms,
        load.users * load.rooms,
        gateway.bases.len()
    );
    let tokens = gateway.users(load.users, &format!("c{tag}")).await?;
    let mut room_ids = Vec::new();
    for r in 0..load.rooms {
        room_ids.push(gateway.room_of(&tokens, &format!("chaos-{tag}-{r}")).await?);
    }
    let shared = Arc::new(Shared {
        ws: gateway.bases.iter().map(|b| format!("{}/ws", b.replacen("http", "ws", 1))).collect(),
        started: Instant::now(),
        sending: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        phase: AtomicUsize::new(0),
        log: Mutex::new(Log::default()),
    });
    let mut received = Vec::new();
    let mut tasks = Vec::new();
    for (room, &room_id) in room_ids.iter().enumerate() {
        for (u, token) in tokens.iter().enumerate() {
            let socket = Socket {
                token: token.clone(),
                room_id,
                room,
                sender: u == room % tokens.len(),
                gateway: room + u,
                received: Arc::default(),
            };
            received.push((room, socket.received.clone()));
            tasks.push(tokio::spawn(socket.run(shared.clone(), load.rate)));
        }
    }
    let bases = Arc::new(gateway.bases.clone());
    for n in 0..load.rest_readers {
        let task =
            read_rest(shared.clone(), bases.clone(), tokens[n % tokens.len()].clone(), room_ids[n % room_ids.len()], n);
        tasks.push(tokio::spawn(task));
    }
    // Every socket in its room before the first phase.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut rows = Vec::new();
    let mut checked = vec![0usize; received.len()];
    let mut failed = 0;
    for (phase, fault) in plan.faults.iter().enumerate() {
        shared.phase.store(phase, Ordering::Relaxed);
        let phase_start = shared.now();
        shared.sending.store(true, Ordering::Relaxed);
        tokio::time::sleep(plan.warmup).await;
        let fault_at = shared.now();
        println!("phase {phase}: {} at {:.1}s", fault.name, fault_at.as_secs_f64());
        let status =
            tokio::time::timeout(BOUND, tokio::process::Command::new("sh").arg("-c").arg(&fault.command).status())
                .await;
        match status {
            Ok(Ok(status)) if status.success() => {}
            other => bail!("the fault {:?} failed: {other:?}", fault.command),
        }
        let fault_took = shared.now() - fault_at;
        tokio::time::sleep(plan.after).await;
        // Normal again: nothing abnormal for 2 s (bounded).
        let deadline = shared.now() + BOUND;
        while shared.now() < deadline {
            let last = shared.log.lock().expect("log").abnormal.iter().map(|a| a.0).max().unwrap_or_default();
            if shared.now() - last.max(fault_at) > Duration::from_secs(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shared.sending.store(false, Ordering::Relaxed);
        let phase_end = shared.now();
        let mut row = check(&shared, &db, phase, &room_ids, &received, &mut checked, fault_at).await?;
        row.fault_took = fault_took;
        if plan.per_second {
            print_seconds(&shared, phase_start, phase_end, fault_at);
        }
        let clean = row.lost_history
            + row.lost_deliveries
            + row.duplicated_history
            + row.duplicated_deliveries
            + row.out_of_order
            + row.undocumented
            == 0;
        failed += usize::from(!clean);
        print_row(&fault.name, &row);
        rows.push((fault.name.clone(), row));
    }
    shared.stopping.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    println!();
    println!("{TABLE_HEADER}");
    for (name, row) in &rows {
        println!("{}", row.cells(name));
    }
    // Each fault is a check that passed or failed.
    println!("chaos: {} passed, {failed} failed", rows.len() - failed);
    if failed > 0 {
        bail!("a fault lost, duplicated or reordered a message, or a client saw an undocumented error (above)");
    }
    Ok(())
}

/// After the phase's senders stopped: waits (bounded) for every pending
/// send, every delivery and the archiver, then counts.
async fn check(
    shared: &Shared,
    db: &sqlx::PgPool,
    phase: usize,
    room_ids: &[i64],
    received: &[(usize, Arc<Mutex<Vec<i64>>>)],
    checked: &mut [usize],
    fault_at: Duration,
) -> anyhow::Result<Row> {
    let acked = |shared: &Shared| -> Vec<(usize, String, i64)> {
        let log = shared.log.lock().expect("log");
        log.acks.iter().filter(|a| a.phase == phase).map(|a| (a.room, a.key.clone(), a.id)).collect()
    };
    // Sends in flight end (acknowledged or given up) within their retries.
    let mut last_count = usize::MAX;
    let deadline = Instant::now() + BOUND;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let count = acked(shared).len();
        if count == last_count || Instant::now() > deadline {
            break;
        }
        last_count = count;
    }
    let acks = acked(shared);
    let mut by_room: HashMap<usize, HashSet<i64>> = HashMap::new();
    for (room, _, id) in &acks {
        by_room.entry(*room).or_default().insert(*id);
    }
    let all_delivered = || {
        received.iter().all(|(room, ids)| {
            let ids = ids.lock().expect("received");
            let have: HashSet<i64> = ids.iter().copied().collect();
            by_room.get(room).is_none_or(|want| want.is_subset(&have))
        })
    };
    let deadline = Instant::now() + BOUND;
    while !all_delivered() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // History: every acknowledged id in PostgreSQL, once the archiver has
    // caught up (bounded).
    let ids: Vec<i64> = acks.iter().map(|a| a.2).collect();
    let deadline = Instant::now() + BOUND;
    let mut stored: Vec<(i64, String)>;
    loop {
        stored = sqlx::query_as("SELECT id, text FROM messages WHERE room_id = ANY($1) AND text <> ''")
            .bind(room_ids)
            .fetch_all(db)
            .await?;
        let have: HashSet<i64> = stored.iter().map(|s| s.0).collect();
        if ids.iter().all(|id| have.contains(id)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut row = Row { acknowledged: acks.len(), ..Row::default() };
    let have: HashSet<i64> = stored.iter().map(|s| s.0).collect();
    row.lost_history = ids.iter().filter(|id| !have.contains(id)).count();
    // A key stored under two ids, or acknowledged with two.
    let mut keys: HashMap<String, HashSet<i64>> = HashMap::new();
    for (id, text) in &stored {
        let key = text.split(' ').next().unwrap_or_default().to_owned();
        keys.entry(key).or_default().insert(*id);
    }
    for (_, key, id) in &acks {
        keys.entry(key.clone()).or_default().insert(*id);
    }
    row.duplicated_history = keys.values().filter(|ids| ids.len() > 1).count();
    for (n, (room, ids)) in received.iter().enumerate() {
        let ids = ids.lock().expect("received");
        let new = &ids[checked[n]..];
        let mut seen = HashSet::new();
        for (i, id) in new.iter().enumerate() {
            if !seen.insert(*id) {
                row.duplicated_deliveries += 1;
            }
            let before = if i == 0 { checked[n].checked_sub(1).map(|j| ids[j]) } else { Some(new[i - 1]) };
            if before.is_some_and(|before| before >= *id) {
                row.out_of_order += 1;
            }
        }
        if let Some(want) = by_room.get(room) {
            row.lost_deliveries += want.iter().filter(|id| !seen.contains(id)).count();
        }
        checked[n] = ids.len();
    }
    let log = shared.log.lock().expect("log");
    for (p, _, error) in &log.errors {
        if *p == phase {
            *row.errors.entry(error.clone()).or_default() += 1;
            if !documented(error) {
                row.undocumented += 1;
            }
        }
    }
    row.to_normal =
        log.abnormal.iter().copied().filter(|a| a.0 >= fault_at).max().map(|(t, what)| (t - fault_at, what));
    Ok(row)
}

const TABLE_HEADER: &str = "| fault | acknowledged | lost (history / deliveries) | duplicated (history / deliveries) | out of order | client errors (undocumented) | time to normal (the fault took) |\n|---|---|---|---|---|---|---|";

impl Row {
    /// The row of the table.
    fn cells(&self, name: &str) -> String {
        let errors: Vec<String> = self.errors.iter().map(|(e, n)| format!("{n} {e}")).collect();
        format!(
            "| {name} | {} | {} / {} | {} / {} | {} | {} ({}){} | {} ({:.1} s) |",
            self.acknowledged,
            self.lost_history,
            self.lost_deliveries,
            self.duplicated_history,
            self.duplicated_deliveries,
            self.out_of_order,
            self.errors.values().sum::<usize>(),
            self.undocumented,
            if errors.is_empty() { String::new() } else { format!(": {}", errors.join(", ")) },
            self.to_normal.map_or("-".to_owned(), |(d, _)| format!("{:.1} s", d.as_secs_f64())),
            self.fault_took.as_secs_f64(),
        )
    }
}

/// A phase's row as it ends, with what its last disruption was.
fn print_row(name: &str, row: &Row) {
    println!("{}", row.cells(name));
    if let Some((_, what)) = row.to_normal {
        println!("  (the last disruption: {what})");
    }
}

/// A line per second of the phase: sends acknowledged, client errors,
/// deliveries' p99, REST reads and their p99.
fn print_seconds(shared: &Shared, from: Duration, to: Duration, fault_at: Duration) {
    let log = shared.log.lock().expect("log");
    println!(
        "second (0 = the fault) | sends acknowledged | client errors | deliveries | delivery p99 ms | REST reads | read p99 ms"
    );
    for second in from.as_secs()..=to.as_secs() {
        let ms = |h: Option<&Histogram<u64>>| h.map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
        let count = |h: Option<&Histogram<u64>>| h.map_or(0, |h| h.len());
        println!(
            "{:+} | {} | {} | {} | {:.1} | {} | {:.1}",
            second as i64 - fault_at.as_secs() as i64,
            log.acked_per_second.get(&second).copied().unwrap_or(0),
            log.errors_per_second.get(&second).copied().unwrap_or(0),
            count(log.deliveries.get(&second)),
            ms(log.deliveries.get(&second)),
            count(log.reads.get(&second)),
            ms(log.reads.get(&second)),
        );
    }
}
