//! The JSON shapes of a room's entries and events (API.md), shared by the
//! REST answers (history) and the WebSocket frames: a `chat.v1.Message`
//! from core-svc or from a live event becomes one of these, in one place.

use std::collections::BTreeMap;

use chat_proto::v1::{Message, MessageKind};
use serde::Serialize;
use utoipa::ToSchema;

use crate::routes::rfc3339;

/// An entry of a room's history, in history and on the WebSocket.
#[derive(Serialize, ToSchema)]
pub struct MessageBody {
    /// `message`; `join` when someone joined or was invited, `leave` when
    /// someone left or was removed (`Text` is then empty).
    #[serde(rename = "Type")]
    #[schema(pattern = "^(message|join|leave)$")]
    pub kind: &'static str,
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "RoomID")]
    pub room_id: i64,
    #[serde(rename = "UID")]
    pub uid: i64,
    /// Empty for a join, a leave, and a deleted message.
    #[serde(rename = "Text")]
    pub text: String,
    #[serde(rename = "Timestamp")]
    #[schema(required = true)]
    pub timestamp: Option<String>,
    /// The entry this one answers; absent if none.
    #[serde(rename = "ReplyTo", skip_serializing_if = "is_zero")]
    #[schema(required = false, minimum = 1)]
    pub reply_to: i64,
    /// When it was last edited; absent if never.
    #[serde(rename = "EditedAt", skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// Present (and true) once deleted.
    #[serde(rename = "Deleted", skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub deleted: bool,
    /// Emoji to the uids that reacted with it, ascending; absent if none.
    #[serde(rename = "Reactions", skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(required = false)]
    pub reactions: BTreeMap<String, Vec<i64>>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl From<Message> for MessageBody {
    fn from(message: Message) -> Self {
        let kind = match message.kind() {
            MessageKind::Join => "join",
            MessageKind::Leave => "leave",
            _ => "message",
        };
        Self {
            kind,
            id: message.id,
            room_id: message.room_id,
            uid: message.uid,
            text: message.text,
            timestamp: rfc3339(message.timestamp),
            reply_to: message.reply_to,
            edited_at: message.edited_at.and_then(|at| rfc3339(Some(at))),
            deleted: message.deleted,
            reactions: message.reactions.into_iter().map(|(emoji, reactors)| (emoji, reactors.uids)).collect(),
        }
    }
}

/// A room's event that is not an entry: a change to an entry (stored in
/// the entry, replayed on resume), or a live-only one. Each kind has the
/// fields of its row in API.md, and no others.
#[derive(Serialize, Default)]
struct EventBody {
    #[serde(rename = "Type")]
    kind: &'static str,
    /// Absent for live-only events, which have none.
    #[serde(rename = "ID", skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(rename = "RoomID")]
    room_id: i64,
    #[serde(rename = "UID")]
    uid: i64,
    #[serde(rename = "MessageID", skip_serializing_if = "Option::is_none")]
    message_id: Option<i64>,
    #[serde(rename = "Text", skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(rename = "EditedAt", skip_serializing_if = "Option::is_none")]
    edited_at: Option<String>,
    #[serde(rename = "Emoji", skip_serializing_if = "Option::is_none")]
    emoji: Option<String>,
    #[serde(rename = "Added", skip_serializing_if = "Option::is_none")]
    added: Option<bool>,
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
}

/// An entry or event as the WebSocket frame of it; `None` for a kind with
/// no frame.
pub fn event_json(message: Message) -> Option<String> {
    let kind = message.kind();
    if matches!(kind, MessageKind::Message | MessageKind::Join | MessageKind::Leave) {
        return Some(serde_json::to_string(&MessageBody::from(message)).expect("an entry serialises"));
    }
    let change = EventBody {
        id: Some(message.id),
        room_id: message.room_id,
        uid: message.uid,
        message_id: Some(message.message_id),
        ..EventBody::default()
    };
    let live = EventBody { room_id: message.room_id, uid: message.uid, ..EventBody::default() };
    let body = match kind {
        MessageKind::Edit => {
            EventBody { kind: "edit", text: Some(message.text), edited_at: rfc3339(message.edited_at), ..change }
        }
        MessageKind::Delete => EventBody { kind: "delete", ..change },
        MessageKind::Reaction => {
            EventBody { kind: "reaction", emoji: Some(message.emoji), added: Some(message.added), ..change }
        }
        MessageKind::Read => EventBody { kind: "read", message_id: Some(message.message_id), ..live },
        MessageKind::Typing => EventBody { kind: "typing", ..live },
        MessageKind::Presence => EventBody { kind: "presence", online: Some(message.online), ..live },
        MessageKind::Unspecified | MessageKind::Message | MessageKind::Join | MessageKind::Leave => return None,
    };
    Some(serde_json::to_string(&body).expect("an event serialises"))
}

#[cfg(test)]
mod tests {
    use chat_proto::v1::Reactors;
    use prost_types::Timestamp;
    use serde_json::{Value, json};

    use super::*;

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn frame(message: Message) -> Value {
        serde_json::from_str(&event_json(message).expect("a frame")).unwrap()
    }

    fn event(kind: MessageKind) -> Message {
        Message { id: 43, room_id: 1, uid: 7, kind: kind.into(), timestamp: at(1_800_000_000), ..Message::default() }
    }

    #[test]
    fn an_entry_shows_its_state_only_when_there_is_some() {
        let plain = Message { text: "hi".into(), ..event(MessageKind::Message) };
        assert_eq!(
            frame(plain.clone()),
            json!({"Type": "message", "ID": 43, "RoomID": 1, "UID": 7, "Text": "hi",
                   "Timestamp": "2027-01-15T08:00:00.000000Z"}),
        );
        let reactions = [("👍".to_owned(), Reactors { uids: vec![7, 9] })].into();
        let changed = Message { reply_to: 40, edited_at: at(1_800_000_001), deleted: true, reactions, ..plain };
        let shown = frame(changed);
        assert_eq!(shown["ReplyTo"], 40);
        assert_eq!(shown["EditedAt"], "2027-01-15T08:00:01.000000Z");
        assert_eq!(shown["Deleted"], true);
        assert_eq!(shown["Reactions"], json!({"👍": [7, 9]}));
        assert_eq!(frame(event(MessageKind::Leave))["Type"], "leave");
    }

    #[test]
    fn changes_have_the_contracts_shapes() {
        let edit =
            Message { message_id: 40, text: "fixed".into(), edited_at: at(1_800_000_000), ..event(MessageKind::Edit) };
        assert_eq!(
            frame(edit),
            json!({"Type": "edit", "ID": 43, "RoomID": 1, "UID": 7, "MessageID": 40, "Text": "fixed",
                   "EditedAt": "2027-01-15T08:00:00.000000Z"}),
        );
        let delete = Message { message_id: 40, ..event(MessageKind::Delete) };
        assert_eq!(frame(delete), json!({"Type": "delete", "ID": 43, "RoomID": 1, "UID": 7, "MessageID": 40}));
        let reaction = Message { message_id: 40, emoji: "👍".into(), added: true, ..event(MessageKind::Reaction) };
        assert_eq!(
            frame(reaction),
            json!({"Type": "reaction", "ID": 43, "RoomID": 1, "UID": 7, "MessageID": 40, "Emoji": "👍", "Added": true}),
        );
    }

    #[test]
    fn live_only_events_have_the_contracts_shapes() {
        let read = Message { id: 0, message_id: 52, ..event(MessageKind::Read) };
        assert_eq!(frame(read), json!({"Type": "read", "RoomID": 1, "UID": 7, "MessageID": 52}));
        assert_eq!(frame(event(MessageKind::Typing)), json!({"Type": "typing", "RoomID": 1, "UID": 7}));
        let presence = Message { online: true, ..event(MessageKind::Presence) };
        assert_eq!(frame(presence), json!({"Type": "presence", "RoomID": 1, "UID": 7, "Online": true}));
        assert_eq!(event_json(event(MessageKind::Unspecified)), None);
    }
}
