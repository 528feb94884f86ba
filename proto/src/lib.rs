//! The public gRPC API of the messenger: the types and the tonic clients and
//! servers generated from `chat/v1/*.proto`, and the error reasons
//! ([`reason`]) its failures carry. Also the internal event envelope
//! ([`events`]) that the message log and the live subjects carry, and how
//! the public API shows it ([`envelope`]).

pub mod envelope;
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

/// The encoded descriptors of the public services, for server reflection;
/// the internal envelope is left out.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/chat_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn reflection_describes_the_public_api_only() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let packages: Vec<&str> = set.file.iter().map(|file| file.package()).collect();
        assert!(packages.contains(&"chat.v1"), "{packages:?}");
        assert!(!packages.contains(&"chat.events.v1"), "{packages:?}");
    }
}
