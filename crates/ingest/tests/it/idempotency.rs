//! Idempotency-Key (SPEC 7): a retry stores nothing twice and answers as
//! the first did, whichever gateway serves it.

use reqwest::StatusCode;

use crate::{TestApp, spawn_app};

fn large_body() -> String {
    let mut body = String::from("n,s\n");
    for i in 0..30_000 {
        body.push_str(&format!(
            "{i},a line long enough to need several messages {i}\n"
        ));
    }
    body
}

#[tokio::test]
async fn a_retry_on_the_same_gateway_stores_nothing_twice() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let send = || {
        TestApp::send(
            app.post(&connector, "application/json", r#"[{"n": 1}, {"n": 2}]"#)
                .header("idempotency-key", "order-42"),
        )
    };
    let first = send().await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let second = send().await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body, second.body, "answered as the first did");

    let published = app.published().await;
    assert_eq!(published.len(), 1, "stored once");
    assert!(published[0].header("Nats-Msg-Id").is_some());
    assert_eq!(
        published[0].batch.batch_id.to_string(),
        first.body["batch_id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn a_retry_on_another_gateway_is_deduplicated_by_the_stream() {
    let app = spawn_app().await;
    let other = app.spawn_gateway().await;
    let connector = app.simple_connector().await;
    let body = large_body();
    let mut answers = Vec::new();
    for gateway in [&app.ingest, &other] {
        let answer = TestApp::send(
            app.post_to(
                gateway,
                connector.id,
                Some(&connector.write_token),
                Some("text/csv"),
                body.clone(),
            )
            .header("idempotency-key", "batch-2026-11-29"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        answers.push(answer.body);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0]["accepted"], 30_000);

    let published = app.published().await;
    assert!(published.len() > 1, "a body of several chunks");
    let rows: usize = published.iter().map(|m| m.batch.rows).sum();
    assert_eq!(rows, 30_000, "every chunk stored once");
    let ids: std::collections::HashSet<_> = published
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(ids.len(), published.len());
}

#[tokio::test]
async fn different_keys_or_no_key_are_different_requests() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let body = r#"{"n": 1}"#;
    let a = TestApp::send(
        app.post(&connector, "application/json", body)
            .header("idempotency-key", "a"),
    )
    .await;
    let b = TestApp::send(
        app.post(&connector, "application/json", body)
            .header("idempotency-key", "b"),
    )
    .await;
    assert_ne!(a.body["batch_id"], b.body["batch_id"]);
    TestApp::send(app.post(&connector, "application/json", body)).await;
    TestApp::send(app.post(&connector, "application/json", body)).await;
    assert_eq!(app.published().await.len(), 4);
}

#[tokio::test]
async fn a_key_reused_for_another_body_is_refused() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let first = TestApp::send(
        app.post(&connector, "application/json", r#"{"n": 1}"#)
            .header("idempotency-key", "k1"),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let reused = TestApp::send(
        app.post(&connector, "application/json", r#"{"n": 2}"#)
            .header("idempotency-key", "k1"),
    )
    .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.code(), "idempotency_key_reused");
    assert_eq!(app.published().await.len(), 1);
}

#[tokio::test]
async fn an_invalid_key_is_400() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    for key in ["", "with space", &"k".repeat(256)] {
        let answer = TestApp::send(
            app.post(&connector, "application/json", r#"{"n": 1}"#)
                .header("idempotency-key", key),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(answer.code(), "invalid_idempotency_key");
    }
    let answer = TestApp::send(
        app.post(&connector, "application/json", r#"{"n": 1}"#)
            .header("idempotency-key", "k".repeat(255)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
}
