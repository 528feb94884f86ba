//! Idempotent sends: the same user sending with the same key within 24
//! hours gets the same message (the same id and time), and the message log
//! holds it as one event, whichever replica each attempt reaches and
//! whenever an attempt was cut short.
//!
//! The key is held in PostgreSQL (`send_keys`), where every replica sees it
//! and a crash does not lose it, and it is reserved *before* the message
//! goes to the log: the reservation keeps the whole encoded event (its id,
//! time, text). So a retry never makes a new message; at worst it writes
//! the same event to the log again, which every reader takes as one:
//! the archiver stores an id once (an identical copy is no collision), and
//! history, resume and live readers go by id.
//!
//! One attempt at a time holds the key (its `claim`, for [`CLAIM`], longer
//! than the log and NATS may take to answer), from the reservation to the
//! live subject, after which it marks it `logged`. Another attempt meanwhile:
//! - finds it `logged`: answers the stored message;
//! - finds it claimed: waits for the holder to finish;
//! - finds the claim lapsed and not `logged` (the holder crashed, before or
//!   after the log took the event; it cannot tell which): takes the claim
//!   over and writes the stored event again. As the first copy may have
//!   left a hole in the room's recent history (the crash came before the
//!   cache), the room's recent history is dropped (`Spread::Again`).
//!
//! From the reservation to the live subject an attempt runs on a task of
//! its own ([`to_the_end`]): a caller that goes away (its gateway died, its
//! deadline passed) does not cut it short, so only a replica that dies
//! leaves a claim to lapse.
//!
//! An attempt the log refuses gives the key back (deletes the reservation,
//! if it still holds the claim) and withdraws the message, as any refused
//! send; a retry then makes a new message. One whose claim was taken over
//! meanwhile does neither: the new holder's copy stands.
//!
//! What is left: a holder that writes its event, loses PostgreSQL before
//! marking it `logged`, and still answers; a later retry then writes it
//! again after the claim lapses (harmless, as above, except that live
//! readers may see it twice).

use std::{sync::Arc, time::Duration};

use chat_proto::events::v1::Event;
use prost::Message as _;
use service_kit::db;
use sqlx::PgPool;
use tracing::Instrument;

use crate::{
    domain::SendKey,
    error::{Error, Result},
    events::{Events, LIVE_WAIT, PRODUCE_TIMEOUT, Spread, to_the_end},
};

/// How long an attempt holds a key before another may take it over: past
/// the log's longest wait for an acknowledgement and NATS's for the live copy.
const CLAIM: Duration = PRODUCE_TIMEOUT.saturating_add(LIVE_WAIT).saturating_add(Duration::from_secs(2));
/// How often a waiting attempt looks at the key again.
const POLL: Duration = Duration::from_millis(100);
/// How long a key stands for its message.
pub const KEPT_HOURS: i32 = 24;
const FORGET_EVERY: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct SendKeys {
    db: PgPool,
}

/// A key's reservation as it stands.
#[derive(sqlx::FromRow)]
struct Reservation {
    event: Vec<u8>,
    logged: bool,
    /// The holder's claim has lapsed.
    lapsed: bool,
    /// Older than [`KEPT_HOURS`]: the key is free again.
    expired: bool,
}

impl SendKeys {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// The message `key` of `uid` stands for: sent now with `fresh` (which
    /// gives the new event its id and time) if the key is new, else the one
    /// it was given.
    pub async fn send(
        &self,
        events: &Arc<Events>,
        uid: i64,
        key: &SendKey,
        fresh: impl AsyncFnOnce() -> Result<Event>,
    ) -> Result<Event> {
        let give_up = tokio::time::Instant::now() + CLAIM + PRODUCE_TIMEOUT;
        let mut fresh = Some(fresh);
        let mut prepared: Option<Event> = None;
        loop {
            match self.reservation(uid, key).await? {
                None => {
                    let event = match prepared.take() {
                        Some(event) => event,
                        None => (fresh.take().expect("prepared once"))().await?,
                    };
                    let (keys, events, key) = (self.clone(), events.clone(), key.clone());
                    let reserved = to_the_end(async move {
                        let claim = rand::random::<i64>();
                        if !keys.reserve(uid, &key, &event, claim).await? {
                            return Ok(Err(event));
                        }
                        keys.log(&events, uid, &key, event, claim, Spread::First).await.map(Ok)
                    });
                    match reserved.await? {
                        Ok(event) => return Ok(event),
                        // Another attempt reserved it first: answer as it does.
                        Err(event) => prepared = Some(event),
                    }
                }
                Some(reservation) if reservation.expired => self.forget_expired(uid, key).await?,
                Some(reservation) if reservation.logged => return decode(&reservation.event),
                Some(reservation) if reservation.lapsed => {
                    let (keys, events, key) = (self.clone(), events.clone(), key.clone());
                    let taken = to_the_end(async move {
                        let claim = rand::random::<i64>();
                        let Some(event) = keys.take_over(uid, &key, claim).await? else { return Ok(None) };
                        tracing::warn!(uid, id = event.id, "a send's key was taken over; its event is logged again");
                        keys.log(&events, uid, &key, event, claim, Spread::Again).await.map(Some)
                    });
                    if let Some(event) = taken.await? {
                        return Ok(event);
                    }
                }
                Some(_) if tokio::time::Instant::now() >= give_up => {
                    return Err(Error::Unavailable("temporarily unavailable"));
                }
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Writes the key's event to the log, holding `claim`; marks it logged.
    async fn log(
        &self,
        events: &Events,
        uid: i64,
        key: &SendKey,
        event: Event,
        claim: i64,
        spread: Spread,
    ) -> Result<Event> {
        let logged = match events.log(&event).await {
            Ok(logged) => logged,
            Err(refused) => {
                match self.give_back(uid, key, claim).await {
                    Ok(true) => events.withdraw(event.room_id, event.id),
                    Ok(false) => {}
                    // Kept: a retry takes the claim over once it lapses and
                    // writes the same event, rather than have it withdrawn
                    // behind a copy that may stand.
                    Err(error) => tracing::warn!(%error, uid, "cannot give a refused send's key back"),
                }
                return Err(refused);
            }
        };
        // Spread before it is marked: a replica that dies on the way leaves
        // the key unmarked, and the retry that takes it over spreads the
        // event again. Marked first, the retry would answer an event that
        // no live reader ever saw (the fault suite's replica kill did).
        events.spread(&event, logged, spread).await;
        let marked =
            sqlx::query("UPDATE send_keys SET logged = true WHERE user_id = $1 AND key = $2 AND message_id = $3")
                .bind(uid)
                .bind(key.as_ref())
                .bind(event.id)
                .execute(&self.db)
                .instrument(db::postgres("UPDATE send_keys"))
                .await;
        if let Err(error) = marked {
            // Logged all the same: answered as such.
            tracing::warn!(%error, uid, id = event.id, "cannot mark a send's key logged");
        }
        Ok(event)
    }

    async fn reservation(&self, uid: i64, key: &SendKey) -> Result<Option<Reservation>> {
        Ok(sqlx::query_as(
            "SELECT event, logged, claimed_until < now() AS lapsed,
                    created_at < now() - make_interval(hours => $3) AS expired
               FROM send_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(uid)
        .bind(key.as_ref())
        .bind(KEPT_HOURS)
        .fetch_optional(&self.db)
        .instrument(db::postgres("SELECT send_keys"))
        .await?)
    }

    /// Reserves the key for `event`; false if it is taken.
    async fn reserve(&self, uid: i64, key: &SendKey, event: &Event, claim: i64) -> Result<bool> {
        let reserved = sqlx::query(
            "INSERT INTO send_keys (user_id, key, message_id, event, claim, claimed_until)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
             ON CONFLICT DO NOTHING",
        )
        .bind(uid)
        .bind(key.as_ref())
        .bind(event.id)
        .bind(event.encode_to_vec())
        .bind(claim)
        .bind(CLAIM.as_secs_f64())
        .execute(&self.db)
        .instrument(db::postgres("INSERT send_keys"))
        .await?;
        Ok(reserved.rows_affected() == 1)
    }

    /// Takes over a lapsed claim; the key's event, if it was still lapsed.
    async fn take_over(&self, uid: i64, key: &SendKey, claim: i64) -> Result<Option<Event>> {
        let event: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE send_keys SET claim = $3, claimed_until = now() + make_interval(secs => $4)
              WHERE user_id = $1 AND key = $2 AND NOT logged AND claimed_until < now()
              RETURNING event",
        )
        .bind(uid)
        .bind(key.as_ref())
        .bind(claim)
        .bind(CLAIM.as_secs_f64())
        .fetch_optional(&self.db)
        .instrument(db::postgres("UPDATE send_keys"))
        .await?;
        event.as_deref().map(decode).transpose()
    }

    /// Frees the key after a refused send, if `claim` still holds it.
    async fn give_back(&self, uid: i64, key: &SendKey, claim: i64) -> Result<bool> {
        let deleted =
            sqlx::query("DELETE FROM send_keys WHERE user_id = $1 AND key = $2 AND claim = $3 AND NOT logged")
                .bind(uid)
                .bind(key.as_ref())
                .bind(claim)
                .execute(&self.db)
                .instrument(db::postgres("DELETE send_keys"))
                .await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn forget_expired(&self, uid: i64, key: &SendKey) -> Result<()> {
        sqlx::query(
            "DELETE FROM send_keys WHERE user_id = $1 AND key = $2 AND created_at < now() - make_interval(hours => $3)",
        )
        .bind(uid)
        .bind(key.as_ref())
        .bind(KEPT_HOURS)
        .execute(&self.db)
        .instrument(db::postgres("DELETE send_keys"))
        .await?;
        Ok(())
    }

    /// Deletes the keys older than [`KEPT_HOURS`], every hour.
    pub async fn forget_expired_forever(&self) {
        let mut interval = tokio::time::interval(FORGET_EVERY);
        loop {
            interval.tick().await;
            let forgotten = sqlx::query("DELETE FROM send_keys WHERE created_at < now() - make_interval(hours => $1)")
                .bind(KEPT_HOURS)
                .execute(&self.db)
                .instrument(db::postgres("DELETE send_keys"))
                .await;
            if let Err(error) = forgotten {
                tracing::warn!(%error, "cannot forget expired send keys");
            }
        }
    }
}

fn decode(encoded: &[u8]) -> Result<Event> {
    Event::decode(encoded).map_err(|error| Error::Internal(anyhow::anyhow!("a send key's stored event: {error}")))
}
