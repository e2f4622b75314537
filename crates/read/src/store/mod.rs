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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use sluice_runtime::backlog::{self, Backlog, Connectors};
use sluice_runtime::bus::Namespace;
use sluice_runtime::startup::Bus;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::db;
use crate::partitions::PartitionCache;
use consumer::{Puller, Store};

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
/// Messages a group waiting for its turn may gather, from several pulls:
/// a bound on one transaction's size.
const GROUP_MAX_MESSAGES: usize = 2 * PULL_BATCH;
/// Messages held at once, being stored or waiting for the group before
/// them of their connector (about 170 KiB each at 1 000 records): room for
/// a connector's group being stored and its next one full.
const MESSAGES_HELD: usize = 2 * GROUP_MAX_MESSAGES;
/// The store loop's own connections, apart from the GET pool: one per
/// connector in flight, and one for the sampler.
const STORE_POOL_SIZE: u32 = STORE_CONCURRENCY as u32 + 1;
/// How often consumer lag and the backlog are sampled and old applied
/// chunks forgotten.
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
    /// Rejected records that a replay takes per transaction (default
    /// 1000), so a test can replay in several batches with few records.
    pub replay_batch: Option<usize>,
    /// When set, a replay stops right after its first batch commits, as
    /// if the process died there, and answers 500.
    pub interrupt_replay: bool,
}

/// Starts the store loop and the consumer sampler on `tasks`.
pub(crate) async fn start(
    tasks: &TaskTracker,
    api_pool: &PgPool,
    bus: &Bus,
    namespace: Namespace,
    shutdown: CancellationToken,
    hooks: StoreHooks,
    partitions: Arc<PartitionCache>,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(STORE_POOL_SIZE)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with((*api_pool.connect_options()).clone());
    let (nats, js) = (bus.client.clone(), bus.js.clone());
    let stream_name = namespace.records_stream();
    let stream = js.get_stream(&stream_name).await?;
    let ack_wait = hooks.ack_wait.unwrap_or(ACK_WAIT);
    let consumer_name = namespace.store_consumer();
    let consumer = attach_consumer(&stream, &namespace, ack_wait).await?;
    let sampler = Sampler {
        stream: stream.clone(),
        consumer: consumer_name,
        js: js.clone(),
        namespace: namespace.clone(),
        pool: pool.clone(),
    };
    let puller = Puller {
        stream,
        namespace: namespace.clone(),
        consumer,
        ack_wait,
    };
    let store = Store {
        pool,
        partitions,
        nats,
        js,
        namespace,
        ack_wait,
        hooks,
    };
    tasks.spawn(store.run(puller, shutdown.clone()));
    tasks.spawn(sampler.run(shutdown));
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

/// What the sampler reads: the consumer, the stream and its connectors'
/// backlog, and `applied_chunks`.
struct Sampler {
    stream: stream::Stream,
    consumer: String,
    js: jetstream::Context,
    namespace: Namespace,
    pool: PgPool,
}

impl Sampler {
    /// Publishes the consumer's lag and the backlog as metrics, and forgets
    /// applied chunks of which no copy can come any more, so
    /// `applied_chunks` stays small. Every replica does it; all of it is
    /// idempotent.
    async fn run(mut self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        // Connectors whose backlog series are not 0, to set them to 0 once
        // they have none.
        let mut behind = HashSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            match self.stream.consumer_info(&self.consumer).await {
                Ok(info) => {
                    metrics::gauge!("sluice_read_consumer_pending").set(info.num_pending as f64);
                    metrics::gauge!("sluice_read_consumer_ack_pending")
                        .set(info.num_ack_pending as f64);
                }
                Err(error) => tracing::debug!(%error, "sampling the store consumer failed"),
            }
            let (messages, first) = match self.stream.info().await {
                Ok(info) => (info.state.messages, info.state.first_timestamp),
                Err(error) => {
                    tracing::debug!(%error, "reading the records stream's state failed");
                    continue;
                }
            };
            // A work queue deletes what is acked: its first message is the
            // oldest one not yet stored.
            let oldest_held = (messages > 0).then(|| {
                DateTime::from_timestamp(first.unix_timestamp(), first.nanosecond())
                    .unwrap_or_else(Utc::now)
            });
            self.sample_backlog(messages, oldest_held, &mut behind)
                .await;
            let oldest_held = oldest_held.unwrap_or_else(Utc::now);
            if let Err(error) = db::forget_applied(&self.pool, oldest_held).await {
                tracing::debug!(%error, "forgetting applied chunks failed");
            }
        }
    }

    /// The backlog as gauges: the stream's in all (`messages`, the oldest
    /// held since `oldest`), and each connector's, one series per connector
    /// that has had a backlog since this process started.
    async fn sample_backlog(
        &self,
        messages: u64,
        oldest: Option<DateTime<Utc>>,
        behind: &mut HashSet<Uuid>,
    ) {
        let now = Utc::now();
        let mut overall = Backlog {
            messages,
            records_estimate: 0,
            oldest_at: oldest,
        };
        metrics::gauge!("sluice_read_backlog_messages").set(messages as f64);
        metrics::gauge!("sluice_read_backlog_seconds").set(overall.seconds_behind(now));
        let connectors = match backlog::measure(&self.js, &self.namespace, Connectors::All).await {
            Ok(connectors) => connectors,
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "measuring the backlog failed");
                return;
            }
        };
        overall.records_estimate = connectors.values().map(|b| b.records_estimate).sum();
        metrics::gauge!("sluice_read_backlog_records_estimate")
            .set(overall.records_estimate as f64);
        behind.retain(|&id| {
            let still = connectors.contains_key(&id);
            if !still {
                set_connector_gauges(id, &Backlog::default(), now);
            }
            still
        });
        for (&id, backlog) in &connectors {
            set_connector_gauges(id, backlog, now);
            behind.insert(id);
        }
    }
}

fn set_connector_gauges(id: Uuid, backlog: &Backlog, now: DateTime<Utc>) {
    let connector = id.to_string();
    metrics::gauge!("sluice_read_connector_backlog_messages", "connector" => connector.clone())
        .set(backlog.messages as f64);
    metrics::gauge!("sluice_read_connector_backlog_records_estimate", "connector" => connector.clone())
        .set(backlog.records_estimate as f64);
    metrics::gauge!("sluice_read_connector_backlog_seconds", "connector" => connector)
        .set(backlog.seconds_behind(now));
}
