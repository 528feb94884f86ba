//! The `soak` scenario: the fan-out at a steady rate for a long while, in
//! slices of `slice` seconds back to back, and after each slice the
//! resident memory and open files of each of the stack's processes (the
//! gateways, the core-svc replicas, each `--process`), and the CPU each
//! spent per delivery. After the warm-up, neither memory nor open files may
//! grow by 5 % or more, and every send must reach every member (no error).

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Gateway;

pub struct Soak {
    pub rate: u32,
    pub rooms: usize,
    pub per_room: usize,
    pub seconds: u64,
    pub slice: u64,
    pub warmup: u64,
}

/// VmRSS in KiB and the number of open files of a process (0, 0 once gone).
pub fn footprint(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let files = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count());
    (rss, files)
}

impl Soak {
    pub async fn run(&self, gateway: &Gateway) -> anyhow::Result<()> {
        let setup = gateway.fanout_setup(self.rooms, self.per_room).await?;
        let watched = gateway.processes.stack();
        let begin = Instant::now();
        let mut baseline: Option<Vec<(u64, usize)>> = None;
        let mut last = Vec::new();
        let (mut sent, mut expected, mut delivered) = (0u64, 0u64, 0u64);
        let mut worst_p99 = 0f64;
        while begin.elapsed() < Duration::from_secs(self.seconds) {
            let result = setup.run(gateway, self.rate, Duration::from_secs(self.slice)).await;
            let now: Vec<(u64, usize)> = watched.iter().map(|(_, pid)| footprint(*pid)).collect();
            let fmt: Vec<String> = watched
                .iter()
                .zip(&now)
                .map(|((name, _), (rss, files))| format!("{name} {} MiB {files} files", rss / 1024))
                .collect();
            println!(
                "soak {:>4}s: sent {} delivered {}/{} p99 {:.1} ms; {}; {}",
                begin.elapsed().as_secs(),
                result.sent,
                result.delivered,
                result.expected,
                result.p99_ms(),
                fmt.join(", "),
                result.cpu,
            );
            if begin.elapsed() >= Duration::from_secs(self.warmup) {
                baseline.get_or_insert_with(|| now.clone());
                sent += result.sent;
                expected += result.expected;
                delivered += result.delivered;
                worst_p99 = worst_p99.max(result.p99_ms());
            }
            last = now;
        }
        let Some(baseline) = baseline else { bail!("the soak ended within its warm-up") };
        println!(
            "soak: {} sends/s for {} s ({} s warm-up): after warm-up {sent} sent, {delivered} of {expected} deliveries, worst p99 of a slice {worst_p99:.1} ms",
            self.rate, self.seconds, self.warmup
        );
        let mut grew = Vec::new();
        for (((name, _), (rss0, files0)), (rss1, files1)) in watched.iter().zip(&baseline).zip(&last) {
            let growth = |a: u64, b: u64| (b as f64 - a as f64) / (a.max(1) as f64) * 100.0;
            let (rss_growth, files_growth) = (growth(*rss0, *rss1), growth(*files0 as u64, *files1 as u64));
            println!(
                "  {name}: RSS {rss0} → {rss1} KiB ({rss_growth:+.1} %), open files {files0} → {files1} ({files_growth:+.1} %)"
            );
            if rss_growth >= 5.0 || files_growth >= 5.0 {
                grew.push(name.clone());
            }
        }
        if delivered != expected {
            bail!("{} deliveries missing", expected - delivered);
        }
        if !grew.is_empty() {
            bail!("grew by 5 % or more after the warm-up: {}", grew.join(", "));
        }
        Ok(())
    }
}
