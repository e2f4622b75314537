//! The services under test, each in a process of its own so that its
//! resident memory and CPU time can be read from `/proc`.
//!
//! A child is this same executable run with `--serve <service>`: it builds
//! the service library's `Application` from the environment on port 0 and
//! prints `listening <address>` on stdout. It stops when its stdin closes,
//! so a benchmark that dies (or is killed) never leaves services behind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use sluice_runtime::{Settings, http, telemetry};
use sluice_testkit::TestEnv;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ServiceKind {
    Control,
    Ingest,
    Read,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Control => "control",
            ServiceKind::Ingest => "ingest",
            ServiceKind::Read => "read",
        }
    }
}

/// The body of a child process.
pub(crate) async fn serve_child(kind: ServiceKind) -> anyhow::Result<()> {
    telemetry::init();
    let settings = Settings::from_env("127.0.0.1:0")?;
    let shutdown = http::shutdown_on_signal();
    let orphaned = shutdown.clone();
    tokio::spawn(async move {
        // EOF (or an error) on stdin: the benchmark is gone.
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        orphaned.cancel();
    });
    let outcome = run_service(kind, settings, shutdown).await;
    // Exit at once: returning would wait for the blocking thread that reads
    // stdin, which only ends when the benchmark closes it.
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("sluice-bench --serve {}: {error:#}", kind.name());
            std::process::exit(1)
        }
    }
}

async fn run_service(
    kind: ServiceKind,
    settings: Settings,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    match kind {
        ServiceKind::Control => {
            let app = sluice_control::Application::build(settings, shutdown).await?;
            println!("listening {}", app.local_addr());
            app.run().await
        }
        ServiceKind::Ingest => {
            let app = sluice_ingest::Application::build(settings, shutdown).await?;
            println!("listening {}", app.local_addr());
            app.run().await
        }
        ServiceKind::Read => {
            let app = sluice_read::Application::build(settings, shutdown).await?;
            println!("listening {}", app.local_addr());
            app.run().await
        }
    }
}

/// A running service.
pub(crate) struct ServiceProcess {
    pub kind: ServiceKind,
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
    /// Dropping it tells the child to shut down.
    stdin: Option<ChildStdin>,
}

impl ServiceProcess {
    pub async fn spawn(
        kind: ServiceKind,
        env: &TestEnv,
        log_dir: &Path,
    ) -> anyhow::Result<ServiceProcess> {
        ServiceProcess::spawn_with(kind, env, log_dir, &[]).await
    }

    /// [`Self::spawn`], with `extra_vars` set on top of the run's (and of
    /// those the benchmark itself was given, which every child inherits).
    pub async fn spawn_with(
        kind: ServiceKind,
        env: &TestEnv,
        log_dir: &Path,
        extra_vars: &[(&str, String)],
    ) -> anyhow::Result<ServiceProcess> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{}.log", kind.name()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--serve", kind.name()])
            .envs(env.service_vars())
            .envs(
                extra_vars
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("NO_COLOR", "1")
            // The ingest stage fills the stream with more than the default
            // bound while no read API drains it; a bound the run's own
            // environment sets is kept.
            .env(
                "SLUICE_STREAM_MAX_BYTES",
                std::env::var("SLUICE_STREAM_MAX_BYTES").unwrap_or_else(|_| "unlimited".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {} service", kind.name()))?;
        let pid = child.id().context("the child has no pid")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        // The log goes to stdout too: keep draining it into the log file
        // (a full pipe would stall the service), and pick out the address.
        let (found, address) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(drain_stdout(stdout, tokio::fs::File::from_std(log), found));
        let addr = match tokio::time::timeout(Duration::from_secs(60), address).await {
            Ok(Ok(line)) => line
                .parse::<SocketAddr>()
                .with_context(|| format!("the {} service said {line:?}", kind.name()))?,
            _ => anyhow::bail!(
                "the {} service did not start; see {}",
                kind.name(),
                log_path.display()
            ),
        };
        Ok(ServiceProcess {
            kind,
            addr,
            pid,
            child,
            stdin,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Peak resident memory since start or since [`Self::reset_peak`].
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        crate::measure::status_kib(self.pid, "VmHWM:").map(|kib| kib * 1024)
    }

    /// Resident memory now.
    pub fn rss_bytes(&self) -> Option<u64> {
        crate::measure::status_kib(self.pid, "VmRSS:").map(|kib| kib * 1024)
    }

    /// Starts a new peak at the current resident size (Linux
    /// `clear_refs`), so that each stage gets its own peak.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// Asks the child to shut down gracefully, and kills it if it does not
    /// within a few seconds.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Copies the child's stdout to its log, sending the address of its
/// `listening <address>` line to `found`.
async fn drain_stdout(
    stdout: ChildStdout,
    mut log: tokio::fs::File,
    found: tokio::sync::oneshot::Sender<String>,
) {
    let mut found = Some(found);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(address) = line.strip_prefix("listening ")
            && let Some(found) = found.take()
        {
            let _ = found.send(address.trim().to_owned());
            continue;
        }
        let _ = log.write_all(line.as_bytes()).await;
        let _ = log.write_all(b"\n").await;
    }
}
