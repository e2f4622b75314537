//! Body formats, encodings, sizes and syntax.

use reqwest::StatusCode;
use sluice_runtime::bus::ColumnValues;
use sluice_testkit::api;

use crate::{TestApp, gzip, spawn_app, spawn_app_with};

fn integers(batch: &sluice_runtime::bus::RecordBatch) -> Vec<Option<i64>> {
    match &batch.columns[0].values {
        ColumnValues::Integer(values) => values.clone(),
        other => panic!("n is an integer column, got {other:?}"),
    }
}

#[tokio::test]
async fn every_format_plain_and_gzipped_is_accepted_and_published() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let bodies: [(&str, &[u8]); 5] = [
        ("application/json", br#"[{"n": 1, "s": "a"}, {"n": 2}]"#),
        ("application/json; charset=utf-8", br#"{"n": 3, "s": null}"#),
        (
            "application/x-ndjson",
            b"{\"n\": 4}\n\n{\"n\": 5, \"s\": \"e\"}\n",
        ),
        ("text/csv", b"n,s\n6,f\n7,\n"),
        ("text/csv;charset=UTF-8", b"s,n\r\n\"x, y\",8\r\n"),
    ];
    let mut expected = Vec::new();
    for (content_type, body) in bodies {
        for compressed in [false, true] {
            let request = if compressed {
                app.post(&connector, content_type, gzip(body))
                    .header("content-encoding", "gzip")
            } else {
                app.post(&connector, content_type, body.to_vec())
            };
            let answer = TestApp::send(request).await;
            assert_eq!(
                answer.status,
                StatusCode::ACCEPTED,
                "{content_type}: {answer:?}"
            );
            let count = answer.body["accepted"].as_u64().unwrap();
            assert!(count >= 1, "{answer:?}");
            assert_eq!(answer.body["rejected"], 0);
            assert_eq!(answer.body["schema_version"], 1);
            assert!(
                answer.body["batch_id"]
                    .as_str()
                    .unwrap()
                    .parse::<uuid::Uuid>()
                    .is_ok()
            );
            expected.push((answer.body["batch_id"].as_str().unwrap().to_owned(), count));
        }
    }

    let published = app.published().await;
    assert_eq!(
        published.len(),
        expected.len(),
        "one message per small request"
    );
    let mut all = Vec::new();
    for (message, (batch_id, count)) in published.iter().zip(&expected) {
        assert_eq!(message.batch.batch_id.to_string(), *batch_id);
        assert_eq!(message.batch.rows as u64, *count);
        assert_eq!((message.batch.chunk, message.batch.chunks), (0, 1));
        assert_eq!(
            message.header("Sluice-Connector"),
            Some(connector.id.to_string())
        );
        assert_eq!(
            message.header("Sluice-Schema-Version").as_deref(),
            Some("1")
        );
        assert_eq!(
            message.header("Sluice-Batch").as_deref(),
            Some(batch_id.as_str())
        );
        assert!(message.header("X-Request-Id").is_some());
        assert!(message.header("Nats-Msg-Id").is_none(), "no key, no dedupe");
        all.extend(integers(&message.batch));
    }
    // Each body twice (plain, then gzipped), in order.
    let groups: [&[i64]; 5] = [&[1, 2], &[3], &[4, 5], &[6, 7], &[8]];
    let want: Vec<Option<i64>> = groups
        .iter()
        .flat_map(|g| g.iter().chain(g.iter()).map(|n| Some(*n)))
        .collect();
    assert_eq!(all, want);
}

#[tokio::test]
async fn the_request_id_travels_to_the_message() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let answer = TestApp::send(
        app.post(&connector, "application/json", r#"{"n": 1}"#)
            .header("x-request-id", "req-abc-123"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.headers["x-request-id"], "req-abc-123");
    let published = app.published().await;
    assert_eq!(
        published[0].header("X-Request-Id").as_deref(),
        Some("req-abc-123")
    );
}

#[tokio::test]
async fn an_empty_body_accepts_nothing() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    for content_type in ["application/json", "application/x-ndjson", "text/csv"] {
        let answer = TestApp::send(app.post(&connector, content_type, "")).await;
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "{content_type}: {answer:?}"
        );
        assert_eq!(answer.body["accepted"], 0);
    }
    let answer = TestApp::send(app.post(&connector, "application/json", "[]")).await;
    assert_eq!(answer.body["accepted"], 0);
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn a_malformed_body_is_400_with_line_and_column() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let answer = TestApp::send(app.post(
        &connector,
        "application/x-ndjson",
        "{\"n\": 1}\n{\"n\": 2,,}\n",
    ))
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert_eq!(answer.code(), "malformed_body");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(answer.body["line"], 2);
    assert!(answer.body["column"].as_u64().unwrap() >= 1);

    let answer = TestApp::send(app.post(&connector, "application/json", "[{\"n\": 1}")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["line"], 1);
    assert!(answer.body["column"].is_u64());

    let answer = TestApp::send(
        app.post(
            &connector,
            "application/json",
            b"\x1f\x8b not really gzip".to_vec(),
        )
        .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "malformed_body");
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn unsupported_types_and_encodings_are_415() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    for content_type in [Some("text/plain"), Some("application/xml"), None] {
        let answer = TestApp::send(app.post_to(
            &app.ingest,
            connector.id,
            Some(&connector.write_token),
            content_type,
            r#"{"n": 1}"#,
        ))
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(answer.code(), "unsupported_media_type");
    }
    let answer = TestApp::send(
        app.post(&connector, "application/json", r#"{"n": 1}"#)
            .header("content-encoding", "br"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_media_type");
    assert_eq!(answer.headers["accept-encoding"], "gzip");
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn bodies_past_the_limit_are_413_plain_or_gzipped() {
    let app = spawn_app_with(|s| s.max_body_bytes = 64 * 1024).await;
    let connector = app.simple_connector().await;
    let record = "{\"n\": 1, \"s\": \"padding padding padding\"}\n";
    let fits = record.repeat(64 * 1024 / record.len());
    let answer = TestApp::send(app.post(&connector, "application/x-ndjson", fits.clone())).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");

    let too_big = record.repeat(64 * 1024 / record.len() + 1);
    let answer = TestApp::send(app.post(&connector, "application/x-ndjson", too_big.clone())).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");

    // Small on the wire, too large once inflated.
    let compressed = gzip(too_big.as_bytes());
    assert!(compressed.len() < 64 * 1024);
    let answer = TestApp::send(
        app.post(&connector, "application/x-ndjson", compressed)
            .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");

    // The same limit lets a gzipped body that fits once inflated through.
    let answer = TestApp::send(
        app.post(&connector, "application/x-ndjson", gzip(fits.as_bytes()))
            .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(app.published().await.len(), 2);
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_without_inflating_it() {
    // 1 GiB of zeros as 1024 gzip members of 1 MiB each (about 1 MiB on
    // the wire); the default limit of 16 MiB stops it early.
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let member = gzip(&vec![0u8; 1024 * 1024]);
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 1024)
        .collect();
    let answer = TestApp::send(
        app.post(&connector, "application/json", bomb)
            .header("content-encoding", "gzip"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
    assert!(app.published().await.is_empty());

    // The gateway is still there and serving.
    let answer = TestApp::send(app.post(&connector, "application/json", r#"{"n": 1}"#)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_large_body_is_published_in_chunks_under_the_max_payload() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let mut body = String::new();
    for i in 0..40_000 {
        body.push_str(&format!(
            "{i},row number {i} with some text to make it longer\n"
        ));
    }
    let body = format!("n,s\n{body}");
    assert!(body.len() > 2 * 1024 * 1024);
    let answer = TestApp::send(app.post(&connector, "text/csv", body)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.body["accepted"], 40_000);

    let published = app.published().await;
    assert!(published.len() >= 3, "{} chunks", published.len());
    let chunks = published.len() as u32;
    let mut all = Vec::new();
    for (i, message) in published.iter().enumerate() {
        assert_eq!(
            (message.batch.chunk, message.batch.chunks),
            (i as u32, chunks)
        );
        assert_eq!(
            message.batch.batch_id.to_string(),
            answer.body["batch_id"].as_str().unwrap()
        );
        all.extend(integers(&message.batch));
    }
    let want: Vec<Option<i64>> = (0..40_000).map(Some).collect();
    assert_eq!(all, want, "every record once, in body order");
}

#[tokio::test]
async fn operational_routes_answer() {
    let app = spawn_app().await;
    let ready = app
        .client
        .get(format!("{}/readyz", app.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let health = app
        .client
        .get(format!("{}/healthz", app.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let openapi = api::fetch_json(app.client.get(format!("{}/openapi.json", app.ingest))).await;
    assert!(openapi["paths"]["/v1/connectors/{id}/records"]["post"].is_object());

    let connector = app.simple_connector().await;
    TestApp::send(app.post(&connector, "application/json", r#"{"n": 1}"#)).await;
    let metrics = api::fetch_text(app.client.get(format!("{}/metrics", app.ingest))).await;
    for name in [
        "sluice_ingest_requests_total",
        "sluice_ingest_records_accepted_total",
        "sluice_ingest_bytes_received_total",
        "sluice_ingest_publish_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    let wrong_method = TestApp::send(app.client.get(format!(
        "{}/v1/connectors/{}/records",
        app.ingest, connector.id
    )))
    .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.code(), "method_not_allowed");
}

#[tokio::test]
async fn a_record_larger_than_a_bus_message_is_413_naming_it() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let huge = "x".repeat(1536 * 1024);
    let body = format!("{{\"n\": 1}}\n{{\"n\": 2, \"s\": \"{huge}\"}}\n");
    let answer = TestApp::send(app.post(&connector, "application/x-ndjson", body)).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        answer.code()
    );
    assert_eq!(answer.code(), "payload_too_large");
    assert_eq!(answer.body["record"], 1);
    assert!(app.published().await.is_empty());
}
