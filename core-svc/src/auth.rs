//! Who is calling: the user id of the bearer token in the `authorization`
//! metadata, verified once per call by an interceptor. No request field
//! ever names the caller. And from where: the client's address, for the
//! limits kept per address.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use client_input::token::{TokenKeys, Verified};
use futures::future::{BoxFuture, FutureExt};
use http::HeaderValue;
use ipnet::IpNet;
use service_kit::db;
use sqlx::PgPool;
use tonic::{Request, Status, body::Body};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::Error;

/// The caller's verified token, or `None` for an anonymous call.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Option<Verified>);

/// Verifies the token of every call to the chat services that carries one,
/// and that its user exists (a token outliving its user, say after a
/// database restore under the same secret, is as invalid as a forged one),
/// then hands the caller to the call (`Caller`, in its extensions). A call
/// without a token passes as anonymous; each method decides whether that is
/// enough. Health checks and reflection are not looked at.
#[derive(Clone)]
pub struct AuthLayer(Arc<Verifier>);

impl AuthLayer {
    pub fn new(keys: TokenKeys, db: PgPool) -> Self {
        Self(Arc::new(Verifier { keys, db, known: Mutex::default() }))
    }
}

/// The users found to exist are remembered (none is ever deleted), up to
/// this many; past it the memory starts again.
const MAX_KNOWN_USERS: usize = 1_000_000;

struct Verifier {
    keys: TokenKeys,
    db: PgPool,
    known: Mutex<HashSet<i64>>,
}

impl Verifier {
    async fn caller(&self, authorization: Option<&HeaderValue>) -> Result<Caller, Error> {
        let Some(value) = authorization else { return Ok(Caller(None)) };
        let value = value.to_str().map_err(|_| Error::Unauthenticated("invalid token"))?;
        let verified = self.keys.verify_header(Some(value)).map_err(token_error)?;
        if !self.exists(verified.uid).await {
            return Err(Error::Unauthenticated("invalid token"));
        }
        Ok(Caller(Some(verified)))
    }

    async fn exists(&self, uid: i64) -> bool {
        if self.known.lock().expect("not poisoned").contains(&uid) {
            return true;
        }
        let found = sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(uid)
            .fetch_one(&self.db)
            .instrument(db::postgres("SELECT users"))
            .await;
        match found {
            Ok(true) => {
                let mut known = self.known.lock().expect("not poisoned");
                if known.len() >= MAX_KNOWN_USERS {
                    known.clear();
                }
                known.insert(uid);
                true
            }
            Ok(false) => false,
            // The signature holds: rather than refuse every call while
            // PostgreSQL is away, such a token is taken on it.
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether a token's user exists");
                true
            }
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate { inner, verifier: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !request.uri().path().starts_with(CHAT_SERVICES) {
            return self.inner.call(request).boxed();
        }
        // The service that was made ready goes with the call; its clone
        // stays for the next (tower's rule for services called later).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        async move {
            match verifier.caller(request.headers().get(http::header::AUTHORIZATION)).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(error) => Ok(Status::from(error).into_http()),
            }
        }
        .boxed()
    }
}

/// The paths of the services whose calls act for a user.
const CHAT_SERVICES: &str = "/chat.v1.";

fn token_error(error: client_input::Error) -> Error {
    match error {
        client_input::Error::MissingToken => Error::Unauthenticated("missing token"),
        client_input::Error::ExpiredToken => Error::Unauthenticated("token expired"),
        client_input::Error::InvalidToken | client_input::Error::Malformed(_) => {
            Error::Unauthenticated("invalid token")
        }
    }
}

/// The caller of a call that needs one.
pub fn required<T>(request: &Request<T>) -> Result<i64, Error> {
    session(request).map(|token| token.uid)
}

/// The caller's token, for a call that lasts and must end with it.
pub fn session<T>(request: &Request<T>) -> Result<Verified, Error> {
    request.extensions().get::<Caller>().and_then(|caller| caller.0).ok_or(Error::Unauthenticated("missing token"))
}

/// The caller, if the call carried a token.
pub fn optional<T>(request: &Request<T>) -> Option<i64> {
    request.extensions().get::<Caller>().and_then(|caller| caller.0).map(|token| token.uid)
}

/// The address of the client behind a call: the peer's, or, when the peer
/// is a trusted proxy (a gateway), the first one it forwards in
/// `x-forwarded-for`.
pub fn client_address<T>(request: &Request<T>, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = request.remote_addr()?.ip();
    if !trusted_proxies.iter().any(|net| net.contains(&peer)) {
        return Some(peer);
    }
    let forwarded = request.metadata().get("x-forwarded-for").and_then(|value| value.to_str().ok());
    Some(forwarded.and_then(|value| value.split(',').next()?.trim().parse().ok()).unwrap_or(peer))
}
