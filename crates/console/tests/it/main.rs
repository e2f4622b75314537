//! Tests of the console: its routes over plain HTTP, and the whole walk of
//! an operator in headless Chromium against the control plane, ingest
//! gateway and read API merged on one port, as `sluice serve` does. Real
//! PostgreSQL and NATS, one database and namespace per test.

mod assets;
mod audit;
mod backlog;
mod browser;
mod keyboard;
mod lifecycle;
mod screenshots;
mod tokens;
mod walk;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sluice_runtime::http::{self, Served};
use sluice_testkit::TestEnv;
use sluice_testkit::api;
use tokio::net::TcpListener;

pub use sluice_testkit::ADMIN_TOKEN;

pub struct TestApp {
    /// `http://127.0.0.1:port`, also the public URL, so the endpoints that
    /// the console shows are the ones a producer can post to.
    pub address: String,
    pub client: reqwest::Client,
    // The server stops when the environment is dropped.
    pub env: TestEnv,
}

/// The three services and the console merged on one port, like the
/// all-in-one binary (crates/sluice/src/main.rs).
pub async fn spawn_app() -> TestApp {
    spawn_app_behind(None).await
}

/// [`spawn_app`] with `SLUICE_PUBLIC_URL` set as a deployment behind a
/// proxy would have it, so endpoints show that URL (None: the server's own).
pub async fn spawn_app_behind(public_url: Option<&str>) -> TestApp {
    let env = TestEnv::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = format!("http://{}", listener.local_addr().expect("bound"));
    let mut settings = env.settings();
    settings.public_url = public_url.map_or_else(|| address.clone(), str::to_owned);
    let shutdown = env.shutdown_token();
    let control = sluice_control::Service::start(settings.clone(), shutdown.clone())
        .await
        .expect("the control plane starts");
    let ingest = sluice_ingest::Service::start(settings.clone(), shutdown.clone())
        .await
        .expect("the ingest gateway starts");
    let read = sluice_read::Service::start(settings.clone(), shutdown.clone())
        .await
        .expect("the read API starts");

    let mut openapi = control.openapi();
    openapi.merge(ingest.openapi());
    openapi.merge(read.openapi());
    let mut api = control.router().merge(ingest.router()).merge(read.router());
    // The control plane serves the console once it is wired in there (the
    // issue puts it at the control plane's `/`); until then, add it here.
    // Merging it twice would panic on the overlapping routes.
    if !serves_console(&api).await {
        api = api.merge(sluice_console::router());
    }
    let ready: http::ReadinessCheck = Arc::new(|| async { Vec::new() }.boxed());
    let router = http::app(api, &openapi, ready);
    tokio::spawn(http::serve(
        listener,
        router,
        shutdown.clone(),
        Duration::from_secs(1),
        settings.http,
    ));
    TestApp {
        address,
        client: reqwest::Client::new(),
        env,
    }
}

async fn serves_console(router: &axum::Router) -> bool {
    use tower::ServiceExt;
    let request = axum::http::Request::get("/")
        .body(axum::body::Body::empty())
        .expect("a request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    response.status() == axum::http::StatusCode::OK
}

impl TestApp {
    /// A control-plane call with the operator token: its status and JSON
    /// body (`Null` when empty).
    pub async fn operator(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let answer = api::admin(
            &self.client,
            method,
            &format!("{}{path}", self.address),
            body,
        )
        .await;
        (answer.status, answer.body)
    }
}
