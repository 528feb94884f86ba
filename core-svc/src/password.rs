//! Password hashes: argon2id with the crate's recommended parameters, in
//! PHC string form. Hashing takes tens of milliseconds of CPU and 19 MiB of
//! memory by design, so it runs on the blocking pool, never on the async
//! runtime's threads, and only so many at once: a burst of logins waits a
//! little for a turn, then is shed as "overloaded" rather than exhausting
//! memory.

use std::time::Duration;

use anyhow::Context;
use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    domain::Password,
    error::{Error, Result},
    metrics::PASSWORD_HASHES_SHED,
};

pub struct Hasher {
    turns: Semaphore,
    /// How long a call waits for a turn before it is shed.
    wait: Duration,
}

impl Hasher {
    /// At most `at_once` hashes at a time.
    pub fn new(at_once: usize, wait: Duration) -> Self {
        Self { turns: Semaphore::new(at_once.max(1)), wait }
    }

    async fn turn(&self) -> Result<SemaphorePermit<'_>> {
        match tokio::time::timeout(self.wait, self.turns.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!(PASSWORD_HASHES_SHED).increment(1);
                Err(Error::Overloaded("too many logins at once, retry shortly"))
            }
        }
    }

    pub async fn hash(&self, password: Password) -> Result<String> {
        let _turn = self.turn().await?;
        let hashed = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| anyhow::anyhow!("hashing a password: {error}"))
        })
        .await
        .context("password hashing task")?;
        Ok(hashed?)
    }

    /// Whether `password` matches `phc_hash`. A malformed stored hash is an
    /// error, not a mismatch: it means the data is broken.
    pub async fn verify(&self, password: String, phc_hash: String) -> Result<bool> {
        let _turn = self.turn().await?;
        let verified = tokio::task::spawn_blocking(move || {
            let parsed =
                PasswordHash::new(&phc_hash).map_err(|error| anyhow::anyhow!("stored hash is malformed: {error}"))?;
            anyhow::Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .context("password verification task")?;
        Ok(verified?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        Hasher::new(2, Duration::from_secs(10))
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let hasher = hasher();
        let hashed = hasher.hash(Password::parse("correct horse").unwrap()).await.unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse".into(), hashed.clone()).await.unwrap());
        assert!(!hasher.verify("wrong horse!".into(), hashed).await.unwrap());
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let hasher = hasher();
        let a = hasher.hash(Password::parse("password1").unwrap()).await.unwrap();
        let b = hasher.hash(Password::parse("password1").unwrap()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn hashes_beyond_the_cap_wait_for_a_turn_then_are_shed() {
        let hasher = Hasher::new(1, Duration::from_millis(50));
        let busy = hasher.turn().await.unwrap();
        let shed = hasher.hash(Password::parse("password1").unwrap()).await;
        assert!(matches!(shed, Err(Error::Overloaded(_))), "{shed:?}");
        drop(busy);
        assert!(hasher.hash(Password::parse("password1").unwrap()).await.is_ok(), "served once a turn is free");
    }
}
