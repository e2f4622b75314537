//! `sluice-bench`: how fast Sluice is next to the limits of its own parts,
//! measured in one run on one machine.
//!
//! Each stage (ingest, store, read, freshness, memory, validation) is timed
//! twice: through Sluice, and as the same work done raw against the same
//! NATS and PostgreSQL (publishing straight to JetStream, `COPY` in and
//! out). The ratio of the two says how much of the machine Sluice uses.
//! A last, hostile stage runs the attacks of issue 12 against services of
//! its own and reports each one's memory next to its limit.
//!
//! The services run as child processes (this same executable, started with
//! the hidden `--serve` flag, running each service library's
//! `Application`), so that each one's resident memory can be read on its
//! own. The run makes its own database and NATS namespace and removes both
//! at the end, whatever happens in between.
//!
//! It must never assert anything about speed: `--smoke` only proves that
//! every stage runs, and the numbers it prints mean nothing.

mod data;
mod measure;
mod report;
mod services;
mod stages;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::services::ServiceKind;
use crate::stages::HostileSizes;

/// Benchmarks each stage of Sluice next to the same work done raw.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// Run every stage tiny (a few seconds): proves the benchmark works; its
    /// numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Which parts to run, comma-separated: `validation` (stage 6),
    /// `pipeline` (stages 1–5, which share their services and records),
    /// `hostile` (stage 7).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = StageGroup::ALL)]
    stages: Vec<StageGroup>,
    /// Starts the hostile stage's services with 2 s header and 5 s body
    /// timeouts instead of their defaults (10 s, 60 s), so that its
    /// slow-client attack takes seconds rather than a minute. Always on
    /// with --smoke.
    #[arg(long)]
    hostile_short_timeouts: bool,
    /// Concurrent HTTP clients posting 1 000-record batches in the ingest
    /// stage.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of measured ingest load (default 15, smoke 1).
    #[arg(long)]
    ingest_seconds: Option<f64>,
    /// Records per POST and per raw message in the ingest stage.
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// Messages in flight at once when publishing straight to JetStream.
    #[arg(long, default_value_t = 64)]
    publish_window: usize,
    /// Records in the pre-filled stream that the read API stores, which the
    /// read stage then pages through (default 1 000 000, smoke 20 000).
    #[arg(long)]
    store_records: Option<usize>,
    /// Records per GET page in the read stage.
    #[arg(long, default_value_t = 10_000)]
    page_records: usize,
    /// Offered load of the freshness stage, records per second (default
    /// 20 000, smoke 2 000).
    #[arg(long)]
    freshness_rate: Option<u32>,
    /// Records per POST in the freshness stage.
    #[arg(long, default_value_t = 100)]
    freshness_batch: usize,
    /// Seconds of offered load in the freshness stage (default 20, smoke 2).
    #[arg(long)]
    freshness_seconds: Option<f64>,
    /// Seconds of each step of the sustained stage (default 30, smoke 1).
    #[arg(long)]
    sustained_seconds: Option<f64>,
    /// MiB of the NDJSON file that `sluice push` sends in the push stage
    /// (default 1024, smoke 2); it also pushes one an eighth of the size.
    /// No read API drains the stream in that stage, which holds at most
    /// SLUICE_STREAM_MAX_BYTES (1 GiB) of messages (records without their
    /// keys, smaller than their NDJSON).
    #[arg(long)]
    push_mib: Option<u64>,
    /// Concurrent 1 MiB requests while the gateway's memory is watched.
    #[arg(long, default_value_t = 16)]
    large_clients: usize,
    /// Seconds of 1 MiB requests (default 5, smoke: one round).
    #[arg(long)]
    large_seconds: Option<f64>,
    /// Seconds each side of the validation stage runs (default 3, smoke
    /// 0.2).
    #[arg(long)]
    validation_seconds: Option<f64>,
    /// Where the JSON report is written.
    #[arg(long, default_value = "target/bench-report.json")]
    json_out: PathBuf,
    /// NATS server with JetStream (default: $NATS_URL, else
    /// nats://127.0.0.1:14222).
    #[arg(long)]
    nats_url: Option<String>,
    /// PostgreSQL server, without a database name; the run creates its own
    /// database there and drops it at the end.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Directory for the services' logs.
    #[arg(long, default_value = "target/bench-logs")]
    log_dir: PathBuf,
    /// Internal: run one service in this process (how the benchmark starts
    /// its children).
    #[arg(long, hide = true, value_enum)]
    serve: Option<ServiceKind>,
}

/// The parts of a run that `--stages` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StageGroup {
    Validation,
    Pipeline,
    Hostile,
}

impl StageGroup {
    const ALL: [StageGroup; 3] = [
        StageGroup::Validation,
        StageGroup::Pipeline,
        StageGroup::Hostile,
    ];
}

/// Sizes of one run, from the flags and the mode.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Sizes {
    pub smoke: bool,
    pub stages: Vec<StageGroup>,
    pub clients: usize,
    pub ingest_warmup: Duration,
    pub ingest_duration: Duration,
    pub batch_records: usize,
    pub publish_window: usize,
    pub store_records: usize,
    pub page_records: usize,
    pub freshness_rate: u32,
    pub freshness_batch: usize,
    pub freshness_duration: Duration,
    pub sustained_duration: Duration,
    pub sustained_shares: Vec<f64>,
    pub push_bytes: u64,
    pub large_clients: usize,
    pub large_duration: Duration,
    pub validation_duration: Duration,
    pub hostile: HostileSizes,
}

impl Sizes {
    pub fn runs(&self, group: StageGroup) -> bool {
        self.stages.contains(&group)
    }
}

impl Cli {
    fn sizes(&self) -> Sizes {
        let pick = |flag: Option<f64>, full: f64, smoke: f64| {
            Duration::from_secs_f64(flag.unwrap_or(if self.smoke { smoke } else { full }))
        };
        Sizes {
            smoke: self.smoke,
            stages: self.stages.clone(),
            clients: self.clients.max(1),
            ingest_warmup: if self.smoke {
                Duration::ZERO
            } else {
                Duration::from_secs(2)
            },
            ingest_duration: pick(self.ingest_seconds, 15.0, 1.0),
            batch_records: self.batch_records.max(1),
            publish_window: self.publish_window.max(1),
            store_records: self
                .store_records
                .unwrap_or(if self.smoke { 20_000 } else { 1_000_000 })
                .max(1),
            page_records: self.page_records.clamp(1, 10_000),
            freshness_rate: self
                .freshness_rate
                .unwrap_or(if self.smoke { 2_000 } else { 20_000 })
                .max(1),
            freshness_batch: self.freshness_batch.max(1),
            freshness_duration: pick(self.freshness_seconds, 20.0, 2.0),
            sustained_duration: pick(self.sustained_seconds, 30.0, 1.0),
            sustained_shares: if self.smoke {
                vec![0.02, 0.04]
            } else {
                vec![0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
            },
            push_bytes: self
                .push_mib
                .unwrap_or(if self.smoke { 2 } else { 1024 })
                .max(1)
                << 20,
            large_clients: self.large_clients.max(1),
            large_duration: pick(self.large_seconds, 5.0, 0.0),
            validation_duration: pick(self.validation_seconds, 3.0, 0.2),
            hostile: if self.smoke {
                HostileSizes::smoke()
            } else {
                HostileSizes::full(self.hostile_short_timeouts)
            },
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(kind) = cli.serve {
        return services::serve_child(kind).await;
    }
    let nats_url = cli.nats_url.clone().unwrap_or_else(|| {
        std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:14222".to_owned())
    });
    let sizes = cli.sizes();
    let env = sluice_testkit::TestEnv::create(&cli.postgres, &nats_url, "bench")
        .await
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "sluice-bench: database {}, namespace {}",
        env.database,
        env.namespace.as_str()
    );
    let outcome = tokio::select! {
        outcome = stages::run(&env, &sizes, &cli.log_dir) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Whatever happened (an error, Ctrl-C), the database and the namespace go.
    drop(env);
    let report = outcome?;
    println!("{}", report.markdown());
    if let Some(dir) = cli.json_out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.json_out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("sluice-bench: report written to {}", cli.json_out.display());
    Ok(())
}
