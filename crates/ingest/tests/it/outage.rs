//! NATS going away and coming back (SPEC 9): 503 quickly while it is down,
//! and recovery without a restart. Runs its own nats-server, since the
//! shared one must stay up for the other tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use sluice_runtime::bus::{self, ConnectorDoc};
use sluice_runtime::token::{NewToken, TokenKind};
use sluice_schema::{ExtraFields, FieldSpec, Schema};
use sluice_testkit::TestEnv;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{TestApp, eventually};

/// A nats-server of this test alone, killed when dropped.
struct PrivateNats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl PrivateNats {
    fn start() -> PrivateNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = std::env::temp_dir().join(format!("sluice-ingest-outage-{}", Uuid::now_v7()));
        let mut nats = PrivateNats {
            child: None,
            port,
            store,
        };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new(nats_server_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private nats-server does not answer");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The same binary the test kit starts when no server answers.
fn nats_server_binary() -> String {
    std::env::var("SLUICE_NATS_SERVER").unwrap_or_else(|_| {
        Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|dir| format!("{}/nats-server", dir.trim()))
            .filter(|path| std::path::Path::new(path).exists())
            .unwrap_or_else(|| "nats-server".to_owned())
    })
}

#[tokio::test]
async fn while_nats_is_down_ingest_answers_503_and_recovers_by_itself() {
    let env = TestEnv::new().await;
    let mut nats = PrivateNats::start();
    let mut settings = env.settings();
    settings.nats_url = nats.url();

    // Written to the bucket as the control plane would.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let bucket = bus::connectors_bucket(&js, &settings.namespace)
        .await
        .unwrap();
    let write = NewToken::generate(TokenKind::Write);
    let specs: Vec<FieldSpec> =
        serde_json::from_value(serde_json::json!([{"name": "n", "type": "integer"}])).unwrap();
    let doc = ConnectorDoc {
        id: Uuid::now_v7(),
        name: "outage".to_owned(),
        schema_version: 1,
        schema: Schema::define(&specs).unwrap(),
        extra_fields: ExtraFields::Reject,
        write_token_hash: write.hash.clone(),
        read_token_hash: NewToken::generate(TokenKind::Read).hash,
    };
    bucket
        .put(doc.id.to_string(), serde_json::to_vec(&doc).unwrap().into())
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let gateway = sluice_ingest::Application::build(settings, shutdown.clone())
        .await
        .unwrap();
    let address = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run());
    let client = reqwest::Client::new();
    let post = || {
        TestApp::send(
            client
                .post(format!("{address}/v1/connectors/{}/records", doc.id))
                .bearer_auth(&write.secret)
                .header("content-type", "application/json")
                .body(r#"{"n": 1}"#),
        )
    };
    assert_eq!(post().await.status, StatusCode::ACCEPTED);

    nats.stop();
    let unready = eventually(Duration::from_secs(5), || async {
        let ready = client
            .get(format!("{address}/readyz"))
            .send()
            .await
            .unwrap();
        ready.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(unready, "/readyz reports NATS gone");
    let answer = post().await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.code(), "bus_unavailable");
    assert!(answer.headers.contains_key("retry-after"));

    nats.restart();
    let recovered = eventually(Duration::from_secs(15), || async {
        post().await.status == StatusCode::ACCEPTED
    })
    .await;
    assert!(recovered, "ingest recovered once NATS came back");
}
