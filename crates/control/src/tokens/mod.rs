//! Named tokens (issue 17): a connector's write and read tokens and the
//! operator's, each created with a name and an optional expiry (the secret
//! shown once), listed (never the secret nor its hash) and revoked; and the
//! rotation of a connector's rotatable token, with an optional grace
//! period for the old one.
//!
//! Every change commits in PostgreSQL, then is published to the bucket the
//! services watch before the route answers (see `publish`), as every other
//! change of a connector.

pub(crate) mod db;
pub(crate) mod uses;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_runtime::token::{NewToken, TokenKind};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::api::{ProblemDoc, connected_bus};
use crate::audit::{self, Actor, AuditAction};
use crate::db as connectors_db;
use crate::error::{ControlError, FieldProblem};
use crate::extract::{AppJson, ConnectorId, Operator};
use crate::publish::{publish_after_commit, publish_operators_after_commit};
use db::{NewTokenRow, TokenRow};

/// A token's name: 1 to 100 characters, not blank, no control characters.
const MAX_NAME_CHARS: usize = 100;
/// Tokens not yet expired that one connector, or the operator, may hold.
/// Each is checked in memory by every service, so they are bounded.
pub(crate) const MAX_LIVE_TOKENS: i64 = 100;
/// The longest grace period a rotation may give the old token.
const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

// ---------------------------------------------------------------------------
// Bodies

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConnectorToken {
    /// 1 to 100 characters, to tell tokens apart (not unique).
    #[schema(example = "shop backend")]
    name: String,
    /// `write` (POST records) or `read` (GET records and rejected records).
    #[schema(example = "write")]
    scope: String,
    /// RFC 3339; past it the token is refused (401). Absent or null: never.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOperatorToken {
    /// 1 to 100 characters, to tell tokens apart (not unique).
    #[schema(example = "ci deploys")]
    name: String,
    /// RFC 3339; past it the token is refused (401). Absent or null: never.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// A connector's token, never with its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectorTokenView {
    id: Uuid,
    name: String,
    /// `write` or `read`.
    scope: String,
    /// Whether `POST /v1/connectors/{id}/tokens/{scope}` replaces this
    /// one: the token made with the connector or by the latest rotation.
    rotatable: bool,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    /// Whether it is past `expires_at` (refused everywhere).
    expired: bool,
    /// When a service last accepted it, reported every
    /// `SLUICE_TOKEN_USE_INTERVAL`; null if never since it was made.
    last_used_at: Option<DateTime<Utc>>,
}

/// An operator token, never with its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OperatorTokenView {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    expired: bool,
    last_used_at: Option<DateTime<Utc>>,
}

/// A new token with its secret, shown only this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedConnectorToken {
    #[serde(flatten)]
    view: ConnectorTokenView,
    /// `sluice_w_…` or `sluice_r_…`.
    token: String,
}

/// A new operator token with its secret, shown only this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedOperatorToken {
    #[serde(flatten)]
    view: OperatorTokenView,
    /// `sluice_o_…`.
    token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectorTokenList {
    /// Oldest first, expired ones included until revoked.
    tokens: Vec<ConnectorTokenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OperatorTokenList {
    /// Oldest first, expired ones included until revoked.
    tokens: Vec<OperatorTokenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RotatedToken {
    /// The new token, shown only this once.
    token: String,
    /// The new token's id.
    id: Uuid,
    /// When the old token stops working (now, without `grace`); null when
    /// there was none (it had been revoked).
    old_token_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RotateParams {
    /// How long the old token keeps working, as `30s`, `10m`, `2h`, `1d`
    /// (at most 7 days). Absent: it stops at once.
    grace: Option<String>,
}

fn connector_view(row: &TokenRow, now: DateTime<Utc>) -> ConnectorTokenView {
    ConnectorTokenView {
        id: row.id,
        name: row.name.clone(),
        scope: row.scope.clone().unwrap_or_default(),
        rotatable: row.rotatable,
        created_at: row.created_at,
        expires_at: row.expires_at,
        expired: row.expires_at.is_some_and(|at| at <= now),
        last_used_at: row.last_used_at,
    }
}

fn operator_view(row: &TokenRow, now: DateTime<Utc>) -> OperatorTokenView {
    OperatorTokenView {
        id: row.id,
        name: row.name.clone(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        expired: row.expires_at.is_some_and(|at| at <= now),
        last_used_at: row.last_used_at,
    }
}

// ---------------------------------------------------------------------------
// Checks

fn check_name(name: &str, problems: &mut Vec<FieldProblem>) {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.trim().is_empty() {
        problems.push(FieldProblem::new(
            "name",
            "invalid_token_name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters, not blank"),
        ));
    } else if name.chars().any(char::is_control) {
        problems.push(FieldProblem::new(
            "name",
            "invalid_token_name",
            "name must not hold control characters",
        ));
    }
}

fn check_expiry(expires_at: Option<DateTime<Utc>>, problems: &mut Vec<FieldProblem>) {
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        problems.push(FieldProblem::new(
            "expires_at",
            "invalid_expiry",
            "expires_at must be in the future",
        ));
    }
}

/// `grace` as sent: a duration of `sluice_schema::parse_duration`, at most
/// [`MAX_GRACE`].
fn parse_grace(grace: Option<&str>) -> Result<Option<std::time::Duration>, ControlError> {
    let Some(text) = grace else {
        return Ok(None);
    };
    let invalid = |reason: String| ControlError::bad_request("invalid_grace", reason);
    let grace = sluice_schema::parse_duration(text.trim()).map_err(invalid)?;
    if grace > MAX_GRACE {
        return Err(invalid(format!(
            "grace is at most {}",
            sluice_schema::format_duration(MAX_GRACE)
        )));
    }
    Ok(Some(grace))
}

// ---------------------------------------------------------------------------
// A connector's tokens

/// Create a named token of a connector; its secret is shown only now.
#[utoipa::path(
    post, path = "/v1/connectors/{id}/tokens", tag = "tokens",
    params(("id" = Uuid, Path, description = "Connector id")),
    request_body = CreateConnectorToken,
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = CreatedConnectorToken),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "too_many_tokens: the connector holds 100 tokens not yet expired", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_token: a bad name, scope or expires_at, listed in errors", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn create_connector_token(
    State(state): State<AppState>,
    actor: Actor,
    id: ConnectorId,
    AppJson(body): AppJson<CreateConnectorToken>,
) -> Result<(StatusCode, Json<CreatedConnectorToken>), ControlError> {
    let id = id.0;
    let mut problems = Vec::new();
    check_name(&body.name, &mut problems);
    let scope = TokenKind::parse(&body.scope);
    if scope.is_none() {
        problems.push(FieldProblem::new(
            "scope",
            "invalid_scope",
            "scope must be \"write\" or \"read\"",
        ));
    }
    check_expiry(body.expires_at, &mut problems);
    let Some(scope) = scope.filter(|_| problems.is_empty()) else {
        return Err(ControlError::InvalidToken(problems));
    };
    let bus = connected_bus(&state)?;
    let token = NewToken::generate(scope);
    let mut tx = state.pool.begin().await?;
    // Under the connector's lock, so the bound holds with concurrent
    // creations.
    connectors_db::lock_connector(&mut tx, id)
        .await?
        .ok_or(ControlError::NotFound)?;
    if db::count_live_connector_tokens(&mut tx, id).await? >= MAX_LIVE_TOKENS {
        return Err(ControlError::TooManyTokens);
    }
    let row = db::insert_connector_token(
        &mut tx,
        id,
        scope,
        false,
        &NewTokenRow {
            id: Uuid::now_v7(),
            name: &body.name,
            hash: &token.hash,
            expires_at: body.expires_at,
        },
    )
    .await?;
    let changes = token_summary(&row);
    audit::record(&mut tx, &actor, id, AuditAction::TokenCreated, changes).await?;
    tx.commit().await?;
    publish_after_commit(&state, bus, id).await;
    tracing::info!(token = %row.id, scope = scope.as_str(), by = %actor.name, "connector token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedConnectorToken {
            view: connector_view(&row, Utc::now()),
            token: token.secret,
        }),
    ))
}

/// A connector's tokens: names, scopes, expiry and last use; never a
/// secret nor its hash.
#[utoipa::path(
    get, path = "/v1/connectors/{id}/tokens", tag = "tokens",
    params(("id" = Uuid, Path, description = "Connector id")),
    responses(
        (status = 200, body = ConnectorTokenList),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn list_connector_tokens(
    State(state): State<AppState>,
    _: Operator,
    id: ConnectorId,
) -> Result<Json<ConnectorTokenList>, ControlError> {
    let mut tx = state.pool.begin().await?;
    connectors_db::fetch_connector(&mut *tx, id.0)
        .await?
        .ok_or(ControlError::NotFound)?;
    let rows = db::connector_tokens(&mut *tx, id.0).await?;
    tx.commit().await?;
    let now = Utc::now();
    Ok(Json(ConnectorTokenList {
        tokens: rows.iter().map(|r| connector_view(r, now)).collect(),
    }))
}

/// Revoke one of a connector's tokens. The route answers once the change
/// is published to every service; from then on the token gets 401.
#[utoipa::path(
    delete, path = "/v1/connectors/{id}/tokens/{token}", tag = "tokens",
    params(
        ("id" = Uuid, Path, description = "Connector id"),
        ("token" = String, Path, description = "The token's id (for DELETE); `write` or `read` (for POST, rotation)"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connector, or no such token of it", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = %id.0))]
pub(crate) async fn revoke_connector_token(
    State(state): State<AppState>,
    actor: Actor,
    id: ConnectorId,
    Path((_, token)): Path<(String, String)>,
) -> Result<StatusCode, ControlError> {
    let id = id.0;
    let token = Uuid::parse_str(&token).map_err(|_| ControlError::TokenNotFound)?;
    let bus = connected_bus(&state)?;
    let mut tx = state.pool.begin().await?;
    connectors_db::lock_connector(&mut tx, id)
        .await?
        .ok_or(ControlError::NotFound)?;
    if !db::delete_connector_token(&mut tx, id, token).await? {
        return Err(ControlError::TokenNotFound);
    }
    let changes = json!({"token_id": token});
    audit::record(&mut tx, &actor, id, AuditAction::TokenRevoked, changes).await?;
    tx.commit().await?;
    publish_after_commit(&state, bus, id).await;
    tracing::info!(%token, by = %actor.name, "connector token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// A token as the audit log shows it: what its creator set, never the
/// secret nor its hash.
fn token_summary(row: &TokenRow) -> serde_json::Value {
    json!({
        "token_id": row.id,
        "name": row.name,
        "scope": row.scope.as_deref().unwrap_or("operator"),
        "expires_at": row.expires_at,
    })
}

/// Rotation (`POST /v1/connectors/{id}/tokens/{write|read}`): a new
/// rotatable token of `scope` replaces the old one, which is deleted, or
/// with `grace` kept working until then.
pub(crate) async fn rotate(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    scope: TokenKind,
    params: Result<Query<RotateParams>, QueryRejection>,
) -> Result<RotatedToken, ControlError> {
    let Query(params) =
        params.map_err(|e| ControlError::bad_request("invalid_query", e.body_text()))?;
    let grace = parse_grace(params.grace.as_deref())?;
    let bus = connected_bus(state)?;
    let token = NewToken::generate(scope);
    let until = grace.map(|grace| Utc::now() + grace);
    let mut tx = state.pool.begin().await?;
    connectors_db::lock_connector(&mut tx, id)
        .await?
        .ok_or(ControlError::NotFound)?;
    let name = db::retire_rotatable_token(&mut tx, id, scope, until).await?;
    let had_one = name.is_some();
    let row = db::insert_connector_token(
        &mut tx,
        id,
        scope,
        true,
        &NewTokenRow {
            id: Uuid::now_v7(),
            // The rotated token keeps its name; one revoked before is
            // replaced by a token named after its scope, as at creation.
            name: name.as_deref().unwrap_or(scope.as_str()),
            hash: &token.hash,
            expires_at: None,
        },
    )
    .await?;
    let changes = json!({
        "kind": scope.as_str(),
        "token_id": row.id,
        "old_token_expires_at": until,
    });
    audit::record(&mut tx, actor, id, AuditAction::TokenRotated, changes).await?;
    tx.commit().await?;
    publish_after_commit(state, bus, id).await;
    tracing::info!(kind = scope.as_str(), grace = ?grace, "token rotated");
    Ok(RotatedToken {
        token: token.secret,
        id: row.id,
        old_token_expires_at: had_one.then(|| until.unwrap_or(row.created_at)),
    })
}

// ---------------------------------------------------------------------------
// The operator's tokens

/// Create an operator token: every route, on every service, like
/// `SLUICE_ADMIN_TOKEN`. Its secret is shown only now.
#[utoipa::path(
    post, path = "/v1/operator/tokens", tag = "tokens",
    request_body = CreateOperatorToken,
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = CreatedOperatorToken),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "too_many_tokens: 100 operator tokens not yet expired", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_token: a bad name or expires_at, listed in errors", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_operator_token(
    State(state): State<AppState>,
    actor: Actor,
    AppJson(body): AppJson<CreateOperatorToken>,
) -> Result<(StatusCode, Json<CreatedOperatorToken>), ControlError> {
    let mut problems = Vec::new();
    check_name(&body.name, &mut problems);
    check_expiry(body.expires_at, &mut problems);
    if !problems.is_empty() {
        return Err(ControlError::InvalidToken(problems));
    }
    let bus = connected_bus(&state)?;
    let token = NewToken::operator();
    let mut tx = state.pool.begin().await?;
    db::lock_operators_for_publishing(&mut tx).await?;
    if db::count_live_operator_tokens(&mut tx).await? >= MAX_LIVE_TOKENS {
        return Err(ControlError::TooManyTokens);
    }
    let row = db::insert_operator_token(
        &mut tx,
        &NewTokenRow {
            id: Uuid::now_v7(),
            name: &body.name,
            hash: &token.hash,
            expires_at: body.expires_at,
        },
    )
    .await?;
    let changes = token_summary(&row);
    audit::record(&mut tx, &actor, None, AuditAction::TokenCreated, changes).await?;
    tx.commit().await?;
    publish_operators_after_commit(&state, bus).await;
    tracing::info!(token = %row.id, by = %actor.name, "operator token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedOperatorToken {
            view: operator_view(&row, Utc::now()),
            token: token.secret,
        }),
    ))
}

/// The operator tokens (not `SLUICE_ADMIN_TOKEN`); never a secret nor its
/// hash.
#[utoipa::path(
    get, path = "/v1/operator/tokens", tag = "tokens",
    responses(
        (status = 200, body = OperatorTokenList),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list_operator_tokens(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<OperatorTokenList>, ControlError> {
    let rows = db::operator_tokens(&state.pool).await?;
    let now = Utc::now();
    Ok(Json(OperatorTokenList {
        tokens: rows.iter().map(|r| operator_view(r, now)).collect(),
    }))
}

/// Revoke an operator token; once the route answers, it gets 401
/// everywhere. `SLUICE_ADMIN_TOKEN` cannot be revoked here (change the
/// variable).
#[utoipa::path(
    delete, path = "/v1/operator/tokens/{token}", tag = "tokens",
    params(("token" = Uuid, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing, unknown or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A connector token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such token", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn revoke_operator_token(
    State(state): State<AppState>,
    actor: Actor,
    Path(token): Path<String>,
) -> Result<StatusCode, ControlError> {
    let token = Uuid::parse_str(&token).map_err(|_| ControlError::TokenNotFound)?;
    let bus = connected_bus(&state)?;
    let mut tx = state.pool.begin().await?;
    if !db::delete_operator_token(&mut tx, token).await? {
        return Err(ControlError::TokenNotFound);
    }
    let changes = json!({"token_id": token, "operator": true});
    audit::record(&mut tx, &actor, None, AuditAction::TokenRevoked, changes).await?;
    tx.commit().await?;
    publish_operators_after_commit(&state, bus).await;
    tracing::info!(%token, by = %actor.name, "operator token revoked");
    Ok(StatusCode::NO_CONTENT)
}
