//! Integration tests of the ingest gateway: real NATS, real HTTP, and the
//! control plane in-process to create, edit and delete connectors. What was
//! published is read straight from the records stream.

mod access;
mod bodies;
mod budget;
mod bus;
mod catalog;
mod connections;
mod idempotency;
mod modes;
mod outage;
mod rate_limits;
mod tokens;

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sluice_runtime::Settings;
use sluice_runtime::bus::RecordBatch;
use sluice_testkit::TestEnv;
use sluice_testkit::api;
use uuid::Uuid;

pub use sluice_testkit::api::{Answer, Connector};

pub struct TestApp {
    /// The first gateway.
    pub ingest: String,
    pub control: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    // Dropped last: the servers stop with it (see `TestEnv::shutdown_token`).
    pub env: TestEnv,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A control plane and one gateway on a fresh environment, with settings
/// adjusted by `configure` (for both).
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    configure(&mut settings);
    let mut app = TestApp {
        ingest: String::new(),
        control: sluice_testkit::spawn_control(settings.clone(), env.shutdown_token()).await,
        client: reqwest::Client::new(),
        settings,
        env,
    };
    app.ingest = app.spawn_gateway().await;
    app
}

/// One message of the records stream.
pub struct Published {
    pub headers: async_nats::HeaderMap,
    pub batch: RecordBatch,
}

impl Published {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_owned())
    }
}

impl TestApp {
    /// Another gateway on the same namespace; its base URL.
    pub async fn spawn_gateway(&self) -> String {
        let gateway =
            sluice_ingest::Application::build(self.settings.clone(), self.env.shutdown_token())
                .await
                .expect("the gateway starts");
        let address = format!("http://{}", gateway.local_addr());
        tokio::spawn(gateway.run());
        address
    }

    /// A control-plane call with the operator's token.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        api::admin(
            &self.client,
            method,
            &format!("{}{path}", self.control),
            body,
        )
        .await
    }

    pub async fn create_connector(&self, name: &str, fields: Value) -> Connector {
        Connector::of(&api::create_connector(&self.client, &self.control, name, fields).await)
    }

    /// The connector most tests use: `{n: integer, s: string?}`.
    pub async fn simple_connector(&self) -> Connector {
        self.create_connector(
            "simple",
            json!([
                {"name": "n", "type": "integer"},
                {"name": "s", "type": "string", "nullable": true}
            ]),
        )
        .await
    }

    /// A request to a gateway's records route.
    pub fn post_to(
        &self,
        gateway: &str,
        connector: Uuid,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(format!("{gateway}/v1/connectors/{connector}/records"))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
    }

    /// A request to the first gateway.
    pub fn post(
        &self,
        connector: &Connector,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        self.post_to(
            &self.ingest,
            connector.id,
            Some(&connector.write_token),
            Some(content_type),
            body,
        )
    }

    pub async fn send(request: reqwest::RequestBuilder) -> Answer {
        Answer::of(request).await
    }

    /// Every message of the records stream, in order.
    pub async fn published(&self) -> Vec<Published> {
        let js = async_nats::jetstream::new(self.env.nats().await);
        let mut stream = js
            .get_stream(self.settings.namespace.records_stream())
            .await
            .expect("the records stream exists");
        let info = stream.info().await.expect("stream info").clone();
        let mut out = Vec::new();
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            if info.state.messages == 0 {
                break;
            }
            let message = stream
                .get_raw_message(sequence)
                .await
                .expect("a stored message");
            out.push(Published {
                headers: message.headers,
                batch: serde_json::from_slice(&message.payload).expect("a RecordBatch"),
            });
        }
        out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Retries `check` every 20 ms for up to `limit`, returning its last answer.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
