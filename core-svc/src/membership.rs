//! Membership lookups in PostgreSQL, for the checks the cache could not
//! answer. Concurrent checks of one room share one query: when a big room
//! comes online, thousands of members enter it at once, none of them cached
//! yet, and one query each would take every connection of the pool (and
//! refuse the checks that waited too long for one).
//!
//! A room has at most one batch open. A check joins it, or opens it and
//! starts its lookup; the lookup waits for a connection, closes the batch
//! (later checks open the next one) and asks for every member it holds in
//! one query. So the batch grows while connections are scarce, and each
//! check is answered by a query that began after the check did: a member
//! who joined before checking is found, and no "not a member" is kept.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use service_kit::db;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::error::{Error, Result};

/// A lookup's answer for one check: whether the user is a member, or the
/// error that all of the batch's checks share.
type Answer = Result<bool, Arc<sqlx::Error>>;

/// The open batch of each room: who asks, and where each answer goes.
type Open = Arc<Mutex<HashMap<i64, Vec<(i64, oneshot::Sender<Answer>)>>>>;

pub struct MemberLookups {
    db: PgPool,
    open: Open,
}

impl MemberLookups {
    pub fn new(db: PgPool) -> Self {
        Self { db, open: Arc::default() }
    }

    /// Whether `uid` is a member of `room_id`, as PostgreSQL says after this
    /// call began.
    pub async fn is_member(&self, room_id: i64, uid: i64) -> Result<bool> {
        let (answer, answered) = oneshot::channel();
        let opened = {
            let mut open = self.open.lock().expect("lock poisoned");
            let batch = open.entry(room_id).or_default();
            batch.push((uid, answer));
            batch.len() == 1
        };
        if opened {
            // A task of its own: the lookup answers the whole batch even if
            // the call that opened it is cancelled.
            let lookup = lookup(self.db.clone(), self.open.clone(), room_id);
            tokio::spawn(lookup.in_current_span());
        }
        match answered.await {
            Ok(answer) => answer.map_err(Error::from),
            Err(_) => Err(Error::Internal(anyhow::anyhow!("a membership lookup ended without an answer"))),
        }
    }
}

/// Closes `room_id`'s batch once a connection is free, and answers it.
async fn lookup(db: PgPool, open: Open, room_id: i64) {
    let connection = db.acquire().await;
    let batch = open.lock().expect("lock poisoned").remove(&room_id).unwrap_or_default();
    let uids: Vec<i64> = batch.iter().map(|(uid, _)| *uid).collect();
    let members = match connection {
        Ok(mut connection) => {
            sqlx::query_scalar("SELECT user_id FROM room_members WHERE room_id = $1 AND user_id = ANY($2)")
                .bind(room_id)
                .bind(&uids)
                .fetch_all(&mut *connection)
                .instrument(db::postgres("SELECT room_members"))
                .await
        }
        Err(error) => Err(error),
    };
    let members = members.map(HashSet::<i64>::from_iter).map_err(Arc::new);
    for (uid, answer) in batch {
        // A check whose call was cancelled no longer listens.
        let _ = answer.send(members.as_ref().map(|members| members.contains(&uid)).map_err(Arc::clone));
    }
}
