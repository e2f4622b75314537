//! Sluice's read API: the half of a connector's endpoint that stores records
//! and gives them back (SPEC sections 8 and 9).
//!
//! It owns three things:
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
//! - `lifecycle`: deleting records by filter, and replaying or clearing
//!   rejected records, each under the stats row lock as the store writes.
//! - `maintenance`: the time partitions of records tables, made ahead and
//!   dropped by retention (with rejected records past retention), and the
//!   online partitioning of tables made before partitioning existed.
//!
//! It must never change a connector's definition or its table's columns
//! (the control plane's), never validate records (the gateway did, against
//! the version it held; a replay of rejected records validates them with
//! the schema crate, as the gateway would now), and never ack a message
//! before its rows are committed.

mod copy;
mod db;
mod error;
mod lifecycle;
mod maintenance;
mod params;
mod partitions;
mod plan;
mod records;
mod render;
mod replica;
mod rows;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::FromRef;
use futures::FutureExt as _;
use secrecy::ExposeSecret;
use sluice_runtime::Settings;
use sluice_runtime::bus::Namespace;
use sluice_runtime::rate_limit::RateLimiter;
use sluice_runtime::startup::{self, Bus, BusSlot, LastStep};
use sluice_runtime::throttle::AuthThrottle;
use sluice_runtime::token::TokenHash;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;

use crate::error::ReadError;
pub use store::StoreHooks;

/// How long in-flight requests may run after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What every handler and the store loop share.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The primary: deletions and replays write here, and GET requests
    /// read here unless a replica is set. The store loop has a pool of its
    /// own, so that slow readers can never starve it of connections.
    pub pool: PgPool,
    /// A streaming replica of the primary (`DATABASE_READ_URL`), where GET
    /// requests read instead (see `replica`).
    pub replica: Option<PgPool>,
    /// NATS and the connector catalog, once set up (see `Service::start`).
    pub bus: BusSlot,
    pub namespace: Namespace,
    pub admin_hash: Option<Arc<TokenHash>>,
    pub throttle: Arc<AuthThrottle>,
    /// Per-token rate limits of GETs; this replica's share of each.
    pub limiter: Arc<RateLimiter>,
    /// Ends long-polls early when the process shuts down.
    pub shutdown: CancellationToken,
    pub hooks: StoreHooks,
    /// The partitions known to exist, shared with the store loop: a replay
    /// writes records as the store does.
    pub partitions: Arc<partitions::PartitionCache>,
}

impl FromRef<AppState> for Arc<AuthThrottle> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.throttle)
    }
}

impl AppState {
    pub(crate) fn bus(&self) -> Result<&Bus, ReadError> {
        self.bus.get().ok_or(ReadError::BusUnavailable)
    }

    /// Where GET requests read: the replica if there is one.
    pub(crate) fn read_pool(&self) -> &PgPool {
        self.replica.as_ref().unwrap_or(&self.pool)
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
    /// If NATS does not answer, the service starts unready and keeps trying
    /// (see `sluice_runtime::startup`).
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
        let replica = match &settings.database_read_url {
            Some(url) => Some(
                sluice_runtime::store::connect_replica(url).context("reading DATABASE_READ_URL")?,
            ),
            None => None,
        };
        let tasks = TaskTracker::new();
        let partitions = Arc::new(partitions::PartitionCache::new(settings.partition_span));
        let maintenance = maintenance::Maintenance {
            pool: pool.clone(),
            partitions: Arc::clone(&partitions),
            interval: settings.maintenance_interval,
        };
        tasks.spawn(maintenance.run(shutdown.clone()));
        let limiter = Arc::new(RateLimiter::new(settings.default_limits));
        let start_store = store_starter(
            tasks.clone(),
            pool.clone(),
            settings.namespace.clone(),
            shutdown.clone(),
            hooks.clone(),
            Arc::clone(&partitions),
            Arc::clone(&limiter),
        );
        let bus =
            startup::start_bus(&settings, "sluice-read", shutdown.clone(), start_store).await?; // BusError names the URL and, for an old server, the fix
        // The store loop may start later, in the background: the tracker
        // may be waited on before (nothing to wait for) or after.
        tasks.close();
        let state = AppState {
            pool,
            replica,
            bus,
            namespace: settings.namespace.clone(),
            admin_hash: admin_hash(&settings).map(Arc::new),
            throttle: Arc::new(AuthThrottle::new(&settings.auth_throttle)),
            limiter,
            shutdown,
            hooks,
            partitions,
        };
        Ok(Service { state, tasks })
    }
}

impl sluice_runtime::http::Served for Service {
    /// `GET /v1/connectors/{id}/records` and `/rejected`, state applied.
    fn router(&self) -> axum::Router {
        records::router()
            .merge(lifecycle::router())
            .with_state(self.state.clone())
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        let mut doc = records::ApiDoc::openapi();
        doc.merge(lifecycle::ApiDoc::openapi());
        doc
    }

    /// PostgreSQL (and the replica, if one is set) answers a query, and
    /// NATS is set up (the store loop started) and connected.
    async fn readiness(&self) -> Vec<(&'static str, bool)> {
        let mut checks = vec![("postgres", answers(&self.state.pool).await)];
        if let Some(replica) = &self.state.replica {
            checks.push(("postgres_replica", answers(replica).await));
        }
        checks.push(("nats", self.state.bus.is_ready()));
        checks
    }

    /// Resolves once the store loop has finished its in-flight batch after
    /// shutdown.
    async fn stopped(&self) {
        self.tasks.wait().await;
    }
}

/// Whether `pool`'s server answers a query within two seconds.
async fn answers(pool: &PgPool) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(pool),
    )
    .await
    .is_ok_and(|r| r.is_ok())
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

/// The read API's last step of start-up: joining the replicas that share
/// the rate limits, then the store loop, on the bus once it is set up
/// (retried, as every step, until it starts).
fn store_starter(
    tasks: TaskTracker,
    pool: PgPool,
    namespace: Namespace,
    shutdown: CancellationToken,
    hooks: StoreHooks,
    partitions: Arc<partitions::PartitionCache>,
    limiter: Arc<RateLimiter>,
) -> LastStep {
    Box::new(move |bus: Bus| {
        let (tasks, pool, namespace) = (tasks.clone(), pool.clone(), namespace.clone());
        let (shutdown, hooks) = (shutdown.clone(), hooks.clone());
        let partitions = Arc::clone(&partitions);
        let limiter = Arc::clone(&limiter);
        async move {
            limiter
                .join_replicas(
                    &bus.js,
                    &namespace,
                    bus.layout.replicas,
                    "read",
                    shutdown.clone(),
                )
                .await
                .context("joining the read API's replicas")?;
            store::start(&tasks, &pool, &bus, namespace, shutdown, hooks, partitions)
                .await
                .context("starting the store consumer")
        }
        .boxed()
    })
}

/// Only the hash of the operator's token is kept in memory.
fn admin_hash(settings: &Settings) -> Option<TokenHash> {
    settings
        .admin_token
        .as_ref()
        .map(|t| TokenHash::of(t.expose_secret()))
}
