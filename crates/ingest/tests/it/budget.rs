//! The gateway's memory budget (`SLUICE_INGEST_MEMORY_BYTES`): bounded
//! whatever the body, shared fairly between connectors, and a 503 rather
//! than growth when it is spent.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::{Connector, TestApp, spawn_app, spawn_app_with};

const ONE_RECORD: &str = "{\"n\": 1}\n";

async fn one_record_is_accepted(app: &TestApp, connector: &Connector) {
    let answer = TestApp::send(app.post(connector, "application/x-ndjson", ONE_RECORD)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.body["accepted"], 1);
}

/// Another connector of the same schema as `simple_connector`.
async fn quiet_connector(app: &TestApp) -> Connector {
    app.create_connector(
        "quiet",
        json!([
            {"name": "n", "type": "integer"},
            {"name": "s", "type": "string", "nullable": true}
        ]),
    )
    .await
}

/// A valid JSON body of about `bytes`, of records `{n, s}`.
fn json_body(bytes: usize) -> String {
    let record = format!("{{\"n\": 7, \"s\": \"{}\"}}", "x".repeat(80));
    let count = bytes / (record.len() + 1);
    format!("[{}]", vec![record; count].join(","))
}

/// The 2 MB CSV that, each row kept as a refused record with its errors,
/// would take gigabytes: header `zz` (not a field), then a million rows.
fn refused_rows() -> String {
    format!("zz\n{}", "1\n".repeat(1_000_000))
}

#[tokio::test]
async fn a_csv_of_a_million_refused_rows_in_partial_mode_is_refused_whole() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let quiet = quiet_connector(&app).await;
    let partial = || {
        app.post(&connector, "text/csv", refused_rows())
            .query(&[("mode", "partial")])
    };
    // Alone: refused whole, with what a user needs to see why.
    let answer = TestApp::send(partial()).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{answer:?}"
    );
    assert_eq!(answer.code(), "too_many_rejected");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    // Every row: column zz is unknown, field n is missing.
    assert_eq!(answer.body["error_count"], 2_000_000);
    let errors = answer.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 100);
    assert_eq!(errors[0]["code"], "unknown_field");
    assert_eq!(errors[0]["line"], 2);
    assert!(answer.body["limit"].as_u64().unwrap() > 0);
    assert!(answer.body["detail"].as_str().unwrap().contains("fewer"));

    // Two at once (one may find the share taken by the other), and another
    // connector served meanwhile.
    let (first, second, ()) = tokio::join!(
        TestApp::send(partial()),
        TestApp::send(partial()),
        one_record_is_accepted(&app, &quiet)
    );
    for answer in [first, second] {
        match answer.status {
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(answer.code(), "too_many_rejected"),
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(answer.code(), "gateway_busy"),
            other => panic!("{other}: {answer:?}"),
        }
    }
    // Only the quiet connector's record.
    assert_eq!(app.published().await.len(), 1);

    // The same rows in all_or_nothing mode are the usual 422.
    let answer = TestApp::send(app.post(&connector, "text/csv", refused_rows())).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{answer:?}"
    );
    assert_eq!(answer.code(), "validation_failed");
    assert_eq!(answer.body["error_count"], 2_000_000);

    one_record_is_accepted(&app, &connector).await;
}

#[tokio::test]
async fn a_body_whose_records_expand_beyond_a_connectors_share_is_413() {
    // 4 MiB in all: one connector may hold 2 MiB.
    let app = spawn_app_with(|s| {
        s.max_body_bytes = 1024 * 1024;
        s.ingest_memory_bytes = 4 * 1024 * 1024;
    })
    .await;
    let wide: Vec<_> = (0..100)
        .map(|i| json!({"name": format!("f{i}"), "type": "integer", "nullable": true}))
        .collect();
    let connector = app.create_connector("wide", json!(wide)).await;
    // 900 KB of empty records: 100 values each once read.
    let body = format!("[{}]", vec!["{}"; 300_000].join(","));
    let answer = TestApp::send(app.post(&connector, "application/json", body)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    assert_eq!(answer.code(), "payload_too_large");
    assert_eq!(answer.body["limit"], 2 * 1024 * 1024);
    let answer = TestApp::send(app.post(&connector, "application/json", "[{}, {\"f1\": 2}]")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
}

#[tokio::test]
async fn a_quiet_connector_is_served_while_another_is_hammered() {
    // 64 MiB in all; a body of 4 MiB reserves the 32 MiB of its
    // connector's share to be validated, so they go one at a time.
    let app = spawn_app_with(|s| {
        s.max_body_bytes = 8 * 1024 * 1024;
        s.ingest_memory_bytes = 64 * 1024 * 1024;
    })
    .await;
    let busy = app.simple_connector().await;
    let quiet = quiet_connector(&app).await;
    let body = json_body(4 * 1024 * 1024);
    let mut hammer = Vec::new();
    for _ in 0..12 {
        let request = app.post(&busy, "application/json", body.clone());
        hammer.push(tokio::spawn(async move { TestApp::send(request).await }));
    }
    // Give the big bodies a head start, so the quiet request meets them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    one_record_is_accepted(&app, &quiet).await;
    for answer in hammer {
        let answer = answer.await.unwrap();
        match answer.status {
            StatusCode::ACCEPTED => assert!(answer.body["accepted"].as_u64().unwrap() > 0),
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(answer.code(), "gateway_busy"),
            other => panic!("{other}: {answer:?}"),
        }
    }
    one_record_is_accepted(&app, &busy).await;
}

#[tokio::test]
async fn a_connector_past_its_share_is_503_with_retry_after_and_others_are_served() {
    // 4 MiB in all: one connector may hold 2 MiB.
    let app = spawn_app_with(|s| {
        s.max_body_bytes = 1024 * 1024;
        s.ingest_memory_bytes = 4 * 1024 * 1024;
    })
    .await;
    let busy = app.simple_connector().await;
    let quiet = quiet_connector(&app).await;
    // Two clients announce 1 MiB each and send only its start: the bodies
    // are reserved whole while they are read, which is the share.
    let address = app.ingest.trim_start_matches("http://");
    let head = format!(
        "POST /v1/connectors/{}/records HTTP/1.1\r\nhost: {address}\r\n\
         authorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n[",
        busy.id,
        busy.write_token,
        1024 * 1024
    );
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(address).await.unwrap();
        client.write_all(head.as_bytes()).await.unwrap();
        slow.push(client);
    }

    // Once the slow requests hold the share (at once, in practice), the
    // next one waits for memory, then is told to come back later.
    let mut refused = None;
    for _ in 0..10 {
        let answer = TestApp::send(app.post(&busy, "application/x-ndjson", ONE_RECORD)).await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    let refused = refused.expect("a request past the connector's share is refused");
    assert_eq!(refused.code(), "gateway_busy");
    assert_eq!(refused.headers["retry-after"], "2");
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    assert_eq!(refused.body["status"], 503);
    assert!(refused.body["type"].is_string() && refused.body["title"].is_string());

    // Another connector is served meanwhile.
    one_record_is_accepted(&app, &quiet).await;

    // Once the slow clients go, their connector is served again.
    drop(slow);
    let mut served = false;
    for _ in 0..50 {
        let answer = TestApp::send(app.post(&busy, "application/x-ndjson", ONE_RECORD)).await;
        if answer.status == StatusCode::ACCEPTED {
            served = true;
            break;
        }
        assert_eq!(answer.code(), "gateway_busy", "{answer:?}");
    }
    assert!(
        served,
        "the connector is served again once its share is free"
    );
}
