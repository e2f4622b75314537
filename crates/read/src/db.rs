//! The read API's SQL, in small functions that take a connection.
//!
//! Lock order, shared with the control plane so that none of us deadlocks:
//! a connector's `connectors` row first (the control plane takes it FOR
//! UPDATE before it alters or drops the records table; the store takes it
//! FOR SHARE), then its `connector_stats` row, then its records table.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sluice_runtime::bus::{ChunkId, RejectedRecord};
use sluice_runtime::store::{
    ID_COLUMN, RECEIVED_AT_COLUMN, convert_sql, quote_ident, records_table,
};
use sluice_schema::{FieldType, Format, Schema};
use sqlx::postgres::{PgArguments, PgConnection, PgCopyIn};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Executor as _, Postgres, Row};
use uuid::Uuid;

use crate::copy;
use crate::plan::{Bind, PagePlan};
use crate::rows::{ArrayBind, ArrayRows};

/// A statement built for one connector, schema and request. It is not kept
/// prepared: the cache would fill with one-off texts, and a statement
/// prepared before a schema edit changed a column's type fails with "cached
/// plan must not change result type" when reused after it.
pub(crate) fn dynamic(sql: &str) -> Query<'_, Postgres, PgArguments> {
    sqlx::query(sql).persistent(false)
}

/// Records the chunks of `connector` as applied, and returns those that
/// were not yet: the others' rows are in the database already. A chunk
/// named twice is returned once.
#[tracing::instrument(skip_all, fields(chunks = chunks.len()))]
pub(crate) async fn mark_applied(
    conn: &mut PgConnection,
    connector: Uuid,
    chunks: &[ChunkId],
) -> sqlx::Result<Vec<ChunkId>> {
    let batches: Vec<Uuid> = chunks.iter().map(|c| c.batch_id).collect();
    let indexes: Vec<i64> = chunks.iter().map(|c| i64::from(c.chunk)).collect();
    let applied: Vec<(Uuid, i64)> = sqlx::query_as(
        "INSERT INTO applied_chunks (connector_id, batch_id, chunk) \
         SELECT $1, batch_id, chunk FROM unnest($2::uuid[], $3::bigint[]) AS c (batch_id, chunk) \
         ON CONFLICT DO NOTHING RETURNING batch_id, chunk",
    )
    .bind(connector)
    .bind(&batches)
    .bind(&indexes)
    .fetch_all(conn)
    .await?;
    Ok(applied
        .into_iter()
        .filter_map(|(batch_id, chunk)| {
            Some(ChunkId {
                batch_id,
                chunk: u32::try_from(chunk).ok()?,
            })
        })
        .collect())
}

/// The connector's current schema, its row held FOR SHARE until the end of
/// the transaction: a schema edit (which holds the row FOR UPDATE while it
/// alters the table) is then either fully before this or fully after it.
/// `None`: the connector is gone.
#[tracing::instrument(skip(conn))]
pub(crate) async fn share_connector_schema(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<Schema>> {
    let row: Option<(Json<Schema>,)> =
        sqlx::query_as("SELECT schema FROM connectors WHERE id = $1 FOR SHARE")
            .bind(connector)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(schema,)| schema.0))
}

/// The ids last handed out for a connector, read under its stats row lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdCounters {
    pub last_record_id: i64,
    pub last_rejected_id: i64,
}

/// Locks the connector's stats row FOR UPDATE: the lock under which ids are
/// allocated, so that one connector's writes commit in `_id` order. The
/// control plane makes the row in the transaction that makes the connector;
/// `None`: the connector is gone.
#[tracing::instrument(skip(conn))]
pub(crate) async fn lock_counters(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<IdCounters>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT last_record_id, last_rejected_id FROM connector_stats \
         WHERE connector_id = $1 FOR UPDATE",
    )
    .bind(connector)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(last_record_id, last_rejected_id)| IdCounters {
        last_record_id,
        last_rejected_id,
    }))
}

/// Every connector with its retention (`None`: forever), for the
/// maintenance task.
pub(crate) async fn connector_retentions(
    pool: &sqlx::PgPool,
) -> sqlx::Result<Vec<(Uuid, Option<std::time::Duration>)>> {
    let rows: Vec<(Uuid, Option<i64>)> =
        sqlx::query_as("SELECT id, retention_seconds FROM connectors ORDER BY id")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, secs)| {
            let retention = secs.map(|s| std::time::Duration::from_secs(s.unsigned_abs()));
            (id, retention)
        })
        .collect())
}

/// Takes what a store takes before it writes, in its order: the
/// connector's row FOR SHARE (no schema edit or deletion meanwhile), then
/// its stats row FOR UPDATE (no store meanwhile). `None`: it is gone.
pub(crate) async fn lock_for_retention(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<IdCounters>> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM connectors WHERE id = $1 FOR SHARE")
        .bind(connector)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Ok(None);
    }
    lock_counters(conn, connector).await
}

/// Takes rows that retention or a deletion removed off the connector's
/// counts.
pub(crate) async fn subtract_counts(
    conn: &mut PgConnection,
    connector: Uuid,
    records: i64,
    rejected: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE connector_stats SET records = records - $2, rejected = rejected - $3 \
         WHERE connector_id = $1",
    )
    .bind(connector)
    .bind(records)
    .bind(rejected)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` of the connector's rejected records received
/// before `cutoff`, oldest first; how many it deleted.
pub(crate) async fn delete_rejected_before(
    conn: &mut PgConnection,
    connector: Uuid,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<i64> {
    let deleted = sqlx::query(
        "DELETE FROM rejected_records WHERE connector_id = $1 AND id IN ( \
           SELECT id FROM rejected_records WHERE connector_id = $1 AND received_at < $2 \
           ORDER BY received_at LIMIT $3)",
    )
    .bind(connector)
    .bind(cutoff)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() as i64)
}

/// A `COPY … FROM STDIN (FORMAT binary)` into a connector's records table
/// of rows that hold `_id`, `_received_at`, then the fields `columns`
/// names. It stays open for the rows of every message with those columns
/// that follows: PostgreSQL then pays one statement's start for a group
/// instead of one a message.
pub(crate) struct RecordsCopy<'c> {
    columns: Vec<String>,
    copy: PgCopyIn<&'c mut PgConnection>,
}

impl<'c> RecordsCopy<'c> {
    pub(crate) async fn start(
        conn: &'c mut PgConnection,
        connector: Uuid,
        columns: Vec<String>,
    ) -> sqlx::Result<RecordsCopy<'c>> {
        let names: Vec<String> = [ID_COLUMN, RECEIVED_AT_COLUMN]
            .into_iter()
            .chain(columns.iter().map(String::as_str))
            .map(quote_ident)
            .collect();
        let statement = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            records_table(connector),
            names.join(", ")
        );
        let mut copy = conn.copy_in_raw(&statement).await?;
        copy.send(copy::HEADER).await?;
        Ok(RecordsCopy { columns, copy })
    }

    /// Whether rows of `columns` can be sent into this statement.
    pub(crate) fn takes(&self, columns: &[String]) -> bool {
        self.columns == columns
    }

    /// Sends rows framed by [`crate::copy::BinaryRows`], of this statement's
    /// columns.
    pub(crate) async fn send(&mut self, rows: Vec<u8>) -> sqlx::Result<()> {
        self.copy.send(rows).await?;
        Ok(())
    }

    pub(crate) async fn finish(mut self) -> sqlx::Result<()> {
        self.copy.send(copy::TRAILER).await?;
        self.copy.finish().await?;
        Ok(())
    }

    /// Ends the statement without storing its rows, leaving the connection
    /// usable (only to roll the transaction back).
    pub(crate) async fn abort(self) {
        let _ = self.copy.abort("storing the group failed").await;
    }
}

/// One `INSERT … SELECT … FROM UNNEST`: every column bound as one typed
/// array, converted in SQL.
pub(crate) async fn insert_arrays(
    conn: &mut PgConnection,
    connector: Uuid,
    rows: ArrayRows,
) -> sqlx::Result<()> {
    let mut targets = vec![quote_ident(ID_COLUMN), quote_ident(RECEIVED_AT_COLUMN)];
    let mut selects = vec!["u.c0".to_owned(), "$2".to_owned()];
    // $1 ids, $2 received_at, then one array per column from $3.
    let mut unnest = vec!["$1::bigint[]".to_owned()];
    let mut aliases = vec!["c0".to_owned()];
    for (i, column) in rows.columns.iter().enumerate() {
        let alias = format!("c{}", i + 1);
        let value = format!("u.{alias}{}", element_cast(column.from));
        targets.push(quote_ident(&column.name));
        selects.push(match column.conversion {
            Some(conversion) => convert_sql(conversion, column.from, &value),
            None => value,
        });
        unnest.push(format!("${}::{}", i + 3, array_type(&column.values)));
        aliases.push(alias);
    }
    let sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS u({})",
        records_table(connector),
        targets.join(", "),
        selects.join(", "),
        unnest.join(", "),
        aliases.join(", "),
    );
    let ids: Vec<i64> = (rows.first_id..).take(rows.rows).collect();
    let mut query = dynamic(&sql).bind(ids).bind(rows.received_at);
    for column in rows.columns {
        query = match column.values {
            ArrayBind::Integer(v) => query.bind(v),
            ArrayBind::Number(v) => query.bind(v),
            ArrayBind::Boolean(v) => query.bind(v),
            ArrayBind::Text(v) => query.bind(v),
            ArrayBind::Date(v) => query.bind(v),
            ArrayBind::Timestamp(v) => query.bind(v),
        };
    }
    query.execute(conn).await?;
    Ok(())
}

/// The PostgreSQL type of a bound array.
fn array_type(values: &ArrayBind) -> &'static str {
    match values {
        ArrayBind::Integer(_) => "bigint[]",
        ArrayBind::Number(_) => "float8[]",
        ArrayBind::Boolean(_) => "boolean[]",
        ArrayBind::Text(_) => "text[]",
        ArrayBind::Date(_) => "date[]",
        ArrayBind::Timestamp(_) => "timestamptz[]",
    }
}

/// The cast that makes an element of a bound array a value of `ty`, the
/// type it was sent as: decimals and json travel as text.
fn element_cast(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Decimal => "::numeric",
        FieldType::Json => "::jsonb",
        _ => "",
    }
}

/// Refused records of a group, in id order, as they are kept for
/// `/rejected`.
#[derive(Default)]
pub(crate) struct RejectedRows {
    ids: Vec<i64>,
    received_at: Vec<DateTime<Utc>>,
    records: Vec<String>,
    errors: Vec<String>,
    formats: Vec<Option<&'static str>>,
}

impl RejectedRows {
    /// Adds a message's refused records, ids from `first_id` on.
    pub(crate) fn extend(
        &mut self,
        first_id: i64,
        received_at: DateTime<Utc>,
        format: Option<Format>,
        rejected: &[RejectedRecord],
    ) {
        for (id, rejected) in (first_id..).zip(rejected) {
            self.ids.push(id);
            self.received_at.push(received_at);
            self.records.push(rejected.record.to_string());
            self.errors.push(rejected.errors.to_string());
            self.formats.push(format.map(Format::name));
        }
    }
}

/// Keeps a group's refused records for `/rejected`.
#[tracing::instrument(skip_all, fields(count = rejected.ids.len()))]
pub(crate) async fn insert_rejected(
    conn: &mut PgConnection,
    connector: Uuid,
    rejected: RejectedRows,
) -> sqlx::Result<()> {
    if rejected.ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rejected_records (connector_id, id, received_at, record, errors, format) \
         SELECT $1, u.id, u.received_at, u.record::jsonb, u.errors::jsonb, u.format \
         FROM UNNEST($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[]) \
         AS u(id, received_at, record, errors, format)",
    )
    .bind(connector)
    .bind(rejected.ids)
    .bind(rejected.received_at)
    .bind(rejected.records)
    .bind(rejected.errors)
    .bind(rejected.formats)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the counters from `before` to `after`, past what this
/// transaction stored, in the same transaction as its rows, for the control
/// plane to report.
#[tracing::instrument(skip(conn))]
pub(crate) async fn advance_stats(
    conn: &mut PgConnection,
    connector: Uuid,
    before: IdCounters,
    after: IdCounters,
    received_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE connector_stats SET last_record_id = $2, last_rejected_id = $3, \
         records = records + $4, rejected = rejected + $5, \
         last_received_at = GREATEST(last_received_at, $6) \
         WHERE connector_id = $1",
    )
    .bind(connector)
    .bind(after.last_record_id)
    .bind(after.last_rejected_id)
    .bind(after.last_record_id - before.last_record_id)
    .bind(after.last_rejected_id - before.last_rejected_id)
    .bind(received_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the chunks applied more than [`APPLIED_KEPT`] before both now
/// and `oldest_held`, the publication time of the oldest message the
/// stream still holds.
///
/// Every copy of a chunk (a redelivery, or an idempotent retry sent within
/// the idempotency window of the first attempt) is published no later than
/// a window after the chunk was first applied. So once the stream holds
/// nothing older than that, and that time has passed, no copy can come any
/// more. The margin covers the window, clocks that disagree a little, and a
/// replica still holding a copy (see `StoreError::Late`).
#[tracing::instrument(skip(pool))]
pub(crate) async fn forget_applied(
    pool: &sqlx::PgPool,
    oldest_held: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let forgotten = sqlx::query(
        "DELETE FROM applied_chunks WHERE applied_at < least(now(), $1) - make_interval(secs => $2)",
    )
    .bind(oldest_held)
    .bind(APPLIED_KEPT.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(forgotten.rows_affected())
}

/// An hour: the idempotency window with a generous margin.
pub(crate) const APPLIED_KEPT: std::time::Duration =
    sluice_runtime::bus::DUPLICATE_WINDOW.saturating_mul(6);

/// Starts the transaction that one GET reads in: a single snapshot, so the
/// bound, the probe and the rows agree.
///
/// Every query of a page reads an `_id` range in `_id` order, which the
/// `_id` index of each partition gives as it is (a merge of index scans).
/// But a partition just filled has no statistics yet, and the planner then
/// guesses a few rows and picks a bitmap scan and a sort: a sort sends no
/// row before it has read them all, so PostgreSQL and the page's rendering
/// took turns instead of overlapping (GET at 0.6 of `COPY TO`, measured by
/// `sluice-bench`). Sorting is only ever the planner's last resort here.
pub(crate) async fn begin_snapshot(
    pool: &sqlx::PgPool,
) -> sqlx::Result<sqlx::Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    // One round trip: a query without parameters goes as a simple query.
    (&mut *tx)
        .execute(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
             SET LOCAL enable_sort = off",
        )
        .await?;
    Ok(tx)
}

/// What a reader needs of its connector, read at the start of its snapshot.
pub(crate) struct ReadableConnector {
    pub schema: Schema,
    pub bound: PageBound,
}

/// The last id a page may cover, read in the page's snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageBound {
    pub last_id: i64,
    /// Whether every id up to `last_id` is still stored: the count equals
    /// the ids handed out, so retention (or a deletion) took none.
    pub dense: bool,
}

/// Takes the records table's ACCESS SHARE lock (so no schema edit can alter
/// it until this transaction ends), then reads the connector's schema and
/// counters. The lock comes first and, in REPEATABLE READ, before the
/// snapshot: an edit that altered the table commits before the schema is
/// read, so the schema always names the table's real columns. `None`: the
/// connector is gone.
#[tracing::instrument(skip(conn))]
pub(crate) async fn open_connector(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<ReadableConnector>> {
    dynamic(&format!(
        "LOCK TABLE {} IN ACCESS SHARE MODE",
        records_table(connector)
    ))
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(
        "SELECT c.schema, COALESCE(s.last_record_id, 0), COALESCE(s.records, 0) \
         FROM connectors c LEFT JOIN connector_stats s ON s.connector_id = c.id WHERE c.id = $1",
    )
    .bind(connector)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        let last_id: i64 = row.try_get(1)?;
        Ok(ReadableConnector {
            schema: row.try_get::<Json<Schema>, _>(0)?.0,
            bound: PageBound {
                last_id,
                dense: row.try_get::<i64, _>(2)? == last_id,
            },
        })
    })
    .transpose()
}

/// Binds the page's range and the plan's values, in placeholder order.
pub(crate) fn bind_page<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    after: i64,
    up_to: i64,
    binds: &'q [Bind],
) -> Query<'q, Postgres, PgArguments> {
    query = query.bind(after).bind(up_to);
    for bind in binds {
        query = match bind {
            Bind::Integer(v) => query.bind(*v),
            Bind::Number(v) => query.bind(*v),
            Bind::Text(v) => query.bind(v.as_str()),
            Bind::Boolean(v) => query.bind(*v),
            Bind::Date(v) => query.bind(*v),
            Bind::Timestamp(v) => query.bind(*v),
        };
    }
    query
}

/// Where a filtered page ends: the ids of at most `limit + 1` matching rows
/// after `after` and up to `bound`. Returns how many matched (at most
/// `limit + 1`) and the `limit`-th id if there were that many.
#[tracing::instrument(skip(conn, plan))]
pub(crate) async fn probe_page(
    conn: &mut PgConnection,
    plan: &PagePlan,
    after: i64,
    bound: i64,
    limit: i64,
) -> sqlx::Result<(i64, Option<i64>)> {
    let sql = plan.probe_sql();
    let mut ids = bind_page(dynamic(&sql), after, bound, &plan.binds)
        .bind(limit + 1)
        .fetch(&mut *conn);
    let mut count = 0;
    let mut last_of_page = None;
    while let Some(row) = ids.try_next().await? {
        count += 1;
        if count == limit {
            last_of_page = Some(row.try_get::<i64, _>(0)?);
        }
    }
    Ok((count, last_of_page))
}

/// The bound of `/rejected`; `None`: the connector does not exist.
#[tracing::instrument(skip(conn))]
pub(crate) async fn rejected_bound(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<PageBound>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(s.last_rejected_id, 0), COALESCE(s.rejected, 0) \
         FROM connectors c LEFT JOIN connector_stats s ON s.connector_id = c.id WHERE c.id = $1",
    )
    .bind(connector)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(last_id, count)| PageBound {
        last_id,
        dense: count == last_id,
    }))
}
