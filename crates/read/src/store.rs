//! The store loop: the records stream into PostgreSQL, each message exactly
//! once.
//!
//! Every replica pulls from one durable consumer, so more replicas store
//! more. A message is stored in ONE transaction that also records its
//! stream sequence in `applied_messages`; it is acked only after that
//! commits. A crash anywhere before the ack redelivers the message, and the
//! redelivery finds its sequence applied and stores nothing twice.
//!
//! `_id`s are allocated from the connector's `connector_stats` row, locked
//! FOR UPDATE until commit. Two writers of one connector therefore commit
//! one after the other, in `_id` order, and PostgreSQL makes a transaction
//! visible before it releases its locks: any snapshot that sees an `_id`
//! sees every smaller one. That is what lets a reader follow a cursor
//! without ever skipping a record (see `records`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use sluice_runtime::bus::{Namespace, RecordBatch, StoredNotice, headers};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::db::{self, IdCounters, RecordInsert, Unstorable};

/// How long a delivered message may stay unacked before JetStream gives it
/// to another replica: far above the time one message takes to store.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages asked for per pull request.
const PULL_BATCH: usize = 32;
/// How long a pull request waits for messages; also bounds how long the
/// loop takes to notice shutdown while the stream is idle.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Messages of one pull stored at once, each in its own transaction.
const STORE_CONCURRENCY: usize = 4;
/// The store loop's own connections, apart from the GET pool: one per
/// message in flight, and one for the sampler.
const STORE_POOL_SIZE: u32 = STORE_CONCURRENCY as u32 + 1;
/// How often consumer lag is sampled and old applied sequences forgotten.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Headers added to a message sent to the dead-letter stream.
pub(crate) mod dead_letter_headers {
    pub const REASON: &str = "Sluice-Dead-Letter-Reason";
    pub const ORIGINAL_SUBJECT: &str = "Sluice-Original-Subject";
    pub const ORIGINAL_SEQUENCE: &str = "Sluice-Original-Sequence";
}

/// Knobs for tests that simulate crashes; production uses the defaults.
#[doc(hidden)]
#[derive(Debug, Default, Clone)]
pub struct StoreHooks {
    /// The consumer's ack wait when this process creates it (default 30 s),
    /// so a test can see a redelivery without waiting half a minute.
    pub ack_wait: Option<Duration>,
    /// When set, the loop behaves as if the process died right after its
    /// first commit: it notifies this, acks nothing, and stops consuming.
    pub crash_after_commit: Option<Arc<Notify>>,
}

/// Starts the store loop and the consumer sampler on `tasks`.
pub(crate) async fn start(
    tasks: &TaskTracker,
    api_pool: &PgPool,
    nats: async_nats::Client,
    js: jetstream::Context,
    namespace: Namespace,
    shutdown: CancellationToken,
    hooks: StoreHooks,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(STORE_POOL_SIZE)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with((*api_pool.connect_options()).clone());
    let stream_name = namespace.records_stream();
    let stream = js.get_stream(&stream_name).await?;
    let ack_wait = hooks.ack_wait.unwrap_or(ACK_WAIT);
    let consumer_name = namespace.store_consumer();
    let consumer = attach_consumer(&stream, &namespace, ack_wait).await?;
    let store = Store {
        stream: stream.clone(),
        pool: pool.clone(),
        nats,
        js,
        namespace,
        stream_name: stream_name.clone(),
        consumer,
        ack_wait,
        hooks,
    };
    tasks.spawn(store.run(shutdown.clone()));
    tasks.spawn(sample_consumer(
        stream,
        consumer_name,
        pool,
        stream_name,
        shutdown,
    ));
    Ok(())
}

/// Gets the shared consumer, creating it if it does not exist. The records
/// stream is a work queue: a message leaves it once acked, so a consumer
/// made again after being lost starts from what is left, never replaying
/// what was stored (and JetStream only allows "deliver all" on such a
/// stream anyway).
async fn attach_consumer(
    stream: &stream::Stream,
    namespace: &Namespace,
    ack_wait: Duration,
) -> anyhow::Result<PullConsumer> {
    let name = namespace.store_consumer();
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some("Sluice read API: stores records in PostgreSQL".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        // Never give up on a message: transient failures (PostgreSQL down)
        // retry until they pass, and messages that can never be stored are
        // moved to the dead-letter stream, not retried.
        max_deliver: -1,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(&name, config).await?)
}

struct Store {
    stream: stream::Stream,
    pool: PgPool,
    nats: async_nats::Client,
    js: jetstream::Context,
    namespace: Namespace,
    stream_name: String,
    consumer: PullConsumer,
    ack_wait: Duration,
    hooks: StoreHooks,
}

/// What became of one message.
enum Outcome {
    Stored {
        connector: Uuid,
        notice: StoredNotice,
        records: usize,
        rejected: usize,
    },
    /// Its sequence was applied before: acked, nothing stored twice.
    AlreadyStored,
    /// Its connector was deleted: acked and dropped.
    ConnectorGone,
}

#[derive(Debug, thiserror::Error)]
enum StoreError {
    /// Will never pass: the message goes to the dead-letter stream.
    #[error("{0}")]
    Unstorable(String),
    /// May pass later (PostgreSQL down, a deadlock): redelivered.
    #[error(transparent)]
    Transient(sqlx::Error),
    /// Held so long that JetStream may have redelivered it to another
    /// replica; that copy will store it.
    #[error("the message was held for nearly its ack wait")]
    Late,
}

impl From<sqlx::Error> for StoreError {
    /// PostgreSQL refusing the data itself (class 22, data exceptions, such
    /// as a NUL character in text; 23, integrity; 42, a statement that does
    /// not fit the table) will refuse it on every retry. A missing table
    /// (42P01) may be a deletion racing with us, so it is retried, and the
    /// retry finds the connector gone.
    fn from(error: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(e) = &error {
            let code = e.code().unwrap_or_default();
            if code != "42P01"
                && (code.starts_with("22") || code.starts_with("23") || code.starts_with("42"))
            {
                return StoreError::Unstorable(format!(
                    "PostgreSQL refused the batch ({code}): {}",
                    e.message()
                ));
            }
        }
        StoreError::Transient(error)
    }
}

impl From<Unstorable> for StoreError {
    fn from(e: Unstorable) -> StoreError {
        StoreError::Unstorable(e.0)
    }
}

/// What the loop does after a message.
enum Flow {
    Next,
    /// A transient failure: hand back the rest of this pull and pause.
    Retry,
    /// The crash hook fired.
    Crash,
}

impl Store {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let pulled_at = Instant::now();
            let pull = tokio::select! {
                _ = shutdown.cancelled() => break,
                pull = self.consumer.batch().max_messages(PULL_BATCH).expires(self.pull_expires()).messages() => pull,
            };
            let messages = match pull {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "pulling from the records stream failed");
                    backoff.pause(&shutdown).await;
                    self.reattach().await;
                    continue;
                }
            };
            // What this pull brings is stored even once shutdown has begun:
            // the pull ends by itself within PULL_EXPIRES. Its messages are
            // stored a few at a time, each in its own transaction, but those
            // of one connector in stream order (each waits its turn in its
            // connector's lane), so one replica gives ids in arrival order.
            let lanes: std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>> =
                Default::default();
            let retrying = AtomicBool::new(false);
            let crashed = AtomicBool::new(false);
            let pull_failed = AtomicBool::new(false);
            let stored_any = AtomicBool::new(false);
            messages
                .filter_map(|next| {
                    let message = match next {
                        Ok(message) => Some(message),
                        Err(error) => {
                            tracing::warn!(%error, "the records stream answered a pull with an error");
                            pull_failed.store(true, Ordering::Relaxed);
                            None
                        }
                    };
                    std::future::ready(message)
                })
                .for_each_concurrent(STORE_CONCURRENCY, |message| async {
                    let lane = message_connector(&message).map(|connector| {
                        let mut lanes = lanes.lock().unwrap_or_else(|e| e.into_inner());
                        lanes.entry(connector).or_default().clone()
                    });
                    // tokio's mutex is fair: turns come in the order asked.
                    let _turn = match &lane {
                        Some(lane) => Some(lane.lock().await),
                        None => None,
                    };
                    if retrying.load(Ordering::Relaxed) || crashed.load(Ordering::Relaxed) {
                        // Hand it straight back for another replica, or for
                        // us after the pause.
                        let _ = message.ack_with(AckKind::Nak(Some(backoff.delay()))).await;
                        return;
                    }
                    match self.handle(message, pulled_at, &backoff).await {
                        Flow::Next => stored_any.store(true, Ordering::Relaxed),
                        Flow::Retry => retrying.store(true, Ordering::Relaxed),
                        Flow::Crash => crashed.store(true, Ordering::Relaxed),
                    }
                })
                .await;
            if crashed.into_inner() {
                break;
            }
            let (retrying, pull_failed) = (retrying.into_inner(), pull_failed.into_inner());
            if stored_any.into_inner() && !retrying {
                backoff.reset();
            }
            if retrying || pull_failed {
                backoff.pause(&shutdown).await;
            }
            if pull_failed {
                self.reattach().await;
            }
        }
        tracing::info!("store loop stopped");
    }

    /// Gets the consumer again, creating it if it is gone (deleted by hand,
    /// or lost with a NATS server that kept no state), so the loop heals
    /// instead of failing every pull.
    async fn reattach(&mut self) {
        match attach_consumer(&self.stream, &self.namespace, self.ack_wait).await {
            Ok(consumer) => self.consumer = consumer,
            Err(error) => tracing::warn!(%error, "the store consumer is unavailable"),
        }
    }

    /// A pull waits at most a quarter of the ack wait, so that a message it
    /// brings is always well within its ack wait when storing begins (see
    /// `StoreError::Late`).
    fn pull_expires(&self) -> Duration {
        PULL_EXPIRES.min(self.ack_wait / 4)
    }

    #[tracing::instrument(skip_all, fields(sequence, connector, request_id))]
    async fn handle(
        &self,
        message: jetstream::Message,
        pulled_at: Instant,
        backoff: &Backoff,
    ) -> Flow {
        let started = Instant::now();
        let sequence = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(error) => {
                // Not a JetStream delivery: there is nothing to ack either.
                tracing::warn!(%error, "ignoring a message without delivery info");
                return Flow::Next;
            }
        };
        tracing::Span::current().record("sequence", sequence);
        // The ingest request's id, so its logs and ours can be joined.
        if let Some(id) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::REQUEST_ID))
        {
            tracing::Span::current().record("request_id", id.as_str());
        }
        let connector = message_connector(&message);
        if let Some(connector) = connector {
            tracing::Span::current().record("connector", tracing::field::display(connector));
        }
        let outcome = match (connector, decode_batch(&message)) {
            (None, _) => Err(StoreError::Unstorable(format!(
                "the {} header is missing or is not a connector id",
                headers::CONNECTOR_ID
            ))),
            (_, Err(reason)) => Err(StoreError::Unstorable(reason)),
            (Some(connector), Ok(batch)) => self.store(connector, sequence, batch, pulled_at).await,
        };
        match outcome {
            Ok(Outcome::Stored {
                connector,
                notice,
                records,
                rejected,
            }) => {
                if let Some(crash) = &self.hooks.crash_after_commit {
                    tracing::warn!("test hook: stopping after the commit, before the ack");
                    crash.notify_one();
                    return Flow::Crash;
                }
                // Committed: from here on a failure only means a redelivery,
                // which finds the sequence applied.
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "acking a stored message failed; it will come back and be skipped");
                }
                self.announce(connector, &notice).await;
                metrics::counter!("sluice_read_messages_total", "outcome" => "stored").increment(1);
                metrics::counter!("sluice_read_records_stored_total").increment(records as u64);
                metrics::counter!("sluice_read_rejected_stored_total").increment(rejected as u64);
                metrics::histogram!("sluice_read_batch_records").record(records as f64);
                metrics::histogram!("sluice_read_store_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                Flow::Next
            }
            Ok(Outcome::AlreadyStored) => {
                tracing::info!("message was stored before; acking it again");
                let _ = message.ack().await;
                metrics::counter!("sluice_read_messages_total", "outcome" => "duplicate")
                    .increment(1);
                Flow::Next
            }
            Ok(Outcome::ConnectorGone) => {
                let _ = message.ack().await;
                metrics::counter!("sluice_read_messages_total", "outcome" => "connector_gone")
                    .increment(1);
                Flow::Next
            }
            Err(StoreError::Unstorable(reason)) => {
                tracing::error!(%reason, "message can never be stored; moving it to the dead-letter stream");
                match self
                    .dead_letter(&message, connector, sequence, &reason)
                    .await
                {
                    Ok(()) => {
                        let _ = message.ack().await;
                        metrics::counter!("sluice_read_dead_letters_total").increment(1);
                        metrics::counter!("sluice_read_messages_total", "outcome" => "dead_letter")
                            .increment(1);
                        Flow::Next
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the dead-letter stream did not take the message; retrying later");
                        let _ = message.ack_with(AckKind::Nak(Some(backoff.delay()))).await;
                        Flow::Retry
                    }
                }
            }
            Err(error @ (StoreError::Transient(_) | StoreError::Late)) => {
                tracing::warn!(%error, "storing failed; the message will be redelivered");
                let _ = message.ack_with(AckKind::Nak(Some(backoff.delay()))).await;
                metrics::counter!("sluice_read_messages_total", "outcome" => "retry").increment(1);
                Flow::Retry
            }
        }
    }

    /// The transaction of one message; see the module docs for why each
    /// step is where it is.
    async fn store(
        &self,
        connector: Uuid,
        sequence: u64,
        mut batch: RecordBatch,
        // No later than JetStream's delivery of this copy.
        received: Instant,
    ) -> Result<Outcome, StoreError> {
        let sequence =
            i64::try_from(sequence).map_err(|_| Unstorable("sequence out of range".into()))?;
        let mut tx = self.pool.begin().await?;
        if !db::mark_applied(&mut tx, &self.stream_name, sequence).await? {
            return Ok(Outcome::AlreadyStored);
        }
        // Applied sequences are forgotten once acked (`sample_consumer`). A
        // copy held past its ack wait may have been redelivered, stored,
        // acked and forgotten meanwhile, and would then store twice: drop
        // it. JetStream redelivers no sooner than the ack wait after it
        // delivered this copy, which was after `received`; until then no
        // other copy can have been stored, and from this check on a
        // redelivered copy blocks on our applied row until we commit.
        if received.elapsed() >= self.ack_wait * 9 / 10 {
            return Err(StoreError::Late);
        }
        // The connectors row before the stats row: the control plane's lock
        // order (see `db`), which a deletion also follows.
        let Some(schema) = db::share_connector_schema(&mut tx, connector).await? else {
            return Ok(Outcome::ConnectorGone);
        };
        let Some(counters) = db::lock_counters(&mut tx, connector).await? else {
            return Ok(Outcome::ConnectorGone);
        };
        let records = batch.rows;
        let rejected = std::mem::take(&mut batch.rejected);
        let received_at = batch.received_at;
        let (batch_id, chunk) = (batch.batch_id, batch.chunk);
        let insert = RecordInsert::plan(connector, &schema, batch, counters.last_record_id + 1)?;
        insert.execute(&mut tx).await?;
        db::insert_rejected(
            &mut tx,
            connector,
            received_at,
            &rejected,
            counters.last_rejected_id + 1,
        )
        .await?;
        let advanced = IdCounters {
            last_record_id: counters.last_record_id + records as i64,
            last_rejected_id: counters.last_rejected_id + rejected.len() as i64,
        };
        db::advance_stats(
            &mut tx,
            connector,
            advanced,
            records as i64,
            rejected.len() as i64,
            received_at,
        )
        .await?;
        tx.commit().await?;
        Ok(Outcome::Stored {
            connector,
            notice: StoredNotice {
                batch_id,
                chunk,
                last_id: (records > 0).then_some(advanced.last_record_id),
            },
            records,
            rejected: rejected.len(),
        })
    }

    /// Tells waiting readers and gateways that the batch is visible. Core
    /// NATS, best effort: a lost notice only delays a long-poll.
    async fn announce(&self, connector: Uuid, notice: &StoredNotice) {
        let subject = self.namespace.stored_subject(connector);
        match serde_json::to_vec(notice) {
            Ok(payload) => {
                if let Err(error) = self.nats.publish(subject, payload.into()).await {
                    tracing::warn!(%error, "announcing a stored batch failed");
                }
            }
            Err(error) => tracing::warn!(%error, "encoding a stored notice failed"),
        }
    }

    /// Republishes `message` as it was, with the reason, on the dead-letter
    /// stream, and waits for JetStream to have it.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        connector: Option<Uuid>,
        sequence: u64,
        reason: &str,
    ) -> anyhow::Result<()> {
        let subject = self.namespace.dead_letter_subject(
            &connector.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        );
        let mut out = HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                // The dead-letter stream must keep every copy it is given.
                if AsRef::<str>::as_ref(name).eq_ignore_ascii_case("Nats-Msg-Id") {
                    continue;
                }
                for value in values {
                    out.append(name.clone(), value.clone());
                }
            }
        }
        out.insert(dead_letter_headers::REASON, header_text(reason));
        out.insert(
            dead_letter_headers::ORIGINAL_SUBJECT,
            header_text(message.subject.as_str()),
        );
        out.insert(dead_letter_headers::ORIGINAL_SEQUENCE, sequence.to_string());
        self.js
            .publish_with_headers(subject, out, message.payload.clone())
            .await?
            .await?;
        Ok(())
    }
}

/// The connector a message belongs to, from its header.
fn message_connector(message: &jetstream::Message) -> Option<Uuid> {
    message
        .headers
        .as_ref()?
        .get(headers::CONNECTOR_ID)?
        .as_str()
        .parse()
        .ok()
}

fn decode_batch(message: &jetstream::Message) -> Result<RecordBatch, String> {
    serde_json::from_slice::<RecordBatch>(&message.payload)
        .map_err(|e| format!("the payload is not a record batch: {e}"))
}

/// Header values may not hold line breaks; reasons are kept short.
fn header_text(text: &str) -> String {
    text.chars()
        .take(500)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The pause after a transient failure: 250 ms doubling to 5 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn delay(&self) -> Duration {
        Duration::from_millis(250 * 2u64.pow(self.failures.min(5))).min(Duration::from_secs(5))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    async fn pause(&mut self, shutdown: &CancellationToken) {
        let delay = self.delay();
        self.failures += 1;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Publishes the consumer's lag as metrics, and forgets applied sequences
/// that JetStream can no longer redeliver, so `applied_messages` stays
/// small. Every replica does it; both are idempotent.
async fn sample_consumer(
    stream: stream::Stream,
    consumer: String,
    pool: PgPool,
    stream_name: String,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let info = match stream.consumer_info(&consumer).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "sampling the store consumer failed");
                continue;
            }
        };
        metrics::gauge!("sluice_read_consumer_pending").set(info.num_pending as f64);
        metrics::gauge!("sluice_read_consumer_ack_pending").set(info.num_ack_pending as f64);
        let floor = i64::try_from(info.ack_floor.stream_sequence).unwrap_or(i64::MAX);
        if floor > 0
            && let Err(error) = db::forget_applied_up_to(&pool, &stream_name, floor).await
        {
            tracing::debug!(%error, "forgetting applied sequences failed");
        }
    }
}
