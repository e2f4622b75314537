//! The transaction that stores one group of messages: their identities
//! recorded in `applied_chunks`, their rows and refused records written
//! under ids allocated from the connector's stats row, and its counters
//! moved on, all committed together or not at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use sluice_runtime::bus::{ChunkId, RecordBatch, RejectedRecord};
use sluice_schema::Schema;
use sqlx::PgPool;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::db::{self, IdCounters};
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

/// The transaction of one group; see the module docs of `store` for why
/// each step is where it is. `received` is no later than JetStream's
/// delivery of these copies.
pub(super) async fn commit(
    pool: &PgPool,
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
    let written = write_fresh(&mut tx, group, schema, counters, &fresh).await?;
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
}

/// Writes the group's messages at `fresh`, their ids following `counters`.
///
/// Each message is decoded and encoded on a blocking thread while the one
/// before it is written, so the CPU and PostgreSQL work side by side. A
/// message's first id follows from the one before it.
async fn write_fresh(
    tx: &mut PgConnection,
    group: &Group,
    schema: Schema,
    counters: IdCounters,
    fresh: &[usize],
) -> Result<Written, StoreError> {
    let schema = Arc::new(schema);
    let start_preparing = |index: usize, first_id: i64| {
        let delivered = &group.messages[index];
        let (payload, id) = (delivered.message.payload.clone(), delivered.id);
        let schema = Arc::clone(&schema);
        tokio::task::spawn_blocking(move || prepare(&schema, &payload, id, first_id))
    };
    let mut written = Written {
        stored: group.messages.iter().map(|_| None).collect(),
        counters,
        last_received_at: None,
    };
    let mut preparing = fresh
        .first()
        .map(|&index| start_preparing(index, counters.last_record_id + 1));
    for (k, &index) in fresh.iter().enumerate() {
        let handle = preparing
            .take()
            .expect("each fresh message is being prepared");
        // A panic there would recur on every delivery: dead-letter it.
        let prepared = handle
            .await
            .map_err(|e| StoreError::Unstorable(format!("preparing the batch failed: {e}")))??;
        let next = &mut written.counters;
        let first_rejected = next.last_rejected_id + 1;
        next.last_record_id += prepared.records as i64;
        next.last_rejected_id += prepared.rejected.len() as i64;
        if let Some(&following) = fresh.get(k + 1) {
            preparing = Some(start_preparing(following, next.last_record_id + 1));
        }
        let last_id = (prepared.records > 0).then_some(next.last_record_id);
        db::insert_records(&mut *tx, group.connector, prepared.insert).await?;
        db::insert_rejected(
            &mut *tx,
            group.connector,
            prepared.received_at,
            &prepared.rejected,
            first_rejected,
        )
        .await?;
        written.last_received_at = written.last_received_at.max(Some(prepared.received_at));
        written.stored[index] = Some(Stored {
            last_id,
            records: prepared.records,
            rejected: prepared.rejected.len(),
        });
    }
    Ok(written)
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
