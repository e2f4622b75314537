//! Connector definitions followed live from the control plane's bucket.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{TestApp, eventually, spawn_app};

#[tokio::test]
async fn a_schema_edit_is_picked_up_within_a_second() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let new_record = r#"{"n": 1, "t": "2026-11-29"}"#;
    let before = TestApp::send(app.post(&connector, "application/json", new_record)).await;
    assert_eq!(before.status, StatusCode::UNPROCESSABLE_ENTITY);

    let edited = app
        .admin(
            Method::PATCH,
            &format!("/v1/connectors/{}", connector.id),
            Some(json!({"fields": [
                {"name": "n", "type": "integer"},
                {"name": "s", "type": "string", "nullable": true},
                {"name": "t", "type": "date"}
            ]})),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{:?}", edited.body);
    assert_eq!(edited.body["schema_version"], 2);

    // Poll rather than sleep: the gateway must follow within a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let last = loop {
        let answer = TestApp::send(app.post(&connector, "application/json", new_record)).await;
        if answer.status == StatusCode::ACCEPTED || tokio::time::Instant::now() >= deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        last.status,
        StatusCode::ACCEPTED,
        "the edit reached the gateway: {last:?}"
    );
    assert_eq!(last.body["schema_version"], 2);
    let published = app.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].header("Sluice-Schema-Version").as_deref(),
        Some("2")
    );
    assert_eq!(published[0].batch.columns.len(), 3);

    // And a record valid only under the old schema is now refused.
    let old = TestApp::send(app.post(&connector, "application/json", r#"{"n": 1}"#)).await;
    assert_eq!(old.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_rotated_token_stops_working() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{}/tokens/write", connector.id),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_token = rotated.body["token"].as_str().unwrap().to_owned();
    // At once: the gateway reads the bucket before refusing a token.
    let answer = TestApp::send(app.post_to(
        &app.ingest,
        connector.id,
        Some(&new_token),
        Some("application/json"),
        r#"{"n": 1}"#,
    ))
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let old_refused = eventually(Duration::from_secs(1), || {
        let request = app.post(&connector, "application/json", r#"{"n": 1}"#);
        async move { TestApp::send(request).await.status == StatusCode::UNAUTHORIZED }
    })
    .await;
    assert!(old_refused, "the old token stopped working within a second");
}

#[tokio::test]
async fn a_new_connector_can_be_posted_to_at_once_on_every_gateway() {
    let app = spawn_app().await;
    let second = app.spawn_gateway().await;
    for i in 0..5 {
        let connector = app
            .create_connector(
                &format!("fresh{i}"),
                json!([{"name": "n", "type": "integer"}]),
            )
            .await;
        for gateway in [&app.ingest, &second] {
            let answer = TestApp::send(app.post_to(
                gateway,
                connector.id,
                Some(&connector.write_token),
                Some("application/json"),
                r#"{"n": 1}"#,
            ))
            .await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        }
    }
}

#[tokio::test]
async fn two_gateways_serve_the_same_connector_at_once() {
    let app = spawn_app().await;
    let second = app.spawn_gateway().await;
    let connector = app.simple_connector().await;
    let send = |gateway: &str, i: usize| {
        TestApp::send(app.post_to(
            gateway,
            connector.id,
            Some(&connector.write_token),
            Some("application/json"),
            format!(r#"[{{"n": {i}}}, {{"n": {i}}}]"#),
        ))
    };
    let mut requests = Vec::new();
    for i in 0..10 {
        requests.push(send(if i % 2 == 0 { &app.ingest } else { &second }, i));
    }
    let answers = futures::future::join_all(requests).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        assert_eq!(answer.body["accepted"], 2);
    }
    let published = app.published().await;
    assert_eq!(published.len(), 10);
    let batches: std::collections::HashSet<_> =
        published.iter().map(|m| m.batch.batch_id).collect();
    assert_eq!(batches.len(), 10);
}
