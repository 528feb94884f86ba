use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use service_kit::settings::Problems;

use crate::mesh::{self, discovery};

/// The most frames a socket's queue may hold. Each room feed allocates its
/// queue whole (a few dozen bytes a frame), and each socket may hold as many
/// frames again while a write waits.
pub const MAX_WS_QUEUE_FRAMES: usize = 65_536;

/// The gateway's settings: flags, each with an environment fallback.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", about = "The messenger's REST and WebSocket gateway")]
pub struct Config {
    #[arg(long, env = "HTTP_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// core-svc's gRPC address: a DNS name that resolves to every replica
    /// (a headless Service), or a comma-separated list of addresses.
    #[arg(long, env = "CORE_GRPC_ADDR", default_value = "http://127.0.0.1:50051")]
    pub core_grpc_addr: String,

    /// How often CORE_GRPC_ADDR is resolved again (also after a failure).
    #[arg(long, env = "CORE_RESOLVE_INTERVAL_MS", default_value_t = 5000)]
    pub core_resolve_interval_ms: u64,

    /// How often each replica's grpc.health.v1 is checked, and how long a
    /// check may take; an ejected replica is checked after this, doubling
    /// to 10 s.
    #[arg(long, env = "CORE_PROBE_INTERVAL_MS", default_value_t = 1000)]
    pub core_probe_interval_ms: u64,

    /// How many checks in a row must fail or time out before a replica
    /// stops taking calls (NOT_SERVING, or a call that cannot connect,
    /// takes it out at once); a replica that is only slow is never taken
    /// out when it is the last one taking calls.
    #[arg(long, env = "CORE_EJECT_AFTER_PROBES", default_value_t = 3)]
    pub core_eject_after_probes: u32,

    /// The deadline of every call to core-svc (sent as grpc-timeout).
    #[arg(long, env = "CORE_DEADLINE_MS", default_value_t = 10_000)]
    pub core_deadline_ms: u64,

    /// Calls this gateway may have in flight to core-svc; past it, 503 at once.
    #[arg(long, env = "CORE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub core_max_in_flight: usize,

    /// Calls in flight to one replica; a replica at its limit is passed over.
    #[arg(long, env = "CORE_MAX_IN_FLIGHT_PER_REPLICA", default_value_t = 256)]
    pub core_max_in_flight_per_replica: usize,

    /// Retries of idempotent calls, in percent of the calls made (0 to 100).
    #[arg(long, env = "CORE_RETRY_PERCENT", default_value_t = 20)]
    pub core_retry_percent: u16,

    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Live events of room N arrive on `<prefix>.room.N`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "chat")]
    pub nats_subject_prefix: String,

    /// Where presence is kept (who has a socket or stream open on each
    /// room, across every gateway and core-svc replica): core-svc's Redis.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Prepended to the presence keys; core-svc's `REDIS_KEY_PREFIX`.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "chat:")]
    pub redis_key_prefix: String,

    /// How long, in seconds, this gateway's sockets keep their members
    /// online after it stops renewing them (it renews every sixth of this):
    /// a gateway that dies takes its members offline within a lease and a
    /// sixth. Every gateway and core-svc replica should use the same.
    #[arg(long, env = "PRESENCE_LEASE_SECS", default_value_t = 30)]
    pub presence_lease_secs: u64,

    /// Frames a WebSocket may fall behind its room (1 to 65536) before it
    /// is disconnected (close 1008, "too slow").
    #[arg(long, env = "WS_QUEUE_FRAMES", default_value_t = 512)]
    pub ws_queue_frames: usize,

    /// Take the client's address from the first `X-Forwarded-For` entry.
    /// Only behind a proxy that sets it; otherwise clients could choose it.
    /// The gateway names it to core-svc, which limits logins per address
    /// (`LOGIN_ATTEMPTS_PER_MINUTE_PER_IP`) across every gateway.
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// The built web client (`web/`'s `npm run build`), served at `/`;
    /// without an `index.html` there, `/` is a 404 like any unknown path.
    #[arg(long, env = "WEB_DIR", default_value = "web/dist")]
    pub web_dir: PathBuf,
}

impl Config {
    /// Checks what the types of the fields do not, so that a bad setting
    /// stops the start with a message naming it, instead of failing later
    /// (a queue of 0 frames would panic at the first enter). Every problem
    /// is reported at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Problems::default();
        problems.in_range("WS_QUEUE_FRAMES", self.ws_queue_frames, 1..=MAX_WS_QUEUE_FRAMES);
        if let Err(why) = discovery::parse_targets(&self.core_grpc_addr) {
            problems.check(false, || format!("CORE_GRPC_ADDR must be http:// or https:// addresses: {why}"));
        }
        problems.in_range("CORE_RESOLVE_INTERVAL_MS", self.core_resolve_interval_ms, 100..=3_600_000);
        problems.in_range("CORE_PROBE_INTERVAL_MS", self.core_probe_interval_ms, 100..=60_000);
        problems.in_range("CORE_EJECT_AFTER_PROBES", self.core_eject_after_probes, 1..=100);
        problems.in_range("CORE_DEADLINE_MS", self.core_deadline_ms, 10..=3_600_000);
        problems.in_range("CORE_MAX_IN_FLIGHT", self.core_max_in_flight, 1..=1_000_000);
        problems.in_range("CORE_MAX_IN_FLIGHT_PER_REPLICA", self.core_max_in_flight_per_replica, 1..=1_000_000);
        problems.in_range("CORE_RETRY_PERCENT", self.core_retry_percent, 0..=100);
        problems.nats_url(&self.nats_url);
        problems.nats_subject_prefix(&self.nats_subject_prefix);
        problems.redis_url(&self.redis_url);
        problems.presence_lease_secs(self.presence_lease_secs);
        // An empty path would serve the working directory.
        problems.check(!self.web_dir.as_os_str().is_empty(), || "WEB_DIR must name a folder".to_owned());
        problems.into_result()
    }

    /// The mesh's settings; call after [`Config::validate`].
    pub fn mesh(&self) -> mesh::Settings {
        mesh::Settings {
            targets: discovery::parse_targets(&self.core_grpc_addr).expect("validated"),
            timing: mesh::Timing {
                resolve_every: Duration::from_millis(self.core_resolve_interval_ms),
                probe_every: Duration::from_millis(self.core_probe_interval_ms),
                eject_after: self.core_eject_after_probes,
            },
            deadline: Duration::from_millis(self.core_deadline_ms),
            max_in_flight: self.core_max_in_flight,
            max_in_flight_per_replica: self.core_max_in_flight_per_replica,
            retry_percent: f32::from(self.core_retry_percent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use service_kit::settings::assert_refused;

    fn defaults() -> Config {
        Config::parse_from(["gateway"])
    }

    #[test]
    fn a_socket_queue_of_no_frames_or_too_many_is_refused() {
        defaults().validate().expect("the defaults are valid");
        assert_refused(
            Config { ws_queue_frames: 0, ..defaults() }.validate(),
            "WS_QUEUE_FRAMES must be 1 to 65536, not 0",
        );
        assert_refused(Config { ws_queue_frames: MAX_WS_QUEUE_FRAMES + 1, ..defaults() }.validate(), "WS_QUEUE_FRAMES");
        Config { ws_queue_frames: 1, ..defaults() }.validate().unwrap();
        Config { ws_queue_frames: MAX_WS_QUEUE_FRAMES, ..defaults() }.validate().unwrap();
    }

    #[test]
    fn addresses_and_the_subject_prefix_are_checked() {
        for bad in ["127.0.0.1:50051", "core:50051", "ftp://core:50051", "http://", ""] {
            assert_refused(Config { core_grpc_addr: bad.into(), ..defaults() }.validate(), "CORE_GRPC_ADDR");
        }
        Config { core_grpc_addr: "https://core.chat.svc:50051".into(), ..defaults() }.validate().unwrap();
        Config { core_grpc_addr: "http://127.0.0.1:50051,http://127.0.0.1:50052".into(), ..defaults() }
            .validate()
            .unwrap();
        assert_refused(Config { core_retry_percent: 101, ..defaults() }.validate(), "CORE_RETRY_PERCENT");
        assert_refused(Config { core_max_in_flight: 0, ..defaults() }.validate(), "CORE_MAX_IN_FLIGHT");
        assert_refused(
            Config { core_eject_after_probes: 0, ..defaults() }.validate(),
            "CORE_EJECT_AFTER_PROBES must be 1 to 100, not 0",
        );
        Config { nats_url: "nats://127.0.0.1:4222, nats://127.0.0.1:4223".into(), ..defaults() }.validate().unwrap();
        for bad in ["", "http://nats:4222", "nats://a:4222,", "nats://a:4222,http://b:4222"] {
            assert_refused(Config { nats_url: bad.into(), ..defaults() }.validate(), "NATS_URL");
        }
        for bad in ["", "chat.", ".chat", "chat..x", "chat.*", "chat.>", "my chat"] {
            assert_refused(Config { nats_subject_prefix: bad.into(), ..defaults() }.validate(), "NATS_SUBJECT_PREFIX");
        }
        Config { nats_subject_prefix: "test-1.chat".into(), ..defaults() }.validate().unwrap();
        assert_refused(Config { redis_url: "127.0.0.1:6379".into(), ..defaults() }.validate(), "REDIS_URL");
        // An empty folder would be the working directory, served to anyone.
        assert_refused(Config { web_dir: "".into(), ..defaults() }.validate(), "WEB_DIR must name a folder");
    }

    #[test]
    fn the_presence_lease_keeps_a_dead_gateways_members_online_under_a_minute() {
        assert_refused(
            Config { presence_lease_secs: 46, ..defaults() }.validate(),
            "PRESENCE_LEASE_SECS must be 2 to 45, not 46",
        );
        assert_refused(Config { presence_lease_secs: 1, ..defaults() }.validate(), "PRESENCE_LEASE_SECS");
        Config { presence_lease_secs: 2, ..defaults() }.validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = Config { ws_queue_frames: 0, nats_subject_prefix: String::new(), ..defaults() };
        assert_refused(config.validate(), "WS_QUEUE_FRAMES must be 1 to 65536, not 0; NATS_SUBJECT_PREFIX");
    }
}
