//! Access tokens: HS256 JWTs whose claims carry the user id (`UID`) and the
//! expiry (`exp`), as the original Go server issued them. A client sends
//! one in `Authorization` (or the WebSocket's `auth` frame), bare or after
//! `Bearer `; the gateway forwards it as it came, and core-svc verifies it.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Error;

/// An `Authorization` value as a client sent it, trimmed: refused if empty
/// or if it holds what no header value (and so no gRPC metadata value) may:
/// anything but visible ASCII, spaces and tabs.
pub fn authorization(value: &str) -> Result<&str, Error> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|byte| (b' '..=b'~').contains(&byte) || byte == b'\t') {
        return Err(Error::InvalidToken);
    }
    Ok(value)
}

/// When the token in an `Authorization` value expires (its `exp` claim), in
/// Unix seconds. The signature is not checked: this is only for a token
/// core-svc has accepted, to know when to stop serving a socket that lives
/// on it.
pub fn unverified_expiry(value: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Expiry {
        exp: i64,
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let token = jsonwebtoken::decode::<Expiry>(strip_bearer(value), &DecodingKey::from_secret(&[]), &validation);
    Some(token.ok()?.claims.exp)
}

/// The token inside an `Authorization` value, with or without `Bearer `.
fn strip_bearer(value: &str) -> &str {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "UID")]
    uid: i64,
    exp: i64,
    iat: i64,
}

/// A valid token: whose it is, and until when (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub uid: i64,
    pub expires_at: i64,
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<secret>)")
    }
}

/// A token just issued, and when it stops being valid.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // A token that says it is not valid yet is not (jsonwebtoken does
        // not look by default).
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    pub fn issue(&self, uid: i64, lifetime: Duration) -> IssuedToken {
        let now = Utc::now();
        // `exp` holds whole seconds: the time told to the client is the one the
        // token really expires at, not up to a second after it.
        let expires_at = (now + lifetime).trunc_subsecs(0);
        let claims = Claims { uid, exp: expires_at.timestamp(), iat: now.timestamp() };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail");
        IssuedToken { token, expires_at }
    }

    /// A token's user and expiry; [`Error::ExpiredToken`] or
    /// [`Error::InvalidToken`] if it is not valid.
    pub fn verify(&self, token: &str) -> Result<Verified, Error> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if data.claims.uid > 0 => Ok(Verified { uid: data.claims.uid, expires_at: data.claims.exp }),
            Ok(_) => Err(Error::InvalidToken),
            Err(error) => match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(Error::ExpiredToken),
                _ => Err(Error::InvalidToken),
            },
        }
    }

    /// Verifies the value of an `Authorization` header: the bare token, as the
    /// original clients send it, or `Bearer <token>`.
    pub fn verify_header(&self, value: Option<&str>) -> Result<Verified, Error> {
        let value = value.map(str::trim).filter(|v| !v.is_empty()).ok_or(Error::MissingToken)?;
        self.verify(strip_bearer(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"test secret")
    }

    #[test]
    fn issued_token_verifies_to_its_user() {
        let issued = keys().issue(42, Duration::hours(1));
        let verified = keys().verify(&issued.token).unwrap();
        assert_eq!((verified.uid, verified.expires_at), (42, issued.expires_at.timestamp()));
        assert_eq!(issued.expires_at.timestamp_subsec_nanos(), 0, "the expiry told is the token's own");
        assert!(issued.expires_at > Utc::now());
    }

    #[test]
    fn bearer_prefix_is_optional_and_case_insensitive() {
        let issued = keys().issue(7, Duration::hours(1));
        let token = issued.token;
        for value in [token.clone(), format!("Bearer {token}"), format!("bearer  {token}")] {
            assert_eq!(keys().verify_header(Some(&value)).map(|token| token.uid), Ok(7), "{value}");
            assert_eq!(unverified_expiry(&value), Some(issued.expires_at.timestamp()), "{value}");
        }
    }

    #[test]
    fn missing_expired_tampered_and_foreign_tokens_are_refused() {
        assert_eq!(keys().verify_header(None), Err(Error::MissingToken));
        assert_eq!(keys().verify_header(Some("  ")), Err(Error::MissingToken));
        let expired = keys().issue(1, Duration::seconds(-10)).token;
        assert_eq!(keys().verify(&expired), Err(Error::ExpiredToken));
        let foreign = TokenKeys::new(b"another secret").issue(1, Duration::hours(1)).token;
        assert_eq!(keys().verify(&foreign), Err(Error::InvalidToken));
        let mut tampered = keys().issue(1, Duration::hours(1)).token;
        tampered.insert(tampered.len() / 2, 'x');
        assert_eq!(keys().verify(&tampered), Err(Error::InvalidToken));
        assert_eq!(keys().verify("not.a.jwt"), Err(Error::InvalidToken));
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let now = Utc::now().timestamp();
        let claims = |nbf: i64| serde_json::json!({"UID": 1, "exp": now + 7200, "iat": now, "nbf": nbf});
        let sign = |claims| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"test secret"))
                .unwrap()
        };
        assert_eq!(keys().verify(&sign(claims(now + 3600))), Err(Error::InvalidToken));
        assert_eq!(keys().verify(&sign(claims(now - 10))).map(|token| token.uid), Ok(1));
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        // {"alg":"none"} with a UID claim and no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJVSUQiOjEsImV4cCI6NDEwMjQ0NDgwMH0.";
        assert_eq!(keys().verify(none), Err(Error::InvalidToken));
    }

    #[test]
    fn an_authorization_value_is_trimmed_header_text() {
        assert_eq!(authorization("  Bearer a.b.c \t"), Ok("Bearer a.b.c"));
        for bad in ["", " \t ", "a.b\u{7f}c", "a.b\nc", "tökén"] {
            assert_eq!(authorization(bad), Err(Error::InvalidToken), "{bad:?}");
        }
        assert_eq!(unverified_expiry("not a token"), None);
    }
}
