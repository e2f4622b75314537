//! The default bus of `sluice serve`: when the user did not set `NATS_URL`
//! and nothing answers at its default address, a nats-server child with
//! JetStream is started there, so PostgreSQL is all a first try needs. When
//! an older NATS holds the default address (Debian's 2.9 runs on 4222), the
//! child is started beside it, on the next port, rather than refused.
//!
//! The child runs in a process group of its own, so a Ctrl-C in the terminal
//! reaches only Sluice: the read API commits and acks what it holds before
//! the bus goes, which happens when [`EmbeddedBus`] is dropped.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_runtime::bus;
use sluice_runtime::nats_server::{self, Binary, FindError};

/// How long the child may take to answer, and to exit when stopped.
const START_WAIT: Duration = Duration::from_secs(10);
const STOP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{reason} (NATS_URL is unset) and no bus can be started at {url}: {source}")]
    NoBinary {
        reason: String,
        url: String,
        source: FindError,
    },
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

/// The bus `sluice serve` uses when the user did not choose one.
pub struct DefaultBus {
    /// What the services connect to.
    pub url: String,
    /// The child started for them, if one was.
    pub embedded: Option<EmbeddedBus>,
}

/// What the environment says about the bus.
pub struct BusChoice {
    /// `NATS_URL` is set: the bus is the user's, and an old one is refused
    /// when the services connect.
    pub user_set_url: bool,
    /// `SLUICE_NATS_SERVER`: the binary to start, instead of the first
    /// current one of pip's and the PATH's.
    pub binary: Option<PathBuf>,
    /// `SLUICE_NATS_STORE_DIR`, else `$XDG_DATA_HOME/sluice/nats`, else
    /// `~/.local/share/sluice/nats`: kept across runs, so records not yet
    /// stored survive a restart.
    pub store: PathBuf,
}

impl BusChoice {
    pub fn from_env() -> BusChoice {
        let set = |name| std::env::var_os(name).filter(|value| !value.is_empty());
        let store = set("SLUICE_NATS_STORE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                set("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .or_else(|| set("HOME").map(|home| Path::new(&home).join(".local/share")))
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("sluice")
                    .join("nats")
            });
        BusChoice {
            user_set_url: set("NATS_URL").is_some(),
            binary: set("SLUICE_NATS_SERVER").map(PathBuf::from),
            store,
        }
    }
}

/// When the user chose no bus: the NATS that answers at `default_url` if it
/// is current, else one started there, or beside (on the next port) an older
/// one that holds it. `None` when the bus is the user's or `default_url` is
/// no plain address.
pub fn start_if_needed(
    default_url: &str,
    choice: &BusChoice,
) -> Result<Option<DefaultBus>, StartError> {
    let Some(mut address) = default_url
        .strip_prefix("nats://")
        .and_then(|address| address.parse::<SocketAddr>().ok())
    else {
        return Ok(None);
    };
    if choice.user_set_url {
        return Ok(None);
    }
    let mut held_by_old = None;
    if nats_server::answers(address) {
        match nats_server::announced_version(address) {
            Ok(version) if bus::require_current_nats(default_url, &version).is_err() => {
                held_by_old = Some(format!("{default_url} (v{version})"));
                address.set_port(address.port() + 1);
            }
            // Current, or no NATS we can read: the services' own connection
            // says what is wrong with it.
            _ => return Ok(None),
        }
        if nats_server::answers(address) {
            return Ok(Some(DefaultBus {
                url: format!("nats://{address}"),
                embedded: None,
            }));
        }
    }
    let url = format!("nats://{address}");
    let binary = nats_server::find_current(choice.binary.as_deref()).map_err(|source| {
        StartError::NoBinary {
            reason: match &held_by_old {
                Some(old) => format!("the NATS at {old} is older than Sluice needs"),
                None => format!("nothing answers at {default_url}"),
            },
            url: url.clone(),
            source,
        }
    })?;
    let embedded = start(&binary, address, &choice.store)?;
    let why = match &held_by_old {
        Some(old) => format!("The NATS at {old} is too old for Sluice"),
        None => format!("No NATS answered at {default_url}"),
    };
    println!(
        "{why}, so this run started one at {url}: {} (v{}), with its data in {} \
         (SLUICE_NATS_STORE_DIR); it stops with Sluice.",
        binary.path.display(),
        binary.version,
        choice.store.display()
    );
    Ok(Some(DefaultBus {
        url,
        embedded: Some(embedded),
    }))
}

/// Starts `binary` with JetStream at `address` and waits until it answers.
fn start(binary: &Binary, address: SocketAddr, store: &Path) -> Result<EmbeddedBus, StartError> {
    std::fs::create_dir_all(store).map_err(|source| StartError::StoreDir {
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
        .arg(store)
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
    Ok(bus)
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

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};

    use super::{BusChoice, DefaultBus, start_if_needed};
    use sluice_runtime::nats_server;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn choice(name: &str) -> BusChoice {
        BusChoice {
            user_set_url: false,
            binary: Some(sluice_testkit::nats_server_binary()),
            store: std::env::temp_dir()
                .join(format!("sluice-embedded-{name}-{}", std::process::id())),
        }
    }

    fn address(url: &str) -> SocketAddr {
        url.trim_start_matches("nats://").parse().unwrap()
    }

    /// The bus answers with a current version while held, and stops with
    /// its holder.
    fn assert_current_while_held(bus: DefaultBus) {
        let at = address(&bus.url);
        let version = nats_server::announced_version(at).unwrap();
        assert!(
            sluice_runtime::bus::require_current_nats(&bus.url, &version).is_ok(),
            "{version}"
        );
        drop(bus);
        assert!(!nats_server::answers(at), "the child stops with its holder");
    }

    #[test]
    fn a_bus_is_started_where_nothing_answers() {
        let port = free_port();
        let url = format!("nats://127.0.0.1:{port}");
        let bus = start_if_needed(&url, &choice("free"))
            .unwrap()
            .expect("a bus of its own");
        assert_eq!(bus.url, url);
        assert!(bus.embedded.is_some());
        assert_current_while_held(bus);
    }

    #[test]
    fn a_bus_is_started_beside_an_old_one_holding_the_default() {
        let (old, old_port) = loop {
            let old = sluice_testkit::fake_nats("2.9.10");
            let port = address(&old).port();
            if TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break (old, port);
            }
        };
        let bus = start_if_needed(&old, &choice("beside"))
            .unwrap()
            .expect("a bus of its own");
        assert_eq!(bus.url, format!("nats://127.0.0.1:{}", old_port + 1));
        assert_current_while_held(bus);
    }

    #[test]
    fn a_current_bus_at_the_default_or_one_the_user_chose_is_left_alone() {
        let current = sluice_testkit::fake_nats("2.15.1");
        assert!(
            start_if_needed(&current, &choice("current"))
                .unwrap()
                .is_none()
        );
        let old = sluice_testkit::fake_nats("2.9.10");
        let users = BusChoice {
            user_set_url: true,
            ..choice("users")
        };
        assert!(start_if_needed(&old, &users).unwrap().is_none());
    }
}
