//! What a producer's connection sees when the gateway refuses a POST before
//! reading its body, or when the body comes too slowly: the real answer, as
//! problem+json, and a connection that either stays usable or is announced
//! closed. A raw client, so what is on the wire is what is asserted.

use std::time::Duration;

use sluice_testkit::wire::{PATIENCE, WireClient};
use tokio::io::AsyncWriteExt;

use crate::{Connector, TestApp, spawn_app, spawn_app_with};

/// A raw connection to the gateway.
async fn connect(app: &TestApp) -> WireClient {
    WireClient::connect(app.ingest.trim_start_matches("http://")).await
}

fn post_head(connector: &Connector, token: &str, length: usize) -> String {
    format!(
        "POST /v1/connectors/{}/records HTTP/1.1\r\nHost: sluice.test\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {length}\r\n\r\n",
        connector.id
    )
}

#[tokio::test]
async fn a_refused_post_leaves_a_keep_alive_connection_usable() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let WireClient {
        mut reader,
        mut writer,
    } = connect(&app).await;
    let record = "{\"n\": 1}\n";

    // A wrong token is refused before the body is read.
    let refused = format!(
        "{}{record}",
        post_head(&connector, "sluice_w_wrong", record.len())
    );
    writer.write_all(refused.as_bytes()).await.unwrap();
    let first = reader.answer().await.expect("the 401");
    assert_eq!(first.status, 401);
    assert_eq!(first.problem()["code"], "unauthorized");
    assert!(!first.closes(), "{first:?}");

    let accepted = format!(
        "{}{record}",
        post_head(&connector, &connector.write_token, record.len())
    );
    writer.write_all(accepted.as_bytes()).await.unwrap();
    let second = reader
        .answer()
        .await
        .expect("the same connection serves the next request");
    assert_eq!(second.status, 202, "{second:?}");
    assert_eq!(second.json()["accepted"], 1);
}

#[tokio::test]
async fn a_body_too_large_by_content_length_is_answered_not_reset() {
    let app = spawn_app_with(|s| s.max_body_bytes = 64 * 1024).await;
    let connector = app.simple_connector().await;
    let WireClient {
        mut reader,
        mut writer,
    } = connect(&app).await;
    let body = "{\"n\": 1}\n".repeat(100_000);

    // As a streaming proxy does: the whole body, then the answer.
    let sent = tokio::time::timeout(PATIENCE, async {
        writer
            .write_all(post_head(&connector, &connector.write_token, body.len()).as_bytes())
            .await?;
        writer.write_all(body.as_bytes()).await?;
        writer.shutdown().await
    })
    .await
    .expect("the gateway takes the body in");
    assert!(sent.is_ok(), "{sent:?}");
    let refused = reader.answer().await.expect("the 413, not a reset");
    assert_eq!(refused.status, 413);
    assert_eq!(refused.problem()["code"], "payload_too_large");
    assert!(refused.closes(), "{refused:?}");

    let answer = TestApp::send(app.post(&connector, "application/x-ndjson", "{\"n\": 2}")).await;
    assert_eq!(answer.status, 202, "{answer:?}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_408() {
    let app = spawn_app_with(|s| s.http.body_timeout = Duration::from_secs(1)).await;
    let connector = app.simple_connector().await;
    let WireClient {
        mut reader,
        mut writer,
    } = connect(&app).await;
    // Announces 15 MiB and sends a record of it.
    writer
        .write_all(post_head(&connector, &connector.write_token, 15 << 20).as_bytes())
        .await
        .unwrap();
    writer.write_all(b"{\"n\": 1}\n").await.unwrap();
    let timed_out = reader.answer().await.expect("the 408");
    assert_eq!(timed_out.status, 408);
    assert_eq!(timed_out.problem()["code"], "body_timeout");
    assert!(timed_out.closes(), "{timed_out:?}");

    let answer = TestApp::send(app.post(&connector, "application/x-ndjson", "{\"n\": 2}")).await;
    assert_eq!(answer.status, 202, "{answer:?}");
}
