//! A connector's data lifecycle (issue 18): `DELETE
//! /v1/connectors/{id}/records` by the filters of GET, and `POST
//! /v1/connectors/{id}/rejected/replay` and `DELETE
//! /v1/connectors/{id}/rejected` for its rejected records.
//!
//! Every change here runs in one transaction that takes the connector's
//! rows in the order of `db` (its `connectors` row FOR SHARE, so no schema
//! edit alters the table meanwhile, then its stats row FOR UPDATE, the lock
//! the store allocates ids under), and moves the stats counters in that
//! same transaction: counts stay exact whatever the store commits around
//! it.
//!
//! # Why deleting never makes a reader skip a record
//!
//! A reader's page covers an id range of one snapshot (see `records`).
//! Deleting only removes rows: it neither gives a remaining record another
//! id nor moves `last_record_id`, so every remaining record is in the same
//! range of every snapshot, before the deletion commits or after. Replayed
//! records get new ids above `last_record_id`, allocated under the stats
//! row lock exactly as the store allocates them, so a reader following the
//! tail sees them once, after what it has read.

mod replay;
mod sql;

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::{delete, post};
use serde::Serialize;
use sluice_runtime::catalog::TokenOwner;
use sluice_runtime::http::{BearerAuth, BearerToken, Problem};
use sluice_runtime::store::records_table;
use sluice_runtime::throttle::AuthAttempt;
use sluice_runtime::token::TokenKind;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::db;
use crate::error::ReadError;
use crate::params::{CursorKind, FilterOp, PageParams, RESERVED, query_pairs};
use crate::plan::PagePlan;
use crate::records::ConnectorPath;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connectors/{id}/records", delete(delete_records))
        .route("/v1/connectors/{id}/rejected", delete(delete_rejected))
        .route("/v1/connectors/{id}/rejected/replay", post(replay_rejected))
}

#[derive(OpenApi)]
#[openapi(
    paths(delete_records, delete_rejected, replay_rejected),
    components(schemas(Deleted, Replayed)),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

/// What a DELETE removed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    pub deleted: u64,
}

/// What a replay did: records now stored (moved out of the rejected
/// records), and those still rejected (their errors now those of the
/// current schema).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Replayed {
    pub replayed: u64,
    pub still_rejected: u64,
}

/// Who may call a lifecycle route.
#[derive(Debug, Clone, Copy)]
enum Grant {
    Operator,
    OperatorOr(TokenKind),
}

/// Deletes the connector's records that match the filters.
///
/// The filters are those of GET (`field=op.value`, `is.null`, `not.null`,
/// on any field or `_received_at`, combined with AND), checked the same
/// way. Without a filter nothing is deleted unless `all=true` is given,
/// which deletes every record (the connector, its schema and its tokens
/// stay). `limit`, `cursor`, `fields`, `format` and `wait` do not apply and
/// are refused. Readers following a cursor keep seeing every remaining
/// record exactly once, in `_id` order.
#[utoipa::path(
    delete,
    path = "/v1/connectors/{id}/records",
    params(
        ("id" = Uuid, Path, description = "The connector's id"),
        ("all" = Option<bool>, Query, description = "`true` to delete every record when no filter is given"),
    ),
    responses(
        (status = 200, description = "How many records were deleted", body = Deleted),
        (status = 400, description = "A bad filter, an unknown field, a page parameter, or neither a filter nor all=true", content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", content_type = "application/problem+json"),
        (status = 403, description = "A connector's token: only the operator deletes records", content_type = "application/problem+json"),
        (status = 404, description = "No such connector", content_type = "application/problem+json"),
        (status = 429, description = "Too many missing or unknown tokens from this address; retry after Retry-After", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = ?id))]
async fn delete_records(
    State(state): State<AppState>,
    token: Result<BearerToken, Problem>,
    attempt: AuthAttempt,
    ConnectorPath(id): ConnectorPath,
    RawQuery(query): RawQuery,
) -> Result<Json<Deleted>, ReadError> {
    let connector = authorize(&state, token, &attempt, id, Grant::Operator).await?;
    let (params, all) = filters_only(CursorKind::Records, query.as_deref())?;
    if params.filters.is_empty() && !all {
        return Err(ReadError::bad_parameter(
            "filter_required",
            "all",
            "give at least one filter, or all=true to delete every record of this connector",
        ));
    }
    let deleted = delete_matching(&state, connector, &params, Doomed::Records).await?;
    tracing::info!(deleted, "records deleted");
    Ok(Json(Deleted { deleted }))
}

/// Deletes the connector's rejected records: all of them, or those that
/// `_received_at` filters match. `all=true` may be given, and changes
/// nothing.
#[utoipa::path(
    delete,
    path = "/v1/connectors/{id}/rejected",
    params(("id" = Uuid, Path, description = "The connector's id")),
    responses(
        (status = 200, description = "How many rejected records were deleted", body = Deleted),
        (status = 400, description = "A bad filter, or a page parameter", content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", content_type = "application/problem+json"),
        (status = 403, description = "A connector's token: only the operator clears rejected records", content_type = "application/problem+json"),
        (status = 404, description = "No such connector", content_type = "application/problem+json"),
        (status = 429, description = "Too many missing or unknown tokens from this address; retry after Retry-After", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = ?id))]
async fn delete_rejected(
    State(state): State<AppState>,
    token: Result<BearerToken, Problem>,
    attempt: AuthAttempt,
    ConnectorPath(id): ConnectorPath,
    RawQuery(query): RawQuery,
) -> Result<Json<Deleted>, ReadError> {
    let connector = authorize(&state, token, &attempt, id, Grant::Operator).await?;
    let (params, _) = filters_only(CursorKind::Rejected, query.as_deref())?;
    let deleted = delete_matching(&state, connector, &params, Doomed::Rejected).await?;
    tracing::info!(deleted, "rejected records deleted");
    Ok(Json(Deleted { deleted }))
}

/// Validates the connector's rejected records against its current schema
/// (and `extra_fields`), exactly as the gateway would validate them now,
/// in the format they were sent in. Those that pass are stored as new
/// records and leave the rejected records; the others keep their place
/// with the errors of now.
///
/// Replayed records keep their original `_received_at` (time filters
/// still mean when a record arrived) and get new `_id`s after every record
/// stored so far, so readers following the tail see them. The work goes in
/// batches of 1000, each one transaction: a replay that is interrupted
/// leaves every record either stored or still rejected, never both, and
/// running it again replays only what is still rejected.
#[utoipa::path(
    post,
    path = "/v1/connectors/{id}/rejected/replay",
    params(("id" = Uuid, Path, description = "The connector's id")),
    responses(
        (status = 200, description = "How many were stored, and how many stay rejected", body = Replayed),
        (status = 401, description = "Missing, unknown or expired token", content_type = "application/problem+json"),
        (status = 403, description = "A read token, or a token of another connector", content_type = "application/problem+json"),
        (status = 404, description = "No such connector", content_type = "application/problem+json"),
        (status = 429, description = "Too many missing or unknown tokens from this address; retry after Retry-After", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = ?id))]
async fn replay_rejected(
    State(state): State<AppState>,
    token: Result<BearerToken, Problem>,
    attempt: AuthAttempt,
    ConnectorPath(id): ConnectorPath,
) -> Result<Json<Replayed>, ReadError> {
    let grant = Grant::OperatorOr(TokenKind::Write);
    let connector = authorize(&state, token, &attempt, id, grant).await?;
    let replayed = replay::replay(&state, connector).await?;
    tracing::info!(
        replayed = replayed.replayed,
        still_rejected = replayed.still_rejected,
        "rejected records replayed"
    );
    Ok(Json(replayed))
}

/// What a deletion takes rows from.
#[derive(Debug, Clone, Copy)]
enum Doomed {
    Records,
    Rejected,
}

/// Deletes the rows that `params`' filters match, in one transaction that
/// holds the connector's rows as the module docs say, and counts them out
/// of its stats; how many went.
async fn delete_matching(
    state: &AppState,
    connector: Uuid,
    params: &PageParams,
    doomed: Doomed,
) -> Result<u64, ReadError> {
    let mut tx = state.pool.begin().await?;
    let schema = db::share_connector_schema(&mut tx, connector)
        .await?
        .ok_or(ReadError::NotFound)?;
    let plan = match doomed {
        Doomed::Records => PagePlan::records(records_table(connector), &schema, params)?,
        Doomed::Rejected => PagePlan::rejected(connector, params)?,
    };
    let counters = db::lock_counters(&mut tx, connector)
        .await?
        .ok_or(ReadError::NotFound)?;
    let last_id = match doomed {
        Doomed::Records => counters.last_record_id,
        Doomed::Rejected => counters.last_rejected_id,
    };
    let deleted = sql::delete_matching(&mut tx, &plan, last_id).await?;
    let count = i64::try_from(deleted).unwrap_or(i64::MAX);
    let (records, rejected) = match doomed {
        Doomed::Records => (count, 0),
        Doomed::Rejected => (0, count),
    };
    db::subtract_counts(&mut tx, connector, records, rejected).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// SPEC 3, as `records::authorize` applies it, for `grant`. A connector's
/// token where only the operator's is taken is 403, like a token of the
/// wrong kind, whether or not its connector exists.
async fn authorize(
    state: &AppState,
    token: Result<BearerToken, Problem>,
    attempt: &AuthAttempt,
    connector: Option<Uuid>,
    grant: Grant,
) -> Result<Uuid, ReadError> {
    let Ok(BearerToken(token)) = token else {
        attempt.fail()?;
        return Err(ReadError::Unauthorized);
    };
    let catalog = &state.bus()?.catalog;
    let admin = state.admin_hash.as_deref();
    let kind = match grant {
        Grant::OperatorOr(kind) => kind,
        Grant::Operator => {
            if let TokenOwner::Connector(..) = catalog.token_owner(&token, admin) {
                return Err(ReadError::Forbidden);
            }
            // Only the operator's token passes below as a read token of
            // this connector, or one the copy did not know yet (checked
            // again after).
            TokenKind::Read
        }
    };
    let authorized = catalog
        .authorize(&token, admin, connector, kind, attempt)
        .await?;
    if matches!(grant, Grant::Operator) && !authorized.principal.is_operator() {
        return Err(ReadError::Forbidden);
    }
    Ok(authorized.doc.id)
}

/// The filters of a DELETE, checked as GET checks them, and whether
/// `all=true` was given. A page's own parameters are refused rather than
/// ignored: `limit=10` must never read as "delete ten". As for GET, a name
/// is a filter when its value reads `op.value` (a field may be called
/// `all` or `limit`).
fn filters_only(kind: CursorKind, query: Option<&str>) -> Result<(PageParams, bool), ReadError> {
    let mut pairs = query_pairs(query.unwrap_or_default())?;
    let mut all = None;
    for (name, value) in &pairs {
        if FilterOp::parse(value).is_some() {
            continue;
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(ReadError::bad_parameter(
                "unsupported_parameter",
                name,
                format!("{name} does not apply to DELETE, which takes filters only"),
            ));
        }
        if name == "all" {
            if all.is_some() {
                return Err(ReadError::bad_parameter(
                    "duplicate_parameter",
                    name,
                    "parameter \"all\" is given more than once",
                ));
            }
            all = Some(match value.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ReadError::bad_parameter(
                        "invalid_all",
                        name,
                        "all must be true or false",
                    ));
                }
            });
        }
    }
    pairs.retain(|(name, value)| !(name == "all" && FilterOp::parse(value).is_none()));
    Ok((PageParams::parse(kind, &pairs, None)?, all == Some(true)))
}
