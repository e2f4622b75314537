//! The control plane's errors and the problem+json answer each one gets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_runtime::http::Problem;
use sluice_schema::IncompatibleChange;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("no connector with this id")]
    NotFound,
    #[error("a connector named {0:?} already exists")]
    NameTaken(String),
    /// Every problem of a definition, reported at once (422).
    #[error("the connector definition is invalid")]
    InvalidDefinition(Vec<sluice_schema::Problem>),
    /// Type changes SPEC 5 refuses, or that stored values do not survive.
    #[error("the schema change is incompatible")]
    Incompatible(Vec<IncompatibleChange>),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("no token with this id")]
    TokenNotFound,
    /// Every problem of a token's request, reported at once (422).
    #[error("the token request is invalid")]
    InvalidToken(Vec<FieldProblem>),
    #[error("too many tokens")]
    TooManyTokens,
    /// NATS does not answer, so nothing was changed.
    #[error("the message bus is unavailable")]
    BusUnavailable,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// One problem of a request body that is not a connector definition: the
/// member it is about, a stable code, and a sentence for a person.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct FieldProblem {
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl FieldProblem {
    pub(crate) fn new(
        field: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> FieldProblem {
        FieldProblem {
            field,
            code,
            message: message.into(),
        }
    }
}

impl ControlError {
    pub(crate) fn bad_request(code: &'static str, detail: impl Into<String>) -> ControlError {
        ControlError::BadRequest {
            code,
            detail: detail.into(),
        }
    }
}

impl From<sluice_runtime::store::ApplyChangeError> for ControlError {
    fn from(error: sluice_runtime::store::ApplyChangeError) -> ControlError {
        match error {
            sluice_runtime::store::ApplyChangeError::Incompatible(change) => {
                ControlError::Incompatible(vec![change])
            }
            sluice_runtime::store::ApplyChangeError::Database(e) => ControlError::Database(e),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let problem = match self {
            ControlError::NotFound => Problem::not_found("no connector with this id"),
            ControlError::NameTaken(name) => Problem::new(
                StatusCode::CONFLICT,
                "name_taken",
                format!("a connector named {name:?} already exists"),
            )
            .with(
                "errors",
                json!([{
                    "field": "name",
                    "code": "name_taken",
                    "message": "another connector already has this name",
                }]),
            ),
            ControlError::InvalidDefinition(problems) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_schema",
                format!(
                    "the connector definition has {} problem{}; see errors",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                ),
            )
            .with("errors", json!(problems)),
            ControlError::Incompatible(changes) => {
                let detail = changes
                    .iter()
                    .map(|c| c.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let errors: Vec<_> = changes
                    .iter()
                    .map(|c| {
                        json!({
                            "field": c.field,
                            "code": "incompatible_type_change",
                            "from": c.from,
                            "to": c.to,
                            "message": c.message,
                        })
                    })
                    .collect();
                Problem::new(StatusCode::CONFLICT, "incompatible_schema_change", detail)
                    .with("errors", errors)
            }
            ControlError::BadRequest { code, detail } => {
                Problem::new(StatusCode::BAD_REQUEST, code, detail)
            }
            ControlError::TokenNotFound => Problem::not_found("no token with this id"),
            ControlError::InvalidToken(problems) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_token",
                problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
            .with("errors", json!(problems)),
            ControlError::TooManyTokens => Problem::new(
                StatusCode::CONFLICT,
                "too_many_tokens",
                format!(
                    "at most {} tokens that have not expired are kept; revoke one first",
                    crate::tokens::MAX_LIVE_TOKENS
                ),
            ),
            ControlError::BusUnavailable => Problem::unavailable(
                "bus_unavailable",
                "NATS does not answer; nothing was changed, try again shortly",
                5,
            ),
            // PostgreSQL not answering is worth a retry, not an opaque 500.
            ControlError::Database(
                e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)),
            ) => {
                tracing::warn!(error = %e, "PostgreSQL unavailable");
                Problem::unavailable(
                    "database_unavailable",
                    "PostgreSQL does not answer; try again shortly",
                    5,
                )
            }
            ControlError::Database(e) => Problem::internal(&e),
            ControlError::Internal(e) => Problem::internal(e.as_ref()),
        };
        problem.into_response()
    }
}

/// Whether `error` is PostgreSQL's unique violation of `constraint`.
pub(crate) fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.code().as_deref() == Some("23505") && e.constraint() == Some(constraint)
        }
        _ => false,
    }
}
