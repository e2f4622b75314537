//! Sluice's read API: the half of a connector's endpoint that stores records
//! and gives them back (SPEC sections 8 and 9).
//!
//! It owns two things:
//!
//! - `store`: a durable pull consumer on the records stream, shared by every
//!   replica, that writes each message's records into its connector's table
//!   exactly once (the message's stream sequence is recorded in the same
//!   transaction as its rows, and the message is acked only after commit),
//!   allocating `_id`s under the connector's stats row lock so that one
//!   connector's writes commit in `_id` order.
//! - `records`: `GET /v1/connectors/{id}/records` and `/rejected`, cursor
//!   pages in JSON, NDJSON or CSV, streamed from PostgreSQL, with filters,
//!   projection and long-polling.
//!
//! It must never change a connector's definition or its table's layout (the
//! control plane's), never validate records (the gateway did, against the
//! version it held), and never ack a message before its rows are committed.

mod copy;
mod db;
mod error;
mod params;
mod plan;
mod records;
mod render;
mod rows;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::FromRef;
use secrecy::ExposeSecret;
use sluice_runtime::Settings;
use sluice_runtime::bus::{self, Namespace};
use sluice_runtime::catalog::Catalog;
use sluice_runtime::throttle::AuthThrottle;
use sluice_runtime::token::TokenHash;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;

pub use store::StoreHooks;

/// How long in-flight requests may run after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What every handler and the store loop share.
#[derive(Clone)]
pub(crate) struct AppState {
    /// Serves GET requests. The store loop has a pool of its own, so that
    /// slow readers can never starve it of connections.
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub namespace: Namespace,
    pub catalog: Catalog,
    pub admin_hash: Option<Arc<TokenHash>>,
    pub throttle: Arc<AuthThrottle>,
    /// Ends long-polls early when the process shuts down.
    pub shutdown: CancellationToken,
}

impl FromRef<AppState> for Arc<AuthThrottle> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.throttle)
    }
}

/// The read API with its dependencies connected and its store loop running.
pub struct Service {
    state: AppState,
    tasks: TaskTracker,
}

impl Service {
    /// Connects to PostgreSQL (migrating it) and NATS, loads the connector
    /// catalog, and starts the store loop; everything stops with `shutdown`.
    pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Service> {
        Service::start_with_hooks(settings, shutdown, StoreHooks::default()).await
    }

    /// [`Service::start`] with the knobs that tests use to simulate crashes.
    #[doc(hidden)]
    pub async fn start_with_hooks(
        settings: Settings,
        shutdown: CancellationToken,
        hooks: StoreHooks,
    ) -> anyhow::Result<Service> {
        let pool = sluice_runtime::store::connect_and_migrate(&settings.database_url)
            .await
            .context("connecting to PostgreSQL")?;
        let nats = bus::connect(&settings.nats_url, "sluice-read").await?; // BusError names the URL and, for an old server, the fix
        let js = bus::jetstream(nats.clone(), Duration::from_secs(5));
        bus::ensure_streams(&js, &settings.namespace, settings.stream_max_bytes)
            .await
            .context("setting up the records stream")?;
        let bucket = bus::connectors_bucket(&js, &settings.namespace)
            .await
            .context("opening the connectors bucket")?;
        let catalog = Catalog::start(bucket, shutdown.clone())
            .await
            .context("loading the connector catalog")?;
        let state = AppState {
            pool: pool.clone(),
            nats: nats.clone(),
            namespace: settings.namespace.clone(),
            catalog,
            admin_hash: admin_hash(&settings).map(Arc::new),
            throttle: Arc::new(AuthThrottle::new(&settings.auth_throttle)),
            shutdown: shutdown.clone(),
        };
        let tasks = TaskTracker::new();
        store::start(&tasks, &pool, nats, js, settings.namespace, shutdown, hooks)
            .await
            .context("starting the store consumer")?;
        tasks.close();
        Ok(Service { state, tasks })
    }
}

impl sluice_runtime::http::Served for Service {
    /// `GET /v1/connectors/{id}/records` and `/rejected`, state applied.
    fn router(&self) -> axum::Router {
        records::router().with_state(self.state.clone())
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        records::ApiDoc::openapi()
    }

    /// PostgreSQL answers a query, and the NATS connection is up.
    async fn readiness(&self) -> Vec<(&'static str, bool)> {
        let postgres = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&self.state.pool),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        let nats = self.state.nats.connection_state() == async_nats::connection::State::Connected;
        vec![("postgres", postgres), ("nats", nats)]
    }

    /// Resolves once the store loop has finished its in-flight batch after
    /// shutdown.
    async fn stopped(&self) {
        self.tasks.wait().await;
    }
}

/// The read API bound to its listener.
pub struct Application(sluice_runtime::http::Bound<Service>);

impl Application {
    pub async fn build(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Application> {
        Application::build_with_hooks(settings, shutdown, StoreHooks::default()).await
    }

    #[doc(hidden)]
    pub async fn build_with_hooks(
        settings: Settings,
        shutdown: CancellationToken,
        hooks: StoreHooks,
    ) -> anyhow::Result<Application> {
        let (listen, limits) = (settings.listen, settings.http);
        let service = Service::start_with_hooks(settings, shutdown.clone(), hooks).await?;
        let bound =
            sluice_runtime::http::Bound::bind(listen, limits, service, shutdown, SHUTDOWN_GRACE);
        Ok(Application(bound.await?))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Serves until shutdown, then waits for in-flight requests and for the
    /// store loop to commit and ack what it holds.
    pub async fn run(self) -> anyhow::Result<()> {
        Ok(self.0.run().await?)
    }
}

/// Only the hash of the operator's token is kept in memory.
fn admin_hash(settings: &Settings) -> Option<TokenHash> {
    settings
        .admin_token
        .as_ref()
        .map(|t| TokenHash::of(t.expose_secret()))
}
