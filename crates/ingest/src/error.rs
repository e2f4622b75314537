//! Every way an ingest request can fail, and the problem+json answer of each.

use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use sluice_runtime::catalog::{AccessDenied, Refused};
use sluice_runtime::http::Problem;
use sluice_runtime::rate_limit::{Limited, RateLimited};
use sluice_runtime::throttle::TooManyFailedAttempts;
use sluice_schema::{RecordError, SyntaxError};

use crate::budget::Refusal;

/// Seconds a client is asked to wait before retrying after a 503.
const RETRY_AFTER_SECS: u32 = 2;
/// Seconds a client is asked to wait when the records stream is full: it
/// empties only as fast as the read API stores, so a quick retry would
/// only be refused again.
const STREAM_FULL_RETRY_AFTER_SECS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    /// No usable `Authorization: Bearer` header; the detail says why.
    #[error("no bearer token: {0}")]
    NoToken(String),

    #[error("access denied: {0:?}")]
    Denied(AccessDenied),

    /// Too many missing or unknown tokens from this client address.
    #[error(transparent)]
    Throttled(#[from] TooManyFailedAttempts),

    /// Over the token's requests or records per second (429), or more
    /// records at once than its records per second (413).
    #[error("rate limited")]
    RateLimited(Box<RateLimited>),

    #[error("invalid query parameter {name}: {detail}")]
    InvalidParameter { name: &'static str, detail: String },

    #[error("invalid Idempotency-Key")]
    InvalidIdempotencyKey,

    #[error("the Idempotency-Key was used with another body")]
    IdempotencyKeyReused,

    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(Option<String>),

    #[error("unsupported content encoding {0:?}")]
    UnsupportedEncoding(String),

    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },

    /// One record that alone exceeds the bus's largest message.
    #[error("record {record} does not fit in one message")]
    RecordTooLarge { record: usize, limit: usize },

    #[error("malformed body: {0}")]
    Syntax(#[from] SyntaxError),

    #[error("malformed body: {0}")]
    MalformedBody(String),

    #[error("{error_count} validation errors")]
    ValidationFailed {
        errors: Vec<RecordError>,
        error_count: usize,
    },

    /// Validating the body would hold more memory than one connector may.
    #[error("the body expands beyond {limit} bytes in memory")]
    ExpandsTooMuch { limit: usize },

    /// Partial mode: the refused records would hold more memory than one
    /// connector may, so none of the body is kept.
    #[error("{error_count} validation errors, too many to keep")]
    TooManyRejected {
        errors: Vec<RecordError>,
        error_count: usize,
        limit: usize,
    },

    /// The gateway's memory or validation slots stayed taken by other
    /// requests for longer than a request waits.
    #[error("the gateway is busy")]
    GatewayBusy,

    /// NATS is down, slow, or refused the messages.
    #[error("bus unavailable: {0}")]
    BusUnavailable(String),

    /// The records stream holds `SLUICE_STREAM_MAX_BYTES` of records not yet
    /// stored, and refuses more until the read API has stored some.
    #[error("the records stream is full")]
    StreamFull,

    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IngestError {
    /// The status the answer will carry, for metrics.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            IngestError::NoToken(_) | IngestError::Denied(AccessDenied::Unauthorized) => {
                StatusCode::UNAUTHORIZED
            }
            IngestError::Denied(AccessDenied::Forbidden) => StatusCode::FORBIDDEN,
            IngestError::Denied(AccessDenied::NotFound) => StatusCode::NOT_FOUND,
            IngestError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::RateLimited(limited) => match limited.why {
                Limited::TooFast { .. } => StatusCode::TOO_MANY_REQUESTS,
                Limited::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            },
            IngestError::InvalidParameter { .. }
            | IngestError::InvalidIdempotencyKey
            | IngestError::Syntax(_)
            | IngestError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            IngestError::IdempotencyKeyReused
            | IngestError::ValidationFailed { .. }
            | IngestError::TooManyRejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::PayloadTooLarge { .. }
            | IngestError::RecordTooLarge { .. }
            | IngestError::ExpandsTooMuch { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BusUnavailable(_) | IngestError::StreamFull | IngestError::GatewayBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Refused> for IngestError {
    fn from(refused: Refused) -> IngestError {
        match refused {
            Refused::Denied(denied) => IngestError::Denied(denied),
            Refused::Throttled(throttled) => IngestError::Throttled(throttled),
        }
    }
}

impl From<RateLimited> for IngestError {
    fn from(limited: RateLimited) -> IngestError {
        IngestError::RateLimited(Box::new(limited))
    }
}

impl From<Refusal> for IngestError {
    fn from(refusal: Refusal) -> IngestError {
        match refusal {
            Refusal::Busy => IngestError::GatewayBusy,
            Refusal::TooLarge { limit } => IngestError::ExpandsTooMuch { limit },
        }
    }
}

impl IntoResponse for IngestError {
    /// Over 80 lines, on purpose: one arm per error, each its answer, read
    /// best as the one table it is.
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = match self {
            IngestError::NoToken(detail) => Problem::unauthorized(detail),
            IngestError::Denied(AccessDenied::Unauthorized) => {
                Problem::unauthorized("the bearer token is not known")
            }
            IngestError::Denied(AccessDenied::Forbidden) => Problem::forbidden(),
            IngestError::Denied(AccessDenied::NotFound) => {
                Problem::not_found("no connector has this id")
            }
            IngestError::Throttled(throttled) => throttled.into(),
            IngestError::RateLimited(limited) => (*limited).into(),
            IngestError::InvalidParameter { name, detail } => {
                Problem::new(status, "invalid_parameter", detail).with("parameter", name)
            }
            IngestError::InvalidIdempotencyKey => Problem::new(
                status,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ),
            IngestError::IdempotencyKeyReused => Problem::new(
                status,
                "idempotency_key_reused",
                "this Idempotency-Key was used in the last 10 minutes for another body; \
                 use a new key for a new request",
            ),
            IngestError::UnsupportedMediaType(given) => Problem::new(
                status,
                "unsupported_media_type",
                match given {
                    Some(given) => format!(
                        "Content-Type {given:?} is not accepted; send application/json, \
                         application/x-ndjson or text/csv"
                    ),
                    None => "a Content-Type is required: application/json, \
                             application/x-ndjson or text/csv"
                        .to_owned(),
                },
            ),
            // RFC 7694: a 415 for an encoding names the ones accepted.
            IngestError::UnsupportedEncoding(given) => Problem::new(
                status,
                "unsupported_media_type",
                format!("Content-Encoding {given:?} is not accepted; send gzip or nothing"),
            )
            .with_header(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip")),
            IngestError::PayloadTooLarge { limit } => Problem::new(
                status,
                "payload_too_large",
                format!("the body exceeds {limit} bytes once decompressed"),
            )
            .with("limit", limit),
            IngestError::RecordTooLarge { record, limit } => Problem::new(
                status,
                "payload_too_large",
                format!(
                    "record {record} is larger than the largest message the bus accepts \
                     ({limit} bytes once encoded)"
                ),
            )
            .with("record", record)
            .with("limit", limit),
            IngestError::Syntax(error) => Problem::new(status, "malformed_body", error.to_string())
                .with("line", error.line)
                .with("column", error.column),
            IngestError::MalformedBody(detail) => Problem::new(status, "malformed_body", detail),
            IngestError::ValidationFailed {
                errors,
                error_count,
            } => Problem::new(
                status,
                "validation_failed",
                format!("{error_count} error(s) in the records; nothing was accepted"),
            )
            .with("errors", serde_json::to_value(&errors).unwrap_or_default())
            .with("error_count", error_count),
            IngestError::ExpandsTooMuch { limit } => Problem::new(
                status,
                "payload_too_large",
                format!(
                    "the records of this body take more than {limit} bytes of memory once \
                     read (many sparse or small records); send fewer records per request"
                ),
            )
            .with("limit", limit),
            IngestError::TooManyRejected {
                errors,
                error_count,
                limit,
            } => Problem::new(
                status,
                "too_many_rejected",
                format!(
                    "{error_count} error(s) in the records: more refused records than partial \
                     mode keeps from one request (each is kept with its errors, and they would \
                     take more than {limit} bytes); nothing was accepted. Fix the records, or \
                     send fewer per request"
                ),
            )
            .with("errors", serde_json::to_value(&errors).unwrap_or_default())
            .with("error_count", error_count)
            .with("limit", limit),
            IngestError::GatewayBusy => Problem::unavailable(
                "gateway_busy",
                "the gateway is handling as much as its memory allows; retry later, with the \
                 same Idempotency-Key so that nothing is stored twice",
                RETRY_AFTER_SECS,
            ),
            IngestError::BusUnavailable(detail) => {
                tracing::warn!(%detail, "answering 503");
                Problem::unavailable(
                    "bus_unavailable",
                    "the message bus cannot take records right now; retry later, with the \
                     same Idempotency-Key so that nothing is stored twice",
                    RETRY_AFTER_SECS,
                )
            }
            IngestError::StreamFull => {
                tracing::warn!("answering 503: the records stream is full");
                Problem::unavailable(
                    "stream_full",
                    "more records are waiting to be stored than the stream holds; retry \
                     later, with the same Idempotency-Key so that nothing is stored twice",
                    STREAM_FULL_RETRY_AFTER_SECS,
                )
            }
            IngestError::Internal(error) => Problem::internal(error.as_ref()),
        };
        problem.into_response()
    }
}
