//! Extractors: who is calling, which connector, and what body was sent.
//! Each answers a failure with the project's problem+json, so axum's own
//! plain-text rejections never reach a client.

use std::collections::HashMap;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::json;
use sluice_runtime::http::{BearerToken, Problem};
use sluice_runtime::principal::Principal;
use sluice_runtime::throttle::AuthAttempt;
use sluice_runtime::token::is_operator_secret;
use uuid::Uuid;

use crate::AppState;
use crate::error::ControlError;

/// The operator, proven by `Authorization: Bearer` with
/// `SLUICE_ADMIN_TOKEN` or an operator token (`sluice_o_…`) not expired,
/// and who it is. Every control-plane route takes one, so none can forget
/// to check.
///
/// Everything is decided in memory: `SLUICE_ADMIN_TOKEN` by constant-time
/// comparison, other tokens in the catalog (an operator token it does not
/// know yet after a read of the operators bucket). An address that sent too
/// many missing or unknown tokens gets 429 for the next ones (`throttle`).
pub(crate) struct Operator(pub Principal);

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let token = BearerToken::from_request_parts(parts, state).await;
        let attempt = AuthAttempt::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        let detail = match &token {
            Ok(BearerToken(token)) => {
                // The catalog comes with the bus: until NATS is set up, no
                // route is served (the service is not ready either).
                let Some(bus) = state.bus.get() else {
                    return Err(ControlError::BusUnavailable.into_response());
                };
                let admin = Some(state.admin_token.as_ref());
                let found = match bus.catalog.identify(token, admin) {
                    Some(principal) => {
                        bus.catalog.note_use(&principal);
                        Some(principal)
                    }
                    // An operator token another replica made a moment ago:
                    // counted as a failure first, as the gateways do, so
                    // that a throttled client never gets the bucket read.
                    None if is_operator_secret(token) => {
                        attempt.fail().map_err(IntoResponse::into_response)?;
                        let found = bus.catalog.principal(token, admin).await;
                        if found.is_none() {
                            return Err(
                                Problem::unauthorized("unknown or expired token").into_response()
                            );
                        }
                        attempt.forgive();
                        found
                    }
                    None => None,
                };
                match found {
                    Some(principal) if principal.is_operator() => return Ok(Operator(principal)),
                    // A connector's own token is real but grants nothing here.
                    Some(_) => {
                        let mut problem = Problem::forbidden();
                        problem.detail =
                            "connector tokens do not grant access to the control plane".into();
                        return Err(problem.into_response());
                    }
                    None => "unknown or expired token".to_owned(),
                }
            }
            Err(problem) => problem.detail.clone(),
        };
        attempt.fail().map_err(IntoResponse::into_response)?;
        Err(Problem::unauthorized(detail).into_response())
    }
}

/// The `{id}` of a connector route. Anything that is not a UUID names no
/// connector: 404, like an id that does not exist.
pub(crate) struct ConnectorId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ConnectorId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::not_found("no connector with this id").into_response())?;
        params
            .get("id")
            .and_then(|id| Uuid::parse_str(id).ok())
            .map(ConnectorId)
            .ok_or_else(|| Problem::not_found("no connector with this id").into_response())
    }
}

/// A JSON body. Wrong content type: 415; not JSON: 400 `malformed_json` with
/// the line and column; JSON of the wrong shape: 422 `invalid_body` with the
/// path of the offending member.
pub(crate) struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            )
            .into_response());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes)
            .map(AppJson)
            .map_err(IntoResponse::into_response)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn body_rejection(rejection: BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is too large",
        )
    } else {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("the request body could not be read: {rejection}"),
        )
    }
    .into_response()
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        json_problem(
            error.into_inner(),
            if path == "." { String::new() } else { path },
        )
    })?;
    // Trailing garbage after the value is a syntax error too.
    deserializer
        .end()
        .map_err(|error| json_problem(error, String::new()))?;
    Ok(value)
}

fn json_problem(error: serde_json::Error, field: String) -> Problem {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => {
            let message = error.to_string();
            // serde appends " at line L column C"; the path says more.
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m)
                .to_owned();
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                if field.is_empty() {
                    message.clone()
                } else {
                    format!("{field}: {message}")
                },
            )
            .with(
                "errors",
                json!([{"field": field, "code": "invalid_value", "message": message}]),
            )
        }
        _ => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {error}"),
        )
        .with("line", error.line())
        .with("column", error.column()),
    }
}
