use std::sync::Arc;

use chat_proto::reason;
use tonic::{Code, Status};

use crate::domain::TextProblem;

/// Everything a call can fail with. Each variant maps to one gRPC status
/// (and through the gateway to one HTTP status) and one error reason
/// ([`chat_proto::reason`]) in [`From<Error> for Status`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that fails validation; every problem found, for the client.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A message's text that cannot be sent, with a reason of its own.
    #[error(transparent)]
    InvalidText(#[from] TextProblem),
    /// A reply to what is no entry of the room.
    #[error("invalid reply")]
    InvalidReply,
    /// An idempotency key over its limit.
    #[error("key must be at most {} characters", crate::domain::SendKey::MAX_CHARS)]
    InvalidKey,
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The caller is no longer a member of the room.
    #[error("removed from room")]
    Removed,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// Not in the state the call needs, though the caller may know it:
    /// leaving a room one is not in, one reaction too many.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// Too many attempts of `what` (a message for the client).
    #[error("{what}")]
    RateLimited { retry_after_secs: u64, what: &'static str },
    /// More of some costly work than the server takes on at once (password
    /// hashing); the client may retry shortly.
    #[error("{0}")]
    Overloaded(&'static str),
    /// A dependency is down; the client may retry.
    #[error("{0}")]
    Unavailable(&'static str),
    /// A bug. Logged in full; the client learns nothing of it.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(problem: impl Into<String>) -> Self {
        Self::Invalid(vec![problem.into()])
    }

    /// One `Invalid` error carrying every problem found among several
    /// validations, so the client can fix them all at once.
    pub fn collect<const N: usize>(problems: [Option<String>; N]) -> Self {
        Self::Invalid(problems.into_iter().flatten().collect())
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Arc::new(error).into()
    }
}

/// A database error that several calls share (those of one membership
/// lookup), each with an error of its own.
impl From<Arc<sqlx::Error>> for Error {
    fn from(error: Arc<sqlx::Error>) -> Self {
        match *error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(%error, "database unavailable");
                Self::Unavailable("database unavailable, retry later")
            }
            _ => Self::Internal(error.into()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        let (code, reason) = match &error {
            Error::Invalid(_) => (Code::InvalidArgument, reason::INVALID_ARGUMENT),
            Error::InvalidText(problem) => (Code::InvalidArgument, problem.reason()),
            Error::InvalidReply => (Code::InvalidArgument, reason::INVALID_REPLY),
            Error::InvalidKey => (Code::InvalidArgument, reason::INVALID_KEY),
            Error::Unauthenticated(_) => (Code::Unauthenticated, reason::UNAUTHENTICATED),
            Error::PermissionDenied(_) => (Code::PermissionDenied, reason::PERMISSION_DENIED),
            Error::Removed => (Code::PermissionDenied, reason::REMOVED_FROM_ROOM),
            Error::NotFound(_) => (Code::NotFound, reason::NOT_FOUND),
            Error::AlreadyExists(_) => (Code::AlreadyExists, reason::ALREADY_EXISTS),
            Error::FailedPrecondition(_) => (Code::FailedPrecondition, reason::FAILED_PRECONDITION),
            Error::RateLimited { .. } => (Code::ResourceExhausted, reason::RATE_LIMITED),
            Error::Overloaded(_) => (Code::ResourceExhausted, reason::OVERLOADED),
            Error::Unavailable(_) => (Code::Unavailable, reason::UNAVAILABLE),
            Error::Internal(error) => {
                tracing::error!(error = ?error, "internal error");
                return reason::status(Code::Internal, "internal error", reason::INTERNAL);
            }
        };
        let mut status = reason::status(code, message, reason);
        let retry_after_secs = match error {
            Error::RateLimited { retry_after_secs, .. } => Some(retry_after_secs),
            Error::Overloaded(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after_secs {
            status.metadata_mut().insert("retry-after", secs.into());
        }
        status
    }
}

/// Turns database constraint violations into the errors a client should see,
/// so a race between two inserts of the same name still answers 409.
pub trait ResultExt<T> {
    /// `map` receives the violated constraint's name and says what the
    /// client should see; other errors pass through.
    fn on_constraint(self, map: impl FnOnce(&str) -> Option<Error>) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn on_constraint(self, map: impl FnOnce(&str) -> Option<Error>) -> Result<T> {
        self.map_err(|error| {
            let mapped = match &error {
                sqlx::Error::Database(db) => db.constraint().and_then(map),
                _ => None,
            };
            mapped.unwrap_or_else(|| error.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status_code() {
        let cases = [
            (Error::invalid("bad"), Code::InvalidArgument),
            (Error::Unauthenticated("no"), Code::Unauthenticated),
            (Error::PermissionDenied("no"), Code::PermissionDenied),
            (Error::NotFound("no"), Code::NotFound),
            (Error::AlreadyExists("no"), Code::AlreadyExists),
            (Error::FailedPrecondition("no"), Code::FailedPrecondition),
            (Error::Removed, Code::PermissionDenied),
            (Error::InvalidReply, Code::InvalidArgument),
            (Error::RateLimited { retry_after_secs: 3, what: "slow down" }, Code::ResourceExhausted),
            (Error::Overloaded("busy"), Code::ResourceExhausted),
            (Error::Unavailable("down"), Code::Unavailable),
            (Error::Internal(anyhow::anyhow!("boom")), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn each_error_carries_its_reason() {
        let cases = [
            (Error::invalid("bad"), reason::INVALID_ARGUMENT),
            (Error::from(TextProblem::Empty), reason::EMPTY_MESSAGE),
            (Error::from(TextProblem::TooLong), reason::MESSAGE_TOO_LONG),
            (Error::from(TextProblem::InvalidCharacters), reason::INVALID_CHARACTERS),
            (Error::InvalidReply, reason::INVALID_REPLY),
            (Error::InvalidKey, reason::INVALID_KEY),
            (Error::Removed, reason::REMOVED_FROM_ROOM),
            (Error::RateLimited { retry_after_secs: 3, what: "slow down" }, reason::RATE_LIMITED),
            (Error::Overloaded("busy"), reason::OVERLOADED),
            (Error::Internal(anyhow::anyhow!("boom")), reason::INTERNAL),
        ];
        for (error, expected) in cases {
            assert_eq!(reason::of(&Status::from(error)).as_deref(), Some(expected));
        }
    }

    #[test]
    fn validation_problems_are_joined() {
        let error = Error::collect([Some("a is bad".into()), None, Some("c is bad".into())]);
        assert_eq!(Status::from(error).message(), "a is bad; c is bad");
    }

    #[test]
    fn internal_details_never_reach_the_client() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("relation users at db-host-7")));
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn rate_limit_carries_retry_after() {
        let status = Status::from(Error::RateLimited { retry_after_secs: 42, what: "slow down" });
        assert_eq!(status.metadata().get("retry-after").unwrap(), "42");
    }

    #[test]
    fn pool_exhaustion_is_unavailable_not_internal() {
        assert_eq!(Status::from(Error::from(sqlx::Error::PoolTimedOut)).code(), Code::Unavailable);
    }
}
