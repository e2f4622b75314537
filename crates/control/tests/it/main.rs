//! Integration tests of the control plane: real PostgreSQL, real NATS, real
//! HTTP, one database and namespace per test.

mod audit;
mod auth;
mod binary;
mod concurrency;
mod connectors;
mod edit;
mod hostile_values;
mod lifecycle;
mod limits;
mod retention;
mod tokens;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use sluice_runtime::bus;
use sluice_testkit::api;
use sluice_testkit::{ADMIN_TOKEN, TestEnv};
use sqlx::PgPool;
use tokio_util::sync::DropGuard;
use uuid::Uuid;

pub use sluice_testkit::api::Answer;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// Stops this control plane when dropped (or replaced by `restart`).
    server: DropGuard,
    // Dropped last: the database and namespace outlive the server.
    pub env: TestEnv,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut sluice_runtime::Settings)) -> TestApp {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    adjust(&mut settings);
    let shutdown = env.shutdown_token().child_token();
    TestApp {
        address: sluice_testkit::spawn_control(settings, shutdown.clone()).await,
        client: reqwest::Client::new(),
        server: shutdown.drop_guard(),
        env,
    }
}

impl TestApp {
    /// Stops this server and starts another on the same database and
    /// namespace, as a restart would.
    pub async fn restart(&mut self) {
        let shutdown = self.env.shutdown_token().child_token();
        // Replacing the guard stops the old server before the new one starts.
        self.server = shutdown.clone().drop_guard();
        self.address = sluice_testkit::spawn_control(self.env.settings(), shutdown).await;
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}{path}", self.address);
        Answer::of(api::request(&self.client, method, &url, token, body)).await
    }

    /// A request with the operator's token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// POST /v1/connectors with the operator's token and `definition`,
    /// whatever it answers.
    pub async fn post_connector(&self, definition: Value) -> Answer {
        self.admin(Method::POST, "/v1/connectors", Some(definition))
            .await
    }

    /// Creates a connector and returns its create answer (with tokens).
    pub async fn create(&self, name: &str, fields: Value) -> Value {
        api::create_connector(&self.client, &self.address, name, fields).await
    }

    pub async fn get(&self, id: &str) -> Answer {
        self.admin(Method::GET, &format!("/v1/connectors/{id}"), None)
            .await
    }

    pub async fn patch(&self, id: &str, body: Value) -> Answer {
        self.admin(Method::PATCH, &format!("/v1/connectors/{id}"), Some(body))
            .await
    }

    pub async fn db(&self) -> PgPool {
        PgPool::connect(&self.env.database_url)
            .await
            .expect("connecting to the test database")
    }

    pub async fn bucket(&self) -> kv::Store {
        let js = async_nats::jetstream::new(self.env.nats().await);
        js.get_key_value(self.env.namespace.connectors_bucket())
            .await
            .expect("the bucket exists")
    }

    /// The keys of the bucket: the ids of the connectors gateways see.
    pub async fn bucket_keys(&self) -> Vec<String> {
        self.bucket()
            .await
            .keys()
            .await
            .expect("listing the bucket")
            .try_collect()
            .await
            .expect("reading the bucket's keys")
    }

    /// The connector's definition as gateways see it, if any.
    pub async fn published(&self, id: &str) -> Option<bus::ConnectorDoc> {
        self.bucket()
            .await
            .get(id)
            .await
            .expect("reading the bucket")
            .map(|bytes| serde_json::from_slice(&bytes).expect("a ConnectorDoc"))
    }

    /// Inserts a stored record straight into the connector's table, as the
    /// read API would, so edits have data to convert.
    pub async fn insert_record(&self, id: &str, columns: &[(&str, &str)]) {
        let id = Uuid::parse_str(id).unwrap();
        let table = sluice_runtime::store::records_table(id);
        let pool = self.db().await;
        // The partition for now, as the read API would make it.
        let mut tx = pool.begin().await.unwrap();
        let span = std::time::Duration::from_secs(86_400);
        sluice_runtime::partitions::ensure(&mut tx, id, chrono::Utc::now(), span)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let (next,): (i64,) =
            sqlx::query_as(&format!("SELECT coalesce(max(_id), 0) + 1 FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
        let names: Vec<String> = columns
            .iter()
            .map(|(n, _)| sluice_runtime::store::quote_ident(n))
            .collect();
        // Values are SQL literals written by the test itself.
        let values: Vec<&str> = columns.iter().map(|(_, v)| *v).collect();
        let sql = format!(
            "INSERT INTO {table} (_id, _received_at{}{}) VALUES ({next}, now(){}{})",
            if names.is_empty() { "" } else { ", " },
            names.join(", "),
            if values.is_empty() { "" } else { ", " },
            values.join(", ")
        );
        sqlx::query(&sql).execute(&pool).await.unwrap();
        pool.close().await;
    }

    /// Every stored value of `column`, in `_id` order, as JSON.
    pub async fn stored(&self, id: &str, column: &str) -> Vec<Value> {
        let expr = format!("to_jsonb({})", sluice_runtime::store::quote_ident(column));
        self.stored_as(id, &expr).await
    }

    /// `expr` (SQL over the records table's columns) for every stored
    /// record, in `_id` order, as JSON.
    pub async fn stored_as(&self, id: &str, expr: &str) -> Vec<Value> {
        let table = sluice_runtime::store::records_table(Uuid::parse_str(id).unwrap());
        let pool = self.db().await;
        let rows: Vec<(Option<Value>,)> = sqlx::query_as(&format!(
            "SELECT to_jsonb({expr}) FROM {table} ORDER BY _id"
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows.into_iter()
            .map(|(v,)| v.unwrap_or(Value::Null))
            .collect()
    }

    /// The column names and SQL types of a connector's records table.
    pub async fn columns(&self, id: &str) -> Vec<(String, String)> {
        let pool = self.db().await;
        let columns = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = $1 ORDER BY ordinal_position",
        )
        .bind(format!("records_{}", Uuid::parse_str(id).unwrap().simple()))
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        columns
    }
}

/// Every route on one connector, with a valid body where one is needed.
pub fn connector_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/v1/connectors/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/connectors/{id}"),
            Some(json!({"name": "renamed"})),
        ),
        (Method::DELETE, format!("/v1/connectors/{id}"), None),
        (
            Method::POST,
            format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "copy"})),
        ),
        (
            Method::POST,
            format!("/v1/connectors/{id}/tokens/write"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/connectors/{id}/tokens/read"),
            None,
        ),
        (Method::GET, format!("/v1/connectors/{id}/schema"), None),
        (
            Method::POST,
            format!("/v1/connectors/{id}/tokens"),
            Some(json!({"name": "extra", "scope": "write"})),
        ),
        (Method::GET, format!("/v1/connectors/{id}/tokens"), None),
        (
            Method::DELETE,
            format!("/v1/connectors/{id}/tokens/{}", Uuid::now_v7()),
            None,
        ),
    ]
}

pub fn id_of(connector: &Value) -> String {
    connector["id"].as_str().expect("an id").to_owned()
}
