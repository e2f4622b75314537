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
//! Whatever a request holds in memory is reserved first from a budget shared
//! fairly between connectors (`budget`), so no body, however hostile, grows
//! the process past `SLUICE_INGEST_MEMORY_BYTES`.
//!
//! It must never touch PostgreSQL, nor keep state that another replica would
//! need: any number of gateways can serve the same connectors at once, and
//! they keep serving from their copy of the definitions while the control
//! plane is down. Deduplication of idempotent retries is JetStream's (see
//! `idempotency`), not this process's.

mod access;
mod batch;
mod body;
mod budget;
mod error;
mod idempotency;
mod publish;
mod records;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::connection::State;
use async_nats::jetstream;
use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use sluice_runtime::Settings;
use sluice_runtime::bus::{self, Namespace};
use sluice_runtime::catalog::Catalog;
use sluice_runtime::http::{self, BearerAuth};
use sluice_runtime::throttle::AuthThrottle;
use sluice_runtime::token::TokenHash;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::access::Definitions;
use crate::budget::FairShare;
use crate::error::IngestError;
use crate::idempotency::RecentAnswers;
use crate::records::IngestAnswer;

/// How long a JetStream request (a publish ack included) may take before the
/// request gets a 503.
const BUS_TIMEOUT: Duration = Duration::from_secs(5);

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
    client: async_nats::Client,
    js: jetstream::Context,
    namespace: Namespace,
    /// Set once the streams exist and the bucket is loaded; until then
    /// (NATS down at start) every request is a 503.
    definitions: Arc<OnceLock<Definitions>>,
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
    shutdown: CancellationToken,
}

impl FromRef<AppState> for Arc<AuthThrottle> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.throttle)
    }
}

impl AppState {
    pub(crate) fn definitions(&self) -> Result<&Definitions, IngestError> {
        self.definitions.get().ok_or_else(|| {
            IngestError::BusUnavailable("connector definitions not loaded yet".to_owned())
        })
    }

    /// Fails fast while NATS is disconnected, rather than letting publishes
    /// queue in the client until their acks time out.
    pub(crate) fn ensure_connected(&self) -> Result<(), IngestError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(IngestError::BusUnavailable(format!("NATS is {state:?}"))),
        }
    }

    /// The largest encoded `RecordBatch`: the server's `max_payload` (which
    /// counts headers too) less room for the headers.
    pub(crate) fn chunk_limit(&self) -> usize {
        let max_payload = match self.client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        };
        max_payload
            .saturating_sub(batch::HEADROOM)
            .max(batch::HEADROOM)
    }
}

impl Service {
    /// Connects to NATS, makes sure the streams and the bucket exist, and
    /// starts watching the bucket. If NATS does not answer, the service
    /// still starts (not ready, answering 503) and keeps trying.
    pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Service> {
        let client = bus::connect(&settings.nats_url, "sluice-ingest").await?; // BusError names the URL and, for an old server, the fix
        let js = bus::jetstream(client.clone(), BUS_TIMEOUT);
        let definitions = Arc::new(OnceLock::new());
        let setup = Setup {
            js: js.clone(),
            namespace: settings.namespace.clone(),
            stream_max_bytes: settings.stream_max_bytes,
            shutdown: shutdown.clone(),
        };
        // The client connects in the background; when NATS does not answer
        // at once, start unready rather than block for the bus timeout.
        let connected = wait_for_connection(&client, Duration::from_secs(2)).await;
        let opened = if connected {
            setup.open_catalog().await
        } else {
            // Not naming the URL: it may hold credentials.
            Err(anyhow::anyhow!("NATS does not answer yet"))
        };
        match opened {
            Ok(loaded) => {
                let _ = definitions.set(loaded);
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "NATS not ready; retrying in the background"
                );
                let slot = Arc::clone(&definitions);
                tokio::spawn(async move { setup.retry_until_open(slot).await });
            }
        }
        let admin = settings
            .admin_token
            .as_ref()
            .map(|token| TokenHash::of(token.expose_secret()));
        Ok(Service {
            state: AppState {
                client,
                js,
                namespace: settings.namespace,
                definitions,
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

    /// NATS connected, and the connector definitions loaded.
    async fn readiness(&self) -> Vec<(&'static str, bool)> {
        vec![
            (
                "nats",
                self.state.client.connection_state() == State::Connected,
            ),
            ("connectors", self.state.definitions.get().is_some()),
        ]
    }
}

async fn wait_for_connection(client: &async_nats::Client, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while client.connection_state() != State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

struct Setup {
    js: jetstream::Context,
    namespace: Namespace,
    stream_max_bytes: Option<i64>,
    shutdown: CancellationToken,
}

impl Setup {
    async fn open_catalog(&self) -> anyhow::Result<Definitions> {
        bus::ensure_streams(&self.js, &self.namespace, self.stream_max_bytes)
            .await
            .context("creating the streams")?;
        let bucket = bus::connectors_bucket(&self.js, &self.namespace)
            .await
            .context("opening the connectors bucket")?;
        let catalog = Catalog::start(bucket.clone(), self.shutdown.clone())
            .await
            .context("loading the connectors")?;
        Ok(Definitions { catalog, bucket })
    }

    async fn retry_until_open(self, slot: Arc<OnceLock<Definitions>>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            match self.open_catalog().await {
                Ok(definitions) => {
                    let _ = slot.set(definitions);
                    tracing::info!("connected to NATS; connector definitions loaded");
                    return;
                }
                Err(error) => tracing::warn!(error = format!("{error:#}"), "NATS still not ready"),
            }
        }
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
