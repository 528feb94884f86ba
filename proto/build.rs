//! Compiles the .proto files with protox (a protobuf compiler written in
//! Rust), so building the workspace needs no `protoc` on the machine.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["chat/v1/chat.proto", "chat/events/v1/events.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Server reflection serves this set, so grpcurl needs no .proto files.
    fs::write(out_dir.join("chat_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
