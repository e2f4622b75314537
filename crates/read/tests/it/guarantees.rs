//! SPEC 8's tail guarantee and long-polling.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_read::StoreHooks;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_client_following_the_cursor_sees_every_record_once_in_order_with_two_writers() {
    let mut app = spawn_app().await;
    let second = app.start_reader(StoreHooks::default()).await;
    let connector = app.integer_connector("tail").await;
    app.wait_visible(&connector).await;

    const BATCHES: i64 = 40;
    const PER_BATCH: i64 = 5;
    let total = BATCHES * PER_BATCH;

    // Publish while the client follows the tail, alternating readers.
    let producer = {
        let js = app.js.clone();
        let subject = app.env.namespace.records_subject(connector.id);
        let mut batches = Vec::new();
        for b in 0..BATCHES {
            let records: Vec<Value> = (0..PER_BATCH)
                .map(|i| json!({"n": b * PER_BATCH + i}))
                .collect();
            let batch = app
                .batch_of(connector.id, &Value::Array(records).to_string())
                .await;
            batches.push(serde_json::to_vec(&batch).unwrap());
        }
        let connector_id = connector.id.to_string();
        tokio::spawn(async move {
            for payload in batches {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    sluice_runtime::bus::headers::CONNECTOR_ID,
                    connector_id.as_str(),
                );
                js.publish_with_headers(subject.clone(), headers, payload.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        })
    };

    let mut seen = HashSet::new();
    let mut last_id = 0i64;
    let mut cursor = String::new();
    let mut turn = 0;
    while (seen.len() as i64) < total {
        let base = if turn % 2 == 0 {
            app.read_url().to_owned()
        } else {
            app.reader_url(second).to_owned()
        };
        turn += 1;
        assert!(turn < 2000, "the tail stalled at {} records", seen.len());
        let response = app
            .get_from(
                &base,
                &format!(
                    "/v1/connectors/{}/records?limit=7&wait=5&cursor={cursor}",
                    connector.id
                ),
                &connector.read_token,
            )
            .await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        let records = page["records"].as_array().unwrap();
        for record in records {
            let id: i64 = record["_id"].as_str().unwrap().parse().unwrap();
            assert!(id > last_id, "ids go up: {id} after {last_id}");
            last_id = id;
            let n = record["n"].as_i64().unwrap();
            assert!(seen.insert(n), "record {n} seen twice");
        }
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }
    producer.await.unwrap();
    assert_eq!(seen.len() as i64, total);
    assert_eq!(last_id, total);
    // Nothing more past the end.
    let page = app.page(&connector, &format!("cursor={cursor}")).await;
    assert_eq!(page["records"], json!([]));
}

#[tokio::test]
async fn a_long_poll_returns_the_record_stored_while_it_waits() {
    let app = spawn_app().await;
    let connector = app.integer_connector("poll").await;
    app.wait_visible(&connector).await;
    let start = app.page(&connector, "").await;
    let cursor = start["next_cursor"].as_str().unwrap().to_owned();

    let waiting = {
        let client = app.client.clone();
        let url = format!(
            "{}/v1/connectors/{}/records?wait=30&cursor={cursor}",
            app.read_url(),
            connector.id
        );
        let token = connector.read_token.clone();
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Let the request reach its wait; it is answered either way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.publish(connector.id, json!([{"n": 42}])).await;
    let page = waiting.await.unwrap();
    assert_eq!(page["records"][0]["n"], 42);
    assert_ne!(page["next_cursor"], cursor.as_str());

    // With nothing arriving, wait=1 answers an empty page with the cursor.
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page = app
        .page(&connector, &format!("wait=1&cursor={cursor}"))
        .await;
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["next_cursor"], cursor.as_str());
}
