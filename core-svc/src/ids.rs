//! Message ids: 53-bit Snowflakes, so JavaScript clients read them as exact
//! numbers. 41 bits of milliseconds since 2026-01-01 (good for 69 years),
//! 5 bits of node id, 7 bits of sequence (128 ids per millisecond per node;
//! a burst beyond that borrows the next millisecond rather than waiting).
//! Unique across replicas because each replica leases its node id from
//! PostgreSQL and stops issuing ids when it can no longer renew the lease;
//! and increasing per node across holders, because the lease row keeps the
//! last id issued under it and a new holder starts above that, whatever its
//! clock says.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use sqlx::PgPool;

const EPOCH_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const NODE_BITS: u32 = 5;
const SEQUENCE_BITS: u32 = 7;
pub const MAX_NODES: i32 = 1 << NODE_BITS;

const LEASE: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Stop issuing ids this long before the lease could lapse, so that clock
/// drift between this node and PostgreSQL cannot let two nodes overlap.
const SAFETY_MARGIN_MS: i64 = 5_000;

pub struct IdGenerator {
    node: i64,
    state: Mutex<(i64, i64)>,
    /// Wall-clock milliseconds until which the lease is certainly ours.
    valid_until_ms: AtomicI64,
}

impl IdGenerator {
    /// A generator for `node` whose lease is known valid until
    /// `valid_until_ms`, issuing only ids above `floor` (the last id issued
    /// under this node before).
    pub fn new(node: i32, valid_until_ms: i64, floor: i64) -> Self {
        assert!((0..MAX_NODES).contains(&node), "node id out of range");
        let state = (floor >> (NODE_BITS + SEQUENCE_BITS), floor & ((1 << SEQUENCE_BITS) - 1));
        Self { node: node.into(), state: Mutex::new(state), valid_until_ms: AtomicI64::new(valid_until_ms) }
    }

    /// The last id issued (or the floor it started from).
    pub fn last_issued(&self) -> i64 {
        let (millis, sequence) = *self.state.lock().expect("lock poisoned");
        (millis << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | sequence
    }

    pub fn node(&self) -> i32 {
        self.node as i32
    }

    /// Whether ids can be issued now: the node lease is certainly held.
    pub fn issuing(&self) -> bool {
        self.issuing_at(Utc::now().timestamp_millis())
    }

    fn issuing_at(&self, now_ms: i64) -> bool {
        now_ms <= self.valid_until_ms.load(Ordering::Acquire)
    }

    /// The next id, or `None` while the node lease is not certainly held.
    pub fn next(&self) -> Option<i64> {
        // One clock read per id: this is on every send.
        let now = Utc::now().timestamp_millis();
        if !self.issuing_at(now) {
            return None;
        }
        let mut state = self.state.lock().expect("lock poisoned");
        let (last, sequence) = &mut *state;
        // Never go back in time, even if the clock does.
        let mut millis = (now - EPOCH_MS).max(*last);
        if millis == *last {
            *sequence += 1;
            if *sequence == 1 << SEQUENCE_BITS {
                millis += 1;
                *sequence = 0;
            }
        } else {
            *sequence = 0;
        }
        *last = millis;
        Some((millis << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | *sequence)
    }

    fn extend(&self, valid_until_ms: i64) {
        self.valid_until_ms.store(valid_until_ms, Ordering::Release);
    }
}

/// A node id held by this process in `node_leases`. Only its holder may
/// renew or release it: a replica that paused past its lease and came back
/// must not touch its successor's.
pub struct NodeLease {
    pub node: i32,
    holder: String,
    db: PgPool,
}

impl NodeLease {
    /// Takes the lowest node id that is free or whose lease has lapsed, with
    /// a generator that starts above the last id issued under it.
    pub async fn acquire(db: PgPool) -> anyhow::Result<(Self, IdGenerator)> {
        let holder = uuid::Uuid::new_v4().to_string();
        for _ in 0..10 {
            let started = Utc::now().timestamp_millis();
            let taken: Option<(i32, i64)> = sqlx::query_as(
                "INSERT INTO node_leases (node_id, holder, expires_at)
                 SELECT n, $1, now() + make_interval(secs => $2)
                   FROM generate_series(0, $3 - 1) AS n
                  WHERE NOT EXISTS (SELECT 1 FROM node_leases l WHERE l.node_id = n AND l.expires_at > now())
                  ORDER BY n LIMIT 1
                 ON CONFLICT (node_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                  WHERE node_leases.expires_at <= now()
                 RETURNING node_id, last_id",
            )
            .bind(&holder)
            .bind(LEASE.as_secs_f64())
            .bind(MAX_NODES)
            .fetch_optional(&db)
            .await?;
            if let Some((node, last_id)) = taken {
                tracing::info!(node, "leased a message id node");
                let ids = IdGenerator::new(node, valid_until(started), last_id);
                return Ok((Self { node, holder, db }, ids));
            }
            // Another replica took the same id at the same moment; look again.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("all {MAX_NODES} message id nodes are leased by running replicas")
    }

    /// Renews the lease, recording the last id issued, until it is lost;
    /// `ids` stays valid while it holds.
    pub async fn renew_forever(&self, ids: &IdGenerator) {
        let mut interval = tokio::time::interval(RENEW_EVERY);
        interval.tick().await;
        loop {
            interval.tick().await;
            let started = Utc::now().timestamp_millis();
            match self.renew(ids.last_issued()).await {
                Ok(true) => ids.extend(valid_until(started)),
                Ok(false) => {
                    tracing::error!(node = self.node, "message id node lease was lost; no longer issuing ids");
                    ids.extend(0);
                    return;
                }
                Err(error) => tracing::warn!(%error, node = self.node, "cannot renew the message id node lease"),
            }
        }
    }

    /// Extends the lease if this process still holds it (true).
    pub async fn renew(&self, last_issued: i64) -> sqlx::Result<bool> {
        let renewed = sqlx::query(
            "UPDATE node_leases SET expires_at = now() + make_interval(secs => $3), last_id = GREATEST(last_id, $4)
              WHERE node_id = $1 AND holder = $2",
        )
        .bind(self.node)
        .bind(&self.holder)
        .bind(LEASE.as_secs_f64())
        .bind(last_issued)
        .execute(&self.db)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Stops `ids` and gives the node id back, so a restarted replica need
    /// not wait; the row keeps the last id issued for the next holder.
    pub async fn release(&self, ids: &IdGenerator) {
        ids.extend(0);
        let released = sqlx::query(
            "UPDATE node_leases SET expires_at = now(), last_id = GREATEST(last_id, $3)
              WHERE node_id = $1 AND holder = $2",
        )
        .bind(self.node)
        .bind(&self.holder)
        .bind(ids.last_issued())
        .execute(&self.db)
        .await;
        match released {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => tracing::warn!(node = self.node, "the message id node lease was lost before its release"),
            Err(error) => tracing::warn!(%error, node = self.node, "cannot release the message id node lease"),
        }
    }
}

fn valid_until(renewal_started_ms: i64) -> i64 {
    renewal_started_ms + LEASE.as_millis() as i64 - SAFETY_MARGIN_MS
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn generator(node: i32) -> IdGenerator {
        IdGenerator::new(node, i64::MAX, 0)
    }

    #[test]
    fn ids_are_unique_increasing_and_below_2_pow_53() {
        let ids = generator(3);
        let mut seen = HashSet::new();
        let mut previous = 0;
        for _ in 0..100_000 {
            let id = ids.next().unwrap();
            assert!(id > previous && id < 1 << 53);
            assert!(seen.insert(id));
            previous = id;
        }
    }

    #[test]
    fn two_nodes_never_collide() {
        let (a, b) = (generator(0), generator(1));
        let from_a: HashSet<i64> = (0..20_000).map(|_| a.next().unwrap()).collect();
        assert!((0..20_000).all(|_| !from_a.contains(&b.next().unwrap())));
    }

    #[test]
    fn ids_carry_their_time() {
        let id = generator(31).next().unwrap();
        let millis = (id >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS;
        assert!((Utc::now().timestamp_millis() - millis).abs() < 1_000);
        assert_eq!((id >> SEQUENCE_BITS) & 31, 31);
    }

    #[test]
    fn ids_start_above_the_floor_even_from_the_future() {
        let ahead = generator(4);
        let floor = ahead.next().unwrap() + (3_600_000 << (NODE_BITS + SEQUENCE_BITS));
        let ids = IdGenerator::new(4, i64::MAX, floor);
        assert_eq!(ids.last_issued(), floor);
        let first = ids.next().unwrap();
        assert!(first > floor, "{first} > {floor}");
        assert_eq!(ids.last_issued(), first);
    }

    #[test]
    fn no_ids_once_the_lease_may_have_lapsed() {
        let ids = IdGenerator::new(0, Utc::now().timestamp_millis() - 1, 0);
        assert_eq!(ids.next(), None);
        ids.extend(i64::MAX);
        assert!(ids.next().is_some());
    }
}
