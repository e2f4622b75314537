//! A service's NATS side brought up, the same way in every service: connect
//! (refusing a server older than [`bus::MINIMUM_NATS`]), make sure the
//! streams and the connectors bucket exist, load the connector catalog, then
//! the service's own last step (the control plane reconciles the bucket, the
//! read API attaches its consumer).
//!
//! NATS need not be up first. [`start_bus`] makes one attempt while its
//! caller waits; if a step fails, the service starts anyway, not ready
//! (`/readyz` answers 503, and routes that need the bus answer 503), and the
//! steps are retried in the background with a growing pause, each failure
//! logged at warn with its cause, until they all succeed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, kv};
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::bus::{self, BusError, Namespace, StreamLayout};
use crate::catalog::Catalog;
use crate::token_use;

/// How long a JetStream request (a publish ack, a bucket write) may take
/// before it fails, so that a slow or absent server becomes a 503, not a
/// hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause after the first failed attempt, doubled after each further
/// one up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// What a service holds of NATS once it is set up.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    /// Requests give up after [`REQUEST_TIMEOUT`].
    pub js: jetstream::Context,
    pub bucket: kv::Store,
    /// The operator tokens' bucket (see [`bus::OperatorTokensDoc`]).
    pub operators: kv::Store,
    pub catalog: Catalog,
    /// How the streams and buckets are laid out: a service that makes a
    /// bucket of its own gives it `layout.replicas` copies too.
    pub layout: StreamLayout,
}

impl Bus {
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

/// A service's [`Bus`]: empty until [`start_bus`] has set it up.
#[derive(Clone, Default)]
pub struct BusSlot(Arc<OnceLock<Bus>>);

impl BusSlot {
    pub fn get(&self) -> Option<&Bus> {
        self.0.get()
    }

    /// The `nats` readiness check of every service: set up, and connected
    /// now.
    pub fn is_ready(&self) -> bool {
        self.get().is_some_and(Bus::is_connected)
    }
}

/// A service's own last step of start-up, run on the set-up bus and retried
/// like the steps before it until it succeeds.
pub type LastStep = Box<dyn FnMut(Bus) -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// Sets up the bus of the service `name` (its NATS client's name) with
/// `last_step` as its final step, retrying until it is done or `shutdown`.
///
/// Returns after the first attempt: with the slot filled if it succeeded,
/// empty (to be filled in the background) if NATS did not answer or a step
/// failed, and with [`BusError::TooOld`] if the server is too old, which no
/// retry can mend. A too old server found by a later attempt stops the
/// service: it is logged and `shutdown` is cancelled.
pub async fn start_bus(
    settings: &Settings,
    name: &'static str,
    shutdown: CancellationToken,
    last_step: LastStep,
) -> Result<BusSlot, BusError> {
    let slot = BusSlot::default();
    let (first_attempt, first_outcome) = oneshot::channel();
    let startup = Startup {
        url: settings.nats_url.clone(),
        name,
        namespace: settings.namespace.clone(),
        layout: StreamLayout {
            max_bytes: settings.stream_max_bytes,
            replicas: settings.stream_replicas,
        },
        token_use_interval: settings.token_use_interval,
        shutdown,
        first_attempt: Some(first_attempt),
    };
    tokio::spawn(startup.run(slot.clone(), last_step));
    match first_outcome.await {
        Ok(Err(too_old)) => Err(too_old),
        // Set up, still retrying, or shut down meanwhile.
        Ok(Ok(())) | Err(_) => Ok(slot),
    }
}

struct Startup {
    url: String,
    name: &'static str,
    namespace: Namespace,
    layout: StreamLayout,
    token_use_interval: Duration,
    shutdown: CancellationToken,
    /// Told once: the first attempt's outcome, which [`start_bus`] awaits.
    first_attempt: Option<oneshot::Sender<Result<(), BusError>>>,
}

/// Why a step failed.
enum Failure {
    /// A server too old: no retry can mend it.
    Fatal(BusError),
    Retry(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Retry(error)
    }
}

/// Why start-up ended without a bus.
enum Stopped {
    Fatal(BusError),
    ShutDown,
}

impl Startup {
    async fn run(mut self, slot: BusSlot, last_step: LastStep) {
        match self.set_up(last_step).await {
            Ok(bus) => {
                let _ = slot.0.set(bus);
                tracing::info!("connected to NATS; streams, bucket and connectors ready");
                self.tell_first_attempt(Ok(()));
            }
            Err(Stopped::ShutDown) => {}
            Err(Stopped::Fatal(error)) => match self.first_attempt.take() {
                Some(first) => {
                    let _ = first.send(Err(error));
                }
                None => {
                    // The service has been running, unready, since an
                    // earlier attempt failed: an old server is no less
                    // final now, so the service stops, saying why.
                    tracing::error!("{error}");
                    self.shutdown.cancel();
                }
            },
        }
    }

    async fn set_up(&mut self, mut last_step: LastStep) -> Result<Bus, Stopped> {
        let url = self.url.clone();
        let (url, name) = (&url, self.name);
        let client = self
            .retry("connecting to NATS", || async move {
                bus::connect(url, name).await.map_err(|error| match error {
                    BusError::TooOld { .. } => Failure::Fatal(error),
                    // Its own text names the cause already; its chain
                    // would only repeat it in the log line.
                    BusError::Connect { .. } => Failure::Retry(anyhow::anyhow!("{error}")),
                })
            })
            .await?;
        let js = &bus::jetstream(client.clone(), REQUEST_TIMEOUT);
        let (namespace, shutdown) = (self.namespace.clone(), self.shutdown.clone());
        let (namespace, shutdown, layout) = (&namespace, &shutdown, self.layout);
        let (bucket, operators, catalog) = self
            .retry(
                "creating the streams and loading the connectors",
                || async move {
                    bus::ensure_streams(js, namespace, layout).await?;
                    let bucket = bus::connectors_bucket(js, namespace, layout.replicas).await?;
                    let operators = bus::operators_bucket(js, namespace, layout.replicas).await?;
                    let catalog =
                        Catalog::start(bucket.clone(), operators.clone(), shutdown.clone()).await?;
                    anyhow::Ok((bucket, operators, catalog))
                },
            )
            .await?;
        tokio::spawn(token_use::report_uses(
            catalog.uses(),
            client.clone(),
            namespace.token_uses_subject(),
            self.token_use_interval,
            shutdown.clone(),
        ));
        let bus = Bus {
            client,
            js: js.clone(),
            bucket,
            operators,
            catalog,
            layout,
        };
        self.retry("the service's last start-up step", || {
            last_step(bus.clone())
        })
        .await?;
        Ok(bus)
    }

    /// Runs `attempt` until it succeeds, pausing longer after each failure.
    async fn retry<T, E: Into<Failure>, F: Future<Output = Result<T, E>>>(
        &mut self,
        step: &'static str,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, Stopped> {
        let mut pause = FIRST_PAUSE;
        loop {
            let outcome = tokio::select! {
                () = self.shutdown.cancelled() => return Err(Stopped::ShutDown),
                outcome = attempt() => outcome,
            };
            let error = match outcome.map_err(Into::into) {
                Ok(done) => return Ok(done),
                Err(Failure::Fatal(error)) => return Err(Stopped::Fatal(error)),
                Err(Failure::Retry(error)) => error,
            };
            tracing::warn!(
                step,
                error = format!("{error:#}"),
                retry_in = ?pause,
                "NATS start-up failed; the service is not ready and retries"
            );
            self.tell_first_attempt(Ok(()));
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Stopped::ShutDown),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    fn tell_first_attempt(&mut self, outcome: Result<(), BusError>) {
        if let Some(first) = self.first_attempt.take() {
            let _ = first.send(outcome);
        }
    }
}
