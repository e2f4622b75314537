//! The accept loop of every listener. axum's own `serve` runs hyper without
//! a timer, so a client could hold a connection and its buffers for as long
//! as it liked; this one drives hyper's HTTP/1 directly, with a header
//! timeout, a small read buffer, a cap on connections, graceful shutdown
//! and a lingering close.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::limits::MAX_HEADERS;
use crate::settings::HttpLimits;

/// hyper's read buffer per connection, so also the largest request head it
/// takes (past it, hyper answers a bare 431 itself). hyper's default,
/// ~400 KiB, let 200 half-sent heads hold 96 MiB.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// hyper answers a bare 431 past this many headers; below it,
/// `limits::check_request_head` answers problem+json from [`MAX_HEADERS`].
const HYPER_MAX_HEADERS: usize = 2 * MAX_HEADERS;

/// How long a closed connection keeps reading and discarding what its
/// client still sends (see [`linger`]).
const LINGER: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` within `limits` until `shutdown` fires,
/// then lets in-flight requests finish (up to `grace`) before returning.
///
/// Each request carries its client's address as
/// `axum::extract::ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    limits: HttpLimits,
) -> std::io::Result<()> {
    let router = super::limits::guard(router, limits);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUFFER_BYTES)
        .max_headers(HYPER_MAX_HEADERS);
    let builder = Arc::new(builder);
    // Past the cap, connections wait in the kernel's accept queue (its
    // backlog, then the kernel drops or refuses them), costing us nothing.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // An answer's last bytes go out at once, not after the
                // client's (delayed) ACK of the ones before (Nagle).
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "TCP_NODELAY refused");
                }
                connections.spawn(serve_connection(
                    builder.clone(),
                    stream,
                    peer,
                    router.clone(),
                    shutdown.clone(),
                    slot,
                ));
            }
            // A client that gave up before we accepted, or no file
            // descriptors left: neither stops the listener, and a short
            // pause lets descriptors free up.
            Err(error) => {
                tracing::debug!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("requests still running after the grace period; stopping anyway");
        }
    }
    Ok(())
}

async fn serve_connection(
    builder: Arc<http1::Builder>,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer: BoxFuture<'static, _> =
            Box::pin(router.clone().oneshot(request.map(Body::new)));
        answer
    });
    let mut connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut shutting_down = false;
    let served = loop {
        tokio::select! {
            served = poll_fn(|cx| connection.poll_without_shutdown(cx)) => break served,
            () = shutdown.cancelled(), if !shutting_down => shutting_down = true,
        }
        // Finishes the request in flight, if any, then closes.
        Pin::new(&mut connection).graceful_shutdown();
    };
    match served {
        // Shutting down, nobody waits for the client's leftovers.
        Ok(()) => {
            let stream = connection.into_parts().io.into_inner();
            tokio::select! {
                () = linger(stream) => {}
                () = shutdown.cancelled() => {}
            }
        }
        // A header timeout, a malformed request (hyper has answered it), or
        // a client that went away.
        Err(error) => tracing::debug!(%error, "connection closed"),
    }
}

/// Closes our side, then reads and discards what the client still sends
/// for a little while. Closing a socket with unread data in it makes the
/// kernel send a reset, which can destroy our answer before the client
/// reads it: a client still sending a body we refused, or a streaming proxy,
/// would see a broken connection instead of the 413 (RFC 9112, 9.6).
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut discarded = [0u8; 8192];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut discarded).await {}
    })
    .await;
}
