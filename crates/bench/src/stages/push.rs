//! Stage 1, from the command line: `sluice push` of a generated NDJSON
//! file through the gateway, its records per second next to the POST loop
//! of the ingest stage, and the CLI's own peak memory, on a file of the
//! full size and on one an eighth of it, to show that it stays the same
//! whatever the size.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::data;
use crate::measure;

/// One `sluice push` run.
#[derive(Debug, Serialize)]
pub(crate) struct CliPush {
    pub file_bytes: u64,
    pub records: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// The CLI process's peak resident memory (`VmHWM`), read while it ran.
    pub peak_rss_bytes: Option<u64>,
}

/// The `sluice` binary of the same build profile as this benchmark, built
/// first (a no-op when it is up to date): `cargo run -p sluice-bench`
/// builds only the benchmark.
pub(crate) fn sluice_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark's executable")?;
    let dir = exe
        .parent()
        .context("the benchmark's executable has no folder")?;
    let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "sluice", "--bin", "sluice"]);
    if profile != "debug" {
        build.args(["--profile", profile]);
    }
    let status = build
        .stdin(Stdio::null())
        .status()
        .context("running cargo build -p sluice")?;
    anyhow::ensure!(status.success(), "cargo build -p sluice failed");
    Ok(dir.join("sluice"))
}

/// Writes benchmark records numbered from `first_seq` to `path` as NDJSON
/// until it holds at least `bytes`; answers the records written.
pub(crate) fn write_ndjson(path: &Path, first_seq: i64, bytes: u64) -> anyhow::Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(256);
    let (mut written, mut records) = (0u64, 0u64);
    while written < bytes {
        line.clear();
        data::write_record(first_seq + records as i64, &mut line);
        line.push(b'\n');
        out.write_all(&line)?;
        written += line.len() as u64;
        records += 1;
    }
    out.flush()?;
    Ok(records)
}

/// Runs `sluice push` of `file` (`records` in it) to connector `id` at
/// `base_url`, watching its peak memory until it exits.
pub(crate) async fn run(
    sluice: &Path,
    base_url: &str,
    id: &str,
    token: &str,
    file: &Path,
    records: u64,
) -> anyhow::Result<CliPush> {
    let file_bytes = std::fs::metadata(file)?.len();
    let mut child = Command::new(sluice)
        .args(["push", "--quiet", "--connector", id])
        .arg(file)
        .env("SLUICE_URL", base_url)
        .env("SLUICE_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", sluice.display()))?;
    let started = Instant::now();
    let mut peak_kib = None;
    let status = loop {
        // VmHWM only grows: the last reading before exit is the peak, give
        // or take the last few milliseconds.
        if let Some(kib) = measure::status_kib(child.id(), "VmHWM:") {
            peak_kib = Some(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        anyhow::bail!("sluice push failed ({status}): {}", stderr.trim());
    }
    Ok(CliPush {
        file_bytes,
        records,
        seconds: measure::round2(seconds),
        records_per_s: measure::round2(records as f64 / seconds),
        mb_per_s: measure::round2(file_bytes as f64 / seconds / 1e6),
        peak_rss_bytes: peak_kib.map(|kib| kib * 1024),
    })
}
