//! A client's WebSocket text frame (API.md, "WebSocket"), before the
//! gateway acts on it. The server's frames are the gateway's
//! (`gateway/src/ws/frames.rs`).

use serde::Deserialize;

use crate::json::parse_case_insensitive;

/// The longest `Ref` a client may attach to a frame.
pub const MAX_REF: usize = 64;

/// A frame from the client. Field names match case-insensitively, as in the
/// REST API.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClientFrame {
    #[serde(rename = "type")]
    pub kind: String,
    pub roomid: Option<i64>,
    pub lastid: Option<i64>,
    pub text: Option<String>,
    /// The entry a message answers.
    pub replyto: Option<i64>,
    /// A message's idempotency key.
    pub key: Option<String>,
    pub messageid: Option<i64>,
    pub token: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

impl ClientFrame {
    /// A frame, or the `invalid json` the client is answered with.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let frame: Self = parse_case_insensitive(text.as_bytes()).map_err(|_| "invalid json")?;
        if frame.reference.as_ref().is_some_and(|r| r.chars().count() > MAX_REF) {
            return Err("invalid json");
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_frames_in_any_case() {
        let enter = ClientFrame::parse(r#"{"Type":"enter","RoomID":5}"#).unwrap();
        assert_eq!((enter.kind.as_str(), enter.roomid, enter.lastid), ("enter", Some(5), None));
        let resume = ClientFrame::parse(r#"{"type":"enter","roomid":5,"LASTID":40,"Ref":"r1"}"#).unwrap();
        assert_eq!((resume.lastid, resume.reference.as_deref()), (Some(40), Some("r1")));
        let message = ClientFrame::parse(r#"{"Type":"message","Text":"hello","Extra":1}"#).unwrap();
        assert_eq!(message.text.as_deref(), Some("hello"));
        let reply = ClientFrame::parse(r#"{"Type":"message","Text":"re","ReplyTo":40,"key":"c1-000017"}"#).unwrap();
        assert_eq!((reply.replyto, reply.key.as_deref()), (Some(40), Some("c1-000017")));
        let read = ClientFrame::parse(r#"{"type":"read","messageID":52}"#).unwrap();
        assert_eq!((read.kind.as_str(), read.messageid), ("read", Some(52)));
        let auth = ClientFrame::parse(r#"{"type":"auth","token":"a.b.c"}"#).unwrap();
        assert_eq!((auth.kind.as_str(), auth.token.as_deref()), ("auth", Some("a.b.c")));
    }

    #[test]
    fn refuses_malformed_frames() {
        for bad in ["", "{", "[1]", "null", r#"{"Type":5}"#, r#"{"RoomID":"5"}"#, r#"{"Text":[]}"#, r#"{"Token":1}"#] {
            assert_eq!(ClientFrame::parse(bad), Err("invalid json"), "{bad}");
        }
        let long_ref = format!(r#"{{"Type":"message","Text":"x","Ref":"{}"}}"#, "r".repeat(65));
        assert_eq!(ClientFrame::parse(&long_ref), Err("invalid json"));
    }
}
