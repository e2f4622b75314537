//! `GET /v1/audit` and `GET /v1/connectors/{id}/audit`: the audit log,
//! oldest first, paged by cursor as records are: `limit`, `cursor`, and a
//! `next_cursor` that is always present, so a client that follows it, also
//! after `has_more` was false, sees every entry once and in order.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::db::{self, EntryRow};
use crate::AppState;
use crate::api::{ProblemDoc, page_limit};
use crate::error::ControlError;
use crate::extract::{ConnectorId, Operator};

const DEFAULT_PAGE: i64 = 100;
/// The header that carries the next cursor, as on the read API's pages.
const NEXT_CURSOR_HEADER: &str = "sluice-next-cursor";

pub(crate) fn router() -> axum::Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list_audit))
        .route("/v1/connectors/{id}/audit", get(connector_audit))
}

/// One change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EntryView {
    /// Increasing in the order the changes were committed.
    #[schema(example = "42")]
    id: String,
    /// When the change was made (its transaction's time).
    at: DateTime<Utc>,
    /// The name of the token that made it: `admin` for SLUICE_ADMIN_TOKEN.
    #[schema(example = "admin")]
    actor: String,
    /// The client's address (past trusted proxies); null when unknown.
    #[schema(example = "192.0.2.7")]
    client_address: Option<String>,
    /// The connector changed (its history outlives it).
    connector_id: Option<Uuid>,
    /// `connector.created`, `connector.edited`, `connector.limits_changed`,
    /// `connector.duplicated`, `connector.deleted`, `token.rotated`,
    /// `token.created`, `token.revoked`.
    #[schema(example = "connector.edited")]
    action: String,
    /// What changed: the definition for a creation or a copy (with
    /// `source_id`), `{"member": {"from": …, "to": …}}` for an edit, the
    /// token's kind for a rotation. Never a token or its hash.
    #[schema(value_type = Object)]
    changes: serde_json::Value,
}

impl From<EntryRow> for EntryView {
    fn from(row: EntryRow) -> EntryView {
        EntryView {
            id: row.id.to_string(),
            at: row.at,
            actor: row.actor,
            client_address: row.client_address,
            connector_id: row.connector_id,
            action: row.action,
            changes: row.changes.0,
        }
    }
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<EntryView>,
    /// Always present: where the next page starts, also once `has_more` is
    /// false (later changes come after it). Also in `Sluice-Next-Cursor`.
    next_cursor: String,
    has_more: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Entries per page: 1 to 1000, default 100.
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it to start at the oldest.
    cursor: Option<String>,
    /// Only the entries of this connector.
    connector_id: Option<String>,
}

/// The audit log, oldest first.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "invalid_limit, invalid_cursor or invalid_connector_id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    _: Operator,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ControlError> {
    let Query(params) =
        params.map_err(|e| ControlError::bad_request("invalid_query", e.body_text()))?;
    let connector = params
        .connector_id
        .as_deref()
        .map(|id| {
            Uuid::try_parse(id).map_err(|_| {
                ControlError::bad_request(
                    "invalid_connector_id",
                    "connector_id must be a connector's id (a UUID)",
                )
            })
        })
        .transpose()?;
    audit_page(&state, connector, &params).await
}

/// A connector's history, oldest first; also once the connector is
/// deleted (its last entry is then its deletion).
#[utoipa::path(
    get, path = "/v1/connectors/{id}/audit", tag = "audit",
    params(("id" = Uuid, Path, description = "Connector id"), AuditParams),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "invalid_limit or invalid_cursor", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "An id that is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn connector_audit(
    State(state): State<AppState>,
    _: Operator,
    id: ConnectorId,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ControlError> {
    let Query(params) =
        params.map_err(|e| ControlError::bad_request("invalid_query", e.body_text()))?;
    audit_page(&state, Some(id.0), &params).await
}

async fn audit_page(
    state: &AppState,
    connector: Option<Uuid>,
    params: &AuditParams,
) -> Result<Response, ControlError> {
    let limit = page_limit(params.limit.as_deref(), DEFAULT_PAGE)?;
    let after = match params.cursor.as_deref() {
        None | Some("") => 0,
        Some(cursor) => decode_cursor(cursor).ok_or_else(|| {
            ControlError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor returned by this route",
            )
        })?,
    };
    // One more than asked tells whether another page follows.
    let mut rows = db::list_entries(&state.pool, connector, after, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = encode_cursor(rows.last().map_or(after, |r| r.id));
    let mut response = Json(AuditPage {
        entries: rows.into_iter().map(EntryView::from).collect(),
        next_cursor: next_cursor.clone(),
        has_more,
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&next_cursor) {
        response.headers_mut().insert(NEXT_CURSOR_HEADER, value);
    }
    Ok(response)
}

/// Cursors are opaque to clients; today they carry the last id seen.
fn encode_cursor(after: i64) -> String {
    format!("a1{after}")
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    cursor
        .strip_prefix("a1")
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_nothing_else_decodes() {
        for id in [0, 1, 42, i64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        }
        for bad in [
            "",
            "a1",
            "a1-1",
            "a1+1",
            "b11",
            "a19999999999999999999",
            "a1 1",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
