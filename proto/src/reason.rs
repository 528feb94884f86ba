//! Why a call failed, in words a program can match: every error core-svc
//! answers carries a `google.rpc.ErrorInfo` (in `grpc-status-details-bin`)
//! with one of these reasons and the domain [`DOMAIN`]. The status message
//! is for people and may change; the reasons are part of the API.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const DOMAIN: &str = "chat.v1";

pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
/// A message's text is empty or only white space.
pub const EMPTY_MESSAGE: &str = "EMPTY_MESSAGE";
/// A message's text is over 2000 characters.
pub const MESSAGE_TOO_LONG: &str = "MESSAGE_TOO_LONG";
/// A text holds a control character it may not.
pub const INVALID_CHARACTERS: &str = "INVALID_CHARACTERS";
/// A send's `reply_to` is no entry of its room.
pub const INVALID_REPLY: &str = "INVALID_REPLY";
/// A send's idempotency key is over 64 characters.
pub const INVALID_KEY: &str = "INVALID_KEY";
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
/// The caller was removed from the room: a stream on it ends with this.
pub const REMOVED_FROM_ROOM: &str = "REMOVED_FROM_ROOM";
/// The room or entry is not in the state the call needs (not a member,
/// too many distinct reactions).
pub const FAILED_PRECONDITION: &str = "FAILED_PRECONDITION";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
/// The caller went over a rate limit; `retry-after` says when to try again.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// The server sheds work it has no room for right now; retry shortly.
pub const OVERLOADED: &str = "OVERLOADED";
/// A dependency is down; nothing was done, retry.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
pub const INTERNAL: &str = "INTERNAL";

/// A status with its reason attached.
pub fn status(code: Code, message: impl Into<String>, reason: &str) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, DOMAIN, []))
}

/// The reason a status carries, if it came from this API.
pub fn of(status: &Status) -> Option<String> {
    let info = status.get_details_error_info()?;
    (info.domain == DOMAIN).then_some(info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_survives_the_wire_encoding() {
        let sent = status(Code::InvalidArgument, "invalid characters", INVALID_CHARACTERS);
        let response = sent.into_http::<()>();
        let received = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(received.message(), "invalid characters");
        assert_eq!(of(&received).as_deref(), Some(INVALID_CHARACTERS));
    }

    #[test]
    fn a_status_without_details_has_no_reason() {
        assert_eq!(of(&Status::invalid_argument("bad")), None);
    }
}
