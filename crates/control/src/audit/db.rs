//! The audit log's SQL.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::Actor;

/// The advisory lock class of the audit log (the first key of a two-key
/// lock; see `sluice_runtime::partitions` for the others).
const AUDIT_LOCK: i32 = 0x534c_4131;

/// An entry as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EntryRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub client_address: Option<String>,
    pub connector_id: Option<Uuid>,
    pub action: String,
    pub changes: Json<Value>,
}

/// Inserts an entry under the audit lock, held until the transaction
/// ends: an entry's id is taken only once every entry numbered before it
/// has committed (or rolled back), so ids become visible in order and a
/// reader following the cursor never steps past one still to come.
#[tracing::instrument(skip_all, fields(connector = ?connector, action = %action))]
pub(crate) async fn insert_entry(
    conn: &mut PgConnection,
    actor: &Actor,
    connector: Option<Uuid>,
    action: &str,
    changes: &Value,
) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(AUDIT_LOCK)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO audit_log (actor, client_address, connector_id, action, changes) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&actor.name)
    .bind(actor.address.map(|a| a.to_string()))
    .bind(connector)
    .bind(action)
    .bind(Json(changes))
    .execute(conn)
    .await?;
    Ok(())
}

/// Entries after id `after`, oldest first, of one connector or of all.
#[tracing::instrument(skip(executor))]
pub(crate) async fn list_entries(
    executor: impl PgExecutor<'_>,
    connector: Option<Uuid>,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<EntryRow>> {
    sqlx::query_as(
        "SELECT id, at, actor, client_address, connector_id, action, changes FROM audit_log \
         WHERE id > $1 AND ($2::uuid IS NULL OR connector_id = $2) ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(connector)
    .bind(limit)
    .fetch_all(executor)
    .await
}
