//! Replaying rejected records: each batch of them validated against the
//! current schema, and those that pass moved into the records table, in one
//! transaction per batch.
//!
//! Within a batch, everything happens under the connector's stats row lock
//! and commits together: the rows written under new ids (allocated from
//! `last_record_id` as the store allocates them), the rejected records
//! removed, the errors of the others rewritten, the counters moved. A
//! record is therefore always either rejected or stored, never both; an
//! interrupted replay loses only its uncommitted batch, and a replay run
//! again (or two at once) finds only what is still rejected.
//!
//! Passing records are laid out exactly as the gateway's would be: their
//! columns go through the wire form of a `RecordBatch` (the gateway's
//! encoding, the store's decoding) and are written by the store's own
//! `RecordInsert`.

use chrono::{DateTime, Utc};
use sluice_runtime::bus::{Column, ColumnsOf, RecordBatch, StoredNotice};
use sluice_schema::{ExtraFields, Format, Record, RecordError, Revalidated, Schema, revalidate};
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::Replayed;
use super::sql::{self, KeptRejected};
use crate::AppState;
use crate::db::{self, IdCounters};
use crate::error::ReadError;
use crate::partitions::GroupPartitions;
use crate::rows::RecordInsert;

/// Rejected records looked at per transaction: enough that a replay of
/// many takes few commits, few enough that one holds the stats row lock
/// (and so the store of this connector) for a short while only.
const REPLAY_BATCH: usize = 1000;

/// Replays every rejected record of `connector`, batch after batch.
pub(super) async fn replay(state: &AppState, connector: Uuid) -> Result<Replayed, ReadError> {
    let batch_size = state.hooks.replay_batch.unwrap_or(REPLAY_BATCH).max(1);
    // Ids looked at by this run: those still rejected are not looked at
    // twice, and rejected records stored meanwhile wait for the next run.
    let mut after = 0;
    let mut total = Replayed {
        replayed: 0,
        still_rejected: 0,
    };
    let replay_id = Uuid::now_v7();
    for batch in 0.. {
        let Some(done) = replay_batch(state, connector, after, batch_size).await? else {
            break;
        };
        after = done.last_seen;
        total.replayed += done.replayed;
        total.still_rejected += done.still_rejected;
        if let Some(last_id) = done.last_record_id {
            announce(state, connector, replay_id, batch, last_id).await;
        }
        if state.hooks.interrupt_replay {
            return Err(ReadError::Interrupted);
        }
    }
    Ok(total)
}

/// What one batch did.
struct BatchDone {
    /// The last rejected id it looked at.
    last_seen: i64,
    replayed: u64,
    still_rejected: u64,
    /// The last record id it stored, if it stored any.
    last_record_id: Option<i64>,
}

/// One batch in one transaction; `None` when no rejected record follows
/// `after`.
async fn replay_batch(
    state: &AppState,
    connector: Uuid,
    after: i64,
    size: usize,
) -> Result<Option<BatchDone>, ReadError> {
    let mut tx = state.pool.begin().await?;
    let (schema, extra) = sql::share_connector_settings(&mut tx, connector)
        .await?
        .ok_or(ReadError::NotFound)?;
    let extra = ExtraFields::parse(&extra).unwrap_or_default();
    let counters = db::lock_counters(&mut tx, connector)
        .await?
        .ok_or(ReadError::NotFound)?;
    let kept = sql::rejected_after(&mut tx, connector, after, size as i64).await?;
    let Some(last_seen) = kept.last().map(|k| k.id) else {
        return Ok(None);
    };
    let verdicts = {
        let schema = schema.clone();
        tokio::task::spawn_blocking(move || judge_all(&schema, extra, kept))
            .await
            .map_err(|e| ReadError::Internal(format!("validating rejected records: {e}")))?
    };
    let mut partitions = GroupPartitions::new(&state.partitions, connector);
    let stored = store_passing(
        &mut tx,
        &mut partitions,
        connector,
        &schema,
        counters,
        &verdicts.passing,
    )
    .await?;
    let moved: Vec<i64> = verdicts.passing.iter().map(|p| p.rejected_id).collect();
    sql::remove_rejected(&mut tx, connector, &moved).await?;
    sql::set_rejected_errors(
        &mut tx,
        connector,
        &verdicts.still_ids,
        &verdicts.still_errors,
    )
    .await?;
    let replayed = moved.len() as i64;
    if replayed > 0 {
        let last_received_at = verdicts.passing.iter().map(|p| p.received_at).max();
        sql::count_replayed(&mut tx, connector, stored, replayed, last_received_at).await?;
    }
    tx.commit().await?;
    partitions.committed();
    Ok(Some(BatchDone {
        last_seen,
        replayed: replayed as u64,
        still_rejected: (verdicts.still_ids.len() + verdicts.unreadable) as u64,
        last_record_id: (replayed > 0).then_some(stored.last_record_id),
    }))
}

/// A rejected record that the current schema accepts.
struct Passing {
    rejected_id: i64,
    received_at: DateTime<Utc>,
    record: Record,
}

/// The verdicts on one batch of rejected records.
#[derive(Default)]
struct Verdicts {
    /// In rejected-id order.
    passing: Vec<Passing>,
    /// Still refused: their ids and their errors of now, as JSON text.
    still_ids: Vec<i64>,
    still_errors: Vec<String>,
    /// Kept in a form that cannot be read as a record again: left as
    /// they are.
    unreadable: usize,
}

/// Validates each kept record in the format it was sent in (JSON for those
/// kept before formats were).
fn judge_all(schema: &Schema, extra: ExtraFields, kept: Vec<KeptRejected>) -> Verdicts {
    let mut verdicts = Verdicts::default();
    for kept in kept {
        let format = kept
            .format
            .as_deref()
            .and_then(Format::from_name)
            .unwrap_or(Format::Json);
        match revalidate(schema, extra, format, &kept.record) {
            Revalidated::Valid(record) => verdicts.passing.push(Passing {
                rejected_id: kept.id,
                received_at: kept.received_at,
                record,
            }),
            Revalidated::Invalid(errors) => {
                verdicts.still_ids.push(kept.id);
                verdicts
                    .still_errors
                    .push(errors_in_place(errors, &kept.errors).to_string());
            }
            Revalidated::Unreadable => verdicts.unreadable += 1,
        }
    }
    verdicts
}

/// Errors of now, placed where the first ones were: the record's index and
/// line in the body it came in.
fn errors_in_place(mut errors: Vec<RecordError>, before: &serde_json::Value) -> serde_json::Value {
    let first = before.get(0);
    let index = first
        .and_then(|e| e.get("record"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        .unwrap_or(0);
    let line = first
        .and_then(|e| e.get("line"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|l| usize::try_from(l).ok());
    for error in &mut errors {
        error.record = index;
        error.line = line;
    }
    serde_json::to_value(errors).unwrap_or_default()
}

/// Writes the passing records under ids after `counters`, in their order,
/// and returns the counters after them. Records received at one instant
/// (those of one request) go in one statement, into a partition made for
/// their time if there is none (it may be long past).
async fn store_passing(
    tx: &mut PgConnection,
    partitions: &mut GroupPartitions<'_>,
    connector: Uuid,
    schema: &Schema,
    mut counters: IdCounters,
    passing: &[Passing],
) -> Result<IdCounters, ReadError> {
    for group in passing.chunk_by(|a, b| a.received_at == b.received_at) {
        let records: Vec<Record> = group.iter().map(|p| p.record.clone()).collect();
        let batch = wire_batch(schema, group[0].received_at, records)?;
        partitions.ensure(&mut *tx, group[0].received_at).await?;
        let first_id = counters.last_record_id + 1;
        let insert = RecordInsert::plan(schema, batch, first_id)
            .map_err(|e| ReadError::Internal(format!("laying out replayed records: {e}")))?;
        match insert {
            RecordInsert::Nothing => {}
            RecordInsert::Insert(rows) => db::insert_arrays(&mut *tx, connector, rows).await?,
            RecordInsert::Copy { columns, data } => {
                let mut copy = db::RecordsCopy::start(&mut *tx, connector, columns).await?;
                if let Err(error) = copy.send(data).await {
                    copy.abort().await;
                    return Err(error.into());
                }
                copy.finish().await?;
            }
        }
        counters.last_record_id += group.len() as i64;
    }
    Ok(counters)
}

/// The records as the store receives them from the gateway: encoded as
/// the gateway encodes its columns, decoded as the store decodes them.
fn wire_batch(
    schema: &Schema,
    received_at: DateTime<Utc>,
    records: Vec<Record>,
) -> Result<RecordBatch, ReadError> {
    let encoded = serde_json::to_vec(&ColumnsOf::new(schema, &records))
        .map_err(|e| ReadError::Internal(format!("encoding replayed records: {e}")))?;
    let columns: Vec<Column> = serde_json::from_slice(&encoded)
        .map_err(|e| ReadError::Internal(format!("decoding replayed records: {e}")))?;
    Ok(RecordBatch {
        batch_id: Uuid::nil(),
        chunk: 0,
        chunks: 1,
        schema_version: 0,
        received_at,
        rows: records.len(),
        columns,
        rejected: Vec::new(),
        format: None,
    })
}

/// Wakes readers waiting for records (`wait=N`), as the store does after a
/// commit. Best effort: a lost notice only delays a long-poll.
async fn announce(state: &AppState, connector: Uuid, replay: Uuid, batch: u32, last_id: i64) {
    let Ok(bus) = state.bus() else { return };
    let notice = StoredNotice {
        batch_id: replay,
        chunk: batch,
        last_id: Some(last_id),
    };
    let Ok(payload) = serde_json::to_vec(&notice) else {
        return;
    };
    let subject = state.namespace.stored_subject(connector);
    if let Err(error) = bus.client.publish(subject, payload.into()).await {
        tracing::warn!(%error, "announcing replayed records failed");
    }
}
