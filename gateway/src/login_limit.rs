//! Login attempts per client address, counted by this gateway (each replica
//! counts its own). Failed attempts per account are limited by core-svc,
//! across replicas.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::error::ApiError;

#[derive(Clone)]
pub struct LoginLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl LoginLimit {
    pub fn per_minute(attempts: NonZeroU32) -> Self {
        let limiter = Arc::new(RateLimiter::keyed(Quota::per_minute(attempts)));
        // Forget addresses that have been quiet, so the table does not grow
        // with every address ever seen.
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(60));
            loop {
                interval.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.retain_recent();
            }
        });
        Self { limiter }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            ApiError::too_many_requests(wait.as_secs() + 1)
        })
    }
}
