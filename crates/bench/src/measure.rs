//! What is read off the machine: latencies, memory and CPU time from
//! `/proc`, and a description of the machine itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat`; 100 on every Linux the
/// benchmark is meant for (reading `sysconf` would need `unsafe`).
const CLOCK_TICKS: f64 = 100.0;

/// A histogram of latencies in microseconds, up to ten minutes.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record(latency.as_micros().max(1) as u64);
}

/// p50, p99 and max of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if histogram.is_empty() {
            return Percentiles {
                count: 0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Percentiles {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// A `kB` line of `/proc/<pid>/status`, such as `VmHWM:`.
pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// User plus system CPU time of a process.
pub(crate) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

fn process_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Busy and total jiffies of the whole machine (`/proc/stat`).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU time of the processes that do the work of a stage, by name: the
/// services, the benchmark itself, nats-server and PostgreSQL, and the whole
/// machine's busy share. Used to say what limits a stage.
pub(crate) struct CpuSampler {
    started: Instant,
    services: Vec<(String, u32)>,
    before: BTreeMap<String, f64>,
    machine_before: Option<(u64, u64)>,
}

/// CPU used during a stage, in cores (1.0 = one core busy all along).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CpuUse {
    pub cores: BTreeMap<String, f64>,
    /// Busy share of every core of the machine, 0 to 1.
    pub machine_busy: f64,
}

impl CpuSampler {
    pub fn start(services: &[(&str, u32)]) -> CpuSampler {
        let services: Vec<(String, u32)> = services
            .iter()
            .map(|(name, pid)| ((*name).to_owned(), *pid))
            .collect();
        CpuSampler {
            started: Instant::now(),
            before: cpu_by_group(&services),
            services,
            machine_before: machine_jiffies(),
        }
    }

    pub fn finish(self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-6);
        let after = cpu_by_group(&self.services);
        let cores = after
            .iter()
            .map(|(name, seconds)| {
                let before = self.before.get(name).copied().unwrap_or(0.0);
                (name.clone(), round2((seconds - before).max(0.0) / wall))
            })
            .collect();
        let machine_busy = match (self.machine_before, machine_jiffies()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                round2((b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => 0.0,
        };
        CpuUse {
            cores,
            machine_busy,
        }
    }
}

fn cpu_by_group(services: &[(String, u32)]) -> BTreeMap<String, f64> {
    let mut groups = BTreeMap::new();
    for (name, pid) in services {
        if let Some(seconds) = process_cpu_seconds(*pid) {
            groups.insert(name.clone(), seconds);
        }
    }
    if let Some(seconds) = process_cpu_seconds(std::process::id()) {
        groups.insert("bench".to_owned(), seconds);
    }
    let mut nats = 0.0;
    let mut postgres = 0.0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            match process_comm(pid).as_deref() {
                Some("nats-server") => nats += process_cpu_seconds(pid).unwrap_or(0.0),
                Some(comm) if comm.starts_with("postgres") => {
                    postgres += process_cpu_seconds(pid).unwrap_or(0.0)
                }
                _ => {}
            }
        }
    }
    groups.insert("nats-server".to_owned(), nats);
    groups.insert("postgres".to_owned(), postgres);
    groups
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgres: String,
    pub nats_server: String,
}

impl Machine {
    pub fn describe(postgres: String, nats_server: String) -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: round2(memory_kib / 1024.0 / 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            postgres,
            nats_server,
        }
    }
}
