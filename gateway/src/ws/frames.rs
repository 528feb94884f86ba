//! The server's frames of the WebSocket protocol (API.md, "WebSocket");
//! a client's are parsed by `client_input::frame`.

use axum::extract::ws::Utf8Bytes;
use chat_proto::{envelope, events::v1::Event, v1::Message};
use serde::Serialize;

use crate::wire;

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
