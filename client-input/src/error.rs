//! Why an input was refused. The texts are safe to show to the client; the
//! gateway maps each variant to a status code (`gateway/src/error.rs`),
//! core-svc the token ones to `UNAUTHENTICATED` (`core-svc/src/auth.rs`).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A malformed body, query parameter or path id (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    #[error("missing token")]
    MissingToken,
    #[error("token expired")]
    ExpiredToken,
    #[error("invalid token")]
    InvalidToken,
}
