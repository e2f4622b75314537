//! A test deployment: the control plane and read API in-process on a fresh
//! database and NATS namespace, and a producer that publishes record batches
//! on the stream as the gateway would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_read::{Application, StoreHooks};
use sluice_runtime::Settings;
use sluice_runtime::bus::{self, ColumnsOf, RecordBatch, RejectedRecord, headers};
use sluice_schema::{ExtraFields, Format, Schema};
use sluice_testkit::TestEnv;
use sluice_testkit::api::{self, Answer};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use sluice_testkit::api::Connector;

/// A deployment whose servers stop when its environment is dropped
/// (`TestEnv::shutdown_token`).
/// The ack wait of readers that tests crash: a group comes again within a
/// second.
pub const SHORT_ACK_WAIT: Duration = Duration::from_secs(1);

pub struct TestApp {
    pub env: TestEnv,
    pub control: String,
    pub client: reqwest::Client,
    pub js: async_nats::jetstream::Context,
    pub db: PgPool,
    readers: Vec<Reader>,
}

/// One read-API instance.
pub struct Reader {
    pub address: String,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Reader {
    /// Shuts it down and waits for its store loop to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("reader task")
            .expect("reader ran cleanly");
    }
}

/// Fields of every type, all nullable.
pub fn all_types() -> Value {
    json!([
        {"name": "s", "type": "string", "nullable": true},
        {"name": "i", "type": "integer", "nullable": true},
        {"name": "n", "type": "number", "nullable": true},
        {"name": "d", "type": "decimal", "nullable": true},
        {"name": "b", "type": "boolean", "nullable": true},
        {"name": "day", "type": "date", "nullable": true},
        {"name": "at", "type": "timestamp", "nullable": true},
        {"name": "j", "type": "json", "nullable": true},
    ])
}

/// Control plane plus one reader.
pub async fn spawn_app() -> TestApp {
    let mut app = spawn_control_only().await;
    app.start_reader(StoreHooks::default()).await;
    app
}

/// Control plane only: tests that must queue messages before any reader
/// consumes them start readers themselves.
pub async fn spawn_control_only() -> TestApp {
    spawn_control_only_with(|_| {}).await
}

/// [`spawn_control_only`] with the control plane's settings adjusted.
pub async fn spawn_control_only_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    sluice_runtime::telemetry::init();
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    adjust(&mut settings);
    let control = sluice_testkit::spawn_control(settings, env.shutdown_token()).await;
    let db = sluice_runtime::store::connect_and_migrate(&env.database_url)
        .await
        .expect("database");
    let js = bus::jetstream(env.nats().await, Duration::from_secs(5));
    bus::ensure_streams(&js, &env.namespace, bus::StreamLayout::SINGLE)
        .await
        .expect("streams");
    TestApp {
        control,
        client: reqwest::Client::new(),
        js,
        db,
        readers: Vec::new(),
        env,
    }
}

impl TestApp {
    /// Starts one more read-API instance on this deployment.
    pub async fn start_reader(&mut self, hooks: StoreHooks) -> usize {
        self.start_reader_with(self.env.settings(), hooks).await
    }

    /// [`TestApp::start_reader`] with settings of the test's own.
    pub async fn start_reader_with(&mut self, settings: Settings, hooks: StoreHooks) -> usize {
        let reader = self.new_reader_with(settings, hooks).await;
        self.readers.push(reader);
        self.readers.len() - 1
    }

    /// A reader that stores its first group and then dies before acking it,
    /// as a killed process would; returned once it has. Its consumer's ack
    /// wait is [`SHORT_ACK_WAIT`], so another reader soon gets the group again.
    pub async fn reader_dead_after_commit(&self) -> Reader {
        let crashed = Arc::new(Notify::new());
        let reader = self
            .new_reader(StoreHooks {
                ack_wait: Some(SHORT_ACK_WAIT),
                crash_after_commit: Some(crashed.clone()),
                ..StoreHooks::default()
            })
            .await;
        crashed.notified().await;
        reader
    }

    /// A read-API instance that the test owns (to stop it).
    pub async fn new_reader(&self, hooks: StoreHooks) -> Reader {
        self.new_reader_with(self.env.settings(), hooks).await
    }

    async fn new_reader_with(&self, settings: Settings, hooks: StoreHooks) -> Reader {
        let shutdown = self.env.shutdown_token().child_token();
        let app = Application::build_with_hooks(settings, shutdown.clone(), hooks)
            .await
            .unwrap_or_else(|e| panic!("the read API does not start: {e:#}"));
        let address: SocketAddr = app.local_addr();
        Reader {
            address: format!("http://{address}"),
            shutdown,
            task: tokio::spawn(app.run()),
        }
    }

    /// The first reader's base URL.
    pub fn read_url(&self) -> &str {
        &self.readers[0].address
    }

    pub fn reader_url(&self, index: usize) -> &str {
        &self.readers[index].address
    }

    pub async fn create_connector(&self, name: &str, fields: Value) -> Connector {
        Connector::of(&api::create_connector(&self.client, &self.control, name, fields).await)
    }

    /// A connector of one field, `n`, an integer.
    pub async fn integer_connector(&self, name: &str) -> Connector {
        self.create_connector(name, json!([{"name": "n", "type": "integer"}]))
            .await
    }

    pub async fn patch_connector(&self, id: Uuid, body: Value) {
        let answer = self.admin(Method::PATCH, id, Some(body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    pub async fn delete_connector(&self, id: Uuid) {
        let answer = self.admin(Method::DELETE, id, None).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    }

    /// `method` on the connector's control-plane route, as the operator.
    async fn admin(&self, method: Method, id: Uuid, body: Option<Value>) -> Answer {
        let url = format!("{}/v1/connectors/{id}", self.control);
        api::admin(&self.client, method, &url, body).await
    }

    /// The connector's schema as stored now.
    pub async fn schema(&self, id: Uuid) -> (Schema, i64) {
        let (schema, version): (sqlx::types::Json<Schema>, i64) =
            sqlx::query_as("SELECT schema, schema_version FROM connectors WHERE id = $1")
                .bind(id)
                .fetch_one(&self.db)
                .await
                .expect("connector row");
        (schema.0, version)
    }

    /// Validates `records` (a JSON array) against the connector's current
    /// schema and publishes them as one batch, as the gateway does; refused
    /// records travel as rejected ones. Returns the stream sequence.
    pub async fn publish(&self, connector: Uuid, records: Value) -> u64 {
        self.publish_text(connector, &records.to_string()).await
    }

    /// [`TestApp::publish`] of a JSON body given as text.
    pub async fn publish_text(&self, connector: Uuid, body: &str) -> u64 {
        let batch = self.batch_of(connector, body).await;
        self.publish_batch(connector, &batch).await
    }

    /// Publishes `batch` with the headers the gateway gives it.
    pub async fn publish_batch(&self, connector: Uuid, batch: &RecordBatch) -> u64 {
        let mut message_headers = HeaderMap::new();
        message_headers.insert(headers::CONNECTOR_ID, connector.to_string());
        message_headers.insert(headers::SCHEMA_VERSION, batch.schema_version.to_string());
        message_headers.insert(headers::BATCH_ID, batch.batch_id.to_string());
        message_headers.insert(headers::CHUNK, batch.chunk.to_string());
        let payload = serde_json::to_vec(batch).unwrap();
        self.publish_with_headers(connector, message_headers, payload)
            .await
    }

    /// The batch the gateway would publish for `body`.
    pub async fn batch_of(&self, connector: Uuid, body: &str) -> RecordBatch {
        self.batch_in(connector, Format::Json, body).await
    }

    /// [`TestApp::batch_of`] for a body in `format`.
    pub async fn batch_in(&self, connector: Uuid, format: Format, body: &str) -> RecordBatch {
        let (schema, version) = self.schema(connector).await;
        let validation =
            sluice_schema::validate(&schema, ExtraFields::Reject, format, body.as_bytes())
                .expect("a well-formed body");
        let batch = RecordBatch {
            batch_id: Uuid::now_v7(),
            chunk: 0,
            chunks: 1,
            schema_version: version,
            received_at: Utc::now(),
            rows: validation.records.len(),
            columns: ColumnsOf::new(&schema, &validation.records),
            rejected: validation
                .rejected
                .iter()
                .map(|r| RejectedRecord::new(r.raw.clone(), &r.errors))
                .collect(),
            format: Some(format),
        };
        // Through the wire form, as the reader will see it.
        serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap()
    }

    /// Publishes `payload` on the connector's records subject with the
    /// headers of a gateway that sent no batch and chunk headers yet.
    pub async fn publish_raw(&self, connector: Uuid, payload: Vec<u8>) -> u64 {
        let mut message_headers = HeaderMap::new();
        message_headers.insert(headers::CONNECTOR_ID, connector.to_string());
        message_headers.insert(headers::SCHEMA_VERSION, "1");
        self.publish_with_headers(connector, message_headers, payload)
            .await
    }

    pub async fn publish_with_headers(
        &self,
        connector: Uuid,
        message_headers: HeaderMap,
        payload: Vec<u8>,
    ) -> u64 {
        self.js
            .publish_with_headers(
                self.env.namespace.records_subject(connector),
                message_headers,
                payload.into(),
            )
            .await
            .expect("publish")
            .await
            .expect("publish ack")
            .sequence
    }

    /// GET `path` (with its query) on the first reader.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.get_from(self.read_url(), path, token).await
    }

    pub async fn get_from(&self, base: &str, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    /// GET the connector's records with `query`, on the first reader.
    pub async fn records(&self, connector: &Connector, query: &str) -> reqwest::Response {
        let path = format!("/v1/connectors/{}/records?{query}", connector.id);
        self.get(&path, &connector.read_token).await
    }

    /// GET a JSON page, asserting 200.
    pub async fn page(&self, connector: &Connector, query: &str) -> Value {
        let response = self.records(connector, query).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// Waits until the readers' catalog knows the connector (it follows the
    /// bucket, a few milliseconds behind the control plane).
    pub async fn wait_visible(&self, connector: &Connector) {
        for _ in 0..200 {
            let response = self.records(connector, "limit=1").await;
            if response.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the read API never saw connector {}", connector.id);
    }

    /// Waits until the connector has `count` stored records.
    pub async fn wait_stored(&self, connector: Uuid, count: i64) {
        for _ in 0..400 {
            let stored: Option<(i64,)> =
                sqlx::query_as("SELECT records FROM connector_stats WHERE connector_id = $1")
                    .bind(connector)
                    .fetch_optional(&self.db)
                    .await
                    .unwrap();
            if stored.map_or(0, |(n,)| n) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("connector {connector} never reached {count} stored records");
    }

    /// Waits until every message on the stream has been acked.
    pub async fn wait_consumer_idle(&self) -> async_nats::jetstream::consumer::Info {
        let stream = self
            .js
            .get_stream(self.env.namespace.records_stream())
            .await
            .unwrap();
        for _ in 0..400 {
            let info = stream
                .consumer_info(self.env.namespace.store_consumer())
                .await;
            if let Ok(info) = info
                && info.num_pending == 0
                && info.num_ack_pending == 0
            {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the store consumer never caught up");
    }

    /// Every record, following `next_cursor` from the start.
    pub async fn all_records(&self, connector: &Connector) -> Vec<Value> {
        let mut records = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .page(connector, &format!("limit=1000&cursor={cursor}"))
                .await;
            records.extend(page["records"].as_array().unwrap().iter().cloned());
            cursor = page["next_cursor"].as_str().unwrap().to_owned();
            if page["has_more"] == false {
                return records;
            }
        }
    }
}
