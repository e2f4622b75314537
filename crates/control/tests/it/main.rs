//! Integration tests of the control plane: real PostgreSQL, real NATS, real
//! HTTP, one database and namespace per test.

mod auth;
mod binary;
mod concurrency;
mod connectors;
mod edit;
mod hostile_values;
mod lifecycle;

use async_nats::jetstream::kv;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_control::Application;
use sluice_runtime::bus;
use sluice_testkit::{ADMIN_TOKEN, TestEnv};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    // Dropped last: the database and namespace outlive the server.
    pub env: TestEnv,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut sluice_runtime::Settings)) -> TestApp {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    adjust(&mut settings);
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone())
        .await
        .expect("the control plane starts");
    let address = format!("http://{}", app.local_addr());
    tokio::spawn(app.run());
    TestApp {
        address,
        client: reqwest::Client::new(),
        shutdown,
        env,
    }
}

/// A response read whole: status, headers and JSON body (Null when empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

impl TestApp {
    /// Stops this server and starts another on the same database and
    /// namespace, as a restart would.
    pub async fn restart(&mut self) {
        self.shutdown.cancel();
        let shutdown = CancellationToken::new();
        let app = Application::build(self.env.settings(), shutdown.clone())
            .await
            .expect("the control plane restarts");
        self.address = format!("http://{}", app.local_addr());
        self.shutdown = shutdown;
        tokio::spawn(app.run());
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{status}: body is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with the operator's token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// Creates a connector and returns its create answer (with tokens).
    pub async fn create(&self, name: &str, fields: Value) -> Value {
        let answer = self
            .admin(
                Method::POST,
                "/v1/connectors",
                Some(json!({"name": name, "fields": fields})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body
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

pub fn id_of(connector: &Value) -> String {
    connector["id"].as_str().expect("an id").to_owned()
}
