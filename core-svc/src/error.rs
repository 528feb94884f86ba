use tonic::{Code, Status};

/// Everything a call can fail with. Each variant maps to one gRPC status
/// (and through the gateway to one HTTP status) in [`From<Error> for Status`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that fails validation; every problem found, for the client.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// Too many attempts of `what` (a message for the client).
    #[error("{what}")]
    RateLimited { retry_after_secs: u64, what: &'static str },
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
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(%error, "database unavailable");
                Self::Unavailable("database unavailable, retry later")
            }
            error => Self::Internal(error.into()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Invalid(_) => Status::invalid_argument(message),
            Error::Unauthenticated(_) => Status::unauthenticated(message),
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::NotFound(_) => Status::not_found(message),
            Error::AlreadyExists(_) => Status::already_exists(message),
            Error::RateLimited { retry_after_secs, .. } => {
                let mut status = Status::new(Code::ResourceExhausted, message);
                status.metadata_mut().insert("retry-after", retry_after_secs.into());
                status
            }
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Internal(error) => {
                tracing::error!(error = ?error, "internal error");
                Status::internal("internal error")
            }
        }
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
            (Error::RateLimited { retry_after_secs: 3, what: "slow down" }, Code::ResourceExhausted),
            (Error::Unavailable("down"), Code::Unavailable),
            (Error::Internal(anyhow::anyhow!("boom")), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
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
