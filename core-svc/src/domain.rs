//! Input from clients, parsed once at the edge: a value of these types is
//! valid by construction. Each `parse` says what is wrong in words meant for
//! the person who typed it. Also the conversions of values to the wire.

use std::fmt;

macro_rules! text_newtype {
    ($name:ident) => {
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// 3–20 letters (any script), digits or underscores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);
text_newtype!(Username);

impl Username {
    pub fn parse(input: &str) -> Result<Self, String> {
        let length = input.chars().count();
        if !(3..=20).contains(&length) {
            return Err("username must be 3 to 20 characters".into());
        }
        if input.chars().any(char::is_control) {
            return Err("username has invalid characters".into());
        }
        if !input.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err("username may contain only letters, digits and underscores".into());
        }
        Ok(Self(input.to_owned()))
    }
}

/// A `local@domain.tld` address, lower-cased so that comparisons ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);
text_newtype!(Email);

impl Email {
    pub fn parse(input: &str) -> Result<Self, String> {
        let invalid = || "email must look like name@example.com".to_owned();
        let email = input.trim().to_lowercase();
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let labels: Vec<&str> = domain.split('.').collect();
        let well_formed = !local.is_empty()
            && local.len() <= 64
            && !domain.contains('@')
            && labels.len() >= 2
            && labels.iter().all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        if well_formed { Ok(Self(email)) } else { Err(invalid()) }
    }
}

/// 8–128 characters. Never logged, never displayed.
pub struct Password(String);

impl Password {
    pub fn parse(input: &str) -> Result<Self, String> {
        if (8..=128).contains(&input.chars().count()) {
            Ok(Self(input.to_owned()))
        } else {
            Err("password must be 8 to 128 characters".into())
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// 1–100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomName(String);
text_newtype!(RoomName);

impl RoomName {
    pub fn parse(input: &str) -> Result<Self, String> {
        let name = input.trim();
        if !(1..=100).contains(&name.chars().count()) {
            return Err("room name must be 1 to 100 characters".into());
        }
        if name.chars().any(char::is_control) {
            return Err("room name has invalid characters".into());
        }
        Ok(Self(name.to_owned()))
    }
}

/// A chat message's text: 1–2000 Unicode scalar values, not only white
/// space, and no control characters but newline and tab
/// ([`forbidden_in_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);
text_newtype!(MessageText);

/// What is wrong with a message's text. Each has its own error reason on
/// the wire, so the gateway can say it in the contract's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    #[error("empty message")]
    Empty,
    #[error("message too long")]
    TooLong,
    #[error("invalid characters")]
    InvalidCharacters,
}

impl TextProblem {
    pub fn reason(self) -> &'static str {
        use chat_proto::reason;
        match self {
            Self::Empty => reason::EMPTY_MESSAGE,
            Self::TooLong => reason::MESSAGE_TOO_LONG,
            Self::InvalidCharacters => reason::INVALID_CHARACTERS,
        }
    }
}

impl MessageText {
    pub const MAX_CHARS: usize = 2000;

    pub fn parse(input: String) -> Result<Self, TextProblem> {
        if input.trim().is_empty() {
            Err(TextProblem::Empty)
        } else if input.chars().count() > Self::MAX_CHARS {
            Err(TextProblem::TooLong)
        } else if input.chars().any(forbidden_in_text) {
            Err(TextProblem::InvalidCharacters)
        } else {
            Ok(Self(input))
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A client's idempotency key for a send: at most 64 characters. An empty
/// key is no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendKey(String);
text_newtype!(SendKey);

impl SendKey {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(input: String) -> Result<Option<Self>, crate::error::Error> {
        match input.chars().count() {
            0 => Ok(None),
            1..=Self::MAX_CHARS => Ok(Some(Self(input))),
            _ => Err(crate::error::Error::InvalidKey),
        }
    }
}

/// A reaction: 1 to 32 bytes of UTF-8, no control characters, not only
/// white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emoji(String);
text_newtype!(Emoji);

impl Emoji {
    pub const MAX_BYTES: usize = 32;

    pub fn parse(input: String) -> Result<Self, String> {
        if input.trim().is_empty() || input.len() > Self::MAX_BYTES || input.chars().any(char::is_control) {
            return Err(format!("emoji must be 1 to {} bytes, no control characters", Self::MAX_BYTES));
        }
        Ok(Self(input))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// What to search for: 1–200 characters, not only white space, no control
/// characters but newline and tab. It is only ever handed to PostgreSQL as
/// plain words (`plainto_tsquery`), never as query syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(String);
text_newtype!(SearchQuery);

impl SearchQuery {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(input: String) -> Result<Self, String> {
        if input.trim().is_empty() {
            Err("empty query".into())
        } else if input.chars().count() > Self::MAX_CHARS {
            Err(format!("query must be 1 to {} characters", Self::MAX_CHARS))
        } else if input.chars().any(forbidden_in_text) {
            Err("query has invalid characters".into())
        } else {
            Ok(Self(input))
        }
    }
}

/// A control character other than newline and tab: PostgreSQL cannot store
/// a NUL, and the others only ever garble a screen.
fn forbidden_in_text(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// A positive database id from a request, or the problem with it.
pub fn parse_id(id: i64, what: &'static str) -> Result<i64, String> {
    if id > 0 { Ok(id) } else { Err(format!("invalid {what} id")) }
}

/// A point in time as the gRPC API carries it.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["bob", "user_1", "Zoë_Ђорђе", "a".repeat(20).as_str(), "名前です"] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "ab", "a".repeat(21).as_str(), "has space", "semi;colon", "<script>", "tab\t", "dash-ed", "nul\u{0}x"]
        {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lower_cased() {
        assert_eq!(Email::parse(" User@Example.COM ").unwrap().as_ref(), "user@example.com");
        for bad in [
            "",
            "user",
            "user@",
            "@example.com",
            "user@example",
            "a@b@c.com",
            "u ser@example.com",
            "user@.com",
            "user@example..com",
            "user@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords_count_characters_and_stay_hidden() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        assert_eq!(format!("{:?}", Password::parse("secret-password").unwrap()), "Password(<hidden>)");
    }

    #[test]
    fn room_names_are_trimmed() {
        assert_eq!(RoomName::parse("  General  ").unwrap().as_ref(), "General");
        assert!(RoomName::parse("   ").is_err());
        assert!(RoomName::parse(&"r".repeat(101)).is_err());
        assert!(RoomName::parse(&"r".repeat(100)).is_ok());
        assert!(RoomName::parse("bell\u{7}").is_err());
        assert!(RoomName::parse("new\nline").is_err());
    }

    #[test]
    fn message_texts() {
        assert!(MessageText::parse("hi".into()).is_ok());
        assert!(MessageText::parse("é".repeat(2000)).is_ok());
        assert!(MessageText::parse("two\nlines\tand a tab".into()).is_ok());
        assert_eq!(MessageText::parse("x".repeat(2001)), Err(TextProblem::TooLong));
        assert_eq!(MessageText::parse("".into()), Err(TextProblem::Empty));
        assert_eq!(MessageText::parse(" \n\t ".into()), Err(TextProblem::Empty));
        for bad in ["nul\u{0}byte", "bell\u{7}", "carriage\rreturn", "escape\u{1b}[2J", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(MessageText::parse(bad.into()), Err(TextProblem::InvalidCharacters), "{bad:?}");
        }
    }

    #[test]
    fn send_keys() {
        assert_eq!(SendKey::parse(String::new()).unwrap(), None);
        assert_eq!(SendKey::parse("k".repeat(64)).unwrap().unwrap().as_ref(), "k".repeat(64));
        assert_eq!(SendKey::parse("é".repeat(64)).unwrap().unwrap().as_ref().chars().count(), 64);
        assert!(matches!(SendKey::parse("k".repeat(65)), Err(crate::error::Error::InvalidKey)));
    }

    #[test]
    fn emoji_are_counted_in_bytes() {
        assert!(Emoji::parse("👍".into()).is_ok());
        assert!(Emoji::parse("👍".repeat(8)).is_ok(), "32 bytes");
        assert!(Emoji::parse("👍".repeat(9)).is_err(), "36 bytes");
        for bad in ["", "  ", "a\u{0}", "\n"] {
            assert!(Emoji::parse(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn search_queries() {
        assert!(SearchQuery::parse("hello world".into()).is_ok());
        assert!(SearchQuery::parse("'; DROP TABLE messages; --".into()).is_ok());
        assert!(SearchQuery::parse("a & !b | c:*".into()).is_ok());
        assert!(SearchQuery::parse("é".repeat(200)).is_ok());
        assert_eq!(SearchQuery::parse("".into()), Err("empty query".into()));
        assert_eq!(SearchQuery::parse(" \t\n ".into()), Err("empty query".into()));
        assert_eq!(SearchQuery::parse("q".repeat(201)), Err("query must be 1 to 200 characters".into()));
        for bad in ["nul\u{0}byte", "bell\u{7}", "escape\u{1b}[2J"] {
            assert_eq!(SearchQuery::parse(bad.into()), Err("query has invalid characters".into()), "{bad:?}");
        }
    }

    #[test]
    fn ids_must_be_positive() {
        assert_eq!(parse_id(5, "room"), Ok(5));
        assert_eq!(parse_id(0, "room"), Err("invalid room id".into()));
        assert!(parse_id(-1, "user").is_err());
    }
}
