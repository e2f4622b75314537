//! The connector routes of SPEC section 6, their request and response bodies.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sluice_runtime::backlog::{self, Backlog, Connectors};
use sluice_runtime::startup::Bus;
use sluice_runtime::store;
use sluice_runtime::store::TableUsage;
use sluice_runtime::token::{NewToken, TokenKind};
use sluice_schema::{
    ChangeError, ConnectorName, ExtraFields, FieldSpec, RateLimits, Retention, Schema,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Actor, AuditAction, Definition};
use crate::db::{self, ConnectorRow};
use crate::error::ControlError;
use crate::extract::{AppJson, ConnectorId, Operator};
use crate::publish::publish_after_commit;
use crate::tokens::db::{self as tokens_db, NewTokenRow};
use crate::tokens::{self, RotateParams, RotatedToken};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/connectors",
            post(create_connector).get(list_connectors),
        )
        .route(
            "/v1/connectors/{id}",
            get(get_connector)
                .patch(edit_connector)
                .delete(delete_connector),
        )
        .route("/v1/connectors/{id}/duplicate", post(duplicate_connector))
        .route(
            "/v1/connectors/{id}/tokens",
            post(tokens::create_connector_token).get(tokens::list_connector_tokens),
        )
        // Rotation takes `write` or `read` where revocation takes a token's
        // id: one path, so one name for the segment.
        .route(
            "/v1/connectors/{id}/tokens/{token}",
            post(rotate_token).delete(tokens::revoke_connector_token),
        )
        .route(
            "/v1/operator/tokens",
            post(tokens::create_operator_token).get(tokens::list_operator_tokens),
        )
        .route(
            "/v1/operator/tokens/{token}",
            delete(tokens::revoke_operator_token),
        )
        .route("/v1/connectors/{id}/schema", get(connector_schema))
}

// ---------------------------------------------------------------------------
// Bodies

/// A field of a connector's schema.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldBody {
    /// `^[A-Za-z][A-Za-z0-9_]{0,62}$`, unique ignoring case.
    #[schema(example = "email")]
    name: String,
    /// string, integer, number, decimal, boolean, date, timestamp or json.
    #[serde(rename = "type")]
    #[schema(example = "string")]
    ty: String,
    #[serde(default)]
    nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// On an edit: the field's current name, to rename it keeping its values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_name: Option<String>,
}

impl FieldBody {
    fn spec(&self) -> FieldSpec {
        FieldSpec {
            name: self.name.clone(),
            ty: self.ty.clone(),
            nullable: self.nullable,
            description: self.description.clone(),
            previous_name: self.previous_name.clone(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConnector {
    /// 1 to 100 characters, unique.
    name: String,
    #[serde(default)]
    description: Option<String>,
    fields: Vec<FieldBody>,
    /// `reject` (default) or `ignore`: what to do with record fields the
    /// schema does not name.
    #[serde(default)]
    extra_fields: Option<String>,
    /// How long records and rejected records are kept: a whole number and
    /// one unit of `s`, `m`, `h`, `d` (`30d`), at least the partition span
    /// (`SLUICE_PARTITION_SPAN`). Absent or null: forever.
    #[serde(default)]
    #[schema(example = "30d")]
    retention: Option<String>,
    /// Rate limits of each of its tokens; absent or null members follow
    /// the deployment's defaults.
    #[serde(default)]
    limits: Option<LimitsBody>,
}

/// An edit; members left out stay as they are. `fields` is the full new
/// field list. `description: null` clears the description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditConnector {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default)]
    fields: Option<Vec<FieldBody>>,
    #[serde(default)]
    extra_fields: Option<String>,
    /// A new retention (`30d`), or null to keep records forever.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "30d")]
    retention: Option<Option<String>>,
    /// New rate limits: each member given replaces that limit (null: the
    /// default), each one left out stays; `"limits": null` returns both
    /// to the defaults.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LimitsBody>)]
    limits: Option<Option<LimitsBody>>,
}

/// Tells `"description": null` (clear it) from no `description` (keep it).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Rate limits of a connector's tokens, each one per token and per
/// second: a whole number from 1 to 1 000 000 000, or null for the
/// deployment's default (`SLUICE_DEFAULT_REQUESTS_PER_SECOND`,
/// `SLUICE_DEFAULT_RECORDS_PER_SECOND`; unlimited unless set).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsBody {
    /// Requests (POST or GET of records) per second.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, example = 10)]
    requests_per_second: Option<Option<i64>>,
    /// Records sent per second (counted before they are published).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, example = 5000)]
    records_per_second: Option<Option<i64>>,
}

/// A connector's rate limits as set; null: the deployment's default.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LimitsView {
    requests_per_second: Option<u32>,
    records_per_second: Option<u32>,
}

impl From<RateLimits> for LimitsView {
    fn from(limits: RateLimits) -> LimitsView {
        LimitsView {
            requests_per_second: limits.requests_per_second.map(|l| l.get()),
            records_per_second: limits.records_per_second.map(|l| l.get()),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DuplicateConnector {
    /// The copy's name: 1 to 100 characters, unique.
    name: String,
    /// The copy's retention (`30d`, or null: forever); absent: the
    /// source's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "30d")]
    retention: Option<Option<String>>,
    /// The copy's rate limits, over the source's as an edit would change
    /// them; absent: the source's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LimitsBody>)]
    limits: Option<Option<LimitsBody>>,
}

/// An error (RFC 9457 problem details).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProblemDoc {
    #[serde(rename = "type")]
    #[schema(example = "urn:sluice:problem:invalid_schema")]
    ty: String,
    title: String,
    status: u16,
    detail: String,
    /// Stable snake_case code to match on.
    #[schema(example = "invalid_schema")]
    code: String,
    /// For validation failures: every problem, `{field, code, message}`.
    #[schema(value_type = Option<Vec<Object>>)]
    errors: Option<Vec<serde_json::Value>>,
}

/// A field as a connector reports it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FieldView {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    nullable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatsView {
    /// Records stored so far.
    records: i64,
    /// Records kept as rejected (partial mode).
    rejected: i64,
    last_received_at: Option<DateTime<Utc>>,
    /// When the oldest stored record was received; null when none is.
    oldest_received_at: Option<DateTime<Utc>>,
    /// Bytes on disk of the stored records (every partition of the records
    /// table, with indexes), measured now; rejected records are not
    /// counted. Null if the table could not be measured.
    bytes: Option<i64>,
    /// Records accepted and not yet stored; null when NATS cannot tell
    /// right now.
    backlog: Option<BacklogView>,
}

/// What a connector has on the records stream, waiting for the read API.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BacklogView {
    /// Messages (chunks of accepted requests) not yet stored; exact.
    messages: u64,
    /// Records in them, estimated from the oldest and the newest message
    /// alone: exact for one or two messages, and when requests are alike.
    records_estimate: u64,
    /// When the oldest of them was accepted; null when none waits.
    oldest_at: Option<DateTime<Utc>>,
    /// How long the oldest has waited, in seconds; 0 when none waits.
    seconds_behind: f64,
}

impl BacklogView {
    /// Connector `id`'s view in `measured`, where a connector without a
    /// backlog is absent; `None` when nothing was measured.
    fn of(measured: Option<&HashMap<Uuid, Backlog>>, id: Uuid) -> Option<BacklogView> {
        let backlog = measured?.get(&id).copied().unwrap_or_default();
        Some(BacklogView {
            messages: backlog.messages,
            records_estimate: backlog.records_estimate,
            oldest_at: backlog.oldest_at,
            seconds_behind: backlog.seconds_behind(Utc::now()),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectorView {
    /// UUID v7.
    id: Uuid,
    name: String,
    description: Option<String>,
    fields: Vec<FieldView>,
    /// `reject` or `ignore`.
    extra_fields: String,
    /// How long records are kept, in its largest exact unit (`30d`,
    /// `36h`, `90m`); null: forever.
    #[schema(example = "30d")]
    retention: Option<String>,
    /// Rate limits of each of its tokens; null members follow the
    /// deployment's defaults.
    limits: LimitsView,
    schema_version: i64,
    /// Where producers POST records and consumers GET them.
    endpoint: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    stats: StatsView,
}

/// A new connector with its tokens, which are shown only this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedConnector {
    #[serde(flatten)]
    connector: ConnectorView,
    /// `sluice_w_…`: POST records of this connector.
    write_token: String,
    /// `sluice_r_…`: GET records and rejected records of this connector.
    read_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectorPage {
    connectors: Vec<ConnectorView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Connectors per page: 1 to 1000, default 50.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const DEFAULT_PAGE: i64 = 50;

/// The `limit` of a listing's page: 1 to 1000, `default` when absent.
pub(crate) fn page_limit(limit: Option<&str>, default: i64) -> Result<i64, ControlError> {
    const MAX_PAGE: i64 = 1000;
    let Some(limit) = limit else {
        return Ok(default);
    };
    limit
        .parse::<i64>()
        .ok()
        .filter(|l| (1..=MAX_PAGE).contains(l))
        .ok_or_else(|| {
            ControlError::bad_request(
                "invalid_limit",
                format!("limit must be an integer from 1 to {MAX_PAGE}"),
            )
        })
}

fn connector_view(
    state: &AppState,
    row: &ConnectorRow,
    usage: Option<TableUsage>,
    backlog: Option<BacklogView>,
) -> ConnectorView {
    ConnectorView {
        id: row.id,
        name: row.name.clone(),
        description: row.description.clone(),
        fields: row
            .schema
            .fields()
            .iter()
            .map(|f| FieldView {
                name: f.name.to_string(),
                ty: f.ty.to_string(),
                nullable: f.nullable,
                description: f.description.clone(),
            })
            .collect(),
        extra_fields: row.extra_fields().as_str().to_owned(),
        retention: row.retention().map(|r| r.to_string()),
        limits: row.limits().into(),
        schema_version: row.schema_version,
        endpoint: format!(
            "{}/v1/connectors/{}/records",
            state.settings.public_url, row.id
        ),
        created_at: row.created_at,
        updated_at: row.updated_at,
        stats: StatsView {
            records: row.records,
            rejected: row.rejected,
            last_received_at: row.last_received_at,
            oldest_received_at: usage.and_then(|u| u.oldest_received_at),
            bytes: usage.map(|u| u.bytes),
            backlog,
        },
    }
}

// ---------------------------------------------------------------------------
// Checks shared by create, edit and duplicate

fn check_name(name: &str, problems: &mut Vec<sluice_schema::Problem>) {
    if let Err(problem) = ConnectorName::parse(name) {
        problems.push(problem);
    }
}

fn check_description(description: Option<&str>, problems: &mut Vec<sluice_schema::Problem>) {
    if let Some(description) = description
        && let Err(problem) = sluice_schema::check_description(description, "description")
    {
        problems.push(problem);
    }
}

fn check_extra_fields(
    extra: Option<&str>,
    problems: &mut Vec<sluice_schema::Problem>,
) -> Option<ExtraFields> {
    extra.and_then(|e| {
        ExtraFields::parse(e)
            .map_err(|problem| problems.push(problem))
            .ok()
    })
}

/// `retention` as given (`Some(None)`: null, forever), checked against
/// the partition span; `None` when it is absent or invalid.
fn check_retention(
    state: &AppState,
    retention: Option<Option<&str>>,
    problems: &mut Vec<sluice_schema::Problem>,
) -> Option<Option<Retention>> {
    match retention? {
        None => Some(None),
        Some(text) => Retention::parse(text, state.settings.partition_span)
            .map_err(|problem| problems.push(problem))
            .ok()
            .map(Some),
    }
}

/// `limits` as sent, over `base`: each member given replaces that limit
/// (null: the default), `None` (or `Some(None)`, a null object) keeps or
/// clears them as the caller decides; invalid values are `problems`.
fn check_limits(
    body: Option<&LimitsBody>,
    base: RateLimits,
    problems: &mut Vec<sluice_schema::Problem>,
) -> RateLimits {
    let Some(body) = body else {
        return base;
    };
    let mut check = |name: &str, sent: Option<Option<i64>>, current| match sent {
        None => current,
        Some(None) => None,
        Some(Some(value)) => RateLimits::check(name, value)
            .map_err(|problem| problems.push(problem))
            .ok(),
    };
    RateLimits {
        requests_per_second: check(
            "requests_per_second",
            body.requests_per_second,
            base.requests_per_second,
        ),
        records_per_second: check(
            "records_per_second",
            body.records_per_second,
            base.records_per_second,
        ),
    }
}

/// Mutations first make sure NATS answers, so that one made while the bus is
/// down is refused whole rather than committed and left unpublished.
pub(crate) fn connected_bus(state: &AppState) -> Result<&Bus, ControlError> {
    match state.bus.get() {
        Some(bus) if bus.is_connected() => Ok(bus),
        _ => Err(ControlError::BusUnavailable),
    }
}

async fn fetch_view(state: &AppState, id: Uuid) -> Result<ConnectorView, ControlError> {
    let row = db::fetch_connector(&state.pool, id)
        .await?
        .ok_or(ControlError::NotFound)?;
    Ok(measured_view(state, &row).await)
}

/// `row`'s view with its table and backlog measured now.
async fn measured_view(state: &AppState, row: &ConnectorRow) -> ConnectorView {
    let usage = store::measure_tables(&state.pool, &[row.id]).await;
    let measured = measure_backlog(state, Connectors::One(row.id)).await;
    connector_view(
        state,
        row,
        usage.get(&row.id).copied(),
        BacklogView::of(measured.as_ref(), row.id),
    )
}

/// How long a connector's stats wait for its backlog to be measured.
const BACKLOG_PATIENCE: Duration = Duration::from_secs(1);

/// The backlog of `which` connectors, or `None` when NATS cannot tell
/// within [`BACKLOG_PATIENCE`]: stats never fail, nor wait long, for it.
async fn measure_backlog(
    state: &AppState,
    which: Connectors<'_>,
) -> Option<HashMap<Uuid, Backlog>> {
    let bus = state.bus.get().filter(|bus| bus.is_connected())?;
    let measuring = backlog::measure(&bus.js, &state.settings.namespace, which);
    match tokio::time::timeout(BACKLOG_PATIENCE, measuring).await {
        Ok(Ok(measured)) => Some(measured),
        Ok(Err(error)) => {
            tracing::warn!(error = format!("{error:#}"), "measuring the backlog failed");
            None
        }
        Err(_) => {
            tracing::warn!("measuring the backlog took longer than {BACKLOG_PATIENCE:?}");
            None
        }
    }
}

/// Creates a connector in one transaction: its row, its stats row, its
/// records table and its audit entry (a copy of `source`, if given). Then
/// publishes it.
async fn insert_new_connector(
    state: &AppState,
    actor: &Actor,
    definition: &Definition<'_>,
    source: Option<Uuid>,
) -> Result<CreatedConnector, ControlError> {
    let bus = connected_bus(state)?;
    let id = Uuid::now_v7();
    let write = NewToken::generate(TokenKind::Write);
    let read = NewToken::generate(TokenKind::Read);
    let mut tx = state.pool.begin().await?;
    db::insert_connector(&mut tx, id, definition).await?;
    // Its two rotatable tokens, named after their scopes.
    for (scope, token) in [(TokenKind::Write, &write), (TokenKind::Read, &read)] {
        tokens_db::insert_connector_token(
            &mut tx,
            id,
            scope,
            true,
            &NewTokenRow {
                id: Uuid::now_v7(),
                name: scope.as_str(),
                hash: &token.hash,
                expires_at: None,
            },
        )
        .await?;
    }
    store::create_records_table(&mut tx, id, definition.schema).await?;
    let mut changes = definition.summary();
    let action = match source {
        Some(source) => {
            changes["source_id"] = source.to_string().into();
            AuditAction::ConnectorDuplicated
        }
        None => AuditAction::ConnectorCreated,
    };
    audit::record(&mut tx, actor, id, action, changes).await?;
    tx.commit().await?;
    publish_after_commit(state, bus, id).await;
    Ok(CreatedConnector {
        connector: fetch_view(state, id).await?,
        write_token: write.secret,
        read_token: read.secret,
    })
}

// ---------------------------------------------------------------------------
// Handlers

/// Create a connector.
#[utoipa::path(
    post, path = "/v1/connectors", tag = "connectors",
    request_body = CreateConnector,
    responses(
        (status = 201, description = "Created; the tokens are shown only now", body = CreatedConnector),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "name_taken", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_schema, listing every problem", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_connector(
    State(state): State<AppState>,
    actor: Actor,
    AppJson(body): AppJson<CreateConnector>,
) -> Result<(StatusCode, Json<CreatedConnector>), ControlError> {
    let mut problems = Vec::new();
    check_name(&body.name, &mut problems);
    check_description(body.description.as_deref(), &mut problems);
    let specs: Vec<FieldSpec> = body.fields.iter().map(FieldBody::spec).collect();
    let schema = Schema::define(&specs).map_err(|p| problems.extend(p)).ok();
    let extra = check_extra_fields(body.extra_fields.as_deref(), &mut problems);
    let retention = check_retention(&state, Some(body.retention.as_deref()), &mut problems);
    let limits = check_limits(body.limits.as_ref(), RateLimits::default(), &mut problems);
    let Some(schema) = schema.filter(|_| problems.is_empty()) else {
        return Err(ControlError::InvalidDefinition(problems));
    };
    let definition = Definition {
        name: &body.name,
        description: body.description.as_deref(),
        schema: &schema,
        extra_fields: extra.unwrap_or_default(),
        retention: retention.flatten(),
        limits,
    };
    let created = insert_new_connector(&state, &actor, &definition, None).await?;
    tracing::info!(connector = %created.connector.id, "connector created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// List connectors, oldest first.
#[utoipa::path(
    get, path = "/v1/connectors", tag = "connectors",
    params(ListParams),
    responses(
        (status = 200, body = ConnectorPage),
        (status = 400, description = "invalid_limit or invalid_cursor", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list_connectors(
    State(state): State<AppState>,
    _: Operator,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ConnectorPage>, ControlError> {
    let Query(params) =
        params.map_err(|e| ControlError::bad_request("invalid_query", e.body_text()))?;
    let limit = page_limit(params.limit.as_deref(), DEFAULT_PAGE)?;
    let after = params
        .cursor
        .as_deref()
        .map(|c| {
            decode_cursor(c).ok_or_else(|| {
                ControlError::bad_request(
                    "invalid_cursor",
                    "cursor must be a next_cursor returned by this route",
                )
            })
        })
        .transpose()?;
    // One more than asked tells whether another page follows.
    let mut rows = db::list_connectors(&state.pool, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| encode_cursor(r.id)))
        .flatten();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let usage = store::measure_tables(&state.pool, &ids).await;
    let measured = measure_backlog(&state, Connectors::Among(&ids)).await;
    Ok(Json(ConnectorPage {
        connectors: rows
            .iter()
            .map(|r| {
                let backlog = BacklogView::of(measured.as_ref(), r.id);
                connector_view(&state, r, usage.get(&r.id).copied(), backlog)
            })
            .collect(),
        next_cursor,
    }))
}

/// Cursors are opaque to clients; today they carry the last id seen.
fn encode_cursor(id: Uuid) -> String {
    format!("c1{}", id.simple())
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    cursor
        .strip_prefix("c1")
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| Uuid::try_parse(hex).ok())
}

/// One connector.
#[utoipa::path(
    get, path = "/v1/connectors/{id}", tag = "connectors",
    params(("id" = Uuid, Path, description = "Connector id")),
    responses(
        (status = 200, body = ConnectorView),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn get_connector(
    State(state): State<AppState>,
    _: Operator,
    id: ConnectorId,
) -> Result<Json<ConnectorView>, ControlError> {
    Ok(Json(fetch_view(&state, id.0).await?))
}

/// Edit a connector: name, description, fields (the full new list),
/// extra_fields and retention. Applies completely or not at all.
#[utoipa::path(
    patch, path = "/v1/connectors/{id}", tag = "connectors",
    params(("id" = Uuid, Path, description = "Connector id")),
    request_body = EditConnector,
    responses(
        (status = 200, body = ConnectorView),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "name_taken or incompatible_schema_change", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_schema, listing every problem", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn edit_connector(
    State(state): State<AppState>,
    actor: Actor,
    id: ConnectorId,
    AppJson(body): AppJson<EditConnector>,
) -> Result<Json<ConnectorView>, ControlError> {
    let id = id.0;
    let mut problems = Vec::new();
    if let Some(name) = &body.name {
        check_name(name, &mut problems);
    }
    if let Some(description) = &body.description {
        check_description(description.as_deref(), &mut problems);
    }
    let extra = check_extra_fields(body.extra_fields.as_deref(), &mut problems);
    let retention = check_retention(
        &state,
        body.retention.as_ref().map(Option::as_deref),
        &mut problems,
    );
    // Checked now, applied over the stored limits once the row is locked.
    let new_limits = body.limits.as_ref().map(|limits| limits.as_ref());
    if let Some(Some(limits)) = new_limits {
        check_limits(Some(limits), RateLimits::default(), &mut problems);
    }
    if !problems.is_empty() && body.fields.is_none() {
        return Err(ControlError::InvalidDefinition(problems));
    }
    let bus = connected_bus(&state)?;

    let mut tx = state.pool.begin().await?;
    let row = db::lock_connector(&mut tx, id)
        .await?
        .ok_or(ControlError::NotFound)?;
    let change = match &body.fields {
        None => None,
        Some(fields) => {
            let specs: Vec<FieldSpec> = fields.iter().map(FieldBody::spec).collect();
            match row.schema.change(&specs) {
                Ok(change) => Some(change),
                Err(ChangeError::Invalid(found)) => {
                    problems.extend(found);
                    None
                }
                // Every problem of the request first: they are the caller's
                // to fix before the stored data matters.
                Err(ChangeError::Incompatible(_)) if !problems.is_empty() => None,
                Err(ChangeError::Incompatible(changes)) => {
                    return Err(ControlError::Incompatible(changes));
                }
            }
        }
    };
    if !problems.is_empty() {
        return Err(ControlError::InvalidDefinition(problems));
    }

    let name = body.name.as_deref().unwrap_or(&row.name);
    let description = match &body.description {
        Some(new) => new.as_deref(),
        None => row.description.as_deref(),
    };
    let extra_fields = extra.unwrap_or(row.extra_fields());
    let retention = retention.unwrap_or(row.retention());
    let limits = match new_limits {
        None => row.limits(),
        Some(None) => RateLimits::default(),
        Some(Some(limits)) => check_limits(Some(limits), row.limits(), &mut Vec::new()),
    };
    let schema_changed = change.as_ref().is_some_and(|c| !c.is_noop(&row.schema));
    // What records are checked against changed: gateways must tell the
    // versions apart. A rename or a new description changes no record.
    let validation_changed = schema_changed || extra_fields != row.extra_fields();
    let anything_changed = validation_changed
        || name != row.name
        || description != row.description.as_deref()
        || retention != row.retention()
        || limits != row.limits();
    if !anything_changed {
        return Ok(Json(measured_view(&state, &row).await));
    }
    if let Some(change) = &change {
        store::apply_change(&mut tx, id, change).await?;
    }
    let schema = change.as_ref().map_or(&row.schema.0, |c| &c.schema);
    let schema_version = row.schema_version + i64::from(validation_changed);
    db::update_connector(
        &mut tx,
        id,
        &db::ConnectorUpdate {
            name,
            description,
            schema,
            schema_version,
            extra_fields,
            retention,
            limits,
        },
    )
    .await?;
    let before = Definition {
        name: &row.name,
        description: row.description.as_deref(),
        schema: &row.schema.0,
        extra_fields: row.extra_fields(),
        retention: row.retention(),
        limits: row.limits(),
    };
    let after = Definition {
        name,
        description,
        schema,
        extra_fields,
        retention,
        limits,
    };
    let mut changes = audit::diff(&before.summary(), &after.summary());
    let action = if changes.keys().eq(["limits"]) {
        AuditAction::LimitsChanged
    } else {
        AuditAction::ConnectorEdited
    };
    if validation_changed {
        changes.insert(
            "schema_version".into(),
            serde_json::json!({"from": row.schema_version, "to": schema_version}),
        );
    }
    audit::record(&mut tx, &actor, id, action, changes.into()).await?;
    tx.commit().await?;
    publish_after_commit(&state, bus, id).await;
    tracing::info!(schema_changed, "connector edited");
    Ok(Json(fetch_view(&state, id).await?))
}

/// Delete a connector and every record it stored.
#[utoipa::path(
    delete, path = "/v1/connectors/{id}", tag = "connectors",
    params(("id" = Uuid, Path, description = "Connector id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn delete_connector(
    State(state): State<AppState>,
    actor: Actor,
    id: ConnectorId,
) -> Result<StatusCode, ControlError> {
    let id = id.0;
    let bus = connected_bus(&state)?;
    let mut tx = state.pool.begin().await?;
    let row = db::lock_connector(&mut tx, id)
        .await?
        .ok_or(ControlError::NotFound)?;
    if !db::delete_connector(&mut tx, id).await? {
        return Err(ControlError::NotFound);
    }
    store::drop_records_table(&mut tx, id).await?;
    let changes = serde_json::json!({"name": row.name});
    audit::record(&mut tx, &actor, id, AuditAction::ConnectorDeleted, changes).await?;
    tx.commit().await?;
    publish_after_commit(&state, bus, id).await;
    tracing::info!("connector deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Copy a connector's schema and settings under a new name: new id, new
/// tokens, schema version 1, no records.
#[utoipa::path(
    post, path = "/v1/connectors/{id}/duplicate", tag = "connectors",
    params(("id" = Uuid, Path, description = "Connector to copy")),
    request_body = DuplicateConnector,
    responses(
        (status = 201, description = "Created; the tokens are shown only now", body = CreatedConnector),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "name_taken", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_schema (invalid_connector_name, invalid_retention)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn duplicate_connector(
    State(state): State<AppState>,
    actor: Actor,
    id: ConnectorId,
    AppJson(body): AppJson<DuplicateConnector>,
) -> Result<(StatusCode, Json<CreatedConnector>), ControlError> {
    let source = db::fetch_connector(&state.pool, id.0)
        .await?
        .ok_or(ControlError::NotFound)?;
    let mut problems = Vec::new();
    check_name(&body.name, &mut problems);
    let retention = check_retention(
        &state,
        body.retention.as_ref().map(Option::as_deref),
        &mut problems,
    );
    let limits = match &body.limits {
        None => source.limits(),
        Some(None) => RateLimits::default(),
        Some(Some(limits)) => check_limits(Some(limits), source.limits(), &mut problems),
    };
    if !problems.is_empty() {
        return Err(ControlError::InvalidDefinition(problems));
    }
    let definition = Definition {
        name: &body.name,
        description: source.description.as_deref(),
        schema: &source.schema,
        extra_fields: source.extra_fields(),
        retention: retention.unwrap_or(source.retention()),
        limits,
    };
    let created = insert_new_connector(&state, &actor, &definition, Some(source.id)).await?;
    tracing::info!(copy = %created.connector.id, "connector duplicated");
    Ok((StatusCode::CREATED, Json(created)))
}

/// Replace a connector's rotatable write or read token (the one made with
/// it, or by the latest rotation); the old one stops working at once, or
/// at the end of `grace`. Other named tokens are left as they are.
#[utoipa::path(
    post, path = "/v1/connectors/{id}/tokens/{token}", tag = "connectors",
    params(
        ("id" = Uuid, Path, description = "Connector id"),
        ("token" = String, Path, description = "`write` or `read` (for POST, rotation); the token's id (for DELETE)"),
        RotateParams,
    ),
    responses(
        (status = 200, description = "The new token, shown only now", body = RotatedToken),
        (status = 400, description = "invalid_grace: not a duration, or longer than 7 days", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector, or a kind other than write and read", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn rotate_token(
    State(state): State<AppState>,
    actor: Actor,
    id: ConnectorId,
    path: Result<Path<HashMap<String, String>>, PathRejection>,
    params: Result<Query<RotateParams>, QueryRejection>,
) -> Result<Json<RotatedToken>, ControlError> {
    // Only `write` and `read` exist; any other kind names no resource.
    let kind = path
        .ok()
        .and_then(|Path(path)| path.get("token").and_then(|k| TokenKind::parse(k)))
        .ok_or(ControlError::NotFound)?;
    Ok(Json(
        tokens::rotate(&state, &actor, id.0, kind, params).await?,
    ))
}

/// The JSON Schema (draft 2020-12) of one record of this connector.
#[utoipa::path(
    get, path = "/v1/connectors/{id}/schema", tag = "connectors",
    params(("id" = Uuid, Path, description = "Connector id")),
    responses(
        (status = 200, description = "JSON Schema 2020-12", body = Object),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn connector_schema(
    State(state): State<AppState>,
    _: Operator,
    id: ConnectorId,
) -> Result<Response, ControlError> {
    let row = db::fetch_connector(&state.pool, id.0)
        .await?
        .ok_or(ControlError::NotFound)?;
    let schema =
        sluice_schema::json_schema::record_json_schema(&row.name, &row.schema, row.extra_fields());
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/schema+json")],
        Json(schema),
    )
        .into_response())
}
