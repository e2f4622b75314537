//! The PostgreSQL side shared by the control plane and the read API: the
//! connection, the migrations, and the layout of each connector's records
//! table with the SQL that builds, changes and fills it.
//!
//! Field names come from users. They reach SQL only through [`quote_ident`],
//! and table names derive from connector ids, never from user text.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_schema::{ChangeStep, Conversion, FieldType, IncompatibleChange, Schema, SchemaChange};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Connects to `database_url`, creating the database if it does not exist,
/// and runs the embedded migrations (under PostgreSQL's advisory lock, so
/// replicas starting together do not migrate twice).
pub async fn connect_and_migrate(database_url: &str) -> anyhow::Result<PgPool> {
    let options = connect_options(database_url)?;
    create_database_if_missing(&options).await?;
    let pool = pool_options().connect_with(options).await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// A pool on a streaming replica of the database (`DATABASE_READ_URL`),
/// for reads alone: nothing is created or migrated there, the replica
/// replays what the primary did. It connects when first used, so a
/// replica that is down keeps the service unready rather than stopped.
pub fn connect_replica(database_url: &str) -> anyhow::Result<PgPool> {
    Ok(pool_options().connect_lazy_with(connect_options(database_url)?))
}

fn connect_options(database_url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(database_url)?
        // Timestamps converted to text or JSON in SQL read as UTC.
        .options([("timezone", "UTC")]))
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    if PgConnection::connect_with(options).await.is_ok() {
        return Ok(());
    }
    let mut admin = options.clone().database("postgres").connect().await?;
    let result = sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .execute(&mut admin)
        .await;
    match result {
        // Another replica created it first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        other => {
            other?;
        }
    }
    admin.close().await?;
    Ok(())
}

/// Quotes an identifier for PostgreSQL: the only way user text reaches SQL
/// other than as a bound parameter.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The quoted name of a connector's records table.
pub fn records_table(connector: Uuid) -> String {
    quote_ident(&format!("records_{}", connector.simple()))
}

/// System columns of every records table. `_id` grows in commit order per
/// connector (allocated under the connector's stats row lock).
pub const ID_COLUMN: &str = "_id";
pub const RECEIVED_AT_COLUMN: &str = "_received_at";

/// The column type a field type is stored as (SPEC 5).
pub fn pg_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "text",
        FieldType::Integer => "bigint",
        FieldType::Number => "double precision",
        FieldType::Decimal => "numeric",
        FieldType::Boolean => "boolean",
        FieldType::Date => "date",
        FieldType::Timestamp => "timestamptz",
        FieldType::Json => "jsonb",
    }
}

/// Makes a connector's records table: partitioned by range of
/// `_received_at` (see [`crate::partitions`]), with no partition yet; the
/// read API makes them as records come.
pub async fn create_records_table(
    conn: &mut PgConnection,
    connector: Uuid,
    schema: &Schema,
) -> sqlx::Result<()> {
    let table = records_table(connector);
    let mut columns = vec![
        format!("{} bigint NOT NULL", quote_ident(ID_COLUMN)),
        format!("{} timestamptz NOT NULL", quote_ident(RECEIVED_AT_COLUMN)),
    ];
    columns.extend(
        schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", quote_ident(f.name.as_str()), pg_type(f.ty))),
    );
    sqlx::query(&format!(
        "CREATE TABLE {table} ({}) PARTITION BY RANGE ({})",
        columns.join(", "),
        quote_ident(RECEIVED_AT_COLUMN)
    ))
    .execute(&mut *conn)
    .await?;
    create_records_indexes(conn, connector).await
}

/// The partitioned indexes of a records table, which every partition gets
/// its own copy of: `_id` for cursor pages and lookups, `_received_at` for
/// its filters and the oldest record. A unique key of a partitioned table
/// must hold the partition key, so `_id` has none: it is unique because it
/// is allocated under the connector's stats row lock.
pub async fn create_records_indexes(conn: &mut PgConnection, connector: Uuid) -> sqlx::Result<()> {
    let table = records_table(connector);
    let hex = connector.simple();
    for (suffix, column) in [("id", ID_COLUMN), ("received_at", RECEIVED_AT_COLUMN)] {
        let index = quote_ident(&format!("records_{hex}_{suffix}"));
        sqlx::query(&format!(
            "CREATE INDEX {index} ON {table} ({})",
            quote_ident(column)
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn drop_records_table(conn: &mut PgConnection, connector: Uuid) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "DROP TABLE IF EXISTS {}",
        records_table(connector)
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// What a connector's records take up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableUsage {
    /// Bytes on disk of its records table: every partition with its
    /// indexes and TOAST, as the files are now.
    pub bytes: i64,
    /// The `_received_at` of its oldest record (by the index: cheap).
    pub oldest_received_at: Option<DateTime<Utc>>,
}

/// The [`TableUsage`] of each of `connectors`, one statement each: a
/// statement locks every partition of the table it measures, so measuring
/// many tables at once could outgrow PostgreSQL's lock table. A connector
/// whose table cannot be measured (deleted meanwhile) is left out.
pub async fn measure_tables(pool: &PgPool, connectors: &[Uuid]) -> HashMap<Uuid, TableUsage> {
    let mut usage = HashMap::new();
    for &connector in connectors {
        match measure_table(pool, connector).await {
            Ok(one) => {
                usage.insert(connector, one);
            }
            Err(error) => {
                tracing::debug!(%connector, %error, "measuring a records table failed");
            }
        }
    }
    usage
}

async fn measure_table(pool: &PgPool, connector: Uuid) -> sqlx::Result<TableUsage> {
    // Table names derive from ids, never from user text: safe as a literal.
    let table = records_table(connector);
    let (bytes, oldest_received_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(&format!(
        "SELECT (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint \
                 FROM pg_partition_tree('{table}'::regclass)), \
                (SELECT min({}) FROM {table})",
        quote_ident(RECEIVED_AT_COLUMN)
    ))
    .persistent(false)
    .fetch_one(pool)
    .await?;
    Ok(TableUsage {
        bytes,
        oldest_received_at,
    })
}

/// SQL converting `expr`, a value of type `from`, by `conversion`. The
/// control plane uses it on stored columns, the read API on records still in
/// flight from an older schema version, so both convert alike.
pub fn convert_sql(conversion: Conversion, from: FieldType, expr: &str) -> String {
    match conversion {
        Conversion::IntegerToNumber => format!("({expr})::double precision"),
        Conversion::IntegerToDecimal => format!("({expr})::numeric"),
        Conversion::ToString if from == FieldType::Timestamp => format!(
            // RFC 3339 in UTC, as GET returns timestamps; no trailing zeros.
            r#"regexp_replace(to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '\.?0+$', '') || 'Z'"#
        ),
        Conversion::ToString => format!("({expr})::text"),
        Conversion::DateToTimestamp => format!("(({expr})::timestamp AT TIME ZONE 'UTC')"),
        Conversion::ToJson if from == FieldType::Timestamp => format!(
            "to_jsonb({})",
            convert_sql(Conversion::ToString, from, expr)
        ),
        Conversion::ToJson => format!("to_jsonb({expr})"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyChangeError {
    #[error("{}", .0.message)]
    Incompatible(IncompatibleChange),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Applies an allowed schema change to a connector's records table. Call it
/// inside the transaction that also updates the connector, so the edit
/// applies completely or not at all.
pub async fn apply_change(
    conn: &mut PgConnection,
    connector: Uuid,
    change: &SchemaChange,
) -> Result<(), ApplyChangeError> {
    let table = records_table(connector);
    let rename = |from: &str, to: &str| {
        format!(
            "ALTER TABLE {table} RENAME COLUMN {} TO {}",
            quote_ident(from),
            quote_ident(to)
        )
    };
    // Renames go through temporary names (which users cannot choose: they
    // start with '_'), so swaps and chains never clash.
    let temporary = |id: sluice_schema::FieldId| format!("_renaming_{}", id.0);
    for step in &change.steps {
        match step {
            ChangeStep::Remove { field } => {
                execute(
                    conn,
                    &format!(
                        "ALTER TABLE {table} DROP COLUMN {}",
                        quote_ident(field.name.as_str())
                    ),
                )
                .await?
            }
            ChangeStep::Rename { id, from, .. } => {
                execute(conn, &rename(from.as_str(), &temporary(*id))).await?
            }
            _ => {}
        }
    }
    for step in &change.steps {
        if let ChangeStep::Rename { id, to, .. } = step {
            execute(conn, &rename(&temporary(*id), to.as_str())).await?;
        }
    }
    for step in &change.steps {
        match step {
            ChangeStep::ChangeType {
                name,
                from,
                to,
                conversion,
                ..
            } => {
                let column = quote_ident(name.as_str());
                if *conversion == Conversion::IntegerToNumber {
                    check_integers_fit_number(conn, &table, name.as_str(), *from, *to).await?;
                }
                execute(
                    conn,
                    &format!(
                        "ALTER TABLE {table} ALTER COLUMN {column} TYPE {} USING {}",
                        pg_type(*to),
                        convert_sql(*conversion, *from, &column)
                    ),
                )
                .await?;
            }
            ChangeStep::Add { field } => {
                execute(
                    conn,
                    &format!(
                        "ALTER TABLE {table} ADD COLUMN {} {}",
                        quote_ident(field.name.as_str()),
                        pg_type(field.ty)
                    ),
                )
                .await?
            }
            _ => {}
        }
    }
    Ok(())
}

async fn execute(conn: &mut PgConnection, sql: &str) -> sqlx::Result<()> {
    sqlx::query(sql).execute(conn).await.map(drop)
}

async fn check_integers_fit_number(
    conn: &mut PgConnection,
    table: &str,
    name: &str,
    from: FieldType,
    to: FieldType,
) -> Result<(), ApplyChangeError> {
    let limit = Conversion::MAX_EXACT_INTEGER_IN_NUMBER;
    let column = quote_ident(name);
    let (beyond,): (i64,) = sqlx::query_as(&format!(
        "SELECT count(*) FROM {table} WHERE {column} > $1 OR {column} < -$1"
    ))
    .bind(limit)
    .fetch_one(&mut *conn)
    .await?;
    if beyond > 0 {
        return Err(ApplyChangeError::Incompatible(IncompatibleChange::new(
            name,
            from,
            to,
            &format!("{beyond} stored values are beyond ±2^53 and would lose precision"),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_whatever_they_hold() {
        assert_eq!(quote_ident("plain"), r#""plain""#);
        assert_eq!(
            quote_ident(r#"x"; DROP TABLE connectors; --"#),
            r#""x""; DROP TABLE connectors; --""#
        );
        let id = Uuid::nil();
        assert_eq!(
            records_table(id),
            r#""records_00000000000000000000000000000000""#
        );
    }
}
