//! Sluice's ingest gateway: the front door producers POST records to
//! (SPEC 7, with sections 3 and 4).
//!
//! It owns `POST /v1/connectors/{id}/records`: checking the write token
//! against its live copy of the connector definitions (the key-value bucket,
//! watched through `sluice_runtime::catalog`), reading the body under its
//! size limit (decompressing gzip as it streams), validating every record
//! with `sluice_schema`, and publishing the accepted ones (and in partial mode
//! the rejected ones) as `RecordBatch` messages on the records stream. It
//! answers 202 only once JetStream acknowledged every message of the request.
//! Each connector token is held to its rate limits (`sluice_runtime::rate_limit`),
//! this gateway taking its share of each.
//! Whatever a request holds in memory is reserved first from a budget shared
//! fairly between connectors (`budget`), so no body, however hostile, grows
//! the process past `SLUICE_INGEST_MEMORY_BYTES`.
//!
//! It must never touch PostgreSQL, nor keep state that another replica would
//! need: any number of gateways can serve the same connectors at once, and
//! they keep serving from their copy of the definitions while the control
//! plane is down. Deduplication of idempotent retries is JetStream's (see
//! `idempotency`), not this process's.

mod batch;
mod body;
mod budget;
mod error;
mod idempotency;
mod publish;
mod records;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use futures::FutureExt as _;
use secrecy::ExposeSecret;
use sluice_runtime::Settings;
use sluice_runtime::bus::Namespace;
use sluice_runtime::http::{self, BearerAuth};
use sluice_runtime::rate_limit::RateLimiter;
use sluice_runtime::startup::{self, Bus, BusSlot};
use sluice_runtime::throttle::AuthThrottle;
use sluice_runtime::token::TokenHash;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::budget::FairShare;
use crate::error::IngestError;
use crate::idempotency::RecentAnswers;
use crate::records::IngestAnswer;

/// Time given to in-flight requests at shutdown: a `wait=true` request may
/// hold its answer for 10 s.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Idempotent answers remembered for the fast path. A partial-mode answer
/// lists up to 100 errors (tens of KiB at worst), so this bounds the memory
/// to a few tens of MiB; past it, retries are still deduplicated by the
/// stream, only answered without the shortcut.
const RECENT_ANSWERS: usize = 1_000;

/// The gateway with its connections and background tasks.
#[derive(Clone)]
pub struct Service {
    state: AppState,
}

#[derive(Clone)]
pub(crate) struct AppState {
    /// Set once NATS is connected, the streams exist and the connectors are
    /// loaded; until then (NATS down at start) every request is a 503.
    bus: BusSlot,
    namespace: Namespace,
    admin: Option<TokenHash>,
    max_body_bytes: usize,
    recent: Arc<RecentAnswers<(StatusCode, IngestAnswer)>>,
    /// Bodies validated and encoded at once: one per core. More would only
    /// queue for the CPU, each holding its body's records and messages, a
    /// few times the body's size; waiting here a body holds only itself.
    /// Shared fairly, so a busy connector's queue never delays another's.
    validations: FairShare,
    /// `SLUICE_INGEST_MEMORY_BYTES`, at most half of it for one connector.
    memory: FairShare,
    throttle: Arc<AuthThrottle>,
    /// Per-token rate limits; this gateway's share of each.
    limiter: Arc<RateLimiter>,
    shutdown: CancellationToken,
}

impl FromRef<AppState> for Arc<AuthThrottle> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.throttle)
    }
}

impl AppState {
    pub(crate) fn bus(&self) -> Result<&Bus, IngestError> {
        self.bus.get().ok_or_else(|| {
            IngestError::BusUnavailable("connector definitions not loaded yet".to_owned())
        })
    }
}

/// Fails fast while NATS is disconnected, rather than letting publishes
/// queue in the client until their acks time out.
pub(crate) fn ensure_connected(bus: &Bus) -> Result<(), IngestError> {
    match bus.client.connection_state() {
        State::Connected => Ok(()),
        state => Err(IngestError::BusUnavailable(format!("NATS is {state:?}"))),
    }
}

/// The largest encoded `RecordBatch`: the server's `max_payload` (which
/// counts headers too) less room for the headers.
pub(crate) fn chunk_limit(bus: &Bus) -> usize {
    let max_payload = match bus.client.server_info().max_payload {
        0 => 1024 * 1024,
        n => n,
    };
    max_payload
        .saturating_sub(batch::HEADROOM)
        .max(batch::HEADROOM)
}

impl Service {
    /// Connects to NATS, makes sure the streams and the bucket exist, and
    /// starts watching the bucket. If NATS does not answer, the service
    /// still starts (not ready, answering 503) and keeps trying (see
    /// `sluice_runtime::startup`).
    pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Service> {
        let limiter = Arc::new(RateLimiter::new(settings.default_limits));
        let joining = (
            Arc::clone(&limiter),
            settings.namespace.clone(),
            shutdown.clone(),
        );
        let bus = startup::start_bus(
            &settings,
            "sluice-ingest",
            shutdown.clone(),
            // Besides the catalog, the gateway needs only to know how many
            // gateways share the rate limits.
            Box::new(move |bus| {
                let (limiter, namespace, shutdown) = joining.clone();
                async move {
                    limiter
                        .join_replicas(&bus.js, &namespace, bus.layout.replicas, "ingest", shutdown)
                        .await
                }
                .boxed()
            }),
        )
        .await?; // BusError names the URL and, for an old server, the fix
        let admin = settings
            .admin_token
            .as_ref()
            .map(|token| TokenHash::of(token.expose_secret()));
        Ok(Service {
            state: AppState {
                bus,
                namespace: settings.namespace,
                admin,
                max_body_bytes: settings.max_body_bytes,
                recent: Arc::new(RecentAnswers::new(RECENT_ANSWERS)),
                validations: {
                    let cores = std::thread::available_parallelism().map_or(1, usize::from);
                    FairShare::new(cores, cores)
                },
                memory: FairShare::new(
                    settings.ingest_memory_bytes,
                    settings.ingest_memory_bytes / 2,
                ),
                throttle: Arc::new(AuthThrottle::new(&settings.auth_throttle)),
                limiter,
                shutdown,
            },
        })
    }
}

impl http::Served for Service {
    /// `POST /v1/connectors/{id}/records`, with state applied.
    fn router(&self) -> Router {
        records::router().with_state(self.state.clone())
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        ApiDoc::openapi()
    }

    /// NATS set up (the connector definitions loaded) and connected.
    async fn readiness(&self) -> Vec<(&'static str, bool)> {
        vec![("nats", self.state.bus.is_ready())]
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice ingest gateway",
        description = "Producers POST records to a connector's endpoint; they are validated against its schema and made durable in JetStream."
    ),
    paths(records::post_records),
    components(schemas(IngestAnswer)),
    modifiers(&BearerAuth),
    tags((name = "ingest", description = "Sending records"))
)]
struct ApiDoc;

/// The gateway bound to its listener, ready to run.
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

    /// Serves until shutdown, then lets in-flight requests finish.
    pub async fn run(self) -> anyhow::Result<()> {
        Ok(self.0.run().await?)
    }
}
