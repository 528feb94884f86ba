//! The internal envelope (`chat.events.v1.Event`) as the public API shows
//! it: the one mapping of an event to a `chat.v1.Message`, used by history,
//! by `Subscribe` streams and by the gateway's frames alike; and whose own
//! streams and sockets do not show an event ([`hidden_from`]).

use crate::{
    events::v1::{Event, event::Kind},
    v1::{Message, MessageKind},
};

impl Event {
    /// Whether the event is an entry of history of its own (a message, a
    /// join, a leave) rather than a change to one or a live-only event.
    pub fn is_entry(&self) -> bool {
        matches!(self.kind, Some(Kind::Posted(_) | Kind::Joined(_) | Kind::Left(_)))
    }

    /// The entry an edit, a deletion or a reaction changes.
    pub fn changed_entry(&self) -> Option<i64> {
        match &self.kind {
            Some(Kind::Edited(edited)) => Some(edited.message_id),
            Some(Kind::Deleted(deleted)) => Some(deleted.message_id),
            Some(Kind::Reacted(reacted)) => Some(reacted.message_id),
            _ => None,
        }
    }
}

/// The event as a room's entry or stream event; `None` for what a room
/// does not show (an event addressed to one user, or one without a kind).
pub fn public(event: Event) -> Option<Message> {
    let Event { id, room_id, uid, timestamp, kind } = event;
    let mut message = Message { id, room_id, uid, timestamp, ..Message::default() };
    let kind = match kind? {
        Kind::Posted(posted) => {
            message.text = posted.text;
            message.reply_to = posted.reply_to;
            MessageKind::Message
        }
        Kind::Joined(_) => MessageKind::Join,
        Kind::Left(_) => MessageKind::Leave,
        Kind::Edited(edited) => {
            message.message_id = edited.message_id;
            message.text = edited.text;
            message.edited_at = message.timestamp;
            MessageKind::Edit
        }
        Kind::Deleted(deleted) => {
            message.message_id = deleted.message_id;
            MessageKind::Delete
        }
        Kind::Reacted(reacted) => {
            message.message_id = reacted.message_id;
            message.emoji = reacted.emoji;
            message.added = reacted.added;
            MessageKind::Reaction
        }
        Kind::Read(read) => {
            message.message_id = read.message_id;
            MessageKind::Read
        }
        Kind::Typing(_) => MessageKind::Typing,
        Kind::Presence(presence) => {
            message.online = presence.online;
            MessageKind::Presence
        }
        Kind::Removed(_) => return None,
    };
    message.kind = kind.into();
    Some(message)
}

/// The user whose own sockets and streams do not show this event, if any:
/// the author of a live-only event, which tells the room's other members
/// about them ("another member read up to 52", "is typing").
pub fn hidden_from(message: &Message) -> Option<i64> {
    matches!(message.kind(), MessageKind::Read | MessageKind::Typing | MessageKind::Presence).then_some(message.uid)
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;
    use crate::events::v1::{Deleted, Edited, Joined, Posted, Reacted, Read, Removed, Typing};

    fn event(kind: Kind) -> Event {
        Event { id: 9, room_id: 2, uid: 7, timestamp: Some(Timestamp { seconds: 5, nanos: 0 }), kind: Some(kind) }
    }

    #[test]
    fn entries_keep_their_fields() {
        let posted = event(Kind::Posted(Posted { text: "hi".into(), reply_to: 4, key: "k".into() }));
        assert!(posted.is_entry());
        let message = public(posted).unwrap();
        assert_eq!((message.kind(), message.text.as_str(), message.reply_to), (MessageKind::Message, "hi", 4));
        assert_eq!((message.id, message.room_id, message.uid, message.timestamp.unwrap().seconds), (9, 2, 7, 5));
        assert_eq!(public(event(Kind::Joined(Joined {}))).unwrap().kind(), MessageKind::Join);
    }

    #[test]
    fn changes_name_the_entry_they_change() {
        let edited = event(Kind::Edited(Edited { message_id: 4, text: "fixed".into() }));
        assert_eq!((edited.changed_entry(), edited.is_entry()), (Some(4), false));
        let message = public(edited).unwrap();
        assert_eq!((message.kind(), message.message_id, message.text.as_str()), (MessageKind::Edit, 4, "fixed"));
        assert_eq!(message.edited_at, message.timestamp);
        let reacted = public(event(Kind::Reacted(Reacted { message_id: 4, emoji: "👍".into(), added: true }))).unwrap();
        assert_eq!((reacted.kind(), reacted.emoji.as_str(), reacted.added), (MessageKind::Reaction, "👍", true));
        assert_eq!(public(event(Kind::Deleted(Deleted { message_id: 4 }))).unwrap().kind(), MessageKind::Delete);
    }

    #[test]
    fn live_only_events_are_hidden_from_their_author_and_entries_from_no_one() {
        let read = public(event(Kind::Read(Read { message_id: 4 }))).unwrap();
        assert_eq!((read.kind(), read.message_id, hidden_from(&read)), (MessageKind::Read, 4, Some(7)));
        assert_eq!(hidden_from(&public(event(Kind::Typing(Typing {}))).unwrap()), Some(7));
        assert_eq!(hidden_from(&public(event(Kind::Joined(Joined {}))).unwrap()), None);
        let posted = public(event(Kind::Posted(Posted { text: "hi".into(), ..Posted::default() }))).unwrap();
        assert_eq!(hidden_from(&posted), None);
    }

    #[test]
    fn what_a_room_does_not_show_has_no_public_form() {
        assert_eq!(public(event(Kind::Removed(Removed { removed_by: 1 }))), None);
        assert_eq!(public(Event { kind: None, ..event(Kind::Joined(Joined {})) }), None);
    }
}
