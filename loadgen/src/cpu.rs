//! The CPU time each process of the stack used during a run, from `/proc`,
//! so that what a delivery (or a request) costs shows however busy the
//! machine is with other work.

use std::collections::HashMap;

/// The processes a scenario reports on, by name; the load generator itself
/// is always the last.
pub struct Processes {
    named: Vec<(String, u32)>,
}

/// Each process's CPU seconds so far, in the order of [`Processes`], and
/// the machine's busy and total ticks.
pub struct Sample {
    secs: Vec<f64>,
    machine: (u64, u64),
}

impl Processes {
    pub fn new(named: Vec<(String, u32)>) -> Self {
        let mut named = named;
        named.push(("loadgen".to_owned(), std::process::id()));
        Self { named }
    }

    /// The stack's processes (all but the load generator): name and pid.
    pub fn stack(&self) -> &[(String, u32)] {
        &self.named[..self.named.len() - 1]
    }

    pub fn sample(&self) -> Sample {
        let table = process_table();
        Sample { secs: self.named.iter().map(|(_, pid)| tree_secs(&table, *pid)).collect(), machine: machine_ticks() }
    }

    /// What each process spent between two samples, per unit of work
    /// (`units` deliveries or requests), and as a share of one core over
    /// `wall` seconds: `gateway 8.7 µs (70%), ...`, then the stack's sum
    /// (every process but the load generator) and how busy the machine was.
    pub fn report(&self, before: &Sample, after: &Sample, wall: f64, units: u64, unit: &str) -> String {
        let units = units.max(1) as f64;
        let spent: Vec<f64> = after.secs.iter().zip(&before.secs).map(|(after, before)| after - before).collect();
        let mut parts: Vec<String> = self
            .named
            .iter()
            .zip(&spent)
            .map(|((name, _), secs)| format!("{name} {:.2} µs ({:.0}%)", secs / units * 1e6, secs / wall * 100.0))
            .collect();
        let stack: f64 = spent[..spent.len() - 1].iter().sum();
        parts.push(format!("stack in all {:.2} µs ({:.0}%)", stack / units * 1e6, stack / wall * 100.0));
        let (busy, total) = (after.machine.0 - before.machine.0, after.machine.1 - before.machine.1);
        format!(
            "CPU per {unit} (share of one core): {}; machine {:.0}% busy",
            parts.join(", "),
            busy as f64 / total.max(1) as f64 * 100.0
        )
    }
}

/// Parses `name=pid`, as `--process` takes it.
pub fn named_pid(arg: &str) -> Result<(String, u32), String> {
    let (name, pid) = arg.split_once('=').ok_or("expected NAME=PID")?;
    Ok((name.to_owned(), pid.parse().map_err(|_| format!("not a process id: {pid}"))?))
}

/// Every process's parent and CPU seconds: user and system time of all its
/// threads, and of its children that ended and were waited for.
fn process_table() -> HashMap<u32, (u32, f64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return HashMap::new() };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name, which is in parentheses and may hold
            // spaces: the state is field 3, the parent 4, utime, stime,
            // cutime and cstime 14 to 17, in ticks of 1/100 s (USER_HZ).
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
            let ticks = field(14)? + field(15)? + field(16)? + field(17)?;
            Some((pid, (field(4)? as u32, ticks / 100.0)))
        })
        .collect()
}

/// CPU seconds of a process and of every process under it (PostgreSQL's
/// backends are the postmaster's children).
fn tree_secs(table: &HashMap<u32, (u32, f64)>, root: u32) -> f64 {
    let mut total = 0.0;
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        total += table.get(&pid).map_or(0.0, |(_, secs)| *secs);
        pending.extend(table.iter().filter(|(_, (parent, _))| *parent == pid).map(|(child, _)| *child));
    }
    total
}

/// CPU seconds of some processes (and what is under them), summed.
pub fn secs(pids: &[u32]) -> f64 {
    let table = process_table();
    pids.iter().map(|pid| tree_secs(&table, *pid)).sum()
}

/// The machine's CPU time so far, in ticks: busy, and in all (`/proc/stat`).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
    let total: u64 = ticks.iter().sum();
    // idle and iowait
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
