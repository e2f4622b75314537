//! Starting the binaries as processes, and a client that routes requests the
//! way the compose deployment's proxy does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use sluice_testkit::{ADMIN_TOKEN, TestEnv, api, free_port};

/// A binary of the workspace. `cargo test` builds the binaries only of
/// packages that have integration tests of their own, and would leave the
/// others stale, so the suite builds them itself, once per run (a no-op
/// when they are up to date).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bins"])
            .args(["-p", "sluice", "-p", "sluice-control"])
            .args(["-p", "sluice-ingest", "-p", "sluice-read"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    std::env::current_exe()
        .expect("test executable path")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join(name)
}

/// The command that starts binary `name` of the workspace on `port` of
/// 127.0.0.1 with `env`'s settings and nothing else of the test's
/// environment; it logs warnings and errors.
pub fn service_command(env: &TestEnv, name: &str, port: u16) -> Command {
    let mut command = Command::new(binary(name));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.service_vars())
        .env("SLUICE_LISTEN", format!("127.0.0.1:{port}"))
        .env("SLUICE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// A running binary, stopped (SIGTERM, then killed) when dropped.
pub struct Process {
    child: Child,
    pub url: String,
}

impl Process {
    pub async fn start(
        env: &TestEnv,
        binary_name: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Process {
        let port = free_port();
        let mut command = service_command(env, binary_name, port);
        command.args(args).stdout(Stdio::null());
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("starting the binary");
        let process = Process {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(response) = client.get(format!("{}/readyz", self.url)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not become ready", self.url);
    }

    /// Stops the process the way an orchestrator does, and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().expect("waiting for the process")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Sends each request where the compose proxy would: POST on records to a
/// gateway, GET on records or rejected to a reader, the rest to the control
/// plane. With several gateways or readers it takes turns.
pub struct Client {
    http: reqwest::Client,
    control: String,
    ingest: Vec<String>,
    read: Vec<String>,
    turn: std::sync::atomic::AtomicUsize,
}

impl Client {
    pub fn new(control: &Process, ingest: &[&Process], read: &[&Process]) -> Client {
        Client {
            http: reqwest::Client::new(),
            control: control.url.clone(),
            ingest: ingest.iter().map(|p| p.url.clone()).collect(),
            read: read.iter().map(|p| p.url.clone()).collect(),
            turn: Default::default(),
        }
    }

    /// Everything through one process (the all-in-one binary).
    pub fn single(process: &Process) -> Client {
        Client::new(process, &[process], &[process])
    }

    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let records_or_rejected = path.contains("/records") || path.contains("/rejected");
        let base = if method == Method::POST && path.contains("/records") {
            &self.ingest[turn % self.ingest.len()]
        } else if (method == Method::GET || method == Method::DELETE) && records_or_rejected
            || method == Method::POST && path.contains("/rejected/replay")
        {
            &self.read[turn % self.read.len()]
        } else {
            &self.control
        };
        self.http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path, ADMIN_TOKEN)
    }

    /// Creates a connector; answers its body (with both tokens).
    pub async fn create(&self, name: &str, fields: Value) -> Value {
        api::create_connector(&self.http, &self.control, name, fields).await
    }

    /// Posts `body` with `content_type` and waits until it is readable.
    pub async fn post_records(
        &self,
        id: &str,
        token: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .request(
                Method::POST,
                &format!("/v1/connectors/{id}/records?wait=true"),
                token,
            )
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("post records");
        let status = response.status();
        (status, response.json().await.expect("ingest answer"))
    }

    /// Follows `next_cursor` from the start until a page comes back empty,
    /// three records a page.
    pub async fn read_all(&self, id: &str, token: &str) -> Vec<Value> {
        self.read_pages(id, token, &[("limit", "3")]).await
    }

    /// [`Client::read_all`] with `query` (limit, fields, filters) on every
    /// page.
    pub async fn read_pages(&self, id: &str, token: &str, query: &[(&str, &str)]) -> Vec<Value> {
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = api::fetch_json(
                self.request(Method::GET, &format!("/v1/connectors/{id}/records"), token)
                    .query(query)
                    .query(&[("cursor", cursor.as_deref().unwrap_or_default())]),
            )
            .await;
            let batch = page["records"].as_array().expect("records").clone();
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if batch.is_empty() {
                return records;
            }
            records.extend(batch);
        }
    }
}
