//! The `reads` scenario: `GET /unread` and `GET /search` on a database of a
//! million messages. Users register and log in through the API; their
//! rooms, memberships, read marks and messages are written straight into
//! PostgreSQL, as the archiver would have stored them, by a few
//! `INSERT ... SELECT generate_series` statements: sending a million
//! messages through the stack would take longer than the benchmark.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::Value;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::sync::Mutex;

use crate::Gateway;

pub struct Reads {
    pub database_url: String,
    pub messages: i64,
    pub users: usize,
    pub rooms: i64,
    pub members_per_room: i64,
    pub seconds: u64,
    pub concurrency: usize,
}

/// Ten words, one of which is in every message: each in a tenth of them,
/// spread over every room.
const COMMON: [&str; 10] =
    ["hello", "thanks", "meeting", "today", "lunch", "deploy", "review", "coffee", "weekend", "ticket"];
/// `n0` to `n996`: each in about a thousandth of the messages.
const MEDIUM: i64 = 997;
/// `tok0` to `tok199999`: each in about five messages.
const RARE: i64 = 200_000;

/// The query of the n-th search request.
type Query = fn(u64) -> String;

/// Who the load is spread over: each user's token, and how many rooms.
struct Filled {
    tokens: Vec<String>,
    room_ids: Vec<i64>,
}

impl Reads {
    pub async fn run(&self, gateway: &Gateway) -> anyhow::Result<()> {
        let db = PgPoolOptions::new().max_connections(2).connect(&self.database_url).await.context("DATABASE_URL")?;
        let filled = self.fill(gateway, &db).await?;
        let tokens = Arc::new(filled.tokens);
        let rooms = Arc::new(filled.room_ids);
        let duration = Duration::from_secs(self.seconds);
        let unread_tokens = tokens.clone();
        self.measure(gateway, "GET /unread", duration, move |n| {
            (unread_tokens[n as usize % unread_tokens.len()].clone(), "/unread".to_owned())
        })
        .await;
        let n = self.messages;
        let searches: [(String, Query); 4] = [
            (format!("rare word (in about {} messages)", n / RARE), |n| format!("tok{}", n * 7919 % RARE as u64)),
            (format!("medium word (about {})", n / MEDIUM), |n| format!("n{}", n * 31 % MEDIUM as u64)),
            (format!("a medium and a common word (about {})", n / MEDIUM / 10), |n| {
                format!("{}%20n{}", COMMON[n as usize % 10], n % MEDIUM as u64)
            }),
            (format!("common word (about {})", n / 10), |n| COMMON[n as usize % 10].to_owned()),
        ];
        for (what, query) in searches {
            let tokens = tokens.clone();
            self.measure(gateway, &format!("GET /search, {what}"), duration, move |n| {
                (tokens[n as usize % tokens.len()].clone(), format!("/search?q={}", query(n)))
            })
            .await;
        }
        let one_room = rooms.clone();
        let tokens = tokens.clone();
        let members = self.members_per_room as u64;
        let user_count = tokens.len() as u64;
        self.measure(gateway, "GET /search in one room, common word", duration, move |n| {
            // A member of the room: see `fill`.
            let room = n % one_room.len() as u64;
            let user = (room * 3 + n % members) % user_count;
            (tokens[user as usize].clone(), format!("/search?q=hello&RoomID={}", one_room[room as usize]))
        })
        .await;
        Ok(())
    }

    /// Users through the API, the rest through SQL. Room r's members are
    /// the users (3r + j) mod U for j below `members_per_room`; the first
    /// room gets a tenth of the messages (100,000 of a million), the others
    /// share the rest; each message is by a member of its room; each
    /// member has read all but the last (uid mod 1,500) messages of each
    /// room.
    async fn fill(&self, gateway: &Gateway, db: &PgPool) -> anyhow::Result<Filled> {
        let started = Instant::now();
        let tag = std::process::id() % 100_000;
        let tokens = gateway.users(self.users, &format!("r{tag}")).await?;
        let mut uids = Vec::with_capacity(tokens.len());
        for token in &tokens {
            uids.push(gateway.uid(token).await?);
        }
        let room_ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO rooms (name, creator_id, is_private)
             SELECT 'reads-' || $1 || '-' || r, $2, false FROM generate_series(1, $3) r RETURNING id",
        )
        .bind(tag.to_string())
        .bind(uids[0])
        .bind(self.rooms)
        .fetch_all(db)
        .await?;
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id)
             SELECT ($1::bigint[])[r + 1], ($2::bigint[])[(r * 3 + j) % $3 + 1]
               FROM generate_series(0, $4 - 1) r, generate_series(0, $5 - 1) j
             ON CONFLICT DO NOTHING",
        )
        .bind(&room_ids)
        .bind(&uids)
        .bind(uids.len() as i64)
        .bind(self.rooms)
        .bind(self.members_per_room)
        .execute(db)
        .await?;
        // Below every id core-svc issues (those start at 2^12 per
        // millisecond since 2026), and above what an earlier run wrote.
        let base: i64 =
            sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM messages WHERE id < 1000000000").fetch_one(db).await?;
        let chunk = 100_000;
        for from in (1..=self.messages).step_by(chunk as usize) {
            let to = (from + chunk - 1).min(self.messages);
            sqlx::query(
                "INSERT INTO messages (id, room_id, user_id, kind, text, created_at)
                 SELECT $1 + g, ($2::bigint[])[r + 1], ($3::bigint[])[(r * 3 + g % $4) % $5 + 1], 1,
                        ($6::text[])[1 + g / 7 % 10] || ' n' || (g * 31 % $7) || ' tok' || (g * 7919 % $8) || ' ' || md5(g::text),
                        now() - make_interval(secs => ($10 - g) / 10.0)
                   FROM (SELECT g, CASE WHEN g % 10 = 0 THEN 0 ELSE 1 + g % ($9 - 1) END AS r
                           FROM generate_series($11::bigint, $12::bigint) g) numbered",
            )
            .bind(base)
            .bind(&room_ids)
            .bind(&uids)
            .bind(self.members_per_room)
            .bind(uids.len() as i64)
            .bind(COMMON.map(str::to_owned).to_vec())
            .bind(MEDIUM)
            .bind(RARE)
            .bind(self.rooms)
            .bind(self.messages as f64)
            .bind(from)
            .bind(to)
            .execute(db)
            .await?;
            println!("reads setup: {to} messages written ({:.0}s)", started.elapsed().as_secs_f64());
        }
        sqlx::query(
            "UPDATE room_members m SET last_read_id = COALESCE((
                 SELECT id FROM messages WHERE room_id = m.room_id AND kind = 1
                  ORDER BY id DESC OFFSET m.user_id % 1500 LIMIT 1), 0)
              WHERE room_id = ANY($1)",
        )
        .bind(&room_ids)
        .execute(db)
        .await?;
        // What autovacuum would do in time: statistics, and the visibility
        // map that lets unread counts read the index alone.
        sqlx::raw_sql("VACUUM ANALYZE messages, room_members").execute(db).await?;
        let (messages, size): (i64, String) =
            sqlx::query_as("SELECT count(*), pg_size_pretty(pg_total_relation_size('messages')) FROM messages")
                .fetch_one(db)
                .await?;
        println!(
            "reads setup done in {:.0}s: {} users, {} rooms of {} members, {messages} messages ({size} with indexes)",
            started.elapsed().as_secs_f64(),
            uids.len(),
            room_ids.len(),
            self.members_per_room,
        );
        Ok(Filled { tokens, room_ids })
    }

    /// Sends `concurrency` requests at a time for `duration` (the n-th
    /// request is `request(n)`: a token and a path), then prints the rate,
    /// the latency percentiles, the failures and what the gateway and the
    /// machine spent.
    async fn measure(
        &self,
        gateway: &Gateway,
        name: &str,
        duration: Duration,
        request: impl Fn(u64) -> (String, String) + Send + Sync + 'static,
    ) {
        let request = Arc::new(request);
        let next = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds")));
        let cpu_before = gateway.processes.sample();
        let begin = Instant::now();
        let workers: Vec<_> = (0..self.concurrency)
            .map(|_| {
                let (request, next, failed, latencies) =
                    (request.clone(), next.clone(), failed.clone(), latencies.clone());
                let (http, base) = (gateway.http.clone(), gateway.base.clone());
                tokio::spawn(async move {
                    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                    while begin.elapsed() < duration {
                        let (token, path) = request(next.fetch_add(1, Ordering::Relaxed));
                        let sent = Instant::now();
                        let answer = http.get(format!("{base}{path}")).header("Authorization", token).send().await;
                        let ok = match answer {
                            Ok(response) if response.status().is_success() => response.json::<Value>().await.is_ok(),
                            _ => false,
                        };
                        if ok {
                            let _ = local.record(sent.elapsed().as_micros().max(1) as u64);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    latencies.lock().await.add(&local).expect("same bounds");
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
        let elapsed = begin.elapsed().as_secs_f64();
        let latencies = latencies.lock().await;
        let q = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
        let cpu =
            gateway.processes.report(&cpu_before, &gateway.processes.sample(), elapsed, latencies.len(), "request");
        println!(
            "{name}: {} in {elapsed:.1}s, {:.0}/s with {} at a time; latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}; {} failed; {cpu}",
            latencies.len(),
            latencies.len() as f64 / elapsed,
            self.concurrency,
            q(0.5),
            q(0.9),
            q(0.99),
            latencies.max() as f64 / 1000.0,
            failed.load(Ordering::Relaxed),
        );
    }
}
