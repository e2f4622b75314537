//! The transaction that stores one group of messages: their identities
//! recorded in `applied_chunks`, their rows and refused records written
//! under ids allocated from the connector's stats row, and its counters
//! moved on, all committed together or not at all.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sluice_runtime::bus::{ChunkId, RecordBatch, RejectedRecord};
use sluice_schema::{Format, Schema};
use sqlx::PgPool;
use sqlx::postgres::PgConnection;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::db::{self, IdCounters, RejectedRows};
use crate::partitions::{GroupPartitions, PartitionCache, is_no_partition};
use crate::rows::{RecordInsert, Unstorable};

/// The messages of one connector taken from a pull together, in stream
/// order, stored in one transaction.
pub(super) struct Group {
    pub connector: Uuid,
    pub messages: Vec<Delivered>,
}

/// A message as delivered, with what the store needs to know of it before
/// decoding it.
pub(super) struct Delivered {
    pub message: jetstream::Message,
    pub sequence: u64,
    pub id: ChunkId,
}

/// What became of a group's messages.
pub(super) enum Outcome {
    /// In the group's order: what each message stored now brought, or
    /// `None` for one whose chunk was applied before (acked again, nothing
    /// stored twice).
    Stored(Vec<Option<Stored>>),
    /// Its connector was deleted: acked and dropped.
    ConnectorGone,
}

pub(super) struct Stored {
    /// The highest `_id` it stored, if it stored any record.
    pub last_id: Option<i64>,
    pub records: usize,
    pub rejected: usize,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
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
    /// retry finds the connector gone; so is a row for which no partition
    /// was found (23514): retention dropped one that this process still
    /// knew of (see `partitions`), and the retry makes it again.
    fn from(error: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(e) = &error {
            let code = e.code().unwrap_or_default();
            if code != "42P01"
                && code != "23514"
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

/// The transaction of one group; see the module docs of `store` for why
/// each step is where it is. `received` is no later than JetStream's
/// delivery of these copies.
pub(super) async fn commit(
    pool: &PgPool,
    partitions: &PartitionCache,
    group: &Group,
    received: Instant,
    ack_wait: Duration,
) -> Result<Outcome, StoreError> {
    let mut known = GroupPartitions::new(partitions, group.connector);
    let outcome = commit_group(pool, &mut known, group, received, ack_wait).await;
    match &outcome {
        Ok(_) => known.committed(),
        Err(StoreError::Transient(error)) if is_no_partition(error) => {
            partitions.forget(group.connector);
        }
        Err(_) => {}
    }
    outcome
}

async fn commit_group(
    pool: &PgPool,
    partitions: &mut GroupPartitions<'_>,
    group: &Group,
    received: Instant,
    ack_wait: Duration,
) -> Result<Outcome, StoreError> {
    let ids: Vec<ChunkId> = group.messages.iter().map(|m| m.id).collect();
    let mut tx = pool.begin().await?;
    let applied_now = db::mark_applied(&mut tx, group.connector, &ids).await?;
    if applied_now.is_empty() {
        // Every one was stored before: acked again, stored never twice.
        return Ok(Outcome::Stored(
            group.messages.iter().map(|_| None).collect(),
        ));
    }
    // Applied chunks are forgotten once no copy can come any more
    // (`sample_consumer`). A copy held past its ack wait may have been
    // redelivered, stored and acked meanwhile, and then no longer count
    // as held: drop it. JetStream redelivers no sooner than the ack
    // wait after it delivered this copy, which was after `received`;
    // until then no other copy can have been stored, and from this
    // check on a redelivered copy blocks on our applied row until we
    // commit.
    if received.elapsed() >= ack_wait * 9 / 10 {
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
    let fresh = first_copies(&ids, applied_now);
    let written = write_fresh(&mut tx, partitions, group, schema, counters, &fresh).await?;
    db::advance_stats(
        &mut tx,
        group.connector,
        counters,
        written.counters,
        written.last_received_at,
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Stored(written.stored))
}

/// The indexes of the messages whose chunks `applied_now` holds: of two
/// copies of one chunk in a group, the first.
fn first_copies(ids: &[ChunkId], mut applied_now: Vec<ChunkId>) -> Vec<usize> {
    (0..ids.len())
        .filter(|&i| {
            let first = applied_now.iter().position(|id| *id == ids[i]);
            first.map(|at| applied_now.swap_remove(at)).is_some()
        })
        .collect()
}

/// What [`write_fresh`] wrote.
struct Written {
    /// In the group's order; `None` for a message not written.
    stored: Vec<Option<Stored>>,
    /// The ids last handed out, after the written messages.
    counters: IdCounters,
    last_received_at: Option<DateTime<Utc>>,
    rejected: RejectedRows,
}

impl Written {
    /// Counts a prepared message in, and hands back the rows it is to
    /// write.
    fn add(&mut self, prepared: Prepared) -> RecordInsert {
        let Prepared {
            index,
            ids,
            decoded,
        } = prepared;
        self.rejected.extend(
            ids.first_rejected,
            decoded.received_at,
            decoded.format,
            &decoded.rejected,
        );
        self.counters = ids.after;
        self.last_received_at = self.last_received_at.max(Some(decoded.received_at));
        self.stored[index] = Some(Stored {
            last_id: (decoded.records > 0).then_some(ids.after.last_record_id),
            records: decoded.records,
            rejected: decoded.rejected.len(),
        });
        decoded.insert
    }
}

/// Writes the group's messages at `fresh`, their ids following `counters`.
///
/// The messages are decoded and encoded one after the other on a blocking
/// thread while the ones before them are written, so the CPU and PostgreSQL
/// work side by side. Rows of consecutive messages with the same columns
/// go into one `COPY`, as long as the partitions their rows go to are known
/// to exist: on a miss the `COPY` ends, and the partition is made (or
/// found) before the next one starts.
async fn write_fresh(
    tx: &mut PgConnection,
    partitions: &mut GroupPartitions<'_>,
    group: &Group,
    schema: Schema,
    counters: IdCounters,
    fresh: &[usize],
) -> Result<Written, StoreError> {
    let messages: Vec<_> = fresh
        .iter()
        .map(|&index| {
            let delivered = &group.messages[index];
            (index, delivered.message.payload.clone(), delivered.id)
        })
        .collect();
    // One message ahead: the thread never holds more than two decoded.
    let (sender, mut prepared) = tokio::sync::mpsc::channel(1);
    let preparer =
        tokio::task::spawn_blocking(move || prepare_all(&schema, messages, counters, &sender));
    let mut written = Written {
        stored: group.messages.iter().map(|_| None).collect(),
        counters,
        last_received_at: None,
        rejected: RejectedRows::default(),
    };
    let mut next = prepared.recv().await;
    while let Some(result) = next.take() {
        let message = result?;
        if message.decoded.records > 0 {
            partitions
                .ensure(&mut *tx, message.decoded.received_at)
                .await?;
        }
        match written.add(message) {
            RecordInsert::Nothing => {}
            RecordInsert::Insert(rows) => {
                db::insert_arrays(&mut *tx, group.connector, rows).await?
            }
            RecordInsert::Copy { columns, data } => {
                let mut copy = db::RecordsCopy::start(&mut *tx, group.connector, columns).await?;
                let following =
                    copy_following(&mut copy, data, &mut prepared, &mut written, partitions);
                match following.await {
                    Ok(following) => {
                        copy.finish().await?;
                        next = following;
                        continue;
                    }
                    Err(error) => {
                        copy.abort().await;
                        return Err(error);
                    }
                }
            }
        }
        next = prepared.recv().await;
    }
    // The thread stops early only if preparing a message panicked, which
    // would recur on every delivery: dead-letter it.
    preparer
        .await
        .map_err(|e| StoreError::Unstorable(format!("preparing the batch failed: {e}")))?;
    let rejected = std::mem::take(&mut written.rejected);
    db::insert_rejected(&mut *tx, group.connector, rejected).await?;
    Ok(written)
}

/// Sends `rows` into `copy`, then the rows of the messages that follow as
/// long as they have its columns and go to partitions known to exist.
/// Returns the first message it did not
/// take, for the caller, once `copy` is to be finished.
async fn copy_following(
    copy: &mut db::RecordsCopy<'_>,
    rows: Vec<u8>,
    prepared: &mut mpsc::Receiver<Result<Prepared, Unstorable>>,
    written: &mut Written,
    partitions: &GroupPartitions<'_>,
) -> Result<Option<Result<Prepared, Unstorable>>, StoreError> {
    copy.send(rows).await?;
    loop {
        let next = match prepared.recv().await {
            Some(Ok(next)) => next,
            other => return Ok(other),
        };
        match &next.decoded.insert {
            RecordInsert::Copy { columns, .. }
                if copy.takes(columns) && partitions.covers(next.decoded.received_at) => {}
            _ => return Ok(Some(Ok(next))),
        }
        let RecordInsert::Copy { data, .. } = written.add(next) else {
            unreachable!("matched above")
        };
        copy.send(data).await?;
    }
}

/// A message decoded and laid out for the records table.
struct Prepared {
    /// Its place in the group.
    index: usize,
    ids: PreparedIds,
    decoded: Decoded,
}

/// The ids a prepared message takes.
struct PreparedIds {
    first_rejected: i64,
    /// The ids last handed out once it is written.
    after: IdCounters,
}

/// Prepares `messages` (place in the group, payload, identity) one after
/// the other, their ids following `counters`, and sends each to the writer;
/// stops at the first that cannot be stored, or when the writer stops.
fn prepare_all(
    schema: &Schema,
    messages: Vec<(usize, Bytes, ChunkId)>,
    mut counters: IdCounters,
    out: &mpsc::Sender<Result<Prepared, Unstorable>>,
) {
    for (index, payload, id) in messages {
        let prepared = prepare(schema, &payload, id, counters.last_record_id + 1).map(|decoded| {
            let first_rejected = counters.last_rejected_id + 1;
            counters.last_record_id += decoded.records as i64;
            counters.last_rejected_id += decoded.rejected.len() as i64;
            Prepared {
                index,
                ids: PreparedIds {
                    first_rejected,
                    after: counters,
                },
                decoded,
            }
        });
        let failed = prepared.is_err();
        if out.blocking_send(prepared).is_err() || failed {
            return;
        }
    }
}

/// A message decoded and laid out, its rows' ids from the first one given.
struct Decoded {
    insert: RecordInsert,
    records: usize,
    rejected: Vec<RejectedRecord>,
    received_at: DateTime<Utc>,
    format: Option<Format>,
}

/// The CPU work of storing a message known as `id`, with its rows' ids from
/// `first_id`.
fn prepare(
    schema: &Schema,
    payload: &[u8],
    id: ChunkId,
    first_id: i64,
) -> Result<Decoded, Unstorable> {
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
    let (records, received_at, format) = (batch.rows, batch.received_at, batch.format);
    Ok(Decoded {
        insert: RecordInsert::plan(schema, batch, first_id)?,
        records,
        rejected,
        received_at,
        format,
    })
}
