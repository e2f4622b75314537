//! What every request gets between hyper and the routes: bounds on its head
//! and its body, and problem+json for every error answer, including those
//! made by code that knows nothing of it (axum's extractor rejections,
//! body limits).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::Problem;
use crate::settings::HttpLimits;

/// Longest path and query answered; longer ones get 414. hyper's own limit
/// (its read buffer) is above it, so most long URIs get problem+json.
pub(super) const MAX_URI_BYTES: usize = 16 * 1024;
/// Most headers, and most bytes of them, a request may carry: 431 past
/// either.
pub(super) const MAX_HEADERS: usize = 100;
pub(super) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Most of an unread body drained so that its connection can be kept; past
/// it, the answer closes the connection instead.
const DRAIN_BYTES: usize = 64 * 1024;
/// Most time spent draining an unread body before answering.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Most of a non-problem error body kept as the problem's `detail`; axum's
/// rejection texts are a line.
const BARE_DETAIL_BYTES: usize = 1024;

/// Wraps `router` with the checks of this module; the outermost runs first.
pub(super) fn guard(router: Router, limits: HttpLimits) -> Router {
    router
        .layer(middleware::from_fn_with_state(limits, bound_request_body))
        .layer(middleware::from_fn(check_request_head))
        .layer(middleware::from_fn(problem_for_bare_errors))
}

async fn check_request_head(request: Request, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the path and query take {uri_bytes} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    let headers = request.headers();
    // Counted as on the wire: name, ": ", value, CRLF.
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request has {} headers in {header_bytes} bytes; at most {MAX_HEADERS} \
                 headers in {MAX_HEADER_BYTES} bytes are read",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Gives the body `limits.body_timeout` to arrive (408 otherwise), and deals
/// with a body the service answered without reading: drained when small,
/// else the answer says `Connection: close`. Without that, hyper would close
/// the connection under a keep-alive client, which then loses its next
/// request, or the answer itself to a reset.
async fn bound_request_body(
    State(limits): State<HttpLimits>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    // Such a client sends the body only once hyper asks for it, so an
    // unread body is not on the wire and closing costs it nothing.
    let awaits_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (leftover_tx, mut leftover) = oneshot::channel();
    let request = request.map(|body| {
        Body::new(TimedBody {
            inner: Some(body),
            timeout: limits.body_timeout,
            deadline: None,
            leftover: Some(leftover_tx),
        })
    });
    let response = next.run(request).await;
    match leftover.try_recv() {
        Ok(Leftover::TimedOut) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                limits.body_timeout.as_secs()
            ),
        )
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
        .into_response(),
        Ok(Leftover::Unread(body)) => {
            let fits = body
                .size_hint()
                .upper()
                .is_none_or(|n| n <= DRAIN_BYTES as u64);
            if !awaits_continue && fits && drain(body).await {
                response
            } else {
                close_after(response)
            }
        }
        // Read to its end, failed, or still held by whoever took it.
        Err(_) => response,
    }
}

fn close_after(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Reads and discards `body`; true when it ended within the drain bounds.
async fn drain(body: Body) -> bool {
    let mut frames = body.into_data_stream();
    let mut drained = 0usize;
    let to_end = async {
        while let Some(chunk) = frames.next().await {
            match chunk {
                Ok(chunk) if drained + chunk.len() <= DRAIN_BYTES => drained += chunk.len(),
                _ => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, to_end)
        .await
        .unwrap_or(false)
}

/// What a request body left behind once its request was answered.
enum Leftover {
    /// Its deadline passed; it is gone.
    TimedOut,
    /// The service answered without reading it to its end.
    Unread(Body),
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error(transparent)]
    Read(axum::Error),
}

/// A request body with a deadline, started at its first read, that tells
/// [`bound_request_body`] what it left behind.
struct TimedBody {
    /// `None` once timed out or failed: dropping it frees hyper's buffers
    /// and tells hyper to stop reading.
    inner: Option<Body>,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Taken when the body is read to its end or has failed.
    leftover: Option<oneshot::Sender<Leftover>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Some(Err(BodyError::TimedOut(this.timeout))));
        };
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            this.inner = None;
            if let Some(leftover) = this.leftover.take() {
                let _ = leftover.send(Leftover::TimedOut);
            }
            return Poll::Ready(Some(Err(BodyError::TimedOut(timeout))));
        }
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(error)) => {
                // The client went away or sent a malformed chunk: there is
                // nothing left to drain.
                this.inner = None;
                this.leftover = None;
                Poll::Ready(Some(Err(BodyError::Read(error))))
            }
            None => {
                this.leftover = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if let (Some(leftover), Some(inner)) = (self.leftover.take(), self.inner.take())
            && !inner.is_end_stream()
        {
            let _ = leftover.send(Leftover::Unread(inner));
        }
    }
}

/// Turns an error answer that is not problem+json (axum's rejections of a
/// path, query or body; a body limit; a bare status) into one, keeping its
/// status, its headers (`Allow`, `Retry-After`, ...) and, for a client
/// error, its text as `detail`.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let is_head = request.method() == Method::HEAD;
    let response = next.run(request).await;
    let status = response.status();
    // Only bodies without a type or of plain text are bare: a typed one
    // (problem+json, or `/readyz`'s JSON listing its checks) is meant.
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_text = content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    let is_bare = content_type.is_none() || is_text;
    if !(status.is_client_error() || status.is_server_error()) || !is_bare || is_head {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = if is_text && status.is_client_error() {
        axum::body::to_bytes(body, BARE_DETAIL_BYTES)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|t| !t.is_empty())
    } else {
        None
    };
    let detail = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_owned()
    });
    let mut answer = Problem::new(status, code_of(status), detail).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (name, value) in answer.headers().iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    *answer.headers_mut() = parts.headers;
    answer
}

/// The stable `code` of a status answered by code that gave none.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_content",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}
