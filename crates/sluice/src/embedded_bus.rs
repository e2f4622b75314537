//! The default bus of `sluice serve`: when the user did not set `NATS_URL`
//! and nothing answers at its default address, a nats-server child with
//! JetStream is started there, so PostgreSQL is all a first try needs.
//!
//! The child runs in a process group of its own, so a Ctrl-C in the terminal
//! reaches only Sluice: the read API commits and acks what it holds before
//! the bus goes, which happens when [`EmbeddedBus`] is dropped.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_runtime::nats_server::{self, FindError};

/// How long the child may take to answer, and to exit when stopped.
const START_WAIT: Duration = Duration::from_secs(10);
const STOP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "nothing answers at {url} (the default NATS_URL) and no bus can be started there: {source}"
    )]
    NoBinary { url: String, source: FindError },
    #[error("creating the embedded bus's data directory {dir} (SLUICE_NATS_STORE_DIR): {source}")]
    StoreDir { dir: String, source: std::io::Error },
    #[error("starting {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} did not answer at {address} within {START_WAIT:?}; see its log {log}")]
    NoAnswer {
        path: String,
        address: SocketAddr,
        log: String,
    },
}

/// A nats-server this process started; stopped when dropped.
pub struct EmbeddedBus {
    child: Child,
}

/// Starts a nats-server at `default_url`'s address when `NATS_URL` is unset
/// and nothing answers there; `None` when a bus is someone else's to run.
pub fn start_if_needed(default_url: &str) -> Result<Option<EmbeddedBus>, StartError> {
    let user_set_url = std::env::var_os("NATS_URL").is_some_and(|url| !url.is_empty());
    let Some(address) = default_url
        .strip_prefix("nats://")
        .and_then(|address| address.parse::<SocketAddr>().ok())
    else {
        return Ok(None);
    };
    if user_set_url || nats_server::answers(address) {
        return Ok(None);
    }
    let explicit = std::env::var_os("SLUICE_NATS_SERVER")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    let binary =
        nats_server::find_current(explicit.as_deref()).map_err(|source| StartError::NoBinary {
            url: default_url.to_owned(),
            source,
        })?;
    let store = store_dir();
    std::fs::create_dir_all(&store).map_err(|source| StartError::StoreDir {
        dir: store.display().to_string(),
        source,
    })?;
    let log = store.join("nats-server.log");
    let path = binary.path.display().to_string();
    let child = Command::new(&binary.path)
        .args(["--jetstream", "--addr"])
        .arg(address.ip().to_string())
        .arg("--port")
        .arg(address.port().to_string())
        .arg("--store_dir")
        .arg(&store)
        .arg("--log")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| StartError::Spawn {
            path: path.clone(),
            source,
        })?;
    let bus = EmbeddedBus { child };
    let deadline = Instant::now() + START_WAIT;
    while !nats_server::answers(address) {
        if Instant::now() > deadline {
            return Err(StartError::NoAnswer {
                path,
                address,
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "No NATS answered at {default_url}, so this run started one there: {path} (v{}), \
         with its data in {} (SLUICE_NATS_STORE_DIR); it stops with Sluice.",
        binary.version,
        store.display()
    );
    Ok(Some(bus))
}

/// `SLUICE_NATS_STORE_DIR`, else `$XDG_DATA_HOME/sluice/nats`, else
/// `~/.local/share/sluice/nats`: kept across runs, so records not yet
/// stored survive a restart.
fn store_dir() -> PathBuf {
    let set = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = set("SLUICE_NATS_STORE_DIR") {
        return PathBuf::from(dir);
    }
    let data_home = set("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data_home.join("sluice").join("nats")
}

impl Drop for EmbeddedBus {
    /// SIGTERM lets JetStream close its files; SIGKILL only if it hangs.
    /// (`kill(1)`, as this workspace forbids the `unsafe` of calling
    /// `kill(2)` directly.)
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
