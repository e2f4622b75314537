//! The read API's SQL, in small functions that take a connection.
//!
//! Lock order, shared with the control plane so that none of us deadlocks:
//! a connector's `connectors` row first (the control plane takes it FOR
//! UPDATE before it alters or drops the records table; the store takes it
//! FOR SHARE), then its `connector_stats` row, then its records table.

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sluice_runtime::bus::{ChunkId, ColumnValues, RecordBatch, RejectedRecord};
use sluice_runtime::store::{
    ID_COLUMN, RECEIVED_AT_COLUMN, convert_sql, quote_ident, records_table,
};
use sluice_schema::{Conversion, Schema};
use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use crate::copy::{self, BinaryRows};
use crate::plan::{Bind, PagePlan};

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
/// row is made if the connector has none yet.
#[tracing::instrument(skip(conn))]
pub(crate) async fn lock_counters(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<IdCounters>> {
    let lock = "SELECT last_record_id, last_rejected_id FROM connector_stats \
                WHERE connector_id = $1 FOR UPDATE";
    if let Some((r, j)) = sqlx::query_as::<_, (i64, i64)>(lock)
        .bind(connector)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(Some(IdCounters {
            last_record_id: r,
            last_rejected_id: j,
        }));
    }
    sqlx::query(
        "INSERT INTO connector_stats (connector_id) SELECT id FROM connectors WHERE id = $1 \
         ON CONFLICT DO NOTHING",
    )
    .bind(connector)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_as::<_, (i64, i64)>(lock)
        .bind(connector)
        .fetch_optional(&mut *conn)
        .await?
        .map(|(r, j)| IdCounters {
            last_record_id: r,
            last_rejected_id: j,
        }))
}

/// Why a batch cannot be stored as it is, ever.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unstorable(pub String);

/// One column of a batch, mapped onto the field it now belongs to.
struct TargetColumn {
    /// The field's column, quoted.
    name: String,
    values: ColumnValues,
    /// How its values become the field's current type, if they are of an
    /// older one.
    conversion: Option<Conversion>,
}

/// A batch's rows, ready to write: encoded for a binary COPY, or, when a
/// column must be converted, planned as an INSERT whose SQL converts it
/// exactly as the control plane converted the stored values.
pub(crate) enum RecordInsert {
    /// Only refused records: no row to write.
    Nothing,
    Copy {
        statement: String,
        data: Vec<u8>,
    },
    Insert(Rows),
}

impl RecordInsert {
    /// Maps the batch's columns onto `schema` (see [`Rows::map`]) and, for a
    /// COPY, encodes them: the CPU work, for a blocking thread.
    pub(crate) fn plan(
        connector: Uuid,
        schema: &Schema,
        batch: RecordBatch,
        first_id: i64,
    ) -> Result<RecordInsert, Unstorable> {
        let rows = Rows::map(connector, schema, batch, first_id)?;
        Ok(if rows.rows == 0 {
            RecordInsert::Nothing
        } else if rows.columns.iter().any(|c| c.conversion.is_some()) {
            RecordInsert::Insert(rows)
        } else {
            RecordInsert::Copy {
                statement: rows.copy_statement(),
                data: rows.binary_rows()?,
            }
        })
    }

    #[tracing::instrument(skip_all)]
    pub(crate) async fn execute(self, conn: &mut PgConnection) -> Result<(), StoreFailure> {
        match self {
            RecordInsert::Nothing => Ok(()),
            RecordInsert::Insert(rows) => rows.insert(conn).await,
            RecordInsert::Copy { statement, data } => {
                let mut copy = conn.copy_in_raw(&statement).await?;
                if let Err(error) = copy.send(data).await {
                    let _ = copy.abort("sending the rows failed").await;
                    return Err(error.into());
                }
                copy.finish().await?;
                Ok(())
            }
        }
    }
}

/// The rows of one batch, mapped onto the records table's columns.
pub(crate) struct Rows {
    table: String,
    first_id: i64,
    rows: usize,
    received_at: DateTime<Utc>,
    columns: Vec<TargetColumn>,
}

impl Rows {
    /// Maps the batch's columns onto `schema`, the connector's current one:
    /// by field id, so renamed fields follow their id and removed ones are
    /// dropped; a column of an older type is converted exactly as the
    /// control plane converted the stored values; fields the batch lacks
    /// stay null.
    fn map(
        connector: Uuid,
        schema: &Schema,
        batch: RecordBatch,
        first_id: i64,
    ) -> Result<Rows, Unstorable> {
        let rows = batch.rows;
        i64::try_from(rows).map_err(|_| Unstorable("too many rows".into()))?;
        let mut columns: Vec<TargetColumn> = Vec::new();
        let mut seen = Vec::new();
        for column in batch.columns {
            if column.values.len() != rows {
                return Err(Unstorable(format!(
                    "column of field {} holds {} values for {rows} rows",
                    column.field.0,
                    column.values.len()
                )));
            }
            let Some(field) = schema.field_by_id(column.field) else {
                // Removed since the gateway validated: its values go.
                continue;
            };
            if seen.contains(&field.id) {
                return Err(Unstorable(format!(
                    "field {} has two columns",
                    column.field.0
                )));
            }
            seen.push(field.id);
            let from = column.values.field_type();
            let conversion = if from == field.ty {
                None
            } else {
                Some(Conversion::between(from, field.ty).ok_or_else(|| {
                    Unstorable(format!(
                        "field {:?} is now {} and a {from} value cannot become one",
                        field.name.as_str(),
                        field.ty
                    ))
                })?)
            };
            columns.push(TargetColumn {
                name: quote_ident(field.name.as_str()),
                values: column.values,
                conversion,
            });
        }
        Ok(Rows {
            table: records_table(connector),
            first_id,
            rows,
            received_at: batch.received_at,
            columns,
        })
    }

    fn copy_statement(&self) -> String {
        let names: Vec<String> = [ID_COLUMN, RECEIVED_AT_COLUMN]
            .into_iter()
            .map(quote_ident)
            .chain(self.columns.iter().map(|c| c.name.clone()))
            .collect();
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.table,
            names.join(", ")
        )
    }

    /// The rows in COPY's binary format; every column is of its field's type.
    fn binary_rows(&self) -> Result<Vec<u8>, Unstorable> {
        let fields = i16::try_from(self.columns.len() + 2)
            .map_err(|_| Unstorable("too many columns".into()))?;
        let mut out = BinaryRows::with_capacity(self.rows * (16 + 24 * self.columns.len()));
        let malformed = |what: &str| Unstorable(format!("a {what} value is malformed"));
        // One value for every row of the batch: encoded once.
        let received_at = copy::micros(self.received_at).ok_or_else(|| malformed("received_at"))?;
        for row in 0..self.rows {
            out.row(fields);
            out.int8(self.first_id + row as i64);
            out.timestamptz(received_at);
            for column in &self.columns {
                match &column.values {
                    ColumnValues::String(v) => match &v[row] {
                        Some(s) => out.text(s),
                        None => out.null(),
                    },
                    ColumnValues::Integer(v) => match v[row] {
                        Some(i) => out.int8(i),
                        None => out.null(),
                    },
                    ColumnValues::Number(v) => match v[row] {
                        Some(n) => out.float8(n),
                        None => out.null(),
                    },
                    ColumnValues::Decimal(v) => match &v[row] {
                        Some(d) => out.numeric(d).ok_or_else(|| malformed("decimal"))?,
                        None => out.null(),
                    },
                    ColumnValues::Boolean(v) => match v[row] {
                        Some(b) => out.boolean(b),
                        None => out.null(),
                    },
                    ColumnValues::Date(v) => match &v[row] {
                        Some(d) => out.date(parse_date(d).map_err(|_| malformed("date"))?),
                        None => out.null(),
                    },
                    ColumnValues::Timestamp(v) => match &v[row] {
                        Some(t) => parse_timestamp(t)
                            .ok()
                            .and_then(copy::micros)
                            .map(|t| out.timestamptz(t))
                            .ok_or_else(|| malformed("timestamp"))?,
                        None => out.null(),
                    },
                    ColumnValues::Json(v) => match &v[row] {
                        Some(j) => out.jsonb(j.get()),
                        None => out.null(),
                    },
                }
            }
        }
        Ok(out.finish())
    }

    /// One `INSERT … SELECT … FROM UNNEST`: every column bound as one typed
    /// array, converted in SQL.
    async fn insert(self, conn: &mut PgConnection) -> Result<(), StoreFailure> {
        let mut targets = vec![quote_ident(ID_COLUMN), quote_ident(RECEIVED_AT_COLUMN)];
        let mut selects = vec!["u.c0".to_owned(), "$2".to_owned()];
        // $1 ids, $2 received_at, then one array per column from $3.
        let mut unnest = vec!["$1::bigint[]".to_owned()];
        let mut aliases = vec!["c0".to_owned()];
        let mut arrays = Vec::new();
        for (i, column) in self.columns.into_iter().enumerate() {
            let from = column.values.field_type();
            let alias = format!("c{}", i + 1);
            let (array, pg_array, cast) = array_of(column.values)?;
            let value = format!("u.{alias}{cast}");
            targets.push(column.name);
            selects.push(match column.conversion {
                Some(conversion) => convert_sql(conversion, from, &value),
                None => value,
            });
            unnest.push(format!("${}::{pg_array}", i + 3));
            aliases.push(alias);
            arrays.push(array);
        }
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS u({})",
            self.table,
            targets.join(", "),
            selects.join(", "),
            unnest.join(", "),
            aliases.join(", "),
        );
        let ids: Vec<i64> = (self.first_id..).take(self.rows).collect();
        let mut query = dynamic(&sql).bind(ids).bind(self.received_at);
        for array in arrays {
            query = match array {
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
}

/// Why storing rows failed: the data, or the database.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreFailure {
    #[error(transparent)]
    Unstorable(#[from] Unstorable),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn parse_date(text: &str) -> chrono::ParseResult<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
}

fn parse_timestamp(text: &str) -> chrono::ParseResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

/// A column bound as one array.
enum ArrayBind {
    Integer(Vec<Option<i64>>),
    Number(Vec<Option<f64>>),
    Boolean(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
    Date(Vec<Option<NaiveDate>>),
    Timestamp(Vec<Option<DateTime<Utc>>>),
}

/// The array to bind for a column, its PostgreSQL array type, and the cast
/// that makes an element its field type. Dates and timestamps are parsed
/// here and sent in binary, so PostgreSQL never reparses their text.
fn array_of(values: ColumnValues) -> Result<(ArrayBind, &'static str, &'static str), Unstorable> {
    Ok(match values {
        ColumnValues::String(v) => (ArrayBind::Text(v), "text[]", ""),
        ColumnValues::Integer(v) => (ArrayBind::Integer(v), "bigint[]", ""),
        ColumnValues::Number(v) => (ArrayBind::Number(v), "float8[]", ""),
        ColumnValues::Decimal(v) => (ArrayBind::Text(v), "text[]", "::numeric"),
        ColumnValues::Boolean(v) => (ArrayBind::Boolean(v), "boolean[]", ""),
        ColumnValues::Date(v) => {
            let dates = v
                .into_iter()
                .map(|d| d.map(|d| parse_date(&d)).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Unstorable(format!("a date value is malformed: {e}")))?;
            (ArrayBind::Date(dates), "date[]", "")
        }
        ColumnValues::Timestamp(v) => {
            let times = v
                .into_iter()
                .map(|t| t.map(|t| parse_timestamp(&t)).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Unstorable(format!("a timestamp value is malformed: {e}")))?;
            (ArrayBind::Timestamp(times), "timestamptz[]", "")
        }
        ColumnValues::Json(v) => (
            ArrayBind::Text(
                v.into_iter()
                    .map(|j| j.map(|j| String::from(Box::<str>::from(j))))
                    .collect(),
            ),
            "text[]",
            "::jsonb",
        ),
    })
}

/// Keeps refused records for `/rejected`, ids from `first_id` on.
#[tracing::instrument(skip_all, fields(count = rejected.len()))]
pub(crate) async fn insert_rejected(
    conn: &mut PgConnection,
    connector: Uuid,
    received_at: DateTime<Utc>,
    rejected: &[RejectedRecord],
    first_id: i64,
) -> sqlx::Result<()> {
    if rejected.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = (first_id..).take(rejected.len()).collect();
    let records: Vec<String> = rejected.iter().map(|r| r.record.to_string()).collect();
    let errors: Vec<String> = rejected.iter().map(|r| r.errors.to_string()).collect();
    sqlx::query(
        "INSERT INTO rejected_records (connector_id, id, received_at, record, errors) \
         SELECT $1, u.id, $2, u.record::jsonb, u.errors::jsonb \
         FROM UNNEST($3::bigint[], $4::text[], $5::text[]) AS u(id, record, errors)",
    )
    .bind(connector)
    .bind(received_at)
    .bind(ids)
    .bind(records)
    .bind(errors)
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
pub(crate) async fn begin_snapshot(
    pool: &sqlx::PgPool,
) -> sqlx::Result<sqlx::Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// What a reader needs of its connector, read at the start of its snapshot.
pub(crate) struct ReadableConnector {
    pub schema: Schema,
    pub last_record_id: i64,
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
        "SELECT c.schema, COALESCE(s.last_record_id, 0) \
         FROM connectors c LEFT JOIN connector_stats s ON s.connector_id = c.id WHERE c.id = $1",
    )
    .bind(connector)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(ReadableConnector {
            schema: row.try_get::<Json<Schema>, _>(0)?.0,
            last_record_id: row.try_get(1)?,
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
            Bind::Uuid(v) => query.bind(*v),
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

/// The bound of `/rejected`: whether the connector exists, and its last id.
#[tracing::instrument(skip(conn))]
pub(crate) async fn rejected_bound(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT COALESCE(s.last_rejected_id, 0) \
         FROM connectors c LEFT JOIN connector_stats s ON s.connector_id = c.id WHERE c.id = $1",
    )
    .bind(connector)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(id,)| id))
}
