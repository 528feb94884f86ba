//! Password hashes: argon2id with the crate's recommended parameters, in
//! PHC string form. Hashing takes tens of milliseconds of CPU by design, so
//! it runs on the blocking pool, never on the async runtime's threads.

use anyhow::Context;
use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

use crate::domain::Password;

pub async fn hash(password: Password) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| anyhow::anyhow!("hashing a password: {error}"))
    })
    .await
    .context("password hashing task")?
}

/// Whether `password` matches `phc_hash`. A malformed stored hash is an error,
/// not a mismatch: it means the data is broken.
pub async fn verify(password: String, phc_hash: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed =
            PasswordHash::new(&phc_hash).map_err(|error| anyhow::anyhow!("stored hash is malformed: {error}"))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .context("password verification task")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let hashed = hash(Password::parse("correct horse").unwrap()).await.unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), hashed.clone()).await.unwrap());
        assert!(!verify("wrong horse!".into(), hashed).await.unwrap());
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let a = hash(Password::parse("password1").unwrap()).await.unwrap();
        let b = hash(Password::parse("password1").unwrap()).await.unwrap();
        assert_ne!(a, b);
    }
}
