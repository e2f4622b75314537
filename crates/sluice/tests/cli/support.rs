//! A `sluice serve` of a test's own, the CLI run against it, and the
//! records the tests send and expect back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sluice_testkit::{ADMIN_TOKEN, TestEnv, api, free_port};

/// `sluice serve` on a free port of 127.0.0.1, on an environment of its
/// own; killed, and the environment removed, when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub http: reqwest::Client,
    /// A scratch folder for the test's files, removed when dropped.
    pub dir: PathBuf,
    _env: TestEnv,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_on(TestEnv::new().await).await
    }

    /// On a NATS of the test's own, which it may stop and start again.
    pub async fn start_on_nats(nats_url: String) -> Server {
        let mut env = TestEnv::new().await;
        env.nats_url = nats_url;
        Server::start_on(env).await
    }

    async fn start_on(env: TestEnv) -> Server {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .envs(env.service_vars())
            .env("SLUICE_LISTEN", format!("127.0.0.1:{port}"))
            .env("SLUICE_PUBLIC_URL", &url)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("sluice serve starts");
        let dir = std::env::temp_dir().join(format!("sluice-cli-test-{}", env.namespace.as_str()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let server = Server {
            child,
            url,
            // A fresh connection each request: the server may close an idle
            // one just as the client reuses it.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            dir,
            _env: env,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sluice serve is not ready after a minute"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The CLI, pointed at this server with `token`.
    pub fn cli(&self, token: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .env("SLUICE_URL", &self.url)
            .env("SLUICE_TOKEN", token)
            .stdin(Stdio::null());
        command
    }

    /// Runs the CLI with the operator token and `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::of(self.cli(ADMIN_TOKEN).args(args))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates a connector with `fields` through the API; its id.
    pub async fn connector(&self, name: &str, fields: Value) -> String {
        let created = api::create_connector(&self.http, &self.url, name, fields).await;
        created["id"].as_str().expect("an id").to_owned()
    }

    /// Whether connector `id` has a record stored.
    pub async fn has_records(&self, id: &str) -> bool {
        let url = format!("{}/v1/connectors/{id}/records?limit=1", self.url);
        let page = api::admin(&self.http, Method::GET, &url, None).await;
        page.body["records"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    }

    /// The records of connector `id` once `count` are stored (a 202 means
    /// durable, not yet readable); fails the test after two minutes.
    pub async fn records_once(&self, id: &str, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let records = self.records(id).await;
            if records.len() >= count || started.elapsed() > Duration::from_secs(120) {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every record of connector `id`, read through the API (not the CLI).
    pub async fn records(&self, id: &str) -> Vec<Value> {
        let mut records = Vec::new();
        let mut cursor = String::new();
        loop {
            let url = format!(
                "{}/v1/connectors/{id}/records?limit=10000&cursor={cursor}",
                self.url
            );
            let page = api::admin(&self.http, Method::GET, &url, None).await;
            assert!(page.status.is_success(), "{}", page.body);
            let batch = page.body["records"].as_array().cloned().unwrap_or_default();
            cursor = page.body["next_cursor"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if batch.is_empty() {
                return records;
            }
            records.extend(batch);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path as a CLI argument.
pub fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A finished CLI run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(command: &mut Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().expect("the CLI runs");
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Exit status 0, else the test fails showing stderr.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn failed(self) -> Run {
        assert_eq!(
            self.code,
            Some(1),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A schema with every field type, nullable ones included.
pub fn every_type_fields() -> Value {
    json!([
        {"name": "n", "type": "integer"},
        {"name": "label", "type": "string"},
        {"name": "score", "type": "number"},
        {"name": "amount", "type": "decimal"},
        {"name": "active", "type": "boolean"},
        {"name": "day", "type": "date"},
        {"name": "at", "type": "timestamp"},
        {"name": "meta", "type": "json", "nullable": true},
        {"name": "note", "type": "string", "nullable": true}
    ])
}

/// Record `n` of the every-type schema, as GET returns it: labels with
/// commas, quotes, line ends and non-ASCII text now and then, nulls in the
/// nullable fields.
pub fn every_type_record(n: u64) -> Value {
    let label = match n % 5 {
        0 => format!("plain {n}"),
        1 => format!("comma, \"quoted\" {n}"),
        2 => format!("two\nlines {n}"),
        3 => format!("café ☕ {n}"),
        _ => format!("{n}"),
    };
    let meta = if n.is_multiple_of(7) {
        Value::Null
    } else {
        json!({"k": n % 13, "tags": ["a", n % 3]})
    };
    let note = if n.is_multiple_of(3) {
        Value::Null
    } else {
        json!(format!("note {n}"))
    };
    json!({
        "n": n,
        "label": label,
        "score": (n as f64) / 4.0 - 1000.5,
        "amount": format!("{}.{:02}", n * 3, n % 100),
        "active": n.is_multiple_of(2),
        "day": format!("20{:02}-{:02}-{:02}", 10 + n % 15, 1 + n % 12, 1 + n % 28),
        "at": format!("2026-11-{:02}T{:02}:{:02}:{:02}Z", 1 + n % 28, n % 24, n % 60, (n / 60) % 60),
        "meta": meta,
        "note": note
    })
}

pub const EVERY_TYPE_COLUMNS: [&str; 9] = [
    "n", "label", "score", "amount", "active", "day", "at", "meta", "note",
];

/// Writes records `range` as NDJSON to `path`.
pub fn write_ndjson(path: &Path, range: std::ops::Range<u64>) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for n in range {
        serde_json::to_writer(&mut file, &every_type_record(n)).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
}

/// Writes records `range` as CSV with a header row to `path`.
pub fn write_csv(path: &Path, range: std::ops::Range<u64>) {
    let mut writer = csv::Writer::from_path(path).unwrap();
    writer.write_record(EVERY_TYPE_COLUMNS).unwrap();
    for n in range {
        let record = every_type_record(n);
        let cells: Vec<String> = EVERY_TYPE_COLUMNS
            .iter()
            .map(|c| match &record[c] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        writer.write_record(&cells).unwrap();
    }
    writer.flush().unwrap();
}

/// `records` (as GET returns them) without their system fields, in order.
pub fn user_fields(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let object = r.as_object_mut().expect("an object");
            object.retain(|k, _| !k.starts_with('_'));
            r
        })
        .collect()
}

/// The `n` of each record, sorted: chunks sent at once are stored in the
/// order they arrive.
pub fn numbers(records: &[Value]) -> Vec<u64> {
    let mut numbers: Vec<u64> = records
        .iter()
        .map(|r| r["n"].as_u64().expect("n"))
        .collect();
    numbers.sort_unstable();
    numbers
}

/// Whether `numbers` (sorted) are `0..count`, each once; else what is
/// wrong, briefly.
pub fn each_once(numbers: &[u64], count: u64) -> Result<(), String> {
    let duplicates = numbers.windows(2).filter(|w| w[0] == w[1]).count();
    if numbers.len() as u64 == count && duplicates == 0 && numbers.last() == Some(&(count - 1)) {
        Ok(())
    } else {
        Err(format!(
            "{} records, {duplicates} duplicates, expected {count}",
            numbers.len()
        ))
    }
}
