//! The read API's errors and the problem+json answer each one gets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sluice_runtime::catalog::{AccessDenied, Refused};
use sluice_runtime::http::Problem;
use sluice_runtime::rate_limit::RateLimited;
use sluice_runtime::throttle::TooManyFailedAttempts;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("missing or unknown token")]
    Unauthorized,
    #[error("this token does not grant access to this connector")]
    Forbidden,
    #[error("no connector with this id")]
    NotFound,
    /// Too many missing or unknown tokens from this client address.
    #[error(transparent)]
    Throttled(#[from] TooManyFailedAttempts),
    /// Over the token's requests per second.
    #[error("rate limited")]
    RateLimited(Box<RateLimited>),
    /// A query parameter that cannot be used: its `code` is stable, and
    /// `parameter` names the offending parameter (or field) for the client.
    #[error("{detail}")]
    BadParameter {
        code: &'static str,
        parameter: String,
        detail: String,
    },
    /// NATS is not set up yet (it did not answer at start), so no token
    /// can be checked.
    #[error("the bus is unavailable")]
    BusUnavailable,
    /// The pool had no connection to give in time: PostgreSQL is down or
    /// saturated, which is worth a retry, not a 500.
    #[error("the database is unavailable")]
    DatabaseUnavailable,
    #[error(transparent)]
    Database(sqlx::Error),
    /// Something that cannot happen unless the code is wrong.
    #[error("{0}")]
    Internal(String),
    /// A test hook stopped the work as if the process had died.
    #[error("interrupted by a test hook")]
    Interrupted,
}

impl ReadError {
    pub(crate) fn bad_parameter(
        code: &'static str,
        parameter: impl Into<String>,
        detail: impl Into<String>,
    ) -> ReadError {
        ReadError::BadParameter {
            code,
            parameter: parameter.into(),
            detail: detail.into(),
        }
    }
}

impl From<AccessDenied> for ReadError {
    fn from(denied: AccessDenied) -> ReadError {
        match denied {
            AccessDenied::Unauthorized => ReadError::Unauthorized,
            AccessDenied::Forbidden => ReadError::Forbidden,
            AccessDenied::NotFound => ReadError::NotFound,
        }
    }
}

impl From<Refused> for ReadError {
    fn from(refused: Refused) -> ReadError {
        match refused {
            Refused::Denied(denied) => denied.into(),
            Refused::Throttled(throttled) => ReadError::Throttled(throttled),
        }
    }
}

impl From<RateLimited> for ReadError {
    fn from(limited: RateLimited) -> ReadError {
        ReadError::RateLimited(Box::new(limited))
    }
}

impl From<sqlx::Error> for ReadError {
    fn from(error: sqlx::Error) -> ReadError {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ReadError::DatabaseUnavailable
            }
            // The records table is gone: the connector was deleted after the
            // catalog said it existed.
            sqlx::Error::Database(e) if e.code().as_deref() == Some("42P01") => ReadError::NotFound,
            _ => ReadError::Database(error),
        }
    }
}

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        let problem = match self {
            ReadError::Unauthorized => {
                Problem::unauthorized("the bearer token is missing or unknown")
            }
            ReadError::Forbidden => Problem::forbidden(),
            ReadError::NotFound => Problem::not_found("no connector with this id"),
            ReadError::Throttled(throttled) => throttled.into(),
            ReadError::RateLimited(limited) => (*limited).into(),
            ReadError::BadParameter {
                code,
                parameter,
                detail,
            } => Problem::new(StatusCode::BAD_REQUEST, code, detail).with("parameter", parameter),
            ReadError::BusUnavailable => Problem::unavailable(
                "bus_unavailable",
                "NATS does not answer yet; retry shortly",
                2,
            ),
            ReadError::DatabaseUnavailable => Problem::unavailable(
                "database_unavailable",
                "the database does not answer; retry shortly",
                2,
            ),
            ReadError::Database(error) => Problem::internal(&error),
            error @ (ReadError::Internal(_) | ReadError::Interrupted) => Problem::internal(&error),
        };
        problem.into_response()
    }
}
