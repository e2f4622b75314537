//! The serving layer every service shares, over real TCP: timeouts, the
//! connection kept or closed after an early refusal, bounded metric labels,
//! and problem+json for errors raised before or outside the routes. A raw
//! client is used so that what is on the wire (a closed socket, a
//! `Connection: close`) is what is asserted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path};
use axum::routing::{get, post};
use futures::FutureExt;
use serde_json::json;
use sluice_runtime::http::{self, BearerToken, ReadinessCheck};
use sluice_runtime::settings::HttpLimits;
use sluice_testkit::wire::{PATIENCE, WireClient};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// The largest body `/upload` reads.
const UPLOAD_LIMIT: usize = 256 * 1024;

struct Server {
    address: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(limits: HttpLimits) -> Server {
    let api =
        Router::new()
            .route(
                "/upload",
                post(|_: BearerToken, body: Bytes| async move {
                    axum::Json(json!({"bytes": body.len()}))
                })
                .layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
            )
            .route(
                "/items/{number}",
                get(|Path(number): Path<u32>| async move { axum::Json(json!({"number": number})) }),
            )
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            );
    let ready: ReadinessCheck = Arc::new(|| async { Vec::new() }.boxed());
    let router = http::app(api, &json!({}), ready);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a free port");
    let address = listener.local_addr().expect("bound address");
    let shutdown = CancellationToken::new();
    tokio::spawn(http::serve(
        listener,
        router,
        shutdown.clone(),
        Duration::from_secs(1),
        limits,
    ));
    Server { address, shutdown }
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: sluice.test\r\n\r\n").into_bytes()
}

/// Asserts that `server` answers a plain request on a new connection.
async fn still_serves(server: &Server) {
    let mut client = WireClient::connect(server.address).await;
    client.send(&get_request("/healthz")).await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");
}

fn short_timeouts() -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    }
}

#[tokio::test]
async fn random_methods_add_no_metric_series() {
    let server = start(HttpLimits::default()).await;
    let mut client = WireClient::connect(server.address).await;
    let methods: Vec<String> = (0..500)
        .map(|_| format!("MX{}", uuid::Uuid::new_v4().simple()).to_uppercase())
        .collect();
    for method in &methods {
        client
            .send(format!("{method} /healthz HTTP/1.1\r\nHost: sluice.test\r\n\r\n").as_bytes())
            .await;
        let answer = client.answer().await.expect("an answer");
        assert_eq!(answer.status, 405);
        assert_eq!(answer.problem()["code"], "method_not_allowed");
    }
    client.send(&get_request("/metrics")).await;
    let metrics = client.answer().await.expect("the metrics");
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).expect("text");
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(!text.contains("MX"), "a method name became a label");
    // One counter and one histogram for `other` on this route, not 500.
    let series = text
        .lines()
        .filter(|l| l.starts_with("sluice_http_requests_total") && l.contains(r#"method="other""#))
        .count();
    assert_eq!(series, 1, "{text}");
}

#[tokio::test]
async fn a_head_sent_too_slowly_or_never_closes_the_connection() {
    let server = start(short_timeouts()).await;
    let mut slow = WireClient::connect(server.address).await;
    slow.send(b"GET /healthz HTTP/1.1\r\nHost: sluice.test\r\n")
        .await;
    let mut silent = WireClient::connect(server.address).await;
    assert!(slow.answer().await.is_none(), "closed without an answer");
    assert!(silent.answer().await.is_none(), "closed without an answer");

    // An idle keep-alive connection goes the same way.
    let mut idle = WireClient::connect(server.address).await;
    idle.send(&get_request("/healthz")).await;
    assert_eq!(idle.answer().await.expect("an answer").status, 200);
    assert!(idle.answer().await.is_none(), "closed once idle");
    still_serves(&server).await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_answers_408_and_closes() {
    let server = start(short_timeouts()).await;
    let mut client = WireClient::connect(server.address).await;
    client
        .send(
            b"POST /upload HTTP/1.1\r\nHost: sluice.test\r\nAuthorization: Bearer t\r\n\
              Content-Length: 100000\r\n\r\n0123456789",
        )
        .await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.problem()["code"], "body_timeout");
    assert!(answer.closes(), "{answer:?}");
    assert!(client.reader.is_closed_by_server().await);
    still_serves(&server).await;
}

#[tokio::test]
async fn a_small_body_refused_unread_keeps_its_connection() {
    let server = start(HttpLimits::default()).await;
    let mut client = WireClient::connect(server.address).await;
    let body = vec![b'x'; 2048];
    // No token: the extractor refuses it before the body is read.
    client
        .send(
            format!(
                "POST /upload HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    client.send(&body).await;
    let refused = client.answer().await.expect("an answer");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.problem()["code"], "unauthorized");
    assert!(!refused.closes(), "{refused:?}");

    client.send(&get_request("/healthz")).await;
    let next = client.answer().await.expect("the same connection answers");
    assert_eq!(next.status, 200);
}

#[tokio::test]
async fn a_large_body_refused_unread_is_answered_with_connection_close() {
    let server = start(HttpLimits::default()).await;
    let WireClient {
        mut reader,
        mut writer,
    } = WireClient::connect(server.address).await;
    let body = vec![b'x'; 4 * 1024 * 1024];
    // As a streaming proxy does, the client sends the whole body before
    // it reads the answer; the server reads none of it. Closing a socket
    // with unread data resets it, and the answer would be lost.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: sluice.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let sent = tokio::time::timeout(PATIENCE, async {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        writer.shutdown().await
    })
    .await
    .expect("the server takes the body in");
    assert!(sent.is_ok(), "{sent:?}");
    let refused = reader.answer().await.expect("the 401, not a reset");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.problem()["code"], "unauthorized");
    assert!(refused.closes(), "{refused:?}");
    still_serves(&server).await;
}

#[tokio::test]
async fn an_oversized_head_answers_problem_json() {
    let server = start(HttpLimits::default()).await;
    let mut client = WireClient::connect(server.address).await;
    client
        .send(&get_request(&format!(
            "/healthz?q={}",
            "a".repeat(20 * 1024)
        )))
        .await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 414);
    assert_eq!(answer.problem()["code"], "uri_too_long");

    let many: String = (0..120).map(|i| format!("X-Header-{i}: v\r\n")).collect();
    client
        .send(format!("GET /healthz HTTP/1.1\r\nHost: sluice.test\r\n{many}\r\n").as_bytes())
        .await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 431);
    assert_eq!(answer.problem()["code"], "headers_too_large");

    let large = format!("X-Large: {}\r\n", "v".repeat(40 * 1024));
    client
        .send(format!("GET /healthz HTTP/1.1\r\nHost: sluice.test\r\n{large}\r\n").as_bytes())
        .await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 431);
    assert_eq!(answer.problem()["code"], "headers_too_large");

    client.send(&get_request("/healthz")).await;
    assert_eq!(client.answer().await.expect("an answer").status, 200);

    // Past hyper's 64 KiB read buffer, hyper answers before any of our code
    // runs, with a bare 431 (see README); the head is not kept, and the
    // service carries on.
    let huge = format!("X-Huge: {}\r\n", "v".repeat(80 * 1024));
    client
        .send(format!("GET /healthz HTTP/1.1\r\nHost: sluice.test\r\n{huge}\r\n").as_bytes())
        .await;
    let answer = client.answer().await.expect("hyper's answer");
    assert_eq!(answer.status, 431);
    assert!(answer.body.is_empty());
    still_serves(&server).await;
}

#[tokio::test]
async fn rejections_of_extractors_and_limits_are_problem_json() {
    let server = start(HttpLimits::default()).await;
    let mut client = WireClient::connect(server.address).await;
    client.send(&get_request("/items/%FF")).await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 400);
    let problem = answer.problem();
    assert_eq!(problem["code"], "bad_request");
    assert!(
        problem["detail"].as_str().unwrap().contains("number"),
        "{problem}"
    );

    // Read to its limit, then refused: axum's own 413.
    let body = vec![b'x'; UPLOAD_LIMIT + 1];
    client
        .send(
            format!(
                "POST /upload HTTP/1.1\r\nHost: sluice.test\r\nAuthorization: Bearer t\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    client.send(&body).await;
    client.send(b"\r\n0\r\n\r\n").await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 413);
    assert_eq!(answer.problem()["code"], "payload_too_large");

    still_serves(&server).await;
}

#[tokio::test]
async fn requests_carry_their_client_address() {
    let server = start(HttpLimits::default()).await;
    let mut client = WireClient::connect(server.address).await;
    let local = client.writer.local_addr().expect("local address");
    client.send(&get_request("/peer")).await;
    let answer = client.answer().await.expect("an answer");
    assert_eq!(answer.status, 200);
    assert_eq!(String::from_utf8(answer.body).unwrap(), local.to_string());
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let server = start(HttpLimits {
        max_connections: 1,
        ..HttpLimits::default()
    })
    .await;
    let mut first = WireClient::connect(server.address).await;
    first.send(&get_request("/healthz")).await;
    assert_eq!(first.answer().await.expect("an answer").status, 200);

    // The kernel completes the handshake, but the server takes the
    // connection only once the first one closes.
    let mut second = WireClient::connect(server.address).await;
    second.send(&get_request("/healthz")).await;
    let waiting = tokio::time::timeout(Duration::from_millis(300), second.answer()).await;
    assert!(waiting.is_err(), "answered past the cap: {waiting:?}");

    drop(first);
    let answer = second.answer().await.expect("served once a slot is free");
    assert_eq!(answer.status, 200);
}
