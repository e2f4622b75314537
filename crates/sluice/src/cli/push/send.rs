//! One chunk to the ingest route (SPEC 7): compressed, retried with the same
//! `Idempotency-Key` while the server is busy or unreachable, and its
//! answer sorted into what the push does next.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use super::chunks::{Chunk, RecordLines};
use crate::cli::api::{Api, ApiError, backoff, retryable};

/// How every chunk of a push is sent.
pub(crate) struct Sender {
    pub(crate) api: Api,
    /// `/v1/connectors/{id}/records`.
    pub(crate) path: String,
    pub(crate) content_type: &'static str,
    pub(crate) partial: bool,
    pub(crate) compress: bool,
    /// Attempts after the first.
    pub(crate) retries: u32,
    /// Attempts that were retried, for the progress line.
    pub(crate) retried: Arc<AtomicU64>,
}

/// What became of a chunk.
pub(crate) enum Outcome {
    /// Stored: `accepted` records, `rejected` kept as rejected (partial
    /// mode), with the errors the answer listed.
    Stored {
        accepted: u64,
        rejected: u64,
        errors: Vec<Value>,
        error_count: u64,
    },
    /// Refused whole: nothing of it was stored.
    Refused(ApiError),
    /// Nothing more can be sent: a wrong token, an unknown connector, or
    /// a server that stayed unreachable through every retry.
    Fatal(anyhow::Error),
}

impl Sender {
    /// Sends `chunk`; answers what became of it, with its records' lines.
    pub(crate) async fn send(self: Arc<Self>, chunk: Chunk) -> (RecordLines, Outcome) {
        let Chunk { body, key, lines } = chunk;
        let compress = self.compress;
        let body = match tokio::task::spawn_blocking(move || encode(body, compress)).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => return (lines, Outcome::Fatal(error)),
            Err(error) => return (lines, Outcome::Fatal(anyhow!(error))),
        };
        let outcome = self.send_body(body, &key).await;
        (lines, outcome)
    }

    async fn send_body(&self, body: Bytes, key: &str) -> Outcome {
        let mut attempt = 0;
        loop {
            let mut request = self
                .api
                .request(Method::POST, &self.path)
                .header(header::CONTENT_TYPE, self.content_type)
                .header("idempotency-key", key)
                .body(body.clone());
            if self.compress {
                request = request.header(header::CONTENT_ENCODING, "gzip");
            }
            if self.partial {
                request = request.query(&[("mode", "partial")]);
            }
            let wait = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return match response.json::<Value>().await {
                        Ok(answer) => stored(&answer),
                        Err(error) => Outcome::Fatal(self.api.unreachable(error)),
                    };
                }
                Ok(response) => {
                    let error = ApiError::from_response(response).await;
                    if !retryable(error.status) {
                        return refusal(error);
                    }
                    if attempt >= self.retries {
                        return Outcome::Fatal(anyhow!(error).context(format!(
                            "the server still refused after {} attempts",
                            attempt + 1
                        )));
                    }
                    error.retry_after.unwrap_or_else(|| backoff(attempt))
                }
                Err(error) => {
                    if attempt >= self.retries {
                        return Outcome::Fatal(
                            self.api
                                .unreachable(error)
                                .context(format!("gave up after {} attempts", attempt + 1)),
                        );
                    }
                    backoff(attempt)
                }
            };
            self.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

fn encode(body: Vec<u8>, compress: bool) -> anyhow::Result<Bytes> {
    if !compress {
        return Ok(Bytes::from(body));
    }
    // The fastest level: most of the gain, a fraction of the time.
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder.write_all(&body).context("compressing a chunk")?;
    Ok(Bytes::from(
        encoder.finish().context("compressing a chunk")?,
    ))
}

fn stored(answer: &Value) -> Outcome {
    let count = |key: &str| answer[key].as_u64().unwrap_or(0);
    Outcome::Stored {
        accepted: count("accepted"),
        rejected: count("rejected"),
        errors: answer["errors"].as_array().cloned().unwrap_or_default(),
        error_count: answer["error_count"]
            .as_u64()
            .unwrap_or_else(|| count("rejected")),
    }
}

fn refusal(error: ApiError) -> Outcome {
    match error.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
            Outcome::Fatal(error.into())
        }
        _ => Outcome::Refused(error),
    }
}
