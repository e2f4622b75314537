//! `POST /v1/connectors/{id}/records` (SPEC 7).
//!
//! In order: the token (401/403/404, before anything about the request is
//! looked at) and its requests per second (429), the query and headers
//! (400/415), the body under its size limit (413), validation (400/422),
//! the token's records per second (429; 413 for more than a second's worth
//! at once), then publishing (503 unless every chunk is acknowledged), and
//! with `wait=true` the read API's notices.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sluice_runtime::bus::ConnectorDoc;
use sluice_runtime::http::{BearerToken, Problem, REQUEST_ID};
use sluice_runtime::rate_limit::{RateLimitHeaders, limited_token};
use sluice_runtime::startup::Bus;
use sluice_runtime::throttle::AuthAttempt;
use sluice_runtime::token::TokenKind;
use sluice_schema::{Format, RecordError, validate_with};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::batch::{BatchHeader, ChunkError, encode_chunks};
use crate::body::{self, Encoding};
use crate::budget::{Refusal, RequestMemory};
use crate::error::IngestError;
use crate::idempotency::{IdempotencyKey, Seen, request_digest};
use crate::publish::{Envelope, Published, publish_chunks, wait_until_stored};
use crate::{AppState, chunk_limit, ensure_connected};

/// How long `wait=true` holds the answer for the read API (SPEC 7).
const WAIT_FOR_STORED: Duration = Duration::from_secs(10);

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/connectors/{id}/records", post(post_records))
}

/// The answer to an accepted request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct IngestAnswer {
    /// Records accepted: durable in the bus, to be stored.
    accepted: usize,
    /// Records refused (partial mode only), kept as rejected records.
    rejected: usize,
    /// Identifies the request's records in the bus; the same for every
    /// retry with one `Idempotency-Key`.
    batch_id: Uuid,
    /// The schema version the records were validated against.
    schema_version: i64,
    /// Partial mode: the first 100 errors, as in a 422 answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    errors: Option<Vec<RecordError>>,
    /// Partial mode: how many errors there were in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    error_count: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    AllOrNothing,
    Partial,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::AllOrNothing => "all_or_nothing",
            Mode::Partial => "partial",
        }
    }
}

/// The query string, read by hand so that a bad one is a problem+json 400
/// given after the token check, not axum's text rejection.
#[derive(Debug, Default, Deserialize)]
struct RawParams {
    mode: Option<String>,
    wait: Option<String>,
}

struct Params {
    mode: Mode,
    wait: bool,
}

impl Params {
    fn from_uri(uri: &Uri) -> Result<Params, IngestError> {
        let Query(raw) =
            Query::<RawParams>::try_from_uri(uri).map_err(|e| IngestError::InvalidParameter {
                name: "query",
                detail: format!("the query string cannot be read: {}", e.body_text()),
            })?;
        let mode = match raw.mode.as_deref() {
            None | Some("all_or_nothing") => Mode::AllOrNothing,
            Some("partial") => Mode::Partial,
            Some(other) => {
                return Err(IngestError::InvalidParameter {
                    name: "mode",
                    detail: format!("mode must be all_or_nothing or partial, not {other:?}"),
                });
            }
        };
        let wait = match raw.wait.as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(IngestError::InvalidParameter {
                    name: "wait",
                    detail: format!("wait must be true or false, not {other:?}"),
                });
            }
        };
        Ok(Params { mode, wait })
    }
}

/// Accept records for a connector.
///
/// The body is a JSON array of objects or one object (`application/json`),
/// newline-delimited JSON (`application/x-ndjson`) or CSV with a header row
/// (`text/csv`), optionally `Content-Encoding: gzip`. Authorised by the
/// connector's write token or the operator token.
#[utoipa::path(
    post,
    path = "/v1/connectors/{id}/records",
    tag = "ingest",
    params(
        ("id" = Uuid, Path, description = "The connector's id"),
        ("mode" = Option<String>, Query, description = "`all_or_nothing` (default) or `partial`"),
        ("wait" = Option<bool>, Query, description = "Answer 200 once the records are readable (202 after 10 s)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry within 10 minutes stores nothing twice and gets the same answer"),
    ),
    request_body(
        description = "Records, in the format that Content-Type names",
        content(
            (Object = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        ),
    ),
    responses(
        (status = 202, description = "Every accepted record is durable in the bus. A token with rate limits gets RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers) on this and every other answer", body = IngestAnswer,
         headers(
             ("RateLimit-Policy" = String, description = "The token's policies: `\"requests\";q=10;w=1, \"records\";q=5000;qu=\"records\";w=1`"),
             ("RateLimit" = String, description = "What is left of each policy checked: `\"requests\";r=7;t=1`"),
         )),
        (status = 200, description = "With wait=true: the records are readable", body = IngestAnswer),
        (status = 400, description = "Malformed body (with line and column), bad parameter or Idempotency-Key", content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", content_type = "application/problem+json"),
        (status = 403, description = "A token of another connector, or a read token", content_type = "application/problem+json"),
        (status = 404, description = "No such connector", content_type = "application/problem+json"),
        (status = 413, description = "Body larger than SLUICE_MAX_BODY_BYTES once decompressed, or whose records take more memory once read than one connector may hold, or more records than the token's records_per_second (`exceeds_records_limit`)", content_type = "application/problem+json"),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", content_type = "application/problem+json"),
        (status = 422, description = "Records failed validation (all_or_nothing), or too many to keep (partial, `too_many_rejected`): `errors` and `error_count`", content_type = "application/problem+json"),
        (status = 429, description = "Too many missing or unknown tokens from this address (`too_many_failed_attempts`), or over the token's requests or records per second (`rate_limited`, with `policy`, RateLimit-Policy and RateLimit; nothing of the request was published); retry after Retry-After", content_type = "application/problem+json"),
        (status = 503, description = "The bus cannot take records now (`bus_unavailable`), the records stream holds SLUICE_STREAM_MAX_BYTES not yet stored (`stream_full`), or the gateway's memory is taken (`gateway_busy`); nothing of the request was accepted (but see Idempotency-Key for a request of many chunks): retry after Retry-After with the same Idempotency-Key", content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(connector))]
pub(crate) async fn post_records(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    token: Result<BearerToken, Problem>,
    attempt: AuthAttempt,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut limits = RateLimitHeaders::default();
    let outcome = match token {
        Ok(BearerToken(token)) => {
            // An id that is not a UUID names no connector: the token check
            // still decides between 401, 403 and 404.
            let connector = id.ok().and_then(|Path(id)| id.parse::<Uuid>().ok());
            if let Some(connector) = connector {
                tracing::Span::current().record("connector", tracing::field::display(connector));
            }
            let caller = Caller {
                connector,
                token: &token,
                attempt: &attempt,
            };
            ingest(&state, caller, &uri, &headers, body, &mut limits).await
        }
        Err(problem) => match attempt.fail() {
            Ok(()) => Err(IngestError::NoToken(problem.detail)),
            Err(throttled) => Err(throttled.into()),
        },
    };
    let status = match &outcome {
        Ok((status, _)) => *status,
        Err(error) => error.status(),
    };
    metrics::counter!("sluice_ingest_requests_total", "status" => status.as_str().to_owned())
        .increment(1);
    // Every answer to a limited token tells its limits.
    limits.on(match outcome {
        Ok((status, answer)) => (status, axum::Json(answer)).into_response(),
        Err(error) => error.into_response(),
    })
}

/// Who calls, on which connector's route.
struct Caller<'a> {
    /// `None`: the route's id names no connector.
    connector: Option<Uuid>,
    token: &'a str,
    attempt: &'a AuthAttempt,
}

/// One request, step by step: the token and its requests per second,
/// what was sent, an idempotent retry's earlier answer, validation, the
/// token's records per second, then publishing (and with `wait=true`,
/// waiting until the records are stored). `limits` is what the answer
/// tells of the token's rate limits.
async fn ingest(
    state: &AppState,
    caller: Caller<'_>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    limits: &mut RateLimitHeaders,
) -> Result<(StatusCode, IngestAnswer), IngestError> {
    let bus = state.bus()?;
    let authorized = bus
        .catalog
        .authorize(
            caller.token,
            state.admin.as_ref(),
            caller.connector,
            TokenKind::Write,
            caller.attempt,
        )
        .await?;
    let doc = authorized.doc;
    let limited = limited_token(caller.token, &authorized.principal);
    if let Some(token) = &limited {
        match state.limiter.admit_request(token, doc.limits) {
            Ok(admitted) => *limits = admitted,
            Err(refused) => {
                *limits = refused.headers.clone();
                return Err(refused.into());
            }
        }
    }
    let Sent {
        params,
        idempotent,
        body,
    } = read_request(state, doc.id, uri, headers, body).await?;
    if let Some(answer) = earlier_answer(state, doc.id, idempotent.as_ref())? {
        return Ok(answer);
    }
    let batch_id = idempotent.as_ref().map_or_else(Uuid::now_v7, |idempotent| {
        idempotent.key.batch_id(doc.id, doc.schema_version)
    });
    let limit = chunk_limit(bus);
    let (prepared, memory) = validate(state, &doc, params.mode, batch_id, limit, body).await?;
    // Weighed before anything is published: a refused request publishes
    // nothing, an admitted one all its records.
    if let Some(token) = &limited {
        let records = prepared.accepted + prepared.rejected;
        state
            .limiter
            .admit_records(token, doc.limits, records, limits)?;
    }

    let partial = params.mode == Mode::Partial;
    let answer = IngestAnswer {
        accepted: prepared.accepted,
        rejected: prepared.rejected,
        batch_id,
        schema_version: doc.schema_version,
        errors: partial.then_some(prepared.errors),
        error_count: partial.then_some(prepared.error_count),
    };
    let envelope = Envelope {
        connector: doc.id,
        schema_version: doc.schema_version,
        batch_id,
        request_id: headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok()),
        idempotent: idempotent.is_some(),
    };
    let status =
        publish_and_wait(state, bus, &envelope, params.wait, prepared.chunks, memory).await?;
    metrics::counter!("sluice_ingest_records_accepted_total").increment(answer.accepted as u64);
    metrics::counter!("sluice_ingest_records_rejected_total").increment(answer.rejected as u64);
    if let Some(Idempotent { key, digest }) = idempotent {
        state
            .recent
            .remember(doc.id, key, digest, (status, answer.clone()));
    }
    Ok((status, answer))
}

/// The answer already given to this request, when it is a retry with the
/// same `Idempotency-Key` (422 if the key came with another body).
fn earlier_answer(
    state: &AppState,
    connector: Uuid,
    idempotent: Option<&Idempotent>,
) -> Result<Option<(StatusCode, IngestAnswer)>, IngestError> {
    let Some(Idempotent { key, digest }) = idempotent else {
        return Ok(None);
    };
    match state.recent.lookup(connector, key, digest) {
        Seen::New => Ok(None),
        Seen::Retry(answer) => Ok(Some(answer)),
        Seen::Reused => Err(IngestError::IdempotencyKeyReused),
    }
}

/// What a request sent, read and checked.
struct Sent {
    params: Params,
    /// With an `Idempotency-Key`.
    idempotent: Option<Idempotent>,
    body: ReadBody,
}

/// An `Idempotency-Key` and the digest of what it was sent with (format,
/// mode and body), to tell a retry from a reuse of the key.
struct Idempotent {
    key: IdempotencyKey,
    digest: [u8; 32],
}

/// A body read whole (decompressed), with the memory it holds.
struct ReadBody {
    format: Format,
    bytes: Vec<u8>,
    memory: RequestMemory,
}

/// The query, the headers (400/415), then the body under its size limit
/// (413), each byte of it reserved from the memory budget first.
async fn read_request(
    state: &AppState,
    connector: Uuid,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Sent, IngestError> {
    let params = Params::from_uri(uri)?;
    let key = IdempotencyKey::from_headers(headers)?;
    let format = body::format_of(headers)?;
    let encoding = body::encoding_of(headers)?;
    let mut memory = reserve_memory(state, connector, headers, encoding).await?;
    let bytes =
        body::read_limited(headers, body, encoding, state.max_body_bytes, &mut memory).await?;
    metrics::counter!("sluice_ingest_bytes_received_total").increment(bytes.len() as u64);
    if encoding == Encoding::Gzip {
        tracing::debug!(decompressed = bytes.len(), "gzip body inflated");
    }
    let (bytes, idempotent) = match key {
        None => (bytes, None),
        // Hashing up to SLUICE_MAX_BODY_BYTES is CPU work: off the reactor.
        Some(key) => {
            let mode = params.mode;
            let (bytes, digest) = tokio::task::spawn_blocking(move || {
                let digest =
                    request_digest(&[format.name().as_bytes(), mode.as_str().as_bytes(), &bytes]);
                (bytes, digest)
            })
            .await
            .map_err(|e| IngestError::Internal(anyhow::Error::new(e).context("hashing task")))?;
            (bytes, Some(Idempotent { key, digest }))
        }
    };
    Ok(Sent {
        params,
        idempotent,
        body: ReadBody {
            format,
            bytes,
            memory,
        },
    })
}

/// Validates and encodes the body on a blocking thread, in one of the
/// gateway's validation slots (400/413/422). Gives back the memory the
/// messages hold; the body's is let go.
async fn validate(
    state: &AppState,
    doc: &Arc<ConnectorDoc>,
    mode: Mode,
    batch_id: Uuid,
    limit: usize,
    body: ReadBody,
) -> Result<(Prepared, RequestMemory), IngestError> {
    let ReadBody {
        format,
        bytes,
        mut memory,
    } = body;
    // What validation usually holds, reserved while no validation slot is
    // taken: validating never waits for memory.
    let allowance = bytes
        .len()
        .saturating_mul(ALLOWANCE_PER_BODY_BYTE)
        .max(MIN_ALLOWANCE);
    memory.reserve_ahead(allowance).await?;
    let slot = state.validations.acquire(doc.id, 1).await?;
    let doc = Arc::clone(doc);
    let (prepared, memory) = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let prepared = prepare(&doc, format, mode, &bytes, batch_id, limit, &mut memory);
        // The body and the validation are gone by now; the messages stay.
        let messages = prepared.as_ref().map_or(0, Prepared::message_bytes);
        drop(bytes);
        memory.settle(messages);
        (prepared, memory)
    })
    .await
    .map_err(|e| IngestError::Internal(anyhow::Error::new(e).context("validation task")))?;
    Ok((prepared?, memory))
}

/// Publishes the chunks, if any (503 unless every one is acknowledged) and,
/// with `wait`, waits for the read API to report them stored: 200 if it does in
/// time, else 202.
async fn publish_and_wait(
    state: &AppState,
    bus: &Bus,
    envelope: &Envelope<'_>,
    wait: bool,
    chunks: Vec<Vec<u8>>,
    mut memory: RequestMemory,
) -> Result<StatusCode, IngestError> {
    if chunks.is_empty() {
        // Nothing to store: nothing to wait for either.
        return Ok(if wait {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        });
    }
    ensure_connected(bus)?;
    // Subscribed before publishing, so no notice can be missed.
    let notices = if wait {
        let subject = state.namespace.stored_subject(envelope.connector);
        Some(bus.client.subscribe(subject).await.map_err(|e| {
            IngestError::BusUnavailable(format!("subscribing to stored notices: {e}"))
        })?)
    } else {
        None
    };
    let count = chunks.len();
    let subject = state.namespace.records_subject(envelope.connector);
    let published = publish_chunks(&bus.client, &bus.js, &subject, envelope, chunks).await?;
    memory.settle(0);
    let status = match notices {
        // A retry whose chunks were all in the stream already: the read
        // API announced them when it stored them the first time, so there
        // is nothing to wait for and no way to know. 202 is true.
        Some(_) if published == Published::AllDuplicates => StatusCode::ACCEPTED,
        Some(notices) => {
            let stored = wait_until_stored(
                notices,
                envelope.batch_id,
                count,
                WAIT_FOR_STORED,
                &state.shutdown,
            )
            .await;
            if stored {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            }
        }
        None => StatusCode::ACCEPTED,
    };
    Ok(status)
}

/// A request's memory as validation and encoding ask for it, from their
/// blocking thread; the first refusal says why they stopped.
struct Holding<'m> {
    memory: &'m mut RequestMemory,
    refused: Option<Refusal>,
}

impl Holding<'_> {
    fn hold(&mut self, bytes: usize) -> bool {
        match self.memory.hold_now(bytes) {
            Ok(()) => true,
            Err(why) => {
                self.refused.get_or_insert(why);
                false
            }
        }
    }
}

/// What validating and encoding a body usually holds, the body included,
/// per byte of it: records take about twice their JSON text, messages less
/// than the body. More (CSV of short cells: ten times or more) is taken if
/// free, up to a connector's share; a body that needs more than the share
/// is refused, 413 (or 422 when refused records take the room).
const ALLOWANCE_PER_BODY_BYTE: usize = 4;

/// The least a body may hold, so that a small body may keep a thousand or
/// so refused records (some 1 KiB each).
const MIN_ALLOWANCE: usize = 1024 * 1024;

/// Reserves the request's memory before its body is read: all of it when
/// the body's size is announced, else as it arrives.
async fn reserve_memory(
    state: &AppState,
    connector: Uuid,
    headers: &HeaderMap,
    encoding: Encoding,
) -> Result<RequestMemory, IngestError> {
    let ahead = match (encoding, body::declared_length(headers)) {
        // What its validation will need too: requests beyond what the
        // connector's share holds then queue whole, rather than each
        // holding a body while waiting for the rest.
        (Encoding::Identity, Some(length)) if length <= state.max_body_bytes => length
            .saturating_mul(ALLOWANCE_PER_BODY_BYTE)
            .max(MIN_ALLOWANCE),
        // Too large (refused unread), gzip (of unknown size once inflated)
        // or of unknown length: reserved as it grows.
        _ => 0,
    };
    Ok(RequestMemory::reserve(&state.memory, connector, ahead).await?)
}

/// A validated body, laid out as messages.
struct Prepared {
    accepted: usize,
    rejected: usize,
    errors: Vec<RecordError>,
    error_count: usize,
    chunks: Vec<Vec<u8>>,
}

impl Prepared {
    fn message_bytes(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }
}

/// Validation and encoding: CPU-bound work for a blocking thread. Whatever
/// they keep is held in `memory` first.
fn prepare(
    doc: &ConnectorDoc,
    format: Format,
    mode: Mode,
    body: &[u8],
    batch_id: Uuid,
    limit: usize,
    memory: &mut RequestMemory,
) -> Result<Prepared, IngestError> {
    let mut holding = Holding {
        memory,
        refused: None,
    };
    let validation = validate_with(&doc.schema, doc.extra_fields, format, body, &mut |bytes| {
        holding.hold(bytes)
    })?;
    if mode == Mode::AllOrNothing && validation.error_count > 0 {
        return Err(IngestError::ValidationFailed {
            errors: validation.errors,
            error_count: validation.error_count,
        });
    }
    if validation.overflowed_at.is_some() {
        return Err(match holding.refused {
            Some(Refusal::TooLarge { limit }) if validation.error_count > 0 => {
                IngestError::TooManyRejected {
                    errors: validation.errors,
                    error_count: validation.error_count,
                    limit,
                }
            }
            Some(refusal) => refusal.into(),
            None => IngestError::Internal(anyhow::anyhow!("validation overflowed unasked")),
        });
    }
    let header = BatchHeader {
        batch_id,
        schema: &doc.schema,
        schema_version: doc.schema_version,
        received_at: Utc::now(),
        format,
    };
    let chunks = encode_chunks(
        &header,
        &validation.records,
        &validation.rejected,
        body.len(),
        limit,
        &mut |bytes| holding.hold(bytes),
    )
    .map_err(|error| match error {
        ChunkError::RecordTooLarge(record) => IngestError::RecordTooLarge { record, limit },
        ChunkError::NotHeld => holding.refused.map_or_else(
            || IngestError::Internal(anyhow::anyhow!("message memory refused unasked")),
            IngestError::from,
        ),
        ChunkError::Encode(error) => {
            IngestError::Internal(anyhow::Error::new(error).context("encoding a record batch"))
        }
    })?;
    Ok(Prepared {
        accepted: validation.records.len(),
        rejected: validation.rejected.len(),
        errors: validation.errors,
        error_count: validation.error_count,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Result<Params, IngestError> {
        Params::from_uri(&format!("/x?{query}").parse().unwrap())
    }

    #[test]
    fn mode_and_wait_are_checked() {
        let p = params("").unwrap();
        assert_eq!((p.mode, p.wait), (Mode::AllOrNothing, false));
        let p = params("mode=partial&wait=true").unwrap();
        assert_eq!((p.mode, p.wait), (Mode::Partial, true));
        assert!(matches!(
            params("mode=some"),
            Err(IngestError::InvalidParameter { name: "mode", .. })
        ));
        assert!(matches!(
            params("wait=soon"),
            Err(IngestError::InvalidParameter { name: "wait", .. })
        ));
        assert!(params("mode=partial&mode=partial").is_err());
    }
}
