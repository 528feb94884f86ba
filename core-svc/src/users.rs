//! `chat.v1.UserService`: accounts and sessions.

use std::{sync::Arc, time::Duration};

use chat_proto::v1::{
    ChangeNameRequest, ChangeNameResponse, GetProfileRequest, LoginRequest, LoginResponse, Profile, RegisterRequest,
    RegisterResponse, user_service_server::UserService,
};
use chrono::{DateTime, Utc};
use client_input::token::TokenKeys;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use service_kit::db;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    auth,
    cache::{Cache, key},
    domain::{Email, Password, Username, parse_id, timestamp},
    error::{Error, Result, ResultExt},
    limits::{RateLimit, WriteLimits},
    metrics::{LOGIN_FAILURES, RATE_LIMITED},
    password::Hasher,
};

const WRONG_CREDENTIALS: &str = "wrong email or password";

/// A user as stored. Cached whole under [`key::user`].
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// How many failed logins lock an account, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimit {
    pub max_failures: u64,
    pub window: Duration,
}

/// Who may log in how often, across every replica.
pub struct LoginLimits {
    /// Failed logins per account.
    pub failures: LoginLimit,
    /// Attempts per client address.
    pub per_address: RateLimit,
    /// Peers whose `x-forwarded-for` names the client (the gateways).
    pub trusted_proxies: Vec<IpNet>,
}

pub struct Users {
    db: PgPool,
    cache: Arc<Cache>,
    tokens: TokenKeys,
    token_lifetime: chrono::Duration,
    login_limit: LoginLimit,
    per_address: RateLimit,
    trusted_proxies: Vec<IpNet>,
    hasher: Hasher,
    writes: Arc<WriteLimits>,
    /// Verified against when the e-mail is unknown, so that a wrong e-mail
    /// takes as long as a wrong password and does not reveal who has an account.
    decoy_hash: String,
}

impl Users {
    pub async fn new(
        db: PgPool,
        cache: Arc<Cache>,
        tokens: TokenKeys,
        token_lifetime: chrono::Duration,
        limits: LoginLimits,
        hasher: Hasher,
        writes: Arc<WriteLimits>,
    ) -> anyhow::Result<Self> {
        let decoy_hash = hasher.hash(Password::parse("decoy password").expect("valid")).await?;
        let LoginLimits { failures: login_limit, per_address, trusted_proxies } = limits;
        Ok(Self {
            db,
            cache,
            tokens,
            token_lifetime,
            login_limit,
            per_address,
            trusted_proxies,
            hasher,
            writes,
            decoy_hash,
        })
    }

    pub async fn find(&self, uid: i64) -> Result<Option<User>> {
        if let Some(user) = self.cache.get::<User>(&key::user(uid)).await {
            return Ok(Some(user));
        }
        let user: Option<User> = sqlx::query_as("SELECT id, username, email, created_at FROM users WHERE id = $1")
            .bind(uid)
            .fetch_optional(&self.db)
            .instrument(db::postgres("SELECT users"))
            .await?;
        if let Some(user) = &user {
            self.cache.set(&key::user(uid), user).await;
        }
        Ok(user)
    }

    async fn check_not_locked(&self, email: &str) -> Result<()> {
        match self.cache.counter(&key::login_failures(email)).await {
            Some((failures, retry_after_secs)) if failures >= self.login_limit.max_failures => {
                metrics::counter!(RATE_LIMITED, "limit" => "login").increment(1);
                Err(Error::RateLimited { retry_after_secs, what: "too many failed logins, try again later" })
            }
            _ => Ok(()),
        }
    }

    async fn authenticate(&self, request: LoginRequest) -> Result<LoginResponse> {
        // Not validated beyond this: telling a client its e-mail is malformed
        // would say which half of the credentials was wrong.
        let email = request.email.trim().to_lowercase();
        self.check_not_locked(&email).await?;
        // PostgreSQL text cannot hold NUL, so no account has such an address,
        // and a query with one would fail rather than find none.
        let account: Option<(i64, String)> = if email.contains('\0') {
            None
        } else {
            sqlx::query_as("SELECT id, password_hash FROM users WHERE lower(email) = $1")
                .bind(&email)
                .fetch_optional(&self.db)
                .instrument(db::postgres("SELECT users"))
                .await?
        };
        let (uid, hash) = match account {
            Some((uid, hash)) => (Some(uid), hash),
            None => (None, self.decoy_hash.clone()),
        };
        let matches = self.hasher.verify(request.password, hash).await?;
        let Some(uid) = uid.filter(|_| matches) else {
            self.cache.increment(&key::login_failures(&email), self.login_limit.window).await;
            metrics::counter!(LOGIN_FAILURES).increment(1);
            tracing::info!(outcome = "refused", "login");
            return Err(Error::Unauthenticated(WRONG_CREDENTIALS));
        };
        self.cache.delete(&[key::login_failures(&email)]).await;
        let issued = self.tokens.issue(uid, self.token_lifetime);
        tracing::info!(uid, outcome = "ok", "login");
        Ok(LoginResponse { token: issued.token, uid, expires_at: Some(timestamp(issued.expires_at)) })
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        if let Some(address) = auth::client_address(&request, &self.trusted_proxies) {
            self.writes.register.check(&address.to_string()).await?;
        }
        let request = request.into_inner();
        let (username, email, password) = match (
            Username::parse(&request.username),
            Email::parse(&request.email),
            Password::parse(&request.password),
        ) {
            (Ok(username), Ok(email), Ok(password)) => (username, email, password),
            (username, email, password) => {
                return Err(Error::collect([username.err(), email.err(), password.err()]).into());
            }
        };
        let hash = self.hasher.hash(password).await?;
        let uid: i64 =
            sqlx::query_scalar("INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3) RETURNING id")
                .bind(username.as_ref())
                .bind(email.as_ref())
                .bind(hash)
                .fetch_one(&self.db)
                .instrument(db::postgres("INSERT users"))
                .await
                .on_constraint(|constraint| match constraint {
                    "users_username_key" => Some(Error::AlreadyExists("username already taken")),
                    "users_email_key" => Some(Error::AlreadyExists("email already registered")),
                    _ => None,
                })?;
        tracing::info!(uid, "registered");
        Ok(Response::new(RegisterResponse { uid }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        if let Some(address) = auth::client_address(&request, &self.trusted_proxies) {
            self.per_address.check(&address.to_string()).await?;
        }
        Ok(Response::new(self.authenticate(request.into_inner()).await?))
    }

    async fn get_profile(&self, request: Request<GetProfileRequest>) -> Result<Response<Profile>, Status> {
        let caller = auth::optional(&request);
        let uid = match request.get_ref().uid {
            0 => auth::required(&request)?,
            uid => parse_id(uid, "user").map_err(Error::invalid)?,
        };
        let user = self.find(uid).await?.ok_or(Error::NotFound("user not found"))?;
        Ok(Response::new(Profile {
            uid: user.id,
            username: user.username,
            email: (caller == Some(user.id)).then_some(user.email),
            created_at: Some(timestamp(user.created_at)),
        }))
    }

    async fn change_name(&self, request: Request<ChangeNameRequest>) -> Result<Response<ChangeNameResponse>, Status> {
        let uid = auth::required(&request)?;
        let new_name = Username::parse(&request.get_ref().new_name).map_err(Error::invalid)?;
        let user = self.find(uid).await?.ok_or(Error::NotFound("user not found"))?;
        if user.username == new_name.as_ref() {
            return Err(Error::invalid("new name is the same as the current one").into());
        }
        sqlx::query("UPDATE users SET username = $1 WHERE id = $2")
            .bind(new_name.as_ref())
            .bind(uid)
            .execute(&self.db)
            .instrument(db::postgres("UPDATE users"))
            .await
            .on_constraint(|constraint| {
                (constraint == "users_username_key").then_some(Error::AlreadyExists("username already taken"))
            })?;
        self.cache.delete(&[key::user(uid)]).await;
        tracing::info!(uid, "name changed");
        Ok(Response::new(ChangeNameResponse {}))
    }
}
