//! `GET /v1/connectors/{id}/records` and `GET /v1/connectors/{id}/rejected`
//! (SPEC 8).
//!
//! # Why following `next_cursor` sees every record exactly once, in order
//!
//! A page covers the id range `(cursor, end]` and its `next_cursor` is
//! `end`. Every id in that range that matches the filters is on the page,
//! and the next page starts after `end`: a record can be skipped only if
//! it was not yet visible when its range was read, and shown twice never.
//!
//! It cannot be invisible then: `end` never exceeds `bound`, the
//! connector's `last_record_id` read in the same snapshot as the rows, and
//! the store allocates ids under the connector's stats row lock and
//! updates `last_record_id` in the same transaction as the rows. Writers of
//! one connector (on any replica) therefore commit one after the other in
//! id order, and PostgreSQL makes a commit visible before releasing its
//! locks, so every snapshot holds all the ids up to its `bound` and none
//! beyond. A record committed later gets a larger id than `bound`, and a
//! later page shows it.
//!
//! # Streaming
//!
//! The page's extent (its `end` and `has_more`) is settled first: without
//! filters it is arithmetic on the cursor and `bound` (ids of one
//! connector are dense until records are deleted, which the stats row
//! tells: `records = last_record_id`); with filters, or gaps, a probe
//! reads at most `limit + 1` matching ids. The header `Sluice-Next-Cursor` is then known before the
//! body, and the rows are streamed from PostgreSQL into the body in chunks
//! as they arrive, in the same REPEATABLE READ snapshot, never held as a
//! whole page in memory. A slow client holds one pooled connection while
//! its page streams. An unfiltered page comes as one binary `COPY (SELECT
//! …) TO STDOUT`, rendered straight from its bytes; a filtered one by a
//! query that binds the filters' values (COPY takes no parameters), whose
//! binary results are rendered by the same code.

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sluice_runtime::http::{BearerAuth, BearerToken, Problem};
use sluice_runtime::rate_limit::{RateLimitHeaders, limited_token};
use sluice_runtime::store::records_table;
use sluice_runtime::throttle::AuthAttempt;
use sluice_runtime::token::TokenKind;
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Row, Transaction, ValueRef};
use tokio::sync::mpsc;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::copy::{CopyOutRows, Malformed};
use crate::db;
use crate::error::ReadError;
use crate::params::{CursorKind, OutputFormat, PageParams, RecordCursor, query_pairs};
use crate::plan::PagePlan;
use crate::render::{Cell, PageWriter};
use crate::replica;

/// The header that carries the next cursor (every format; the only place
/// NDJSON and CSV have it).
pub(crate) const NEXT_CURSOR_HEADER: &str = "sluice-next-cursor";
/// Bytes gathered before a chunk is sent to the client.
const CHUNK_BYTES: usize = 256 * 1024;
/// Room for the row that fills a chunk past `CHUNK_BYTES`, so that a
/// typical row does not make the buffer grow (a copy of the whole chunk).
const CHUNK_CAPACITY: usize = CHUNK_BYTES + 64 * 1024;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connectors/{id}/records", get(get_records))
        .route("/v1/connectors/{id}/rejected", get(get_rejected))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice read API",
        description = "Records and rejected records of a connector, page by page (SPEC 8)."
    ),
    paths(get_records, get_rejected),
    components(schemas(RecordsPage, RejectedPage, RejectedItem)),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

/// The parameters every page takes. Any other parameter is a filter:
/// `field=op.value` with `op` one of `eq`, `neq`, `gt`, `gte`, `lt`, `lte`,
/// or `field=is.null` / `field=not.null`, on any field or `_received_at`,
/// combined with AND.
#[allow(dead_code)] // Documentation only: the query string is read by `PageParams`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Records per page, 1 to 10000 (default 100).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page; omit it to start at the
    /// beginning.
    cursor: Option<String>,
    /// Comma-separated fields to return (`_id` and `_received_at` always are).
    fields: Option<String>,
    /// `json` (default), `ndjson` or `csv`; the `Accept` header works too.
    format: Option<String>,
    /// Seconds (at most 30) to hold the request while no record lies past
    /// the cursor.
    wait: Option<u32>,
}

/// A page of records in JSON.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct RecordsPage {
    /// Each record: `_id` (string), `_received_at` (RFC 3339) and its fields.
    records: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Always present: where the next page starts, also once `has_more` is
    /// false (records that arrive later come after it).
    next_cursor: String,
    has_more: bool,
}

#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct RejectedItem {
    _id: String,
    _received_at: String,
    /// The record as it was sent.
    record: serde_json::Value,
    errors: Vec<serde_json::Value>,
}

#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct RejectedPage {
    records: Vec<RejectedItem>,
    next_cursor: String,
    has_more: bool,
}

/// A page of a connector's records.
#[utoipa::path(
    get,
    path = "/v1/connectors/{id}/records",
    params(("id" = Uuid, Path, description = "The connector's id"), PageQuery),
    responses(
        (status = 200, description = "A page of records; NDJSON and CSV carry the cursor in Sluice-Next-Cursor", 
         content((RecordsPage = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "A bad limit, cursor, field, filter, format or wait", content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", content_type = "application/problem+json"),
        (status = 403, description = "A token of another connector, or a write token", content_type = "application/problem+json"),
        (status = 404, description = "No such connector", content_type = "application/problem+json"),
        (status = 429, description = "Too many missing or unknown tokens from this address (`too_many_failed_attempts`), or over the token's requests per second (`rate_limited`, with RateLimit-Policy and RateLimit); retry after Retry-After", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = ?id))]
async fn get_records(
    State(state): State<AppState>,
    token: Result<BearerToken, Problem>,
    attempt: AuthAttempt,
    ConnectorPath(id): ConnectorPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ReadError> {
    let (connector, limits) = authorize(&state, token, &attempt, id).await?;
    let page = match page_params(CursorKind::Records, query, &headers) {
        Ok(params) => serve_page(state, connector, params, Source::Records).await,
        Err(error) => Err(error),
    };
    // Every answer to a limited token tells its limits.
    Ok(limits.on(page.unwrap_or_else(IntoResponse::into_response)))
}

/// A page of a connector's rejected records (from `mode=partial` ingests).
#[utoipa::path(
    get,
    path = "/v1/connectors/{id}/rejected",
    params(("id" = Uuid, Path, description = "The connector's id"), PageQuery),
    responses(
        (status = 200, description = "A page of rejected records", 
         content((RejectedPage = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "A bad limit, cursor, filter, format or wait", content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or expired token", content_type = "application/problem+json"),
        (status = 403, description = "A token of another connector, or a write token", content_type = "application/problem+json"),
        (status = 404, description = "No such connector", content_type = "application/problem+json"),
        (status = 429, description = "Too many missing or unknown tokens from this address (`too_many_failed_attempts`), or over the token's requests per second (`rate_limited`, with RateLimit-Policy and RateLimit); retry after Retry-After", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(connector = ?id))]
async fn get_rejected(
    State(state): State<AppState>,
    token: Result<BearerToken, Problem>,
    attempt: AuthAttempt,
    ConnectorPath(id): ConnectorPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ReadError> {
    let (connector, limits) = authorize(&state, token, &attempt, id).await?;
    let page = match page_params(CursorKind::Rejected, query, &headers) {
        Ok(params) => serve_page(state, connector, params, Source::Rejected).await,
        Err(error) => Err(error),
    };
    Ok(limits.on(page.unwrap_or_else(IntoResponse::into_response)))
}

/// The `{id}` of a route: `None` when it names no connector, because it is
/// no UUID or not even UTF-8 once percent-decoded. Never a rejection of its
/// own, so that such an id is answered like any unknown one, after the
/// token is checked.
pub(crate) struct ConnectorPath(pub Option<Uuid>);

impl<S: Send + Sync> FromRequestParts<S> for ConnectorPath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let id = Path::<String>::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|Path(id)| id.parse::<Uuid>().ok());
        Ok(ConnectorPath(id))
    }
}

/// SPEC 3: the operator or this connector's read token. An id that is not
/// a UUID names no connector: the operator gets 404, a connector's token
/// 403 (it is not this connector's), an unknown token 401, or 429 once its
/// client has failed too often (`throttle`). Then the token's requests per
/// second (429 `rate_limited`); the headers tell its limits.
async fn authorize(
    state: &AppState,
    token: Result<BearerToken, Problem>,
    attempt: &AuthAttempt,
    connector: Option<Uuid>,
) -> Result<(Uuid, RateLimitHeaders), ReadError> {
    let Ok(BearerToken(token)) = token else {
        attempt.fail()?;
        return Err(ReadError::Unauthorized);
    };
    let authorized = state
        .bus()?
        .catalog
        .authorize(
            &token,
            state.admin_hash.as_deref(),
            connector,
            TokenKind::Read,
            attempt,
        )
        .await?;
    let limits = match limited_token(&token, &authorized.principal) {
        Some(key) => state.limiter.admit_request(&key, authorized.doc.limits)?,
        None => RateLimitHeaders::default(),
    };
    Ok((authorized.doc.id, limits))
}

fn page_params(
    kind: CursorKind,
    query: Option<String>,
    headers: &HeaderMap,
) -> Result<PageParams, ReadError> {
    let pairs = query_pairs(query.as_deref().unwrap_or_default())?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    PageParams::parse(kind, &pairs, accept)
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Records,
    Rejected,
}

/// Where a page ends.
struct Extent {
    /// The last id the page covers; its next cursor.
    end: i64,
    has_more: bool,
    /// Whether the page holds no record at all.
    empty: bool,
}

/// Reads the page (waiting for records if asked to) and answers with it.
async fn serve_page(
    state: AppState,
    connector: Uuid,
    mut params: PageParams,
    source: Source,
) -> Result<Response, ReadError> {
    let mut deadline = tokio::time::Instant::now() + params.wait;
    let mut notices: Option<async_nats::Subscriber> = None;
    loop {
        let mut tx = db::begin_snapshot(state.read_pool()).await?;
        let (plan, bound) = match source {
            Source::Records => {
                let found = db::open_connector(&mut tx, connector)
                    .await?
                    .ok_or(ReadError::NotFound)?;
                let plan = PagePlan::records(records_table(connector), &found.schema, &params)?;
                (plan, found.bound)
            }
            Source::Rejected => {
                let bound = db::rejected_bound(&mut tx, connector)
                    .await?
                    .ok_or(ReadError::NotFound)?;
                (PagePlan::rejected(connector, &params)?, bound)
            }
        };
        let extent = page_extent(&mut tx, &plan, params.cursor.after, bound, params.limit).await?;
        let waiting = extent.empty
            && !state.shutdown.is_cancelled()
            && tokio::time::Instant::now() < deadline;
        if !waiting {
            return Ok(respond(tx, plan, params, extent));
        }
        // Nothing to give yet. Every id up to `end` has been looked at, so
        // the wait can go on from there.
        let _ = tx.rollback().await;
        params.cursor.after = extent.end;
        let look_again = match notices.as_mut() {
            // Subscribe first, then look again: a record stored between
            // the look above and the subscription is seen by the look.
            None => {
                let subject = state.namespace.stored_subject(connector);
                match state.bus()?.client.subscribe(subject).await {
                    Ok(subscriber) => {
                        notices = Some(subscriber);
                        true
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot wait for stored notices; answering now");
                        deadline = tokio::time::Instant::now();
                        false
                    }
                }
            }
            Some(subscriber) => tokio::select! {
                notice = subscriber.next() => notice.is_some(),
                _ = tokio::time::sleep_until(deadline) => false,
                _ = state.shutdown.cancelled() => false,
            },
        };
        // On a replica, look once it shows what the primary holds now: the
        // commit that woke us, or one made before we subscribed.
        if look_again && let Some(replica) = &state.replica {
            replica::catch_up(&state.pool, replica, deadline, &state.shutdown).await?;
        }
    }
}

/// Where the page of `range` ends.
async fn page_extent(
    tx: &mut Transaction<'static, Postgres>,
    plan: &PagePlan,
    after: i64,
    bound: db::PageBound,
    limit: i64,
) -> Result<Extent, ReadError> {
    let db::PageBound {
        last_id: bound,
        dense,
    } = bound;
    if after >= bound {
        return Ok(Extent {
            end: after,
            has_more: false,
            empty: true,
        });
    }
    if !plan.filtered && dense {
        // Ids are dense: the page is the next `limit` of them. Once
        // retention or a deletion has taken some, the probe below finds
        // where the page ends, so a page is never short of records that
        // exist.
        let end = after.saturating_add(limit).min(bound);
        return Ok(Extent {
            end,
            has_more: end < bound,
            empty: false,
        });
    }
    let (count, last_of_page) = db::probe_page(tx, plan, after, bound, limit).await?;
    Ok(match last_of_page {
        Some(last) if count > limit => Extent {
            end: last,
            has_more: true,
            empty: false,
        },
        // Fewer than `limit + 1` matches up to `bound`: the page holds them
        // all, and the cursor can move past every id looked at.
        _ => Extent {
            end: bound,
            has_more: false,
            empty: count == 0,
        },
    })
}

/// The response: headers now, rows streamed from `tx` by a task of their
/// own.
fn respond(
    tx: Transaction<'static, Postgres>,
    plan: PagePlan,
    params: PageParams,
    extent: Extent,
) -> Response {
    let next_cursor = RecordCursor {
        kind: params.cursor.kind,
        after: extent.end.max(params.cursor.after),
    }
    .encode();
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let header_cursor = next_cursor.clone();
    // The request's span, for the one line an error logs: entering it on
    // each of the task's many polls costs a tenth of the page's CPU.
    let span = tracing::Span::current();
    let streaming = async move {
        if let Err(error) = stream_rows(
            tx,
            &plan,
            params.cursor.after,
            extent.end,
            params.format,
            &next_cursor,
            extent.has_more,
            &sender,
        )
        .await
        {
            // The status is sent already: cutting the body short is the only
            // way left to tell the client.
            tracing::error!(parent: &span, %error, "streaming a page failed");
            let _ = sender
                .send(Err(std::io::Error::other("page incomplete")))
                .await;
        }
    };
    tokio::spawn(streaming);
    let body = Body::from_stream(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(params.format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&header_cursor) {
        headers.insert(NEXT_CURSOR_HEADER, value);
    }
    response
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// A page's body on its way out: rows are written into `buffer`, which is
/// sent off whenever it holds a chunk.
struct PageBody<'s> {
    writer: PageWriter,
    buffer: Vec<u8>,
    sender: &'s mpsc::Sender<Result<Bytes, std::io::Error>>,
    /// False once the client has gone: nothing more is written.
    open: bool,
}

impl PageBody<'_> {
    /// Sends the buffer off if it holds a chunk.
    async fn send_full_chunk(&mut self) {
        if self.buffer.len() >= CHUNK_BYTES {
            let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_CAPACITY));
            self.open = self.sender.send(Ok(Bytes::from(chunk))).await.is_ok();
        }
    }
}

/// Writes the rows of `(after, end]` to `sender` in `format`, in chunks.
/// Returns early, without error, when the client has gone.
#[allow(clippy::too_many_arguments)]
async fn stream_rows(
    mut tx: Transaction<'static, Postgres>,
    plan: &PagePlan,
    after: i64,
    end: i64,
    format: OutputFormat,
    next_cursor: &str,
    has_more: bool,
    sender: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), StreamError> {
    let mut body = PageBody {
        writer: PageWriter::new(format, plan.columns.clone()),
        buffer: Vec::with_capacity(CHUNK_CAPACITY),
        sender,
        open: true,
    };
    body.writer.begin(&mut body.buffer)?;
    if end > after {
        match plan.copy_sql(after, end) {
            Some(copy) => copy_rows(&mut tx, &copy, &mut body).await?,
            None => query_rows(&mut tx, plan, after, end, &mut body).await?,
        }
    }
    if !body.open {
        return Ok(());
    }
    body.writer.end(&mut body.buffer, next_cursor, has_more)?;
    // Read-only: ending the transaction either way releases the table lock.
    tx.rollback().await?;
    if !body.buffer.is_empty() {
        let _ = sender.send(Ok(Bytes::from(body.buffer))).await;
    }
    Ok(())
}

/// The rows of an unfiltered page, by binary COPY: rendered straight from
/// the data, with none of a query's per-row decoding.
async fn copy_rows(
    conn: &mut PgConnection,
    sql: &str,
    body: &mut PageBody<'_>,
) -> Result<(), StreamError> {
    let mut rows = CopyOutRows::new(body.writer.columns());
    let mut data = conn.copy_out_raw(sql).await?;
    let mut rendered = Ok(());
    while let Some(chunk) = data.try_next().await? {
        // After a failure, or once the client has gone, the rest is read
        // and dropped: sqlx's COPY must be read to its end before the
        // connection can run anything else, the rollback included.
        if rendered.is_ok() && body.open {
            let PageBody { writer, buffer, .. } = &mut *body;
            rendered = rows.feed(&chunk, |mut row| {
                writer.row(buffer, |_, kind| {
                    Ok::<_, StreamError>(Cell::decode(kind, row.next_value())?)
                })
            });
            body.send_full_chunk().await;
        }
    }
    rendered?;
    Ok(rows.finish()?)
}

/// The rows of a filtered page, by a query that binds the filters' values.
async fn query_rows(
    conn: &mut PgConnection,
    plan: &PagePlan,
    after: i64,
    end: i64,
    body: &mut PageBody<'_>,
) -> Result<(), StreamError> {
    let sql = plan.rows_sql();
    let mut rows = db::bind_page(db::dynamic(&sql), after, end, &plan.binds).fetch(conn);
    while let Some(row) = rows.try_next().await? {
        body.writer.row(&mut body.buffer, |index, kind| {
            let value = row.try_get_raw(index)?;
            let bytes = if value.is_null() {
                None
            } else {
                // sqlx asks for every result in binary.
                Some(value.as_bytes().map_err(|_| Malformed("text result"))?)
            };
            Ok::<_, StreamError>(Cell::decode(kind, bytes)?)
        })?;
        body.send_full_chunk().await;
        if !body.open {
            break;
        }
    }
    Ok(())
}
