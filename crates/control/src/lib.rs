//! Sluice's control plane: connectors, their schemas and their tokens.
//!
//! It owns the `connectors` table and each connector's records table (made,
//! changed and dropped in the same transaction as the connector's row), and
//! it is the only writer of the NATS key-value bucket of connector
//! definitions, which it keeps equal to the database, and of the bucket of
//! operator tokens. Every route asks for an operator's token, and every
//! change is written to the audit log in its own transaction (`audit`).
//!
//! It must never store a token (only hashes), never put user text into SQL
//! other than as a bound value or through `store::quote_ident`, and never
//! publish to or consume from the records stream: storing and serving
//! records is the read API's (it only reads how much the stream holds of a
//! connector, for the connector's stats).

mod api;
mod audit;
mod db;
mod error;
mod extract;
mod publish;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRef;
use secrecy::ExposeSecret;
use sluice_runtime::http::BearerAuth;
use sluice_runtime::startup::{self, BusSlot};
use sluice_runtime::throttle::AuthThrottle;
use sluice_runtime::token::TokenHash;
use sluice_runtime::{Settings, http, store};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// How long in-flight requests may run after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub(crate) struct AppState {
    pool: PgPool,
    /// NATS, once set up: the bucket this service writes, and its
    /// connectors in memory (the catalog), to tell a connector's token
    /// (403) from an unknown one (401) without a query.
    bus: BusSlot,
    settings: Arc<Settings>,
    admin_token: Arc<TokenHash>,
    throttle: Arc<AuthThrottle>,
    /// Set when a publication failed; the reconciler then retries.
    needs_reconcile: Arc<AtomicBool>,
}

impl FromRef<AppState> for Arc<AuthThrottle> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.throttle)
    }
}

/// The control plane with its dependencies connected.
#[derive(Clone)]
pub struct Service {
    state: AppState,
}

impl Service {
    /// Connects to PostgreSQL (creating and migrating the database) and NATS
    /// (creating the streams and the bucket), brings the bucket in line with
    /// the database, and starts the reconciler, which runs until `shutdown`.
    /// If NATS does not answer, the service starts unready and keeps trying
    /// (see `sluice_runtime::startup`).
    pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Service> {
        let admin_token = settings.admin_token.as_ref().context(
            "SLUICE_ADMIN_TOKEN is not set: the control plane refuses to start without the operator's token",
        )?;
        let admin_token = Arc::new(TokenHash::of(admin_token.expose_secret()));
        let pool = store::connect_and_migrate(&settings.database_url)
            .await
            .context("connecting to PostgreSQL (DATABASE_URL)")?;
        let reconcile_pool = pool.clone();
        let (namespace, uses_shutdown) = (settings.namespace.clone(), shutdown.clone());
        let bus = startup::start_bus(
            &settings,
            "sluice-control",
            shutdown.clone(),
            Box::new(move |bus| {
                let pool = reconcile_pool.clone();
                let (namespace, shutdown) = (namespace.clone(), uses_shutdown.clone());
                Box::pin(async move {
                    publish::reconcile(&pool, &bus)
                        .await
                        .context("reconciling the connectors bucket with the database")?;
                    tokens::uses::store_reported_uses(pool, bus.client.clone(), namespace, shutdown)
                        .await
                        .context("subscribing to the reports of token uses")
                })
            }),
        )
        .await?; // BusError names the URL and, for an old server, the fix
        let state = AppState {
            pool,
            bus,
            throttle: Arc::new(AuthThrottle::new(&settings.auth_throttle)),
            settings: Arc::new(settings),
            admin_token,
            needs_reconcile: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(publish::reconcile_when_needed(state.clone(), shutdown));
        Ok(Service { state })
    }
}

impl http::Served for Service {
    /// The control-plane routes of SPEC section 6, state applied, and the
    /// web console at `/`.
    fn router(&self) -> Router {
        api::router()
            .merge(audit::router())
            // Definitions are small, but 500 fields with long descriptions
            // outgrow axum's 2 MB default; the operator's limit applies.
            .layer(DefaultBodyLimit::max(self.state.settings.max_body_bytes))
            .with_state(self.state.clone())
            // The web console: static pages that call the routes above.
            .merge(sluice_console::router())
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        ApiDoc::openapi()
    }

    /// PostgreSQL answers a query, and NATS is set up (the bucket
    /// reconciled) and connected.
    async fn readiness(&self) -> Vec<(&'static str, bool)> {
        let postgres = tokio::time::timeout(Duration::from_secs(2), db::ping(&self.state.pool))
            .await
            .unwrap_or(false);
        vec![("postgres", postgres), ("nats", self.state.bus.is_ready())]
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice control plane",
        description = "Connectors, their schemas and tokens. Every route needs an operator token (`SLUICE_ADMIN_TOKEN` or a `sluice_o_` token): `Authorization: Bearer …`; errors are application/problem+json."
    ),
    paths(
        api::create_connector,
        api::list_connectors,
        api::get_connector,
        api::edit_connector,
        api::delete_connector,
        api::duplicate_connector,
        api::rotate_token,
        api::connector_schema,
        tokens::create_connector_token,
        tokens::list_connector_tokens,
        tokens::revoke_connector_token,
        tokens::create_operator_token,
        tokens::list_operator_tokens,
        tokens::revoke_operator_token,
        audit::api::list_audit,
        audit::api::connector_audit,
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The control plane bound to its address, ready to serve.
pub struct Application(http::Bound<Service>);

impl Application {
    pub async fn build(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Application> {
        let (listen, limits) = (settings.listen, settings.http);
        let service = Service::start(settings, shutdown.clone()).await?;
        Ok(Application(
            http::Bound::bind(listen, limits, service, shutdown, SHUTDOWN_GRACE).await?,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Serves until `shutdown`, then lets in-flight requests finish.
    pub async fn run(self) -> anyhow::Result<()> {
        Ok(self.0.run().await?)
    }
}
