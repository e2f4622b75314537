//! The lifecycle's SQL, in small functions that take a connection. Every
//! one runs in a transaction that holds the connector's stats row lock
//! (`db::lock_counters`). Statements name a records table by its parent
//! name only, so they work on a partitioned table as on a plain one.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{self, IdCounters};
use crate::plan::PagePlan;

/// Deletes the rows of `plan` (its filters) with ids up to `bound`, and
/// tells how many went.
#[tracing::instrument(skip(conn, plan))]
pub(super) async fn delete_matching(
    conn: &mut PgConnection,
    plan: &PagePlan,
    bound: i64,
) -> sqlx::Result<u64> {
    let sql = plan.delete_sql();
    let done = db::bind_page(db::dynamic(&sql), 0, bound, &plan.binds)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// The connector's schema and `extra_fields` policy, its row held FOR
/// SHARE (see `db::share_connector_schema`). `None`: it is gone.
#[tracing::instrument(skip(conn))]
pub(super) async fn share_connector_settings(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<Option<(sluice_schema::Schema, String)>> {
    let row: Option<(Json<sluice_schema::Schema>, String)> =
        sqlx::query_as("SELECT schema, extra_fields FROM connectors WHERE id = $1 FOR SHARE")
            .bind(connector)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(schema, extra)| (schema.0, extra)))
}

/// A rejected record as kept.
#[derive(sqlx::FromRow)]
pub(super) struct KeptRejected {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub record: serde_json::Value,
    pub errors: serde_json::Value,
    pub format: Option<String>,
}

/// The next `limit` rejected records after id `after`, in id order.
#[tracing::instrument(skip(conn))]
pub(super) async fn rejected_after(
    conn: &mut PgConnection,
    connector: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<KeptRejected>> {
    sqlx::query_as(
        "SELECT id, received_at, record, errors, format FROM rejected_records \
         WHERE connector_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(connector)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Removes the rejected records `ids`, which were just stored.
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub(super) async fn remove_rejected(
    conn: &mut PgConnection,
    connector: Uuid,
    ids: &[i64],
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM rejected_records WHERE connector_id = $1 AND id = ANY($2)")
        .bind(connector)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Gives the rejected records `ids` the errors `errors` (JSON texts).
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub(super) async fn set_rejected_errors(
    conn: &mut PgConnection,
    connector: Uuid,
    ids: &[i64],
    errors: &[String],
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE rejected_records r SET errors = u.errors::jsonb \
         FROM UNNEST($2::bigint[], $3::text[]) AS u(id, errors) \
         WHERE r.connector_id = $1 AND r.id = u.id",
    )
    .bind(connector)
    .bind(ids)
    .bind(errors)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts `moved` rejected records as stored, their ids up to
/// `after.last_record_id`.
#[tracing::instrument(skip(conn))]
pub(super) async fn count_replayed(
    conn: &mut PgConnection,
    connector: Uuid,
    after: IdCounters,
    moved: i64,
    last_received_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE connector_stats SET last_record_id = $2, records = records + $3, \
         rejected = rejected - $3, last_received_at = GREATEST(last_received_at, $4) \
         WHERE connector_id = $1",
    )
    .bind(connector)
    .bind(after.last_record_id)
    .bind(moved)
    .bind(last_received_at)
    .execute(conn)
    .await?;
    Ok(())
}
