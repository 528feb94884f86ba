//! The load generator: fixed scenarios against a running stack, printing
//! throughput, latency percentiles, the gateway's memory, and the CPU each
//! process of the stack used per delivery or request ([`cpu`]). Run
//! through `scripts/bench`, which starts the stack for it.
//!
//! - `fanout`: sockets in rooms, senders spread evenly over time; every
//!   delivery's send→receive latency is recorded.
//! - `idle`: many open sockets doing nothing; the gateway's RSS per socket.
//! - `ramp`: fanout at rising rates until p99 passes 100 ms.
//! - `presence`: one room of thousands of sockets, all coming online,
//!   then members leaving and coming back and typing; the frames
//!   each socket gets per second and the gateway's CPU.
//! - `reads`: `GET /unread` and `GET /search` on a million messages
//!   ([`reads`]).
//! - `rest`: REST reads: the cached `GET /profile/{UID}` and a room's
//!   first history page by `wrk`, or with `--loops`, `GET /messages` in
//!   closed loops over every gateway: reads per second, or shedding under
//!   overload ([`rest`]).
//! - `chaos`: a steady load while faults are injected, and what each lost,
//!   duplicated or disturbed ([`chaos`]).
//! - `soak`: the fan-out for a long while, watching every process's memory
//!   and open files ([`soak`]).
//!
//! `--gateway` takes several gateways (comma-separated): sockets and
//! requests are spread over them.
//! `--archiver-metrics` makes each fan-out run (the ramp's too) report how
//! long the archiver took to store what it sent ([`archiver`]).

mod archiver;
mod chaos;
mod cpu;
mod reads;
mod rest;
mod soak;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt, stream::SplitSink};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::Mutex};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

#[derive(Parser)]
struct Args {
    /// The gateways' base URLs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    gateway: Vec<String>,
    /// The gateways' process ids, to read their memory and CPU time.
    #[arg(long, value_delimiter = ',', required = true)]
    gateway_pid: Vec<u32>,
    /// The core-svc replicas' process ids, to read their CPU time.
    #[arg(long, value_delimiter = ',')]
    core_pid: Vec<u32>,
    /// Another process whose CPU time to report, as NAME=PID (the archiver,
    /// the engines); the processes under it count too.
    #[arg(long = "process", value_parser = cpu::named_pid)]
    processes: Vec<(String, u32)>,
    /// The archiver's `/metrics` URL: the fan-out then reports how long
    /// the archiver took to store what it sent ([`archiver`]).
    #[arg(long)]
    archiver_metrics: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

/// The fan-out's rooms: `rooms` rooms of the same `per_room` users, a
/// socket per user and room.
#[derive(clap::Args)]
struct Rooms {
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    #[arg(long, default_value_t = 100)]
    per_room: usize,
}

#[derive(Subcommand)]
enum Scenario {
    Fanout {
        /// Messages sent per second, in total.
        #[arg(long)]
        rate: u32,
        #[command(flatten)]
        rooms: Rooms,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    Idle {
        #[arg(long, default_value_t = 18_000)]
        sockets: usize,
    },
    Presence {
        /// Sockets in the room, one member each.
        #[arg(long, default_value_t = 5_000)]
        sockets: usize,
        /// How many sockets a second enter the room when they all come;
        /// without it, all at once (as many membership checks at once, none
        /// cached yet: each member's first since joining).
        #[arg(long)]
        arrivals: Option<u32>,
        /// Members per second who leave the room (each comes back 2 s later).
        #[arg(long, default_value_t = 5)]
        churn: u32,
        /// `typing` frames per second, from members taken in turn.
        #[arg(long, default_value_t = 20)]
        typing: u32,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    Ramp {
        #[command(flatten)]
        rooms: Rooms,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    Reads {
        /// The stack's database, which the messages are written into.
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        messages: i64,
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 200)]
        rooms: i64,
        #[arg(long, default_value_t = 10)]
        members_per_room: i64,
        /// How long each kind of request is measured.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    Rest {
        /// Connections `wrk` keeps open.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Instead of `wrk`, this many closed loops of the load generator's
        /// own over every gateway (each sends its next request when
        /// answered), with `GET /healthz` probed meanwhile.
        #[arg(long)]
        loops: Option<usize>,
        /// How long each request is measured.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    Chaos {
        /// The cluster's database, read once the archiver has caught up.
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 30)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        /// Sends per second of each room's one sender.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        #[arg(long, default_value_t = 4)]
        rest_readers: usize,
        /// A fault, in turn: `NAME=SHELL COMMAND` (repeat the flag).
        #[arg(long = "fault", required = true)]
        faults: Vec<String>,
        /// Seconds of load before each fault, and at least after it.
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        #[arg(long, default_value_t = 3)]
        after: u64,
        /// Print a line per second of each phase.
        #[arg(long)]
        per_second: bool,
    },
    Soak {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Messages sent per second, in total.
        #[arg(long)]
        rate: u32,
        #[command(flatten)]
        rooms: Rooms,
        /// Memory and open files are read after each slice of this many seconds.
        #[arg(long, default_value_t = 20)]
        slice: u64,
        /// Growth is measured from the first slice after this.
        #[arg(long, default_value_t = 60)]
        warmup: u64,
    },
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut named = numbered("gateway", &args.gateway_pid);
    named.extend(numbered("core-svc", &args.core_pid));
    named.extend(args.processes);
    let gateway = Gateway {
        base: args.gateway[0].clone(),
        bases: args.gateway,
        pids: args.gateway_pid,
        processes: cpu::Processes::new(named),
        http: reqwest::Client::new(),
        next_socket: AtomicUsize::new(0),
        archiver_metrics: args.archiver_metrics,
    };
    match args.scenario {
        Scenario::Fanout { rate, rooms: Rooms { rooms, per_room }, seconds } => {
            let setup = gateway.fanout_setup(rooms, per_room).await?;
            let result = setup.run(&gateway, rate, Duration::from_secs(seconds)).await;
            result.print(&gateway);
        }
        Scenario::Ramp { rooms: Rooms { rooms, per_room }, seconds } => {
            let setup = gateway.fanout_setup(rooms, per_room).await?;
            let mut best: Option<RunResult> = None;
            for rate in [300, 450, 600, 750, 900, 1050, 1200, 1500, 2000, 3000] {
                let result = setup.run(&gateway, rate, Duration::from_secs(seconds)).await;
                result.print(&gateway);
                if result.p99_ms() > 100.0 || result.delivered < result.expected * 95 / 100 {
                    break;
                }
                best = Some(result);
            }
            match best {
                Some(best) => println!(
                    "ramp: highest sustained with p99 <= 100 ms: {:.0} deliveries/s ({} sends/s)",
                    best.deliveries_per_sec(),
                    best.rate
                ),
                None => println!("ramp: p99 was above 100 ms already at the lowest rate"),
            }
        }
        Scenario::Idle { sockets } => gateway.idle(sockets).await?,
        Scenario::Presence { sockets, arrivals, churn, typing, seconds } => {
            let load = PresenceLoad { sockets, arrivals, churn, typing, duration: Duration::from_secs(seconds) };
            gateway.presence(load).await?
        }
        Scenario::Reads { database_url, messages, users, rooms, members_per_room, seconds, concurrency } => {
            let reads = reads::Reads { database_url, messages, users, rooms, members_per_room, seconds, concurrency };
            reads.run(&gateway).await?;
        }
        Scenario::Rest { connections, loops: None, seconds } => rest::wrk(&gateway, connections, seconds).await?,
        Scenario::Rest { loops: Some(loops), seconds, .. } => rest::loops(&gateway, loops, seconds).await?,
        Scenario::Chaos { database_url, users, rooms, rate, rest_readers, faults, warmup, after, per_second } => {
            let faults = faults
                .into_iter()
                .map(|f| {
                    let (name, command) = f.split_once('=').context("a fault is NAME=COMMAND")?;
                    Ok(chaos::Fault { name: name.to_owned(), command: command.to_owned() })
                })
                .collect::<anyhow::Result<_>>()?;
            let load = chaos::Load { users, rooms, rate, rest_readers };
            let plan = chaos::Plan {
                faults,
                warmup: Duration::from_secs(warmup),
                after: Duration::from_secs(after),
                per_second,
                database_url,
            };
            chaos::run(&gateway, load, plan).await?;
        }
        Scenario::Soak { seconds, rate, rooms: Rooms { rooms, per_room }, slice, warmup } => {
            soak::Soak { rate, rooms, per_room, seconds, slice, warmup }.run(&gateway).await?
        }
    }
    Ok(())
}

/// Names for the processes of one kind: `gateway` alone, or `gateway-0`,
/// `gateway-1`, ... in the order given.
fn numbered(kind: &str, pids: &[u32]) -> Vec<(String, u32)> {
    match pids {
        [pid] => vec![(kind.to_owned(), *pid)],
        _ => pids.iter().enumerate().map(|(n, pid)| (format!("{kind}-{n}"), *pid)).collect(),
    }
}

struct Gateway {
    /// The first gateway, for setup.
    base: String,
    bases: Vec<String>,
    pids: Vec<u32>,
    /// The stack's processes, whose CPU time each scenario reports.
    processes: cpu::Processes,
    http: reqwest::Client,
    /// Sockets are spread over `bases` in turn.
    next_socket: AtomicUsize,
    archiver_metrics: Option<String>,
}

impl Gateway {
    /// The gateways' resident memory, summed.
    fn rss_kib(&self) -> u64 {
        self.pids.iter().map(|pid| soak::footprint(*pid).0).sum()
    }

    /// CPU time the gateways have used so far.
    fn cpu(&self) -> Duration {
        Duration::from_secs_f64(cpu::secs(&self.pids))
    }

    /// Registers (or logs in) a user; its token.
    async fn user(&self, name: &str) -> anyhow::Result<String> {
        let email = format!("{name}@bench.example.com");
        self.http
            .post(format!("{}/register", self.base))
            .json(&json!({"Username": name, "Email": email, "Password": "bench-password"}))
            .send()
            .await?;
        let login: Value = self
            .http
            .put(format!("{}/login", self.base))
            .json(&json!({"Email": email, "Password": "bench-password"}))
            .send()
            .await?
            .json()
            .await?;
        Ok(login["token"].as_str().with_context(|| format!("login failed: {login}"))?.to_owned())
    }

    /// The user id of a token's user.
    async fn uid(&self, token: &str) -> anyhow::Result<i64> {
        let profile: Value =
            self.http.get(format!("{}/profile", self.base)).header("Authorization", token).send().await?.json().await?;
        profile["UID"].as_i64().with_context(|| format!("profile: {profile}"))
    }

    async fn users(&self, count: usize, tag: &str) -> anyhow::Result<Vec<String>> {
        let runs = (0..count).map(|i| self.user_owned(format!("b{tag}{i}")));
        futures::stream::iter(runs).buffered(16).collect::<Vec<_>>().await.into_iter().collect()
    }

    async fn user_owned(&self, name: String) -> anyhow::Result<String> {
        self.user(&name).await
    }

    /// A public room named `name`, created by the first of `tokens`'
    /// users, which the others join.
    async fn room_of(&self, tokens: &[String], name: &str) -> anyhow::Result<i64> {
        let answer: Value = self
            .http
            .post(format!("{}/create-room", self.base))
            .header("Authorization", &tokens[0])
            .json(&json!({"Name": name, "IsPrivate": false}))
            .send()
            .await?
            .json()
            .await?;
        let room = answer["RoomID"].as_i64().with_context(|| format!("create room: {answer}"))?;
        let joins = tokens[1..].iter().map(|token| {
            self.http
                .put(format!("{}/join", self.base))
                .header("Authorization", token)
                .json(&json!({"RoomID": room}))
                .send()
        });
        for joined in futures::stream::iter(joins).buffer_unordered(32).collect::<Vec<_>>().await {
            joined?;
        }
        Ok(room)
    }

    /// A socket on the next gateway in turn.
    async fn connect(&self, token: &str) -> anyhow::Result<WebSocketStream<MaybeTlsStream<TcpStream>>> {
        let n = self.next_socket.fetch_add(1, Ordering::Relaxed);
        self.connect_to(token, n % self.bases.len()).await
    }

    async fn connect_to(&self, token: &str, n: usize) -> anyhow::Result<WebSocketStream<MaybeTlsStream<TcpStream>>> {
        let url = format!("{}/ws?token={token}", self.bases[n].replacen("http", "ws", 1));
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
        ws.next().await.context("lobby frame")??;
        Ok(ws)
    }

    async fn fanout_setup(&self, rooms: usize, per_room: usize) -> anyhow::Result<Fanout> {
        let tag = std::process::id() % 100_000;
        println!("setup: {per_room} users, {rooms} rooms, {} sockets", rooms * per_room);
        let tokens = self.users(per_room, &tag.to_string()).await?;
        let mut room_ids = Vec::new();
        for r in 0..rooms {
            room_ids.push(self.room_of(&tokens, &format!("bench-{tag}-{r}")).await?);
        }
        let received = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
        let started = Instant::now();
        let mut senders = Vec::new();
        for &room in &room_ids {
            let mut room_senders = Vec::new();
            for token in &tokens {
                let ws = self.connect(token).await?;
                let (mut sink, mut stream) = ws.split();
                sink.send(Message::text(json!({"Type": "enter", "RoomID": room}).to_string())).await?;
                let received = received.clone();
                let latencies = latencies.clone();
                tokio::spawn(async move {
                    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                    let mut last_merge = Instant::now();
                    while let Some(Ok(frame)) = stream.next().await {
                        let Message::Text(text) = frame else { continue };
                        // Cheaper than parsing JSON: the load generator shares the cores.
                        if let Some(at) = text.find("\"Text\":\"t").map(|i| i + 9) {
                            let end = text[at..].find('"').map_or(text.len(), |e| at + e);
                            if let Ok(sent_us) = text[at..end].parse::<u64>() {
                                let now_us = started.elapsed().as_micros() as u64;
                                let _ = local.record(now_us.saturating_sub(sent_us).max(1));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if last_merge.elapsed() > Duration::from_millis(500) {
                            latencies.lock().await.add(&local).expect("same bounds");
                            local.reset();
                            last_merge = Instant::now();
                        }
                    }
                    latencies.lock().await.add(&local).expect("same bounds");
                });
                room_senders.push(sink);
            }
            senders.push(Mutex::new(room_senders));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!("setup done: gateway RSS {} MiB", self.rss_kib() / 1024);
        Ok(Fanout { senders, received, latencies, started, per_room })
    }

    async fn idle(&self, sockets: usize) -> anyhow::Result<()> {
        let tokens = self.users(100, &format!("i{}", std::process::id() % 100_000)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = self.rss_kib();
        let opened = Instant::now();
        let mut open = Vec::with_capacity(sockets);
        for i in 0..sockets {
            match self.connect(&tokens[i % tokens.len()]).await {
                Ok(ws) => open.push(ws),
                Err(error) => bail!("socket {i} failed: {error}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = self.rss_kib();
        println!(
            "idle: {} sockets open in {:.1}s; gateway RSS {} MiB before, {} MiB after: {:.1} KiB per socket",
            open.len(),
            opened.elapsed().as_secs_f64(),
            before / 1024,
            after / 1024,
            (after.saturating_sub(before)) as f64 / open.len() as f64
        );
        Ok(())
    }
}

/// Frames the presence scenario's sockets got, by type.
#[derive(Default)]
struct Received {
    online: AtomicU64,
    presence: AtomicU64,
    typing: AtomicU64,
    error: AtomicU64,
    other: AtomicU64,
}

/// Sockets of the presence scenario whose presence frames are timed, one
/// by one (parsing every socket's would load the shared cores).
const WATCHED: usize = 20;

/// On a watched socket: when it last heard of each member, and how often
/// it heard of one again within a second (the contract allows none; the
/// gap at the socket may be shorter than the gateway's by a frame delayed
/// more than the next one).
#[derive(Default)]
struct Watch {
    last: HashMap<i64, Instant>,
    frames: u64,
    within_a_second: u64,
    shortest: Option<Duration>,
}

impl Watch {
    fn heard(&mut self, text: &str) {
        let Ok(frame) = serde_json::from_str::<Value>(text) else { return };
        let Some(uid) = frame["UID"].as_i64() else { return };
        let now = Instant::now();
        self.frames += 1;
        if let Some(before) = self.last.insert(uid, now) {
            let gap = now - before;
            self.shortest = Some(self.shortest.map_or(gap, |shortest| shortest.min(gap)));
            if gap < Duration::from_secs(1) {
                self.within_a_second += 1;
            }
        }
    }
}

/// The presence scenario's load: see [`Scenario::Presence`].
struct PresenceLoad {
    sockets: usize,
    arrivals: Option<u32>,
    churn: u32,
    typing: u32,
    duration: Duration,
}

impl Received {
    fn count(&self, text: &str) {
        // Cheaper than parsing JSON: the load generator shares the cores.
        let counter = if text.starts_with(r#"{"Type":"presence""#) {
            &self.presence
        } else if text.starts_with(r#"{"Type":"typing""#) {
            &self.typing
        } else if text.starts_with(r#"{"Type":"online""#) {
            &self.online
        } else if text.starts_with(r#"{"Type":"error""#) {
            &self.error
        } else {
            &self.other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 5] {
        [&self.online, &self.presence, &self.typing, &self.other, &self.error]
            .map(|counter| counter.load(Ordering::Relaxed))
    }
}

impl Gateway {
    /// One room of `sockets` members. First every socket enters, all at
    /// once or `arrivals` a second (each member's first socket on the room:
    /// every other socket hears of it); then, for `duration`, `churn` members a second leave
    /// and come back 2 s later, and `typing` members a second type.
    async fn presence(&self, load: PresenceLoad) -> anyhow::Result<()> {
        let PresenceLoad { sockets, arrivals, churn, typing, duration } = load;
        let tag = format!("p{}", std::process::id() % 100_000);
        println!("setup: {sockets} users in one room");
        let tokens = self.users(sockets, &tag).await?;
        let room = self.room_of(&tokens, &format!("bench-{tag}")).await?;
        let mut connected = Vec::with_capacity(sockets);
        for token in &tokens {
            connected.push(self.connect(token).await?);
        }
        let received = Arc::new(Received::default());
        let closed = Arc::new(AtomicU64::new(0));
        let watches: Vec<Arc<Mutex<Watch>>> = (0..WATCHED.min(sockets)).map(|_| Arc::default()).collect();
        let mut sinks = Vec::with_capacity(sockets);
        for (i, ws) in connected.into_iter().enumerate() {
            let (sink, mut stream) = ws.split();
            let (received, closed) = (received.clone(), closed.clone());
            let watch = watches.get(i).cloned();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    if let Message::Text(text) = frame {
                        received.count(&text);
                        if let Some(watch) = &watch
                            && text.starts_with(r#"{"Type":"presence""#)
                        {
                            watch.lock().await.heard(&text);
                        }
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            });
            sinks.push(sink);
        }
        let enter = |room_id: i64| Message::text(json!({"Type": "enter", "RoomID": room_id}).to_string());
        println!("setup done: {sockets} sockets open in the lobby; gateway RSS {} MiB", self.rss_kib() / 1024);

        // Everyone comes online.
        let (cpu_before, started) = (self.cpu(), Instant::now());
        let mut arriving = arrivals.map(|rate| tokio::time::interval(Duration::from_secs(1) / rate.max(1)));
        for sink in &mut sinks {
            if let Some(arriving) = &mut arriving {
                arriving.tick().await;
            }
            sink.send(enter(room)).await?;
        }
        let all_in = loop {
            let [online, .., refused] = received.snapshot();
            if (online + refused) as usize >= sockets {
                if refused > 0 {
                    bail!("{refused} of {sockets} enters were refused (see the gateway's log); {online} entered");
                }
                break started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("only {online} of {sockets} sockets entered within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Until every socket has heard of every later arrival, or it stops.
        let expected = (sockets * (sockets - 1) / 2) as u64;
        let mut last = (0, Instant::now());
        let settled = loop {
            let [_, presence, ..] = received.snapshot();
            if presence >= expected || last.1.elapsed() > Duration::from_secs(5) {
                break last.1.duration_since(started);
            }
            if presence != last.0 {
                last = (presence, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cpu = self.cpu() - cpu_before;
        let [_, presence, ..] = received.snapshot();
        println!(
            "presence arrival: {sockets} sockets entered (0 refused) in {:.1}s; {presence} presence frames (about {expected} if \
             each socket hears of every member who came after it) in {:.1}s, {:.0} per socket; gateway CPU {:.1}s \
             ({:.0}% of a core); {} sockets closed; RSS {} MiB",
            all_in.as_secs_f64(),
            settled.as_secs_f64(),
            presence as f64 / sockets as f64,
            cpu.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / settled.as_secs_f64(),
            closed.load(Ordering::Relaxed),
            self.rss_kib() / 1024
        );

        // Members come and go and type.
        let before = received.snapshot();
        let (cpu_before, begin) = (self.cpu(), tokio::time::Instant::now());
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let (mut next_churn, mut next_typist) = (0usize, sockets / 2);
        let (mut churned, mut typed) = (0u64, 0u64);
        let mut away = std::collections::VecDeque::new();
        while begin.elapsed() < duration {
            tick.tick().await;
            let due = begin.elapsed().as_secs_f64();
            while away.front().is_some_and(|(back_at, _)| *back_at <= begin.elapsed()) {
                let (_, member): (Duration, usize) = away.pop_front().expect("checked");
                sinks[member].send(enter(room)).await?;
            }
            // Members taken in an order that spreads them over the room.
            while (churned as f64) < due * f64::from(churn) {
                let member = next_churn * 7919 % sockets;
                sinks[member].send(enter(0)).await?;
                away.push_back((begin.elapsed() + Duration::from_secs(2), member));
                next_churn += 1;
                churned += 1;
            }
            while (typed as f64) < due * f64::from(typing) {
                let typist = &mut sinks[next_typist * 104_729 % sockets];
                typist.send(Message::text(r#"{"Type":"typing"}"#)).await?;
                next_typist += 1;
                typed += 1;
            }
        }
        let elapsed = begin.elapsed();
        for (_, member) in away {
            sinks[member].send(enter(room)).await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = self.cpu() - cpu_before;
        let after = received.snapshot();
        let per_socket_second = |i: usize| (after[i] - before[i]) as f64 / sockets as f64 / elapsed.as_secs_f64();
        // Each churned member is two changes (gone, back), each typing one.
        let changes = 2 * churned + typed;
        println!(
            "presence steady: {churned} members left and came back 2 s later, {typed} typing frames in {:.1}s; \
             per socket per second: {:.1} presence, {:.1} typing, {:.1} online, {:.1} frames in all; gateway CPU \
             {:.0}% of a core, {:.0} µs per change ({changes} presence and typing changes); {} sockets closed; RSS {} MiB",
            elapsed.as_secs_f64(),
            per_socket_second(1),
            per_socket_second(2),
            per_socket_second(0),
            (0..5).map(per_socket_second).sum::<f64>(),
            100.0 * cpu.as_secs_f64() / (elapsed + Duration::from_secs(2)).as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / changes.max(1) as f64,
            closed.load(Ordering::Relaxed),
            self.rss_kib() / 1024
        );
        let (mut frames, mut within, mut shortest) = (0, 0, None::<Duration>);
        for watch in &watches {
            let watch = watch.lock().await;
            frames += watch.frames;
            within += watch.within_a_second;
            shortest = match (shortest, watch.shortest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        println!(
            "presence per member: {} watched sockets heard {frames} presence frames, {within} of them about a member \
             less than a second after the one before (shortest gap {})",
            watches.len(),
            shortest.map_or_else(|| "none".to_owned(), |gap| format!("{} ms", gap.as_millis()))
        );
        Ok(())
    }
}

struct Fanout {
    /// Each room's sockets; a room's sending task holds its lock for a run.
    senders: Vec<Mutex<Vec<Sink>>>,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    started: Instant,
    per_room: usize,
}

struct RunResult {
    rate: u32,
    sent: u64,
    expected: u64,
    delivered: u64,
    elapsed: Duration,
    latencies: Histogram<u64>,
    /// What each process spent per delivery during the run (its last
    /// deliveries included).
    cpu: String,
    /// How long the archiver took to store the run's messages.
    archiver: Option<String>,
}

impl Fanout {
    /// Sends `rate` messages per second in total for `duration`, each room's
    /// sender on its own phase so that sends are spread evenly in time.
    async fn run(&self, gateway: &Gateway, rate: u32, duration: Duration) -> RunResult {
        self.latencies.lock().await.reset();
        let archived_before = archiver::read(&gateway.http, gateway.archiver_metrics.as_deref()).await;
        let cpu_before = gateway.processes.sample();
        let wall = Instant::now();
        let rooms = self.senders.len();
        let per_room_rate = rate as f64 / rooms as f64;
        let period = Duration::from_secs_f64(1.0 / per_room_rate);
        let count_before = self.received.load(Ordering::Relaxed);
        let begin = tokio::time::Instant::now();
        let sends = self.senders.iter().enumerate().map(|(r, room)| {
            let offset = period.mul_f64(r as f64 / rooms as f64);
            async move {
                let mut room = room.lock().await;
                let mut tick = tokio::time::interval_at(begin + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut sent = 0u64;
                let mut turn = 0usize;
                while begin.elapsed() < duration {
                    tick.tick().await;
                    // Each room's sockets take turns to send.
                    let members = room.len();
                    let sink = &mut room[turn % members];
                    turn += 1;
                    let now_us = self.started.elapsed().as_micros();
                    let frame = json!({"Type": "message", "Text": format!("t{now_us}")}).to_string();
                    if sink.send(Message::text(frame)).await.is_ok() {
                        sent += 1;
                    }
                }
                sent
            }
        });
        let sent: u64 = futures::future::join_all(sends).await.into_iter().sum();
        let elapsed = begin.elapsed();
        // Let the last deliveries arrive.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let delivered = self.received.load(Ordering::Relaxed) - count_before;
        let latencies = self.latencies.lock().await.clone();
        let wall = wall.elapsed().as_secs_f64();
        let cpu = gateway.processes.report(&cpu_before, &gateway.processes.sample(), wall, delivered, "delivery");
        let archiver = self.archived(gateway, &archived_before).await;
        RunResult { rate, sent, expected: sent * self.per_room as u64, delivered, elapsed, latencies, cpu, archiver }
    }

    /// The archiver's delays for what the run sent, once it has caught up:
    /// nothing more stored for a second (some sends may have been refused,
    /// so their count is no target), or 30 s passed.
    async fn archived(&self, gateway: &Gateway, before: &archiver::Buckets) -> Option<String> {
        let url = gateway.archiver_metrics.as_deref()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut stored, mut unchanged_since) = (0, Instant::now());
        loop {
            let after = archiver::read(&gateway.http, Some(url)).await;
            let now_stored = archiver::stored(before, &after);
            if now_stored != stored {
                (stored, unchanged_since) = (now_stored, Instant::now());
            }
            let caught_up = stored > 0 && unchanged_since.elapsed() >= Duration::from_secs(1);
            if caught_up || Instant::now() > deadline {
                return archiver::report(before, &after);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl RunResult {
    fn p99_ms(&self) -> f64 {
        self.latencies.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, gateway: &Gateway) {
        let q = |q: f64| self.latencies.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "fanout {} sends/s: sent {} in {:.1}s, delivered {}/{} ({:.0} deliveries/s); latency ms p50 {:.1} p99 {:.1} p999 {:.1} max {:.1}; gateway RSS {} MiB; {}",
            self.rate,
            self.sent,
            self.elapsed.as_secs_f64(),
            self.delivered,
            self.expected,
            self.deliveries_per_sec(),
            q(0.5),
            q(0.99),
            q(0.999),
            self.latencies.max() as f64 / 1000.0,
            gateway.rss_kib() / 1024,
            self.cpu,
        );
        if let Some(archiver) = &self.archiver {
            println!("  {archiver}");
        }
    }
}
