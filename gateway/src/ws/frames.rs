//! The frames of the WebSocket protocol (API.md, "WebSocket").

use axum::extract::ws::Utf8Bytes;
use chat_proto::{envelope, events::v1::Event, v1::Message};
use serde::{Deserialize, Serialize};

use crate::{extract::parse_case_insensitive, wire};

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
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let frame: Self = parse_case_insensitive(text.as_bytes()).map_err(|_| "invalid json")?;
        if frame.reference.as_ref().is_some_and(|r| r.chars().count() > MAX_REF) {
            return Err("invalid json");
        }
        Ok(frame)
    }
}

/// A room's event, serialised once and written as it is to every socket in
/// the room.
#[derive(Clone, Debug)]
pub struct Frame {
    pub id: i64,
    pub json: Utf8Bytes,
    /// The user whose own sockets skip it ([`envelope::hidden_from`]).
    pub hidden_from: Option<i64>,
}

impl Frame {
    /// A live event as the room's sockets see it; `None` for one they do
    /// not show.
    pub fn of_event(event: Event) -> Option<Self> {
        Self::of(envelope::public(event)?)
    }

    /// An entry or event from core-svc (a replay's page) as a frame.
    pub fn of(message: Message) -> Option<Self> {
        let (id, hidden_from) = (message.id, envelope::hidden_from(&message));
        Some(Self { id, json: wire::event_json(message)?.into(), hidden_from })
    }
}

/// A frame from the server, other than a room's events ([`Frame`]).
#[derive(Debug, Serialize)]
#[serde(tag = "Type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Enter {
        #[serde(rename = "RoomID")]
        room_id: i64,
        #[serde(rename = "Ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Sent {
        #[serde(rename = "MessageID")]
        message_id: i64,
        #[serde(rename = "Timestamp")]
        timestamp: Option<String>,
        #[serde(rename = "Ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Error {
        #[serde(rename = "Error")]
        error: &'a str,
        #[serde(rename = "Ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// Who is in the room, right after entering it.
    Online {
        #[serde(rename = "RoomID")]
        room_id: i64,
        /// Ascending.
        #[serde(rename = "Online")]
        online: &'a [i64],
    },
    /// The socket goes on with a fresh token, until it expires.
    Auth {
        #[serde(rename = "ExpiresAt")]
        expires_at: Option<String>,
        #[serde(rename = "Ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames serialise")
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

    #[test]
    fn server_frames_have_the_contracts_shape() {
        assert_eq!(ServerFrame::Enter { room_id: 0, reference: None }.to_json(), r#"{"Type":"enter","RoomID":0}"#);
        let sent = ServerFrame::Sent { message_id: 42, timestamp: Some("t".into()), reference: Some("a") }.to_json();
        assert_eq!(sent, r#"{"Type":"sent","MessageID":42,"Timestamp":"t","Ref":"a"}"#);
        let error = ServerFrame::Error { error: "not in room", reference: None }.to_json();
        assert_eq!(error, r#"{"Type":"error","Error":"not in room"}"#);
        let online = ServerFrame::Online { room_id: 5, online: &[1, 7] }.to_json();
        assert_eq!(online, r#"{"Type":"online","RoomID":5,"Online":[1,7]}"#);
        let auth = ServerFrame::Auth { expires_at: Some("t".into()), reference: None }.to_json();
        assert_eq!(auth, r#"{"Type":"auth","ExpiresAt":"t"}"#);
    }
}
