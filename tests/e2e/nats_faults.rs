//! Exactly once through NATS faults (SPEC 7 and 9), with the services as
//! separate processes on a nats-server of the test's own that it restarts
//! and wipes: an idempotent retry after a restart, a retry of a request cut
//! short by a restart, and a stream made again after its store was lost.
//! Each ends by reading every record back: each stored once, `_id`s rising.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_testkit::api::{self, Connector};
use sluice_testkit::{PrivateNats, TestEnv};

use crate::support::{Client, Process};

/// The three services on `nats`, with two gateways.
struct Deployment {
    control: Process,
    gateways: [Process; 2],
    read: Process,
}

impl Deployment {
    async fn start(env: &TestEnv, nats: &PrivateNats) -> Deployment {
        let url = nats.url();
        let on_nats = [("NATS_URL", url.as_str())];
        Deployment {
            control: Process::start(env, "sluice-control", &[], &on_nats).await,
            gateways: [
                Process::start(env, "sluice-ingest", &[], &on_nats).await,
                Process::start(env, "sluice-ingest", &[], &on_nats).await,
            ],
            read: Process::start(env, "sluice-read", &[], &on_nats).await,
        }
    }

    /// A client whose POSTs go to gateway `gateway`.
    fn through(&self, gateway: usize) -> Client {
        Client::new(&self.control, &[&self.gateways[gateway]], &[&self.read])
    }

    fn stop(mut self) {
        for process in [&mut self.control, &mut self.read] {
            process.terminate();
        }
        for gateway in &mut self.gateways {
            gateway.terminate();
        }
    }
}

pub(crate) async fn create(client: &Client) -> Connector {
    let created = client
        .create(
            "faults",
            json!([
                {"name": "seq", "type": "integer"},
                {"name": "pad", "type": "string", "nullable": true},
            ]),
        )
        .await;
    Connector::of(&created)
}

/// Records `seq` in `range`, each padded to about `pad` bytes.
pub(crate) fn records(range: std::ops::Range<usize>, pad: usize) -> String {
    let body: Vec<Value> = range
        .map(|seq| json!({"seq": seq, "pad": "x".repeat(pad)}))
        .collect();
    serde_json::to_string(&body).unwrap()
}

/// POSTs `body` with `Idempotency-Key: key` if given, and `wait=true` if
/// `wait`. `None` when the connection failed.
pub(crate) async fn post(
    client: &Client,
    connector: &Connector,
    key: Option<&str>,
    wait: bool,
    body: String,
) -> Option<(StatusCode, Value)> {
    let mut request = client
        .request(
            Method::POST,
            &format!("/v1/connectors/{}/records?wait={wait}", connector.id),
            &connector.write_token,
        )
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.ok()?;
    let status = response.status();
    Some((status, response.json().await.ok()?))
}

/// [`post`] with `wait=true` again while the gateway answers 503 (NATS
/// still coming back), as a client following `Retry-After` does; the answer
/// it settles on. With a key, so that no retry can store twice.
async fn post_until_served(
    client: &Client,
    connector: &Connector,
    key: &str,
    body: &str,
) -> (StatusCode, Value) {
    for _ in 0..150 {
        match post(client, connector, Some(key), true, body.to_owned()).await {
            Some((StatusCode::SERVICE_UNAVAILABLE, _)) | None => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(answer) => return answer,
        }
    }
    panic!("the gateway did not recover within 30 s");
}

/// Every record of the connector (its `seq` alone), from the start.
pub(crate) async fn read_all(client: &Client, connector: &Connector) -> Vec<Value> {
    let query = [("limit", "10000"), ("fields", "seq")];
    client
        .read_pages(&connector.id.to_string(), &connector.read_token, &query)
        .await
}

/// Each of `0..count` stored exactly once, with `_id`s strictly rising.
pub(crate) fn assert_exactly_once(records: &[Value], count: usize) {
    let mut seen = vec![0usize; count];
    let mut last_id = 0i64;
    for record in records {
        let id: i64 = record["_id"].as_str().unwrap().parse().unwrap();
        assert!(id > last_id, "_id {id} after {last_id}");
        last_id = id;
        let seq = record["seq"].as_u64().unwrap() as usize;
        assert!(seq < count, "unexpected seq {seq}");
        seen[seq] += 1;
    }
    let twice: Vec<usize> = (0..count).filter(|&s| seen[s] > 1).collect();
    let lost: Vec<usize> = (0..count).filter(|&s| seen[s] == 0).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert!(lost.is_empty(), "never stored: {lost:?}");
}

/// What two answers to the same idempotent request must share.
fn answer_of(answer: &Value) -> Value {
    json!({
        "accepted": answer["accepted"],
        "rejected": answer["rejected"],
        "batch_id": answer["batch_id"],
        "schema_version": answer["schema_version"],
    })
}

/// Waits until the single reader has handled everything published before:
/// it stores one connector's messages in stream order, so once a marker
/// sent last is readable, so is (or was refused) all that came before.
async fn settle(client: &Client, connector: &Connector, marker: usize) {
    let body = records(marker..marker + 1, 0);
    let (status, answer) = post_until_served(client, connector, "marker", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn an_idempotent_retry_on_another_gateway_after_a_nats_restart_is_stored_once() {
    let env = TestEnv::new().await;
    let mut nats = PrivateNats::start();
    let deployment = Deployment::start(&env, &nats).await;
    let (a, b) = (deployment.through(0), deployment.through(1));
    let connector = create(&a).await;
    let body = records(0..3, 0);

    let (status, first) = post(&a, &connector, Some("K"), true, body.clone())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{first}");
    // Stored and acked, so gone from the work-queue stream; a restarted
    // server rebuilds its duplicate table only from what it still holds.
    nats.restart();
    let (status, retry) = post_until_served(&b, &connector, "K", &body).await;
    assert!(status.is_success(), "{status}: {retry}");
    assert_eq!(answer_of(&retry), answer_of(&first));
    assert_eq!(retry["accepted"], 3);

    settle(&a, &connector, 3).await;
    assert_exactly_once(&read_all(&a, &connector).await, 4);
    deployment.stop();
}

/// When a round of the test below kills NATS.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after the request was sent: while it is read, validated
    /// or published.
    After(Duration),
    /// Once the read API has stored records of the request: stored and
    /// acked, so gone from the stream, while the answer may not have
    /// reached the client yet.
    OnceSomeStored,
}

#[tokio::test]
async fn retries_of_requests_cut_short_by_a_nats_restart_are_stored_once() {
    let env = TestEnv::new().await;
    let mut nats = PrivateNats::start();
    let deployment = Deployment::start(&env, &nats).await;
    let (a, b) = (deployment.through(0), deployment.through(1));
    let connector = create(&a).await;

    // Bodies of several NATS messages each, the server killed at another
    // moment of each request. Whatever the first attempt did, its retry on
    // the other gateway must complete it without a copy, and answer as a
    // first attempt that succeeded would have.
    const PER_REQUEST: usize = 2_500;
    let kills = [
        Kill::After(Duration::ZERO),
        Kill::After(Duration::from_millis(50)),
        Kill::OnceSomeStored,
    ];
    for (round, kill) in kills.into_iter().enumerate() {
        let key = format!("round-{round}");
        let body = records(round * PER_REQUEST..(round + 1) * PER_REQUEST, 1_000);
        let stored_before = stored(&a, &connector).await;
        let first = {
            // With `wait=true`, the request is still open while the read
            // API stores its chunks one by one.
            let request = post(&a, &connector, Some(&key), true, body.clone());
            let kill = async {
                match kill {
                    Kill::After(delay) => tokio::time::sleep(delay).await,
                    Kill::OnceSomeStored => {
                        while stored(&a, &connector).await == stored_before {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                nats.stop();
            };
            tokio::join!(request, kill).0
        };
        nats.restart();
        let (status, retry) = post_until_served(&b, &connector, &key, &body).await;
        assert!(
            status.is_success(),
            "round {round} ({kill:?}): {status}: {retry}"
        );
        assert_eq!(retry["accepted"], PER_REQUEST, "round {round}");
        if let Some((status, first)) = &first
            && status.is_success()
        {
            assert_eq!(answer_of(&retry), answer_of(first), "round {round}");
        }
    }

    let marker = kills.len() * PER_REQUEST;
    settle(&a, &connector, marker).await;
    assert_exactly_once(&read_all(&a, &connector).await, marker + 1);
    deployment.stop();
}

/// Records stored for the connector, from its stats.
pub(crate) async fn stored(client: &Client, connector: &Connector) -> usize {
    let body =
        api::fetch_json(client.admin(Method::GET, &format!("/v1/connectors/{}", connector.id)))
            .await;
    body["stats"]["records"].as_u64().unwrap() as usize
}

#[tokio::test]
async fn after_the_nats_store_is_lost_new_records_are_all_stored() {
    let env = TestEnv::new().await;
    let mut nats = PrivateNats::start();
    let deployment = Deployment::start(&env, &nats).await;
    let connector = create(&deployment.through(0)).await;
    for batch in 0..3 {
        let client = deployment.through(batch % 2);
        let body = records(batch * 10..(batch + 1) * 10, 0);
        let (status, answer) = post(&client, &connector, None, true, body).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    deployment.stop();

    // The stream, the bucket and the consumer are made again from nothing;
    // the new stream numbers its messages from 1 again.
    nats.wipe();
    nats.restart();
    let deployment = Deployment::start(&env, &nats).await;
    for batch in 3..6 {
        let client = deployment.through(batch % 2);
        let body = records(batch * 10..(batch + 1) * 10, 0);
        let (status, answer) =
            post_until_served(&client, &connector, &format!("batch-{batch}"), &body).await;
        assert_eq!(status, StatusCode::OK, "batch {batch}: {answer}");
    }
    let client = deployment.through(0);
    assert_exactly_once(&read_all(&client, &connector).await, 60);
    deployment.stop();
}
