//! Checks of the settings the binaries share, so that a bad one stops the
//! start with a message naming it rather than failing later (a queue of 0
//! would panic at its first use). Each binary's `Config::validate` collects
//! every problem and reports them at once.

use std::{fmt::Display, ops::RangeInclusive};

/// The servers of a `NATS_URL`: one, or several comma-separated, as
/// `async_nats::connect` takes them.
pub fn nats_servers(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).collect()
}

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub fn in_range<T: PartialOrd + Display>(&mut self, name: &str, value: T, range: RangeInclusive<T>) {
        let problem = || format!("{name} must be {} to {}, not {value}", range.start(), range.end());
        self.check(range.contains(&value), problem);
    }

    /// One NATS server or several, comma-separated (the nodes of a cluster;
    /// the client connects to one and moves to another when it fails).
    pub fn nats_url(&mut self, value: &str) {
        let ok = nats_servers(value)
            .iter()
            .all(|server| server.parse::<async_nats::ServerAddr>().is_ok_and(|addr| !addr.host().is_empty()));
        self.check(ok, || format!("NATS_URL must be NATS server addresses, not {value:?}"));
    }

    pub fn redis_url(&mut self, value: &str) {
        let ok = redis::Client::open(value).is_ok();
        self.check(ok, || format!("REDIS_URL must be a redis:// URL, not {value:?}"));
    }

    /// See [`crate::presence`]: the lease bounds how long a dead process's
    /// members stay online.
    pub fn presence_lease_secs(&mut self, value: u64) {
        let range = crate::presence::MIN_LEASE.as_secs()..=crate::presence::MAX_LEASE.as_secs();
        self.in_range("PRESENCE_LEASE_SECS", value, range);
    }

    /// Subjects are `<prefix>.room.<id>`: the prefix is one or more tokens,
    /// none empty or a wildcard, with no white space.
    pub fn nats_subject_prefix(&mut self, value: &str) {
        let ok = value
            .split('.')
            .all(|token| !token.is_empty() && token != "*" && token != ">" && !token.contains(char::is_whitespace));
        self.check(ok, || format!("NATS_SUBJECT_PREFIX must be NATS subject tokens joined by dots, not {value:?}"));
    }

    /// Kafka's own rule for topic names.
    pub fn kafka_topic(&mut self, value: &str) {
        let ok = (1..=249).contains(&value.len())
            && value != "."
            && value != ".."
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        self.check(ok, || format!("KAFKA_TOPIC must be 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-', not {value:?}"));
    }

    pub fn kafka_brokers(&mut self, value: &str) {
        let ok = value.split(',').all(|broker| {
            broker.trim().rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
        self.check(ok, || format!("KAFKA_BROKERS must be host:port pairs joined by commas, not {value:?}"));
    }

    pub fn into_result(self) -> anyhow::Result<()> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(anyhow::anyhow!("invalid settings: {}", self.0.join("; "))),
        }
    }
}

/// For the binaries' tests: asserts that a validation failed naming `text`.
#[track_caller]
pub fn assert_refused(validated: anyhow::Result<()>, text: &str) {
    let message = validated.expect_err("refused").to_string();
    assert!(message.contains(text), "{message:?} does not contain {text:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(check: impl FnOnce(&mut Problems)) -> String {
        let mut problems = Problems::default();
        check(&mut problems);
        problems.into_result().map_or_else(|error| error.to_string(), |()| String::new())
    }

    #[test]
    fn each_check_names_its_setting_and_all_are_reported() {
        assert_eq!(problems(|p| p.in_range("QUEUE", 0, 1..=9)), "invalid settings: QUEUE must be 1 to 9, not 0");
        assert_eq!(problems(|p| p.in_range("QUEUE", 9, 1..=9)), "");
        let both = problems(|p| {
            p.nats_url("");
            p.kafka_topic("a topic");
        });
        assert!(both.contains("NATS_URL") && both.contains("; KAFKA_TOPIC"), "{both}");
    }

    #[test]
    fn names_and_addresses() {
        for bad in ["", "chat.", ".chat", "chat..x", "chat.*", "chat.>", "my chat"] {
            assert!(problems(|p| p.nats_subject_prefix(bad)).contains("NATS_SUBJECT_PREFIX"), "{bad:?}");
        }
        assert_eq!(problems(|p| p.nats_subject_prefix("test-1.chat")), "");
        for bad in ["", "http://nats:4222"] {
            assert!(problems(|p| p.nats_url(bad)).contains("NATS_URL"), "{bad:?}");
        }
        assert_eq!(problems(|p| p.nats_url("nats://127.0.0.1:4222")), "");
        for bad in ["", ".", "a topic", &"t".repeat(250)] {
            assert!(problems(|p| p.kafka_topic(bad)).contains("KAFKA_TOPIC"), "{bad:?}");
        }
        assert_eq!(problems(|p| p.kafka_topic("chat.messages")), "");
        for bad in ["", "kafka", "kafka:x", ":9092", "a:9092,"] {
            assert!(problems(|p| p.kafka_brokers(bad)).contains("KAFKA_BROKERS"), "{bad:?}");
        }
        assert_eq!(problems(|p| p.kafka_brokers("127.0.0.1:9092, kafka-1.kafka:9092")), "");
    }
}
