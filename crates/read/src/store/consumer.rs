//! The store loop: pulls from the shared consumer, groups what arrives by
//! connector, has each group committed (`commit`), then acks, announces,
//! hands back or sets aside its messages as the commit went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use sluice_runtime::bus::{ChunkId, Namespace, StoredNotice, headers};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::partitions::PartitionCache;

use super::commit::{self, Delivered, Group, Outcome, StoreError, Stored};
use super::{
    GROUP_MAX_MESSAGES, MESSAGES_HELD, PULL_BATCH, PULL_EXPIRES, STORE_CONCURRENCY, StoreHooks,
    attach_consumer,
};

/// Headers added to a message sent to the dead-letter stream.
mod dead_letter_headers {
    pub const REASON: &str = "Sluice-Dead-Letter-Reason";
    pub const ORIGINAL_SUBJECT: &str = "Sluice-Original-Subject";
    pub const ORIGINAL_SEQUENCE: &str = "Sluice-Original-Sequence";
}

pub(super) struct Store {
    pub pool: PgPool,
    pub partitions: Arc<PartitionCache>,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub namespace: Namespace,
    pub ack_wait: Duration,
    pub hooks: StoreHooks,
}

/// Pulls from the shared consumer, one pull ahead of the store, so that
/// PostgreSQL is not left idle while a pull comes.
pub(super) struct Puller {
    pub stream: stream::Stream,
    pub namespace: Namespace,
    pub consumer: PullConsumer,
    pub ack_wait: Duration,
}

/// Messages that arrived together from one pull.
struct Pulled {
    /// Which pull brought them, counted from 1.
    pull: u64,
    /// When that pull was asked for: before JetStream delivered them.
    pulled_at: Instant,
    messages: Vec<jetstream::Message>,
}

/// What the loop does after a group; the most severe of a chunk's wins.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Flow {
    Next,
    /// A transient failure: hand back the rest of this pull and pause.
    Retry,
    /// The crash hook fired.
    Crash,
}

impl Puller {
    /// Pulls until shutdown, or until the store stops taking what it pulls.
    /// What a pull brings is passed on even once shutdown has begun: the
    /// pull ends by itself within `PULL_EXPIRES`.
    async fn run(mut self, store: mpsc::Sender<Pulled>, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        let mut pull = 0;
        while !shutdown.is_cancelled() {
            pull += 1;
            let pulled_at = Instant::now();
            // At most a quarter of the ack wait, so that what a pull brings
            // is well within its ack wait when storing it begins.
            let expires = PULL_EXPIRES.min(self.ack_wait / 4);
            let messages = tokio::select! {
                _ = shutdown.cancelled() => break,
                messages = self.consumer.batch().max_messages(PULL_BATCH).expires(expires).messages() => messages,
            };
            let messages = match messages {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "pulling from the records stream failed");
                    backoff.pause(&shutdown).await;
                    self.reattach().await;
                    continue;
                }
            };
            // Messages are passed on as they come, all those already here
            // at once, so a busy stream is stored many messages per
            // transaction and a quiet one without waiting for the pull to
            // fill.
            let mut failed = false;
            let mut chunks = messages
                .filter_map(|next| {
                    let message = match next {
                        Ok(message) => Some(message),
                        Err(error) => {
                            tracing::warn!(%error, "the records stream answered a pull with an error");
                            failed = true;
                            None
                        }
                    };
                    std::future::ready(message)
                })
                .ready_chunks(PULL_BATCH);
            while let Some(messages) = chunks.next().await {
                let pulled = Pulled {
                    pull,
                    pulled_at,
                    messages,
                };
                if store.send(pulled).await.is_err() {
                    return;
                }
            }
            drop(chunks);
            if failed {
                backoff.pause(&shutdown).await;
                self.reattach().await;
            } else {
                backoff.reset();
            }
        }
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
}

impl Store {
    /// Stores what `puller` pulls until it stops (at shutdown), or the
    /// crash hook fires.
    ///
    /// Each connector's groups are stored one after the other, in stream
    /// order, in a lane of their own: a connector never waits for another
    /// one's commit, only for its own previous one.
    pub(super) async fn run(self, puller: Puller, shutdown: CancellationToken) {
        // One chunk waiting and one being pulled, besides the groups the
        // lanes hold: each is within its ack wait when storing it begins
        // (see `StoreError::Late`), and a transient failure holds back
        // little.
        let (sender, mut pulled) = mpsc::channel(1);
        let pulling = tokio::spawn(puller.run(sender, shutdown.clone()));
        let store = Arc::new(self);
        let mut lanes = Lanes::new();
        let mut backoff = Backoff::default();
        let mut failed_pull = None;
        let mut last_pull = 0;
        loop {
            let Pulled {
                pull,
                pulled_at,
                messages,
            } = tokio::select! {
                biased;
                Some(flow) = lanes.flows.recv() => {
                    match flow {
                        Flow::Next => backoff.reset(),
                        // Hand back what is left of the latest pull, then
                        // pause.
                        Flow::Retry => failed_pull = Some(last_pull),
                        Flow::Crash => break,
                    }
                    continue;
                }
                pulled = pulled.recv() => match pulled {
                    Some(pulled) => pulled,
                    None => break,
                },
            };
            last_pull = pull;
            if let Some(failed) = failed_pull {
                if pull == failed {
                    // Straight back, for another replica or for us after
                    // the pause.
                    for message in messages {
                        hand_back(&message, &backoff).await;
                    }
                    continue;
                }
                failed_pull = None;
                backoff.pause(&shutdown).await;
            }
            let (groups, flow) = store.group(messages, &backoff).await;
            if flow == Flow::Retry {
                failed_pull = Some(pull);
            }
            for group in groups {
                lanes.push(&store, group, pulled_at, backoff).await;
            }
        }
        // After a crash, what was pulled is left unacked, as a dead
        // process would leave it.
        drop(pulled);
        lanes.finish().await;
        let _ = pulling.await;
        tracing::info!("store loop stopped");
    }

    /// Sorts messages that arrived together into one group per connector,
    /// in stream order; sets aside those that name no connector or chunk.
    async fn group(&self, chunk: Vec<jetstream::Message>, backoff: &Backoff) -> (Vec<Group>, Flow) {
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
        (groups, worst)
    }

    #[tracing::instrument(skip_all, fields(
        connector = %group.connector,
        first_sequence = group.messages.first().map(|m| m.sequence),
        messages = group.messages.len(),
    ))]
    async fn handle(&self, group: Group, pulled_at: Instant, backoff: &Backoff) -> Flow {
        let started = Instant::now();
        let outcome = commit::commit(
            &self.pool,
            &self.partitions,
            &group,
            pulled_at,
            self.ack_wait,
        )
        .await;
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
                    self.acknowledge(connector, delivered, stored).await;
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
                self.handle_one_by_one(connector, messages, pulled_at, backoff)
                    .await
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
                    hand_back(&delivered.message, backoff).await;
                }
                metrics::counter!("sluice_read_messages_total", "outcome" => "retry")
                    .increment(messages.len() as u64);
                Flow::Retry
            }
        }
    }

    /// Acks a committed message and announces it. `stored` is what it
    /// stored, `None` for a copy of a chunk stored before.
    async fn acknowledge(&self, connector: Uuid, delivered: &Delivered, stored: Option<Stored>) {
        let message = &delivered.message;
        if let Err(error) = message.ack().await {
            tracing::warn!(%error, "acking a stored message failed; it will come back and be skipped");
        }
        // A copy is announced too: its records are visible, and a retry
        // with `wait=true` waits for this notice.
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
            metrics::counter!("sluice_read_messages_total", "outcome" => "duplicate").increment(1);
            return;
        };
        metrics::counter!("sluice_read_messages_total", "outcome" => "stored").increment(1);
        metrics::counter!("sluice_read_records_stored_total").increment(stored.records as u64);
        metrics::counter!("sluice_read_rejected_stored_total").increment(stored.rejected as u64);
        metrics::histogram!("sluice_read_batch_records").record(stored.records as f64);
    }

    /// Each message of a group that failed, in a group of its own; after a
    /// transient failure the rest are handed back.
    async fn handle_one_by_one(
        &self,
        connector: Uuid,
        messages: Vec<Delivered>,
        pulled_at: Instant,
        backoff: &Backoff,
    ) -> Flow {
        let mut flow = Flow::Next;
        for message in messages {
            if flow != Flow::Next {
                hand_back(&message.message, backoff).await;
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
                hand_back(message, backoff).await;
                Flow::Retry
            }
        }
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

/// Groups of messages waiting or being stored, one lane per connector: a
/// group starts once the one before it in its lane is done, and only while
/// fewer than `STORE_CONCURRENCY` groups are being stored. Messages that
/// come while their connector's next group still waits join it, so a
/// connector that is behind is stored in large transactions.
struct Lanes {
    /// Each connector's latest group.
    latest: HashMap<Uuid, Lane>,
    /// Bounds the messages held, waiting or being stored: a permit each.
    held: Arc<Semaphore>,
    /// Bounds the groups being stored, one connection each.
    storing: Arc<Semaphore>,
    /// How each group went, for the loop to pause after a failure or stop
    /// after a crash.
    flows: mpsc::UnboundedReceiver<Flow>,
    report: mpsc::UnboundedSender<Flow>,
    /// Set once a group crashed: the groups after it are left unacked.
    crashed: CancellationToken,
}

/// A connector's latest group: the task that stores it once the one before
/// is done, and the group itself, with its messages' permits, until that
/// task takes it.
struct Lane {
    task: JoinHandle<Flow>,
    waiting: Arc<Mutex<Option<(Group, OwnedSemaphorePermit)>>>,
}

impl Lanes {
    fn new() -> Lanes {
        let (report, flows) = mpsc::unbounded_channel();
        Lanes {
            latest: HashMap::new(),
            held: Arc::new(Semaphore::new(MESSAGES_HELD)),
            storing: Arc::new(Semaphore::new(STORE_CONCURRENCY)),
            flows,
            report,
            crashed: CancellationToken::new(),
        }
    }

    /// Adds `group` to its connector's lane, once fewer than
    /// `MESSAGES_HELD` messages are held: to the group waiting there if it
    /// has room, or else as a group of its own.
    async fn push(
        &mut self,
        store: &Arc<Store>,
        group: Group,
        pulled_at: Instant,
        backoff: Backoff,
    ) {
        let count = u32::try_from(group.messages.len()).expect("a pull's worth");
        let held = Arc::clone(&self.held)
            .acquire_many_owned(count)
            .await
            .expect("the semaphore is never closed");
        self.latest.retain(|_, lane| !lane.task.is_finished());
        let Some((group, held)) = self.join_waiting(group, held) else {
            return;
        };
        let before = self.latest.remove(&group.connector).map(|lane| lane.task);
        let connector = group.connector;
        let waiting = Arc::new(Mutex::new(Some((group, held))));
        let (store, storing) = (Arc::clone(store), Arc::clone(&self.storing));
        let (report, crashed) = (self.report.clone(), self.crashed.clone());
        let taken = Arc::clone(&waiting);
        let task = tokio::spawn(async move {
            let before = match before {
                Some(before) => before.await.unwrap_or(Flow::Retry),
                None => Flow::Next,
            };
            let storing = match before {
                Flow::Next => Some(storing.acquire().await.expect("never closed")),
                Flow::Retry | Flow::Crash => None,
            };
            // From here on the group is closed to newcomers. The earliest
            // pull in it is the one it was made from: `pulled_at` holds.
            let (group, held) = taken
                .lock()
                .expect("never poisoned")
                .take()
                .expect("taken once");
            let flow = match before {
                _ if crashed.is_cancelled() => Flow::Crash,
                Flow::Next => store.handle(group, pulled_at, &backoff).await,
                // The one before was handed back: so is this one, to keep
                // the connector's order.
                Flow::Retry => {
                    for delivered in &group.messages {
                        hand_back(&delivered.message, &backoff).await;
                    }
                    Flow::Retry
                }
                Flow::Crash => Flow::Crash,
            };
            drop(storing);
            if flow == Flow::Crash {
                crashed.cancel();
            }
            drop(held);
            let _ = report.send(flow);
            flow
        });
        self.latest.insert(connector, Lane { task, waiting });
    }

    /// Adds `group`'s messages, and their permits, to the group waiting in
    /// its lane, if there is one with room for them; hands them back
    /// otherwise.
    fn join_waiting(
        &self,
        group: Group,
        held: OwnedSemaphorePermit,
    ) -> Option<(Group, OwnedSemaphorePermit)> {
        let Some(lane) = self.latest.get(&group.connector) else {
            return Some((group, held));
        };
        let mut waiting = lane.waiting.lock().expect("never poisoned");
        match waiting.as_mut() {
            Some((next, next_held))
                if next.messages.len() + group.messages.len() <= GROUP_MAX_MESSAGES =>
            {
                next.messages.extend(group.messages);
                next_held.merge(held);
                None
            }
            _ => Some((group, held)),
        }
    }

    /// Waits for every group held to be done.
    async fn finish(self) {
        for (_, lane) in self.latest {
            let _ = lane.task.await;
        }
    }
}

/// Naks `message` so that it comes again after the backoff's delay, to
/// another replica or to this one after its pause.
async fn hand_back(message: &jetstream::Message, backoff: &Backoff) {
    let _ = message.ack_with(AckKind::Nak(Some(backoff.delay()))).await;
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
#[derive(Default, Clone, Copy)]
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
