//! The HTTP side of the command line: where the server is, the bearer
//! token, and problem+json answers turned into messages for a person.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::Remote;

const DEFAULT_URL: &str = "http://localhost:8080";

/// Attempts after the first of a request the server is too busy for.
pub(crate) const RETRIES: u32 = 10;
/// Longest wait between two attempts when the server says nothing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A client of one Sluice, with the token of the command.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// From `--url` and `--token`, else `SLUICE_URL` and `SLUICE_TOKEN`.
    pub(crate) fn new(remote: &Remote) -> anyhow::Result<Api> {
        let base = remote
            .url
            .clone()
            .or_else(|| std::env::var("SLUICE_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("the URL {base:?} must start with http:// or https://");
        }
        let Some(token) = remote
            .token
            .clone()
            .or_else(|| std::env::var("SLUICE_TOKEN").ok())
            .filter(|t| !t.is_empty())
        else {
            bail!("no token: pass --token or set SLUICE_TOKEN");
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A chunk of records waits for JetStream's acknowledgements;
            // a page of records streams: both take a while, never this long.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("sluice-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("starting the HTTP client")?;
        Ok(Api { http, base, token })
    }

    /// `method` on `path` (which starts with `/`), with the bearer token.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `request` and reads a JSON answer (`Null` for an empty body);
    /// an error status becomes an [`ApiError`].
    pub(crate) async fn call(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(ApiError::from_response(response).await.into());
        }
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("the server's answer is not JSON")
    }

    /// A transport error, said with the server's address.
    pub(crate) fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        anyhow::Error::new(error).context(format!("cannot talk to Sluice at {}", self.base))
    }

    /// The id of the connector `id_or_name` names: an id as it is, else the
    /// connector of that exact name (which needs the operator token).
    pub(crate) async fn connector_id(&self, id_or_name: &str) -> anyhow::Result<String> {
        if looks_like_uuid(id_or_name) {
            return Ok(id_or_name.to_owned());
        }
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self
                .request(Method::GET, "/v1/connectors")
                .query(&[("limit", "100")]);
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            let page = self
                .call(request)
                .await
                .with_context(|| format!("looking up connector {id_or_name:?} by name"))?;
            for connector in page["connectors"].as_array().into_iter().flatten() {
                if connector["name"].as_str() == Some(id_or_name) {
                    return Ok(connector["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) if page["connectors"].as_array().is_some_and(|c| !c.is_empty()) => {
                    cursor = Some(next.to_owned())
                }
                _ => bail!("no connector is named {id_or_name:?}"),
            }
        }
    }
}

/// Busy, rate-limited or failing for a moment: the same request, with the
/// same key, may be sent again.
pub(crate) fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// Half a second, doubling to [`MAX_BACKOFF`], each wait shortened by up
/// to a quarter at random so that many pushes do not retry in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let full = Duration::from_millis(500)
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    full.mul_f64(1.0 - rand::random::<f64>() / 4.0)
}

fn looks_like_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        })
}

/// A refusal of the server, from its problem+json body (SPEC 4), or the
/// status and the start of whatever else it sent.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// The problem's `code`; empty when the body was no problem+json.
    pub(crate) code: String,
    pub(crate) detail: String,
    /// The whole body, for the members a caller knows (`errors`, `line`).
    pub(crate) body: Value,
    /// `Retry-After`, in seconds, when the answer had one.
    pub(crate) retry_after: Option<Duration>,
}

impl ApiError {
    pub(crate) async fn from_response(response: Response) -> ApiError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
        let detail = match text("detail") {
            detail if !detail.is_empty() => detail,
            _ => {
                let raw = String::from_utf8_lossy(&bytes);
                sluice_schema::snippet(raw.trim()).into_owned()
            }
        };
        ApiError {
            status,
            code: text("code"),
            detail,
            body,
            retry_after,
        }
    }

    /// The entries of `errors`, each as `field: message`.
    fn listed_errors(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|error| {
                let field = error["field"].as_str().unwrap_or_default();
                let message = error["message"]
                    .as_str()
                    .or(error["detail"].as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| error.to_string());
                if field.is_empty() {
                    message
                } else {
                    format!("{field}: {message}")
                }
            })
            .collect()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.as_u16();
        if self.code.is_empty() {
            write!(f, "{} (HTTP {status})", self.detail)?;
        } else {
            write!(f, "{} ({}, HTTP {status})", self.detail, self.code)?;
        }
        for error in self.listed_errors() {
            write!(f, "\n  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        assert!(backoff(0) <= Duration::from_millis(500));
        assert!(backoff(0) >= Duration::from_millis(375));
        assert!(backoff(3) >= Duration::from_secs(3));
        assert!(backoff(40) <= MAX_BACKOFF);
        assert!(backoff(40) >= MAX_BACKOFF.mul_f64(0.75));
    }

    #[test]
    fn uuids_are_told_from_names() {
        assert!(looks_like_uuid("0193a5b2-7c1e-7d3f-8a9b-0123456789ab"));
        assert!(!looks_like_uuid("orders"));
        assert!(!looks_like_uuid("0193a5b2-7c1e-7d3f-8a9b-0123456789a-"));
        assert!(!looks_like_uuid("0193a5b2x7c1e-7d3f-8a9b-0123456789ab"));
    }
}
