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

mod commit;
mod consumer;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use sluice_runtime::bus::Namespace;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db;
use consumer::Store;

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
