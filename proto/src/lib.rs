//! The public gRPC API of the messenger: the types and the tonic clients and
//! servers generated from `chat/v1/*.proto`, and the error reasons
//! ([`reason`]) its failures carry. Also the internal event envelope
//! ([`events`]) that the message log and the live subjects carry.

pub mod reason;

pub mod v1 {
    tonic::include_proto!("chat.v1");
}

/// Internal: never served to clients.
pub mod events {
    pub mod v1 {
        tonic::include_proto!("chat.events.v1");
    }
}

/// The encoded descriptors of every service here, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/chat_descriptor.bin"));
