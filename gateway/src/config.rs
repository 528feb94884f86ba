use std::{net::SocketAddr, num::NonZeroU32};

use clap::Parser;

/// The gateway's settings: flags, each with an environment fallback.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", about = "The messenger's REST and WebSocket gateway")]
pub struct Config {
    #[arg(long, env = "HTTP_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// core-svc's gRPC address.
    #[arg(long, env = "CORE_GRPC_ADDR", default_value = "http://127.0.0.1:50051")]
    pub core_grpc_addr: String,

    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Live events of room N arrive on `<prefix>.room.N`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "chat")]
    pub nats_subject_prefix: String,

    /// Frames a WebSocket may fall behind its room before it is
    /// disconnected (close 1008) as too slow.
    #[arg(long, env = "WS_QUEUE_FRAMES", default_value_t = 512)]
    pub ws_queue_frames: usize,

    /// Login attempts one client address may make per minute. A load test
    /// that logs in many users from one machine raises it.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_MINUTE_PER_IP", default_value = "30")]
    pub login_attempts_per_minute_per_ip: NonZeroU32,

    /// Take the client's address from the first `X-Forwarded-For` entry.
    /// Only behind a proxy that sets it; otherwise clients could choose it.
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
}
