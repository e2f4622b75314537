//! Two gateways and two readers at once: every record is stored once, and a
//! client following the cursor while ingestion runs sees each exactly once.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_testkit::{TestEnv, api};

use crate::support::{Client, Process};

const BATCHES: usize = 40;
const PER_BATCH: usize = 25;

#[tokio::test]
async fn two_gateways_and_two_readers_store_every_record_once() {
    let env = TestEnv::new().await;
    let control = Process::start(&env, "sluice-control", &[], &[]).await;
    let ingest = [
        Process::start(&env, "sluice-ingest", &[], &[]).await,
        Process::start(&env, "sluice-ingest", &[], &[]).await,
    ];
    let read = [
        Process::start(&env, "sluice-read", &[], &[]).await,
        Process::start(&env, "sluice-read", &[], &[]).await,
    ];
    let client = Client::new(&control, &[&ingest[0], &ingest[1]], &[&read[0], &read[1]]);
    let created = client
        .create("events", json!([{"name": "seq", "type": "integer"}]))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let write = created["write_token"].as_str().unwrap().to_owned();
    let read_token = created["read_token"].as_str().unwrap().to_owned();

    // Producers on both gateways, four requests in flight at a time.
    let producers = futures::future::join_all((0..4).map(|p| {
        let client = &client;
        let (id, write) = (&id, &write);
        async move {
            for b in (p..BATCHES).step_by(4) {
                let body: Vec<Value> = (0..PER_BATCH)
                    .map(|i| json!({"seq": b * PER_BATCH + i}))
                    .collect();
                let response = client
                    .request(Method::POST, &format!("/v1/connectors/{id}/records"), write)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED);
            }
        }
    }));

    // A consumer following the cursor at the same time, through both readers.
    let consumer = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..2000 {
            if seen.len() == BATCHES * PER_BATCH {
                break;
            }
            let mut query = vec![("limit", "7".to_owned()), ("wait", "1".to_owned())];
            query.extend(cursor.clone().map(|c| ("cursor", c)));
            let page = api::fetch_json(
                client
                    .request(
                        Method::GET,
                        &format!("/v1/connectors/{id}/records"),
                        &read_token,
                    )
                    .query(&query),
            )
            .await;
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            for record in page["records"].as_array().unwrap() {
                seen.push((
                    record["_id"].as_str().unwrap().to_owned(),
                    record["seq"].as_i64().unwrap(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    };
    let ((), seen) = tokio::join!(
        async {
            producers.await;
        },
        consumer
    );

    let seqs: HashSet<i64> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        seen.len(),
        BATCHES * PER_BATCH,
        "every record seen, none twice"
    );
    assert_eq!(seqs.len(), BATCHES * PER_BATCH);
    let ids: Vec<u64> = seen.iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "records come in _id order"
    );
}
