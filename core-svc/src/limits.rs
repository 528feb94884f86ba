//! Rate limits that hold across every core-svc replica: each limited thing
//! (a user's sends, an address's logins) has one counter in Redis, so N
//! replicas allow the rate once, not N times. When Redis cannot answer, each
//! replica falls back to a limiter of its own, so that a Redis outage
//! neither stops everyone nor lifts the limit.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::{
    cache::{Cache, key},
    error::{Error, Result},
    metrics::RATE_LIMITED,
};

/// How often the fallback limiters forget keys that have gone quiet.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct RateLimit {
    /// Names the counters in Redis.
    name: &'static str,
    /// What the client is told when over the limit.
    refusal: &'static str,
    interval: Duration,
    burst: NonZeroU32,
    cache: Arc<Cache>,
    fallback: Arc<DefaultKeyedRateLimiter<String>>,
}

impl RateLimit {
    /// `per_period` calls per `period`, `burst` of them at once.
    pub fn new(
        name: &'static str,
        refusal: &'static str,
        cache: Arc<Cache>,
        per_period: NonZeroU32,
        period: Duration,
        burst: NonZeroU32,
    ) -> Self {
        let interval = period / per_period.get();
        let quota = Quota::with_period(interval).expect("a rate above zero").allow_burst(burst);
        let fallback = Arc::new(RateLimiter::keyed(quota));
        let weak = Arc::downgrade(&fallback);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(PRUNE_EVERY);
            loop {
                interval.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.retain_recent();
            }
        });
        Self { name, refusal, interval, burst, cache, fallback }
    }

    /// Counts one call of `of`; refused with how long to wait when over the limit.
    pub async fn check(&self, of: &str) -> Result<()> {
        let decision = match self.cache.take_token(&key::rate(self.name, of), self.interval, self.burst.get()).await {
            Some(decision) => decision,
            None => self
                .fallback
                .check_key(&of.to_owned())
                .map_err(|not_until| not_until.wait_time_from(governor::clock::DefaultClock::default().now())),
        };
        decision.map_err(|wait| {
            metrics::counter!(RATE_LIMITED, "limit" => self.name).increment(1);
            Error::RateLimited { retry_after_secs: wait.as_secs() + 1, what: self.refusal }
        })
    }
}

/// The limits of every write beyond sends and logins, each of its own
/// setting (`*_PER_MINUTE`), and each a burst of as many at once: per client
/// address for registrations (there is no user yet), per user otherwise.
pub struct WriteLimits {
    pub register: RateLimit,
    pub create_room: RateLimit,
    pub invite: RateLimit,
    pub direct: RateLimit,
    pub react: RateLimit,
    pub search: RateLimit,
}

/// How many of each write one client may make per minute.
#[derive(Debug, Clone, Copy)]
pub struct WritesPerMinute {
    pub register_per_ip: NonZeroU32,
    pub create_room: NonZeroU32,
    pub invite: NonZeroU32,
    pub direct: NonZeroU32,
    pub react: NonZeroU32,
    pub search: NonZeroU32,
}

impl WriteLimits {
    pub fn new(cache: &Arc<Cache>, per_minute: WritesPerMinute) -> Self {
        let limit = |name, refusal, n| RateLimit::new(name, refusal, cache.clone(), n, Duration::from_secs(60), n);
        Self {
            register: limit("register", "too many registrations, try again later", per_minute.register_per_ip),
            create_room: limit("create_room", "too many rooms created, try again later", per_minute.create_room),
            invite: limit("invite", "too many invitations, try again later", per_minute.invite),
            direct: limit("direct", "too many direct rooms opened, try again later", per_minute.direct),
            react: limit("react", "reacting too often, try again later", per_minute.react),
            search: limit("search", "too many searches, try again later", per_minute.search),
        }
    }
}
