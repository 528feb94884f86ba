//! Who is calling: the user id of the bearer token in the `authorization`
//! metadata, verified once per call by an interceptor. No request field
//! ever names the caller. And from where: the client's address, for the
//! limits kept per address.

use std::net::IpAddr;

use ipnet::IpNet;
use tonic::{Request, Status, service::Interceptor};

use crate::{
    error::Error,
    token::{TokenError, TokenKeys, Verified},
};

/// The caller's verified token, or `None` for an anonymous call.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Option<Verified>);

/// Verifies the token of every call that carries one. A call without one
/// passes as anonymous; each method decides whether that is enough.
#[derive(Clone)]
pub struct Authenticator {
    keys: TokenKeys,
}

impl Authenticator {
    pub fn new(keys: TokenKeys) -> Self {
        Self { keys }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match request.metadata().get("authorization") {
            None => None,
            Some(value) => {
                let value = value.to_str().map_err(|_| Error::Unauthenticated("invalid token"))?;
                Some(self.keys.verify_header(Some(value)).map_err(token_error)?)
            }
        };
        request.extensions_mut().insert(Caller(caller));
        Ok(request)
    }
}

fn token_error(error: TokenError) -> Error {
    match error {
        TokenError::Missing => Error::Unauthenticated("missing token"),
        TokenError::Expired => Error::Unauthenticated("token expired"),
        TokenError::Invalid => Error::Unauthenticated("invalid token"),
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
