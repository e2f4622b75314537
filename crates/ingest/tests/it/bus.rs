//! The bus side: a full stream, NATS absent, and waiting for the read API.

use futures::StreamExt;
use reqwest::StatusCode;
use sluice_runtime::bus::{RecordBatch, StoredNotice};
use tokio_util::sync::CancellationToken;

use crate::{TestApp, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_full_stream_is_503_with_retry_after() {
    let app = spawn_app_with(|s| s.stream_max_bytes = Some(8 * 1024)).await;
    let connector = app.simple_connector().await;
    let body = format!(r#"{{"n": 1, "s": "{}"}}"#, "x".repeat(1000));
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..20 {
        let answer = TestApp::send(app.post(&connector, "application/json", body.clone())).await;
        if answer.status == StatusCode::ACCEPTED {
            accepted += 1;
        } else {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the stream filled up");
    assert!(accepted >= 1);
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    assert_eq!(refused.code(), "stream_full");
    assert_eq!(refused.headers["retry-after"], "10");
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    assert_eq!(
        app.published().await.len(),
        accepted,
        "nothing silently dropped"
    );
}

#[tokio::test]
async fn without_nats_the_gateway_starts_unready_and_answers_503() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let mut settings = app.settings.clone();
    // Nothing listens there.
    settings.nats_url = "nats://127.0.0.1:9".to_owned();
    let shutdown = CancellationToken::new();
    let gateway = sluice_ingest::Application::build(settings, shutdown.clone())
        .await
        .expect("the gateway starts without NATS");
    let address = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run());

    let ready = app
        .client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let answer = TestApp::send(app.post_to(
        &address,
        connector.id,
        Some(&connector.write_token),
        Some("application/json"),
        r#"{"n": 1}"#,
    ))
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "bus_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    shutdown.cancel();
}

/// Stands in for the read API: announces every chunk stored as soon as it
/// is published.
async fn fake_reader(app: &TestApp, connector: uuid::Uuid) -> tokio::task::JoinHandle<()> {
    let client = app.env.nats().await;
    let ns = app.settings.namespace.clone();
    let mut records = client
        .subscribe(ns.records_subject(connector))
        .await
        .unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(message) = records.next().await {
            let batch: RecordBatch = serde_json::from_slice(&message.payload).unwrap();
            let notice = StoredNotice {
                batch_id: batch.batch_id,
                chunk: batch.chunk,
                last_id: Some(1),
            };
            client
                .publish(
                    ns.stored_subject(connector),
                    serde_json::to_vec(&notice).unwrap().into(),
                )
                .await
                .unwrap();
        }
    })
}

#[tokio::test]
async fn wait_true_answers_200_once_every_chunk_is_stored() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let reader = fake_reader(&app, connector.id).await;
    let mut body = String::from("n\n");
    for i in 0..150_000 {
        body.push_str(&format!("{i}\n"));
    }
    let answer = TestApp::send(
        app.post(&connector, "text/csv", body)
            .query(&[("wait", "true")]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["accepted"], 150_000);
    assert!(app.published().await.len() > 1, "several chunks waited for");
    reader.abort();
}
