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
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::error::ApiError;

/// The largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON object body whose field names match case-insensitively, as the
/// original Go server's did: `username`, `Username` and `USERNAME` are one
/// field. Request types name their fields in lower case. The Content-Type is
/// not checked, because the original clients do not always send one.
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
        parse_case_insensitive(&bytes).map(JsonBody)
    }
}

pub fn parse_case_insensitive<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("invalid json"))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    let fields: Map<String, Value> =
        fields.into_iter().map(|(name, value)| (name.to_lowercase(), whole_number_as_integer(value))).collect();
    T::deserialize(Value::Object(fields)).map_err(|error| ApiError::bad_request(format!("invalid request: {error}")))
}

/// JSON Schema, and so the OpenAPI document, counts `3.0` as the integer 3,
/// which serde reads as a float that no integer field takes; such a number
/// is read as the integer it is. Past 2^53 a float no longer tells
/// neighbouring integers apart, so those stay floats and are refused.
fn whole_number_as_integer(value: Value) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value.as_f64() {
        Some(number) if value.is_f64() && number.fract() == 0.0 && number.abs() <= EXACT => Value::from(number as i64),
        _ => value,
    }
}

/// The caller's access token, from `Authorization: <jwt>` or
/// `Authorization: Bearer <jwt>`, to be forwarded to core-svc, which
/// verifies it. As an `Option`, a request without one passes as anonymous.
#[derive(Clone)]
pub struct Token(AsciiMetadataValue);

impl Token {
    /// When the token expires (its `exp` claim), in Unix seconds. The
    /// signature is not checked here: this is only for a token core-svc has
    /// accepted, to know when to stop serving a socket that lives on it.
    pub fn expires_at(&self) -> Option<i64> {
        #[derive(Deserialize)]
        struct Expiry {
            exp: i64,
        }
        let value = self.0.to_str().ok()?;
        let jwt = value.rsplit(' ').next()?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.insecure_disable_signature_validation();
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        Some(jsonwebtoken::decode::<Expiry>(jwt, &DecodingKey::from_secret(&[]), &validation).ok()?.claims.exp)
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

    /// A token as a client sent it, bare or after `Bearer `.
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        Some(value.trim())
            .filter(|value| !value.is_empty())
            .and_then(|value| MetadataValue::try_from(value).ok())
            .map(Token)
            .ok_or_else(|| ApiError::unauthorized("invalid token"))
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

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Login {
        email: String,
        roomid: i64,
    }

    #[test]
    fn field_names_match_in_any_case_and_unknown_ones_are_ignored() {
        for body in [
            r#"{"Email":"a@b.co","RoomID":3}"#,
            r#"{"email":"a@b.co","roomid":3,"extra":[1]}"#,
            r#"{"EMAIL":"a@b.co","ROOMID":3}"#,
        ] {
            let login: Login = parse_case_insensitive(body.as_bytes()).unwrap();
            assert_eq!(login, Login { email: "a@b.co".into(), roomid: 3 }, "{body}");
        }
    }

    #[test]
    fn whole_numbers_are_integers_however_spelled() {
        for body in [r#"{"RoomID":3}"#, r#"{"RoomID":3.0}"#, r#"{"RoomID":0.3e1}"#] {
            let login: Login = parse_case_insensitive(body.as_bytes()).unwrap();
            assert_eq!(login.roomid, 3, "{body}");
        }
        for body in [r#"{"RoomID":3.5}"#, r#"{"RoomID":1e300}"#, r#"{"Email":1.0}"#] {
            let error = parse_case_insensitive::<Login>(body.as_bytes()).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body}");
        }
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in ["", "{", "[1,2]", "\"text\"", "null", r#"{"RoomID":"three"}"#, r#"{"RoomID":1.5}"#] {
            let error = parse_case_insensitive::<Login>(body.as_bytes()).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body}");
        }
    }
}
