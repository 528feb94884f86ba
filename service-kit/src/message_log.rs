//! The records of the message log (Kafka), as core-svc writes them and the
//! archiver reads them. A room's records go to partition `room_id` modulo
//! the partition count, keyed by the room id. Each carries either an encoded
//! `chat.events.v1.Event` (an entry of a room's history, or a change to
//! one), with the trace context in its headers, or, with no payload, a
//! [`WITHDRAWN`] header.

/// Names the id of a message whose send was refused (the log did not
/// acknowledge it in time). Its record may reach the log all the same; the
/// archiver keeps it out of history.
pub const WITHDRAWN: &str = "chat-withdrawn";
