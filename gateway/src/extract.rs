//! What handlers take from a request.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
};
use client_input::{json::parse_case_insensitive, token};
use serde::de::DeserializeOwned;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::error::ApiError;

/// The largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON object body whose field names match case-insensitively
/// ([`parse_case_insensitive`]). The Content-Type is not checked, because
/// the original clients do not always send one.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than 64 KiB")
            } else {
                ApiError::bad_request("cannot read the request body")
            }
        })?;
        Ok(JsonBody(parse_case_insensitive(&bytes)?))
    }
}

/// The caller's access token, from `Authorization: <jwt>` or
/// `Authorization: Bearer <jwt>`, to be forwarded to core-svc, which
/// verifies it. As an `Option`, a request without one passes as anonymous.
#[derive(Clone)]
pub struct Token(AsciiMetadataValue);

impl Token {
    /// When the token expires (its `exp` claim), in Unix seconds, read
    /// without checking the signature ([`token::unverified_expiry`]).
    pub fn expires_at(&self) -> Option<i64> {
        token::unverified_expiry(self.0.to_str().ok()?)
    }

    /// How long until the token expires ([`Token::expires_at`]).
    pub fn lifetime(&self) -> Option<Duration> {
        let left = self.expires_at()?.saturating_sub(chrono::Utc::now().timestamp());
        Some(Duration::from_secs(left.max(0).unsigned_abs()))
    }

    /// A gRPC request that acts with this token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.0.clone());
        request
    }

    /// A token as a client sent it, bare or after `Bearer `
    /// ([`token::authorization`]).
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        let value = token::authorization(value)?;
        MetadataValue::try_from(value).map(Token).map_err(|_| ApiError::unauthorized("invalid token"))
    }

    fn from_parts(parts: &Parts) -> Option<Result<Self, ApiError>> {
        let value = parts.headers.get(header::AUTHORIZATION)?;
        Some(value.to_str().map_err(|_| ApiError::unauthorized("invalid token")).and_then(Token::parse))
    }
}

/// A gRPC request for an anonymous caller, or one acting with `token`.
pub fn grpc_request<T>(token: Option<&Token>, message: T) -> tonic::Request<T> {
    match token {
        Some(token) => token.request(message),
        None => tonic::Request::new(message),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Token::from_parts(parts).unwrap_or_else(|| Err(ApiError::unauthorized("missing token")))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Token {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, ApiError> {
        Token::from_parts(parts).transpose()
    }
}

/// Whether to believe `X-Forwarded-For`; part of the router's state.
#[derive(Clone, Copy)]
pub struct TrustForwardedFor(pub bool);

/// The client's address: the peer's, or behind a trusted proxy the first
/// `X-Forwarded-For` entry.
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp
where
    TrustForwardedFor: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if TrustForwardedFor::from_ref(state).0 {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .and_then(|first| first.trim().parse().ok());
            if let Some(ip) = forwarded {
                return Ok(ClientIp(ip));
            }
        }
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
        Ok(ClientIp(peer.ip()))
    }
}
