//! Compiles the .proto files with protox (a protobuf compiler written in
//! Rust), so building the workspace needs no `protoc` on the machine.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["chat/v1/chat.proto", "chat/events/v1/events.proto"];
/// The internal envelope's package: compiled, never described to clients.
const INTERNAL_PACKAGE: &str = "chat.events.v1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Server reflection serves this set, so grpcurl needs no .proto files.
    let mut served = descriptors.clone();
    served.file.retain(|file| file.package() != INTERNAL_PACKAGE);
    fs::write(out_dir.join("chat_descriptor.bin"), served.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
