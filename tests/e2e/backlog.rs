//! A full records stream: while no read API stores, ingest takes records
//! up to `SLUICE_STREAM_MAX_BYTES`, then answers 503 `stream_full`; the
//! connector's stats show the backlog; once a read API has stored it,
//! every accepted record is there and POSTs are taken again.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_testkit::TestEnv;

use crate::support::{Client, Process};

/// Small enough to fill with a few dozen requests.
const BOUND: &str = "65536";
const PER_REQUEST: usize = 10;

#[tokio::test]
async fn a_full_stream_answers_503_until_the_backlog_is_stored_and_loses_nothing() {
    let env = TestEnv::new().await;
    let bound = [("SLUICE_STREAM_MAX_BYTES", BOUND)];
    let control = Process::start(&env, "sluice-control", &[], &bound).await;
    let ingest = Process::start(&env, "sluice-ingest", &[], &bound).await;
    let no_reader = Client::new(&control, &[&ingest], &[&control]);
    let created = no_reader
        .create(
            "burst",
            json!([{"name": "seq", "type": "integer"}, {"name": "pad", "type": "string"}]),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let write = created["write_token"].as_str().unwrap().to_owned();
    let read_token = created["read_token"].as_str().unwrap().to_owned();
    let post = |client: &Client, request: usize| {
        let body: Vec<Value> = (0..PER_REQUEST)
            .map(|i| json!({"seq": request * PER_REQUEST + i, "pad": "x".repeat(400)}))
            .collect();
        client
            .request(
                Method::POST,
                &format!("/v1/connectors/{id}/records"),
                &write,
            )
            .json(&body)
            .send()
    };

    let mut accepted = 0;
    let refused = loop {
        assert!(accepted < 200, "the stream never filled up");
        let response = post(&no_reader, accepted).await.unwrap();
        if response.status() != StatusCode::ACCEPTED {
            break response;
        }
        accepted += 1;
    };
    assert!(accepted > 0);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "10");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "stream_full", "{problem}");
    assert_eq!(problem["status"], 503);

    // The stats tell what waits: one message per request, all alike, so
    // the estimate of records is exact.
    let stats = |client: &Client| {
        let request = client.admin(Method::GET, &format!("/v1/connectors/{id}"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["stats"].clone() }
    };
    let waiting = stats(&no_reader).await;
    assert_eq!(waiting["backlog"]["messages"], accepted, "{waiting}");
    assert_eq!(
        waiting["backlog"]["records_estimate"],
        accepted * PER_REQUEST,
        "{waiting}"
    );
    assert_eq!(waiting["records"], 0);

    // A read API stores the backlog; then POSTs are taken again.
    let read = Process::start(&env, "sluice-read", &[], &bound).await;
    let client = Client::new(&control, &[&ingest], &[&read]);
    let mut drained = Value::Null;
    for _ in 0..300 {
        drained = stats(&client).await;
        if drained["backlog"]["messages"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(drained["backlog"]["messages"], 0, "{drained}");
    assert_eq!(drained["records"], accepted * PER_REQUEST, "{drained}");
    let again = post(&client, accepted).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);

    let expected = (accepted + 1) * PER_REQUEST;
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = client
            .read_pages(&id, &read_token, &[("limit", "1000"), ("fields", "seq")])
            .await
            .iter()
            .map(|r| r["seq"].as_u64().unwrap() as usize)
            .collect();
        if stored.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stored.sort_unstable();
    assert_eq!(
        stored,
        (0..expected).collect::<Vec<_>>(),
        "every accepted record is stored, once"
    );
}
