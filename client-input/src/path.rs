//! Ids in a request's path (`/room/{roomID}`,
//! `/messages/{roomID}/{messageID}`), as the router gives them: one
//! percent-decoded segment each.

use crate::Error;

/// A positive id from a path segment; anything else, or no segment (one
/// that was not UTF-8), is `invalid <what> id`.
pub fn positive_id(raw: Option<&str>, what: &str) -> Result<i64, Error> {
    raw.and_then(|raw| raw.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| Error::Malformed(format!("invalid {what} id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_ids_pass() {
        assert_eq!(positive_id(Some("42"), "room"), Ok(42));
        assert_eq!(positive_id(Some("+7"), "room"), Ok(7));
        for bad in [None, Some(""), Some("0"), Some("-3"), Some("1.0"), Some(" 1"), Some("9223372036854775808")] {
            assert_eq!(positive_id(bad, "message"), Err(Error::Malformed("invalid message id".into())), "{bad:?}");
        }
    }
}
