//! The control plane's SQL on the `connectors` and `connector_stats` tables.
//! Each function takes the executor or transaction it runs in; the caller
//! decides what must commit together.

use std::num::NonZeroU32;

use chrono::{DateTime, Utc};
use sluice_runtime::bus::{ConnectorDoc, TokenDoc};
use sluice_schema::{ExtraFields, RateLimits, Retention, Schema};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::audit::Definition;
use crate::error::{ControlError, is_unique_violation};

const NAME_CONSTRAINT: &str = "connectors_name_key";

/// A connector as stored, with the counters the read API keeps.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConnectorRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub schema: Json<Schema>,
    pub schema_version: i64,
    pub extra_fields: String,
    /// How long records are kept, in seconds; `None`: forever.
    pub retention_seconds: Option<i64>,
    /// Rate limits of each token; `None`: the deployment's default.
    pub requests_per_second: Option<i32>,
    pub records_per_second: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub records: i64,
    pub rejected: i64,
    pub last_received_at: Option<DateTime<Utc>>,
}

impl ConnectorRow {
    pub fn extra_fields(&self) -> ExtraFields {
        // Only `ExtraFields::as_str` ever writes the column; should it hold
        // anything else, the stricter policy is the safe reading.
        ExtraFields::parse(&self.extra_fields).unwrap_or(ExtraFields::Reject)
    }

    pub fn retention(&self) -> Option<Retention> {
        // Only `Retention::as_secs` ever writes the column (positive, by
        // its CHECK).
        self.retention_seconds
            .map(|secs| Retention::from_secs(secs.unsigned_abs()))
    }

    pub fn limits(&self) -> RateLimits {
        // Only `limit_value` ever writes the columns (positive, by their
        // CHECK, and within `RateLimits::MAX`).
        let limit = |v: Option<i32>| v.and_then(|v| NonZeroU32::new(v.unsigned_abs()));
        RateLimits {
            requests_per_second: limit(self.requests_per_second),
            records_per_second: limit(self.records_per_second),
        }
    }

    /// The definition gateways and readers work from, with its live
    /// `tokens`.
    pub fn doc(&self, tokens: Vec<TokenDoc>) -> ConnectorDoc {
        ConnectorDoc::new(
            self.id,
            self.name.clone(),
            self.schema_version,
            self.schema.0.clone(),
            self.extra_fields(),
            tokens,
        )
        .with_limits(self.limits())
    }
}

const SELECT_CONNECTOR: &str = "SELECT c.id, c.name, c.description, c.schema, c.schema_version, \
     c.extra_fields, c.retention_seconds, c.requests_per_second, c.records_per_second, \
     c.created_at, c.updated_at, \
     coalesce(s.records, 0) AS records, coalesce(s.rejected, 0) AS rejected, \
     s.last_received_at \
     FROM connectors c LEFT JOIN connector_stats s ON s.connector_id = c.id";

/// Inserts the connector and its stats row (version 1); its tokens are
/// the caller's to insert (`tokens::db`).
#[tracing::instrument(skip_all, fields(connector = %id))]
pub(crate) async fn insert_connector(
    conn: &mut PgConnection,
    id: Uuid,
    new: &Definition<'_>,
) -> Result<(), ControlError> {
    sqlx::query(
        "INSERT INTO connectors (id, name, description, schema, schema_version, extra_fields, \
         retention_seconds, requests_per_second, records_per_second) \
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(new.name)
    .bind(new.description)
    .bind(Json(new.schema))
    .bind(new.extra_fields.as_str())
    .bind(new.retention.map(retention_secs))
    .bind(limit_value(new.limits.requests_per_second))
    .bind(limit_value(new.limits.records_per_second))
    .execute(&mut *conn)
    .await
    .map_err(|e| name_taken_or(e, new.name))?;
    sqlx::query("INSERT INTO connector_stats (connector_id) VALUES ($1)")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn name_taken_or(error: sqlx::Error, name: &str) -> ControlError {
    if is_unique_violation(&error, NAME_CONSTRAINT) {
        ControlError::NameTaken(name.to_owned())
    } else {
        ControlError::Database(error)
    }
}

#[tracing::instrument(skip(executor))]
pub(crate) async fn fetch_connector(
    executor: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<Option<ConnectorRow>> {
    sqlx::query_as(&format!("{SELECT_CONNECTOR} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// Reads the connector and locks its row until the transaction ends, so
/// edits of one connector apply one after the other.
#[tracing::instrument(skip(conn))]
pub(crate) async fn lock_connector(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<ConnectorRow>> {
    sqlx::query_as(&format!(
        "{SELECT_CONNECTOR} WHERE c.id = $1 FOR UPDATE OF c"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A page of connectors, oldest first. UUID v7 ids grow with creation time,
/// so the id is both the order and the position of a cursor.
#[tracing::instrument(skip(executor))]
pub(crate) async fn list_connectors(
    executor: impl PgExecutor<'_>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<ConnectorRow>> {
    sqlx::query_as(&format!(
        "{SELECT_CONNECTOR} WHERE $1::uuid IS NULL OR c.id > $1 ORDER BY c.id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Every connector, for reconciling the bucket with the database.
#[tracing::instrument(skip(executor))]
pub(crate) async fn all_connectors(
    executor: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<ConnectorRow>> {
    sqlx::query_as(&format!("{SELECT_CONNECTOR} ORDER BY c.id"))
        .fetch_all(executor)
        .await
}

/// The editable parts of a connector after an edit.
pub(crate) struct ConnectorUpdate<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub schema: &'a Schema,
    pub schema_version: i64,
    pub extra_fields: ExtraFields,
    pub retention: Option<Retention>,
    pub limits: RateLimits,
}

fn retention_secs(retention: Retention) -> i64 {
    i64::try_from(retention.as_secs()).unwrap_or(i64::MAX)
}

/// A limit as its column holds it; `RateLimits::MAX` fits an `integer`.
fn limit_value(limit: Option<NonZeroU32>) -> Option<i32> {
    limit.map(|l| i32::try_from(l.get()).unwrap_or(i32::MAX))
}

#[tracing::instrument(skip_all, fields(connector = %id))]
pub(crate) async fn update_connector(
    conn: &mut PgConnection,
    id: Uuid,
    update: &ConnectorUpdate<'_>,
) -> Result<(), ControlError> {
    sqlx::query(
        "UPDATE connectors SET name = $2, description = $3, schema = $4, schema_version = $5, \
         extra_fields = $6, retention_seconds = $7, requests_per_second = $8, \
         records_per_second = $9, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(update.name)
    .bind(update.description)
    .bind(Json(update.schema))
    .bind(update.schema_version)
    .bind(update.extra_fields.as_str())
    .bind(update.retention.map(retention_secs))
    .bind(limit_value(update.limits.requests_per_second))
    .bind(limit_value(update.limits.records_per_second))
    .execute(conn)
    .await
    .map_err(|e| name_taken_or(e, update.name))?;
    Ok(())
}

/// Deletes the connector (its stats and rejected records go with it, by
/// foreign key). Whether it existed.
#[tracing::instrument(skip(conn))]
pub(crate) async fn delete_connector(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM connectors WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Serialises publications of one connector's definition across replicas:
/// whoever holds it reads the latest committed row and writes that, so the
/// bucket never ends up with an older definition than the database.
#[tracing::instrument(skip(conn))]
pub(crate) async fn lock_for_publishing(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    let bits = id.as_u128();
    let key = (bits as u64 ^ (bits >> 64) as u64) as i64;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether PostgreSQL answers.
pub(crate) async fn ping(executor: impl PgExecutor<'_>) -> bool {
    sqlx::query("SELECT 1").execute(executor).await.is_ok()
}
