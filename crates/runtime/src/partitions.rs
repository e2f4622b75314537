//! The time partitions of a connector's records table.
//!
//! A records table is partitioned by range of `_received_at`: each
//! partition covers one span (`SLUICE_PARTITION_SPAN`) aligned in UTC, and
//! is named from its connector and its start (`records_<id>_20261203_000000`),
//! so every replica computes the same name. Retention then drops whole
//! partitions instead of deleting rows.
//!
//! A partition is made as a table of its own, then attached: `ATTACH
//! PARTITION` takes only a SHARE UPDATE EXCLUSIVE lock on the parent, which
//! readers (ACCESS SHARE) and writers (ROW EXCLUSIVE) do not conflict with,
//! whereas `CREATE TABLE … PARTITION OF` would wait for every reader of the
//! connector and hold up all that come after. Whoever makes partitions of a
//! connector first takes [`lock_partitioning`], so two makers never race for
//! one name.
//!
//! Tables made before partitioning are migrated online by
//! [`migrate_plain_table`]: the old table becomes the partition of every
//! time before a boundary.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::store::{ID_COLUMN, RECEIVED_AT_COLUMN, quote_ident, records_table};

/// One partition of a records table: `[from, to)`, where `None` is
/// PostgreSQL's MINVALUE or MAXVALUE.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Partition {
    /// Its table's name, unquoted.
    pub name: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Partition {
    /// Whether a row received at `at` belongs here.
    pub fn holds(&self, at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| from <= at) && self.to.is_none_or(|to| at < to)
    }
}

/// What a connector's records table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// No such table (the connector is gone).
    Missing,
    /// A table from before partitioning, to migrate.
    Plain,
    Partitioned,
}

/// The unquoted name of the partition that starts at `from`.
pub fn partition_name(connector: Uuid, from: DateTime<Utc>) -> String {
    format!(
        "records_{}_{}",
        connector.simple(),
        from.format("%Y%m%d_%H%M%S")
    )
}

/// The unquoted name a table from before partitioning takes once it is
/// the partition of every time before its boundary.
pub fn legacy_name(connector: Uuid) -> String {
    format!("records_{}_legacy", connector.simple())
}

/// The span-aligned range that holds `at`: spans count from the Unix epoch
/// in UTC, so a day's partition runs from midnight to midnight UTC.
pub fn aligned_range(at: DateTime<Utc>, span: Duration) -> (DateTime<Utc>, DateTime<Utc>) {
    let span = span.as_secs().max(1) as i64;
    let start = at.timestamp().div_euclid(span) * span;
    let from = DateTime::from_timestamp(start, 0).unwrap_or(at);
    (from, from + TimeDelta::seconds(span))
}

/// The range of a new partition for `at`: the aligned one, cut where it
/// would overlap `existing` partitions (made under another span, or the
/// legacy partition).
pub fn range_for(
    at: DateTime<Utc>,
    span: Duration,
    existing: &[Partition],
) -> (DateTime<Utc>, DateTime<Utc>) {
    let (mut from, mut to) = aligned_range(at, span);
    for partition in existing {
        if let Some(end) = partition.to
            && end <= at
            && end > from
        {
            from = end;
        }
        if let Some(start) = partition.from
            && start > at
            && start < to
        {
            to = start;
        }
    }
    (from, to)
}

/// Advisory lock classes (the first key of PostgreSQL's two-key advisory
/// locks, a space apart from the one-key locks the control plane takes).
const PARTITIONING_LOCK: i32 = 0x534c_5031;
const MAINTENANCE_LOCK: i32 = 0x534c_5032;

/// The second key of a connector's advisory locks. Two connectors may
/// share one; they then merely take turns.
fn lock_key(connector: Uuid) -> i32 {
    let bits = connector.as_u128();
    (bits as u32 ^ (bits >> 32) as u32 ^ (bits >> 64) as u32 ^ (bits >> 96) as u32) as i32
}

/// Serialises the making of a connector's partitions until the end of the
/// transaction.
pub async fn lock_partitioning(conn: &mut PgConnection, connector: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(PARTITIONING_LOCK)
        .bind(lock_key(connector))
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the connector's maintenance lock for this session, if no other
/// session holds it: one replica maintains a connector at a time.
pub async fn try_lock_maintenance(conn: &mut PgConnection, connector: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(MAINTENANCE_LOCK)
        .bind(lock_key(connector))
        .fetch_one(conn)
        .await
}

pub async fn unlock_maintenance(conn: &mut PgConnection, connector: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(MAINTENANCE_LOCK)
        .bind(lock_key(connector))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn layout(conn: &mut PgConnection, connector: Uuid) -> sqlx::Result<Layout> {
    let kind: Option<String> =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)")
            .bind(records_table(connector))
            .fetch_optional(conn)
            .await?;
    Ok(match kind.as_deref() {
        None => Layout::Missing,
        Some("p") => Layout::Partitioned,
        Some(_) => Layout::Plain,
    })
}

/// The partitions of a connector's records table, oldest first; none if
/// it is not partitioned (or gone).
pub async fn list(conn: &mut PgConnection, connector: Uuid) -> sqlx::Result<Vec<Partition>> {
    // PostgreSQL keeps a partition's bounds as an expression; its text,
    // `FOR VALUES FROM ('…') TO ('…')`, is read back as timestamps.
    sqlx::query_as(
        "SELECT c.relname::text AS name, \
           CASE WHEN b[1] = 'MINVALUE' THEN NULL ELSE btrim(b[1], '''')::timestamptz END AS \"from\", \
           CASE WHEN b[2] = 'MAXVALUE' THEN NULL ELSE btrim(b[2], '''')::timestamptz END AS \"to\" \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), \
           'FROM \\((.+)\\) TO \\((.+)\\)') AS b \
         WHERE i.inhparent = to_regclass($1) ORDER BY 2 NULLS FIRST",
    )
    .bind(records_table(connector))
    .fetch_all(conn)
    .await
}

/// Makes sure a partition holds `at`, making one (`span` long, cut to fit)
/// if none does (a table not partitioned yet is taken as one partition
/// holding every time). Call it in a transaction: it takes the partitioning lock
/// until that ends. Returns the partitions as they are then, and whether
/// it made one.
pub async fn ensure(
    conn: &mut PgConnection,
    connector: Uuid,
    at: DateTime<Utc>,
    span: Duration,
) -> sqlx::Result<(Vec<Partition>, bool)> {
    lock_partitioning(conn, connector).await?;
    let mut partitions = list(conn, connector).await?;
    if partitions.iter().any(|p| p.holds(at)) {
        return Ok((partitions, false));
    }
    if partitions.is_empty() && layout(conn, connector).await? != Layout::Partitioned {
        // A table from before partitioning holds every time until it is
        // migrated (a row past its bound then fails, and is stored again
        // once it is done); a table that is gone holds nothing.
        let whole = Partition {
            name: format!("records_{}", connector.simple()),
            from: None,
            to: None,
        };
        return Ok((vec![whole], false));
    }
    let (from, to) = range_for(at, span, &partitions);
    let name = partition_name(connector, from);
    let parent = records_table(connector);
    let table = quote_ident(&name);
    execute(
        conn,
        &format!("CREATE TABLE {table} (LIKE {parent} INCLUDING DEFAULTS)"),
    )
    .await?;
    execute(
        conn,
        &format!(
            "ALTER TABLE {parent} ATTACH PARTITION {table} FOR VALUES FROM ({}) TO ({})",
            literal(from),
            literal(to)
        ),
    )
    .await?;
    tracing::debug!(%connector, partition = %name, "partition made");
    partitions.push(Partition {
        name,
        from: Some(from),
        to: Some(to),
    });
    partitions.sort_by_key(|p| p.from);
    Ok((partitions, true))
}

/// Rows in one partition.
pub async fn count_rows(conn: &mut PgConnection, partition: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {}", quote_ident(partition)))
        .persistent(false)
        .fetch_one(conn)
        .await
}

/// Drops one partition with its rows: ACCESS EXCLUSIVE on the parent for a
/// moment, so call it with a `lock_timeout` set.
pub async fn drop_partition(conn: &mut PgConnection, partition: &str) -> sqlx::Result<()> {
    execute(conn, &format!("DROP TABLE {}", quote_ident(partition))).await
}

/// A timestamp as an SQL literal; its text holds no quote.
fn literal(at: DateTime<Utc>) -> String {
    format!("'{}'", at.to_rfc3339())
}

async fn execute(conn: &mut PgConnection, sql: &str) -> sqlx::Result<()> {
    sqlx::query(sql)
        .persistent(false)
        .execute(conn)
        .await
        .map(drop)
}

/// How long a step of the migration waits for a lock before it gives up
/// (to try again at the next maintenance): readers and writers queue behind
/// a waiting ACCESS EXCLUSIVE lock, so it must never wait long.
pub const LOCK_TIMEOUT: &str = "2s";

/// Turns a records table from before partitioning into the partitioned
/// table, online: its rows stay where they are, as the partition of every
/// time before a boundary two spans ahead, and new partitions follow from
/// there. Returns false when a lock could not be had in time (nothing is
/// lost; call it again later). Never call it in a transaction; hold the
/// connector's maintenance lock.
///
/// 1. An index on `_id` alone is built CONCURRENTLY (the partitioned
///    table's own; the old primary key, unique on `_id`, cannot stand for
///    it), so attaching builds none under a lock.
/// 2. A CHECK that every row lies before the boundary is added NOT VALID
///    (a moment's lock), then validated, which scans without blocking
///    reads or writes. Rows that the store writes meanwhile are checked as
///    they come; one past the boundary fails and is stored again later.
/// 3. One short transaction, holding the connector's row as a schema edit
///    does (so no store of it runs), renames the old table, makes the
///    partitioned table under its name, and attaches the old one, which the
///    valid CHECK spares a scan.
pub async fn migrate_plain_table(
    conn: &mut PgConnection,
    connector: Uuid,
    span: Duration,
) -> sqlx::Result<bool> {
    let old = records_table(connector);
    let hex = connector.simple();
    let id_index = quote_ident(&format!("records_{hex}_legacy_id"));
    let check = quote_ident(&format!("records_{hex}_legacy_bound"));
    // A build cut short leaves an invalid index behind: build it again.
    let valid: Option<bool> =
        sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)")
            .bind(&id_index)
            .fetch_optional(&mut *conn)
            .await?;
    // CONCURRENTLY refuses to run in a transaction: sent alone, as a
    // simple query (a bare string).
    if valid == Some(false) {
        let drop = format!("DROP INDEX CONCURRENTLY {id_index}");
        conn.execute(drop.as_str()).await?;
    }
    if valid != Some(true) {
        let build = format!(
            "CREATE INDEX CONCURRENTLY {id_index} ON {old} ({})",
            quote_ident(ID_COLUMN)
        );
        conn.execute(build.as_str()).await?;
    }

    let (_, next) = aligned_range(Utc::now(), span);
    let boundary = next + TimeDelta::seconds(span.as_secs() as i64);
    let mut tx = conn.begin().await?;
    execute(
        &mut tx,
        &format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"),
    )
    .await?;
    let added = add_bound(&mut tx, &old, &check, boundary).await;
    if let Some(result) = given_up(added) {
        result?;
        tx.commit().await?;
    } else {
        return Ok(false);
    }
    execute(
        conn,
        &format!("ALTER TABLE {old} VALIDATE CONSTRAINT {check}"),
    )
    .await?;

    let mut tx = conn.begin().await?;
    execute(
        &mut tx,
        &format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"),
    )
    .await?;
    let swapped = swap(&mut tx, connector, boundary).await;
    match given_up(swapped) {
        None => Ok(false),
        Some(Ok(true)) => {
            tx.commit().await?;
            tracing::info!(%connector, %boundary, "records table partitioned");
            Ok(true)
        }
        Some(Ok(false)) => Ok(true),
        Some(Err(error)) => Err(error),
    }
}

/// Step 2 of [`migrate_plain_table`]: the bound as a CHECK, not yet valid.
async fn add_bound(
    conn: &mut PgConnection,
    old: &str,
    check: &str,
    boundary: DateTime<Utc>,
) -> sqlx::Result<()> {
    execute(
        conn,
        &format!("ALTER TABLE {old} DROP CONSTRAINT IF EXISTS {check}"),
    )
    .await?;
    execute(
        conn,
        &format!(
            "ALTER TABLE {old} ADD CONSTRAINT {check} CHECK ({} < {}) NOT VALID",
            quote_ident(RECEIVED_AT_COLUMN),
            literal(boundary)
        ),
    )
    .await
}

/// `None` when `result` failed for a lock timeout.
fn given_up<T>(result: sqlx::Result<T>) -> Option<sqlx::Result<T>> {
    match &result {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => None,
        _ => Some(result),
    }
}

/// Step 3 of [`migrate_plain_table`]. False when there was nothing to do
/// any more (the connector is gone, or another replica did it).
async fn swap(
    conn: &mut PgConnection,
    connector: Uuid,
    boundary: DateTime<Utc>,
) -> sqlx::Result<bool> {
    // The control plane's lock order: the connector's row, then its table.
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM connectors WHERE id = $1 FOR UPDATE")
            .bind(connector)
            .fetch_optional(&mut *conn)
            .await?;
    if found.is_none() || layout(conn, connector).await? != Layout::Plain {
        return Ok(false);
    }
    let hex = connector.simple();
    let parent = records_table(connector);
    let legacy = quote_ident(&legacy_name(connector));
    let received_at = quote_ident(RECEIVED_AT_COLUMN);
    // The old table's indexes give way to the parent's names.
    execute(conn, &format!("ALTER TABLE {parent} RENAME TO {legacy}")).await?;
    execute(
        conn,
        &format!(
            "ALTER INDEX IF EXISTS {} RENAME TO {}",
            quote_ident(&format!("records_{hex}_received_at")),
            quote_ident(&format!("records_{hex}_legacy_received_at"))
        ),
    )
    .await?;
    execute(
        conn,
        &format!("CREATE TABLE {parent} (LIKE {legacy} INCLUDING DEFAULTS) PARTITION BY RANGE ({received_at})"),
    )
    .await?;
    crate::store::create_records_indexes(conn, connector).await?;
    execute(
        conn,
        &format!(
            "ALTER TABLE {parent} ATTACH PARTITION {legacy} FOR VALUES FROM (MINVALUE) TO ({})",
            literal(boundary)
        ),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_align_to_the_span_in_utc() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            aligned_range(at("2026-12-03T13:45:00Z"), day),
            (at("2026-12-03T00:00:00Z"), at("2026-12-04T00:00:00Z"))
        );
        let two = Duration::from_secs(2);
        assert_eq!(
            aligned_range(at("2026-12-03T13:45:01.5Z"), two),
            (at("2026-12-03T13:45:00Z"), at("2026-12-03T13:45:02Z"))
        );
        assert_eq!(
            aligned_range(at("1969-12-31T23:00:00Z"), day).0,
            at("1969-12-31T00:00:00Z")
        );
        assert_eq!(
            partition_name(Uuid::nil(), at("2026-12-03T00:00:02Z")),
            "records_00000000000000000000000000000000_20261203_000002"
        );
    }

    #[test]
    fn a_new_range_stops_at_its_neighbours() {
        let day = Duration::from_secs(86_400);
        let existing = [
            Partition {
                name: "legacy".into(),
                from: None,
                to: Some(at("2026-12-03T06:00:00Z")),
            },
            Partition {
                name: "hourly".into(),
                from: Some(at("2026-12-03T20:00:00Z")),
                to: Some(at("2026-12-03T21:00:00Z")),
            },
        ];
        assert_eq!(
            range_for(at("2026-12-03T13:00:00Z"), day, &existing),
            (at("2026-12-03T06:00:00Z"), at("2026-12-03T20:00:00Z"))
        );
        assert_eq!(
            range_for(at("2026-12-03T22:00:00Z"), day, &existing),
            (at("2026-12-03T21:00:00Z"), at("2026-12-04T00:00:00Z"))
        );
    }
}
