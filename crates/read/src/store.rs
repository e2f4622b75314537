//! The store loop: the records stream into PostgreSQL, each message exactly
//! once.
//!
//! Every replica pulls from one durable consumer, so more replicas store
//! more. The messages of one connector that arrive together are stored in
//! ONE transaction that also records their identities (batch and chunk,
//! [`ChunkId`]) in `applied_chunks`; they are acked only after that
//! commits. A crash anywhere before the ack redelivers them, and a
//! redelivery, or an idempotent retry that JetStream did not catch, finds
//! its identity applied and stores nothing twice. Stream sequences play no
//! part: a stream made again after its store was lost numbers its messages
//! from 1 again.
//!
//! `_id`s are allocated from the connector's `connector_stats` row, locked
//! FOR UPDATE until commit. Two writers of one connector therefore commit
//! one after the other, in `_id` order, and PostgreSQL makes a transaction
//! visible before it releases its locks: any snapshot that sees an `_id`
//! sees every smaller one. That is what lets a reader follow a cursor
//! without ever skipping a record (see `records`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sluice_runtime::bus::{ChunkId, Namespace, RecordBatch, RejectedRecord, StoredNotice, headers};
use sluice_schema::Schema;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::db::{self, IdCounters};
use crate::rows::{RecordInsert, Unstorable};

/// How long a delivered message may stay unacked before JetStream gives it
/// to another replica: far above the time one message takes to store.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages asked for per pull request.
const PULL_BATCH: usize = 32;
/// How long a pull request waits for messages; also bounds how long the
/// loop takes to notice shutdown while the stream is idle.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Connectors whose messages are stored at once, each in its own
/// transaction.
const STORE_CONCURRENCY: usize = 4;
/// The store loop's own connections, apart from the GET pool: one per
/// connector in flight, and one for the sampler.
const STORE_POOL_SIZE: u32 = STORE_CONCURRENCY as u32 + 1;
/// How often consumer lag is sampled and old applied chunks forgotten.
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
        consumer,
        ack_wait,
        hooks,
    };
    tasks.spawn(store.run(shutdown.clone()));
    tasks.spawn(sample_consumer(stream, consumer_name, pool, shutdown));
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
    consumer: PullConsumer,
    ack_wait: Duration,
    hooks: StoreHooks,
}

/// The messages of one connector taken from a pull together, in stream
/// order, stored in one transaction.
struct Group {
    connector: Uuid,
    messages: Vec<Delivered>,
}

/// A message as delivered, with what the store needs to know of it before
/// decoding it.
struct Delivered {
    message: jetstream::Message,
    sequence: u64,
    id: ChunkId,
}

/// What became of a group's messages.
enum Outcome {
    /// In the group's order: what each message stored now brought, or
    /// `None` for one whose chunk was applied before (acked again, nothing
    /// stored twice).
    Stored(Vec<Option<Stored>>),
    /// Its connector was deleted: acked and dropped.
    ConnectorGone,
}

struct Stored {
    /// The highest `_id` it stored, if it stored any record.
    last_id: Option<i64>,
    records: usize,
    rejected: usize,
}

#[derive(Debug, thiserror::Error)]
enum StoreError {
    /// Will never pass: the message goes to the dead-letter stream (a
    /// group is first split, to find which of its messages it is).
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

/// What the loop does after a group; the most severe of a pull's wins.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
            // the pull ends by itself within PULL_EXPIRES. Messages are
            // taken as they come, all those already here at once, so a busy
            // stream is stored many messages per transaction and a quiet one
            // without waiting for the pull to fill.
            let mut pull_failed = false;
            let mut chunks = messages
                .filter_map(|next| {
                    let message = match next {
                        Ok(message) => Some(message),
                        Err(error) => {
                            tracing::warn!(%error, "the records stream answered a pull with an error");
                            pull_failed = true;
                            None
                        }
                    };
                    std::future::ready(message)
                })
                .ready_chunks(PULL_BATCH);
            let mut flow = Flow::Next;
            let mut stored_any = false;
            while let Some(chunk) = chunks.next().await {
                if flow != Flow::Next {
                    // Hand it straight back for another replica, or for us
                    // after the pause.
                    for message in chunk {
                        let _ = message.ack_with(AckKind::Nak(Some(backoff.delay()))).await;
                    }
                    continue;
                }
                flow = self.store_chunk(chunk, pulled_at, &backoff).await;
                stored_any |= flow == Flow::Next;
            }
            drop(chunks);
            match flow {
                Flow::Crash => break,
                Flow::Next if stored_any => backoff.reset(),
                _ => {}
            }
            if flow == Flow::Retry || pull_failed {
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

    /// Stores the messages that arrived together: one group per connector,
    /// in stream order, the groups of different connectors side by side.
    async fn store_chunk(
        &self,
        chunk: Vec<jetstream::Message>,
        pulled_at: Instant,
        backoff: &Backoff,
    ) -> Flow {
        let mut worst = Flow::Next;
        let mut groups: Vec<Group> = Vec::new();
        for message in chunk {
            let sequence = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(error) => {
                    // Not a JetStream delivery: there is nothing to ack either.
                    tracing::warn!(%error, "ignoring a message without delivery info");
                    continue;
                }
            };
            let connector = message_connector(&message);
            let identity = match connector {
                Some(connector) => chunk_id(&message).map(|id| (connector, id)),
                None => Err(format!(
                    "the {} header is missing or is not a connector id",
                    headers::CONNECTOR_ID
                )),
            };
            let (connector, id) = match identity {
                Ok(identity) => identity,
                Err(reason) => {
                    // If the dead-letter stream refuses it, it is handed back
                    // and the loop pauses after this chunk; the others are
                    // stored.
                    let flow = self.reject(&message, connector, sequence, &reason, backoff);
                    worst = worst.max(flow.await);
                    continue;
                }
            };
            let delivered = Delivered {
                message,
                sequence,
                id,
            };
            match groups.iter_mut().find(|g| g.connector == connector) {
                Some(group) => group.messages.push(delivered),
                None => groups.push(Group {
                    connector,
                    messages: vec![delivered],
                }),
            }
        }
        futures::stream::iter(groups)
            .map(|group| self.handle(group, pulled_at, backoff))
            .buffer_unordered(STORE_CONCURRENCY)
            .fold(worst, |worst, flow| std::future::ready(worst.max(flow)))
            .await
    }

    #[tracing::instrument(skip_all, fields(
        connector = %group.connector,
        first_sequence = group.messages.first().map(|m| m.sequence),
        messages = group.messages.len(),
    ))]
    async fn handle(&self, group: Group, pulled_at: Instant, backoff: &Backoff) -> Flow {
        let started = Instant::now();
        let outcome = self.store(&group, pulled_at).await;
        let Group {
            connector,
            mut messages,
        } = group;
        match outcome {
            Ok(Outcome::Stored(stored)) => {
                if let Some(crash) = &self.hooks.crash_after_commit {
                    tracing::warn!("test hook: stopping after the commit, before the ack");
                    crash.notify_one();
                    return Flow::Crash;
                }
                // Committed: from here on a failure only means a redelivery,
                // which finds the chunks applied.
                for (delivered, stored) in messages.iter().zip(stored) {
                    let message = &delivered.message;
                    if let Err(error) = message.ack().await {
                        tracing::warn!(%error, "acking a stored message failed; it will come back and be skipped");
                    }
                    // A copy is announced too: its records are visible, and
                    // a retry with `wait=true` waits for this notice.
                    let notice = StoredNotice {
                        batch_id: delivered.id.batch_id,
                        chunk: delivered.id.chunk,
                        last_id: stored.as_ref().and_then(|s| s.last_id),
                    };
                    self.announce(connector, &notice).await;
                    let Some(stored) = stored else {
                        tracing::info!(
                            request_id = request_id(message),
                            batch_id = %delivered.id.batch_id,
                            chunk = delivered.id.chunk,
                            "the chunk was stored before; acked this copy"
                        );
                        metrics::counter!("sluice_read_messages_total", "outcome" => "duplicate")
                            .increment(1);
                        continue;
                    };
                    metrics::counter!("sluice_read_messages_total", "outcome" => "stored")
                        .increment(1);
                    metrics::counter!("sluice_read_records_stored_total")
                        .increment(stored.records as u64);
                    metrics::counter!("sluice_read_rejected_stored_total")
                        .increment(stored.rejected as u64);
                    metrics::histogram!("sluice_read_batch_records").record(stored.records as f64);
                }
                metrics::histogram!("sluice_read_store_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                Flow::Next
            }
            Ok(Outcome::ConnectorGone) => {
                for delivered in &messages {
                    let _ = delivered.message.ack().await;
                }
                metrics::counter!("sluice_read_messages_total", "outcome" => "connector_gone")
                    .increment(messages.len() as u64);
                Flow::Next
            }
            Err(StoreError::Unstorable(reason)) if messages.len() > 1 => {
                // One of them can never be stored: store each alone, so that
                // only that one is set aside.
                tracing::info!(%reason, "a group failed; storing its messages one by one");
                let mut flow = Flow::Next;
                for message in messages {
                    if flow != Flow::Next {
                        let _ = message
                            .message
                            .ack_with(AckKind::Nak(Some(backoff.delay())))
                            .await;
                        continue;
                    }
                    let alone = Group {
                        connector,
                        messages: vec![message],
                    };
                    flow = Box::pin(self.handle(alone, pulled_at, backoff)).await;
                }
                flow
            }
            Err(StoreError::Unstorable(reason)) => {
                let delivered = messages.pop().expect("a group has a message");
                self.reject(
                    &delivered.message,
                    Some(connector),
                    delivered.sequence,
                    &reason,
                    backoff,
                )
                .await
            }
            Err(error @ (StoreError::Transient(_) | StoreError::Late)) => {
                tracing::warn!(%error, "storing failed; the messages will be redelivered");
                for delivered in &messages {
                    let _ = delivered
                        .message
                        .ack_with(AckKind::Nak(Some(backoff.delay())))
                        .await;
                }
                metrics::counter!("sluice_read_messages_total", "outcome" => "retry")
                    .increment(messages.len() as u64);
                Flow::Retry
            }
        }
    }

    /// Moves a message that can never be stored to the dead-letter stream
    /// and acks it; if that stream does not take it, hands it back.
    async fn reject(
        &self,
        message: &jetstream::Message,
        connector: Option<Uuid>,
        sequence: u64,
        reason: &str,
        backoff: &Backoff,
    ) -> Flow {
        tracing::error!(
            %reason,
            sequence,
            request_id = request_id(message),
            "message can never be stored; moving it to the dead-letter stream"
        );
        match self.dead_letter(message, connector, sequence, reason).await {
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

    /// The transaction of one group; see the module docs for why each step
    /// is where it is.
    async fn store(
        &self,
        group: &Group,
        // No later than JetStream's delivery of these copies.
        received: Instant,
    ) -> Result<Outcome, StoreError> {
        let ids: Vec<ChunkId> = group.messages.iter().map(|m| m.id).collect();
        let mut tx = self.pool.begin().await?;
        let mut applied_now = db::mark_applied(&mut tx, group.connector, &ids).await?;
        // `None` for a message stored before: acked again, stored never twice.
        let mut stored: Vec<Option<Stored>> = group.messages.iter().map(|_| None).collect();
        if applied_now.is_empty() {
            return Ok(Outcome::Stored(stored));
        }
        // Applied chunks are forgotten once no copy can come any more
        // (`sample_consumer`). A copy held past its ack wait may have been
        // redelivered, stored and acked meanwhile, and then no longer count
        // as held: drop it. JetStream redelivers no sooner than the ack
        // wait after it delivered this copy, which was after `received`;
        // until then no other copy can have been stored, and from this
        // check on a redelivered copy blocks on our applied row until we
        // commit.
        if received.elapsed() >= self.ack_wait * 9 / 10 {
            return Err(StoreError::Late);
        }
        // The connectors row before the stats row: the control plane's lock
        // order (see `db`), which a deletion also follows.
        let Some(schema) = db::share_connector_schema(&mut tx, group.connector).await? else {
            return Ok(Outcome::ConnectorGone);
        };
        let Some(counters) = db::lock_counters(&mut tx, group.connector).await? else {
            return Ok(Outcome::ConnectorGone);
        };
        // Each message is decoded and encoded on a blocking thread while
        // the one before it is written, so the CPU and PostgreSQL work side
        // by side. A message's first id follows from the one before it.
        let schema = Arc::new(schema);
        let start_preparing = |index: usize, first_id: i64| {
            let delivered = &group.messages[index];
            let (payload, id) = (delivered.message.payload.clone(), delivered.id);
            let schema = Arc::clone(&schema);
            tokio::task::spawn_blocking(move || prepare(&schema, &payload, id, first_id))
        };
        // The first of two copies of one chunk in this group is stored.
        let fresh: Vec<usize> = (0..ids.len())
            .filter(|&i| {
                let first = applied_now.iter().position(|id| *id == ids[i]);
                first.map(|at| applied_now.swap_remove(at)).is_some()
            })
            .collect();
        let mut next = counters;
        let mut last_received_at = None;
        let mut preparing = Some(start_preparing(fresh[0], next.last_record_id + 1));
        for (k, &index) in fresh.iter().enumerate() {
            let handle = preparing
                .take()
                .expect("each fresh message is being prepared");
            // A panic there would recur on every delivery: dead-letter it.
            let prepared = handle.await.map_err(|e| {
                StoreError::Unstorable(format!("preparing the batch failed: {e}"))
            })??;
            let first_rejected = next.last_rejected_id + 1;
            next = IdCounters {
                last_record_id: next.last_record_id + prepared.records as i64,
                last_rejected_id: next.last_rejected_id + prepared.rejected.len() as i64,
            };
            if let Some(&following) = fresh.get(k + 1) {
                preparing = Some(start_preparing(following, next.last_record_id + 1));
            }
            db::insert_records(&mut tx, group.connector, prepared.insert).await?;
            db::insert_rejected(
                &mut tx,
                group.connector,
                prepared.received_at,
                &prepared.rejected,
                first_rejected,
            )
            .await?;
            last_received_at = last_received_at.max(Some(prepared.received_at));
            stored[index] = Some(Stored {
                last_id: (prepared.records > 0).then_some(next.last_record_id),
                records: prepared.records,
                rejected: prepared.rejected.len(),
            });
        }
        db::advance_stats(&mut tx, group.connector, counters, next, last_received_at).await?;
        tx.commit().await?;
        Ok(Outcome::Stored(stored))
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

/// The ingest request's id, so that its logs and ours can be joined.
fn request_id(message: &jetstream::Message) -> Option<&str> {
    Some(message.headers.as_ref()?.get(headers::REQUEST_ID)?.as_str())
}

/// A message decoded and laid out for the records table.
struct Prepared {
    insert: RecordInsert,
    records: usize,
    rejected: Vec<RejectedRecord>,
    received_at: DateTime<Utc>,
}

/// The CPU work of storing a message known as `id`, with its rows' ids from
/// `first_id`.
fn prepare(
    schema: &Schema,
    payload: &[u8],
    id: ChunkId,
    first_id: i64,
) -> Result<Prepared, Unstorable> {
    let mut batch = serde_json::from_slice::<RecordBatch>(payload)
        .map_err(|e| Unstorable(format!("the payload is not a record batch: {e}")))?;
    if (ChunkId {
        batch_id: batch.batch_id,
        chunk: batch.chunk,
    }) != id
    {
        // Stored under the wrong identity, it could be taken for another.
        return Err(Unstorable(format!(
            "the payload is chunk {} of batch {}, its headers say chunk {} of batch {}",
            batch.chunk, batch.batch_id, id.chunk, id.batch_id
        )));
    }
    let rejected = std::mem::take(&mut batch.rejected);
    let (records, received_at) = (batch.rows, batch.received_at);
    Ok(Prepared {
        insert: RecordInsert::plan(schema, batch, first_id)?,
        records,
        rejected,
        received_at,
    })
}

/// The identity of a message: from its headers, or else from its payload
/// (a message from a gateway that did not send the chunk header yet).
fn chunk_id(message: &jetstream::Message) -> Result<ChunkId, String> {
    if let Some(id) = ChunkId::from_headers(message.headers.as_ref()) {
        return Ok(id);
    }
    #[derive(serde::Deserialize)]
    struct Identity {
        batch_id: Uuid,
        chunk: u32,
    }
    serde_json::from_slice::<Identity>(&message.payload)
        .map(|i| ChunkId {
            batch_id: i.batch_id,
            chunk: i.chunk,
        })
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

/// Publishes the consumer's lag as metrics, and forgets applied chunks of
/// which no copy can come any more, so `applied_chunks` stays small. Every
/// replica does it; both are idempotent.
async fn sample_consumer(
    mut stream: stream::Stream,
    consumer: String,
    pool: PgPool,
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
        // A work queue deletes what is acked: its first message is the
        // oldest one not yet stored.
        let oldest_held = match stream.info().await {
            Ok(info) if info.state.messages > 0 => {
                let first = info.state.first_timestamp;
                DateTime::from_timestamp(first.unix_timestamp(), first.nanosecond())
                    .unwrap_or_else(Utc::now)
            }
            Ok(_) => Utc::now(),
            Err(error) => {
                tracing::debug!(%error, "reading the records stream's state failed");
                continue;
            }
        };
        if let Err(error) = db::forget_applied(&pool, oldest_held).await {
            tracing::debug!(%error, "forgetting applied chunks failed");
        }
    }
}
