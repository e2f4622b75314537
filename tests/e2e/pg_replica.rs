//! Reads from a PostgreSQL streaming replica (issue 15): a primary and a
//! replica made by the test, the read API writing the primary and serving
//! GETs from the replica (`DATABASE_READ_URL`). A reader following the
//! cursor through a load sees every record once, in order, with no hole;
//! a long-poll woken while the replica lags behind the commit that woke it
//! waits for the replica and answers with the new records.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sluice_testkit::api::{self, Connector};
use sluice_testkit::{PostgresPair, TestEnv, nats_url};

use crate::nats_faults::{create, post, records};
use crate::support::{Client, Process};

/// The services on the pair: the read API reading the replica.
struct Deployment {
    // Dropped first: the services stop before their database goes.
    control: Process,
    gateway: Process,
    read: Process,
    /// Held for its drop, which removes the database and namespace.
    _env: TestEnv,
}

impl Deployment {
    async fn start(pair: &PostgresPair) -> Deployment {
        let env = TestEnv::create(&pair.primary_url(), nats_url(), "test")
            .await
            .expect("a database on the test's primary");
        let replica = format!("{}/{}", pair.replica_url(), env.database);
        let on_replica = [("DATABASE_READ_URL", replica.as_str())];
        Deployment {
            control: Process::start(&env, "sluice-control", &[], &[]).await,
            gateway: Process::start(&env, "sluice-ingest", &[], &[]).await,
            read: Process::start(&env, "sluice-read", &[], &on_replica).await,
            _env: env,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.control, &[&self.gateway], &[&self.read])
    }
}

/// A page after `cursor` (the start when empty), holding the request up to
/// `wait` seconds: its records and its next cursor.
async fn page(
    client: &Client,
    connector: &Connector,
    cursor: &str,
    limit: usize,
    wait: u32,
) -> (Vec<Value>, String) {
    let path = format!("/v1/connectors/{}/records", connector.id);
    let page = api::fetch_json(
        client
            .request(Method::GET, &path, &connector.read_token)
            .query(&[("cursor", cursor), ("fields", "seq")])
            .query(&[("limit", limit), ("wait", wait as usize)]),
    )
    .await;
    let records = page["records"].as_array().expect("records").clone();
    let next = page["next_cursor"]
        .as_str()
        .expect("next_cursor")
        .to_owned();
    (records, next)
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

fn ids(records: &[Value]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r["_id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_reader_on_a_replica_follows_the_cursor_through_a_load_without_a_hole() {
    let pair = PostgresPair::start();
    let deployment = Deployment::start(&pair).await;
    let client = Arc::new(deployment.client());
    let connector = Arc::new(create(&client).await);

    const REQUESTS: usize = 40;
    const PER_REQUEST: usize = 50;
    let total = REQUESTS * PER_REQUEST;
    let load = {
        let (client, connector) = (Arc::clone(&client), Arc::clone(&connector));
        tokio::spawn(async move {
            for request in 0..REQUESTS {
                let body = records(request * PER_REQUEST..(request + 1) * PER_REQUEST, 0);
                let (status, answer) = post(&client, &connector, None, false, body)
                    .await
                    .expect("the gateway answers");
                assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            }
        })
    };

    // Pages of an odd size, so that page ends fall inside commits.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..total {
        let (records, next) = page(&client, &connector, &cursor, 37, 5).await;
        seen.extend(records);
        cursor = next;
        if seen.len() >= total {
            break;
        }
    }
    load.await.expect("the load");
    let (after, _) = page(&client, &connector, &cursor, 37, 0).await;
    assert!(after.is_empty(), "records past the end: {after:?}");

    // No hole: the ids of one connector are dense, so the reader saw
    // exactly 1..=total, in order; and each record once.
    let expected: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(ids(&seen), expected);
    let distinct: BTreeSet<u64> = seqs(&seen).into_iter().collect();
    assert_eq!(distinct.len(), total);
    assert_eq!(distinct.last(), Some(&(total as u64 - 1)));
}

#[tokio::test]
async fn a_long_poll_on_a_lagging_replica_wakes_with_the_new_records() {
    let pair = PostgresPair::start();
    let deployment = Deployment::start(&pair).await;
    let client = Arc::new(deployment.client());
    let connector = Arc::new(create(&client).await);

    let (status, answer) = post(&client, &connector, None, true, records(0..10, 0))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (first, cursor) = page(&client, &connector, "", 100, 5).await;
    assert_eq!(seqs(&first), (0..10).collect::<Vec<_>>());

    // A long-poll at the tail; then the replica stops replaying, and the
    // next records are stored on the primary alone. The notice of their
    // commit wakes the long-poll while its replica does not show them.
    let long_poll = {
        let (client, connector, cursor) =
            (Arc::clone(&client), Arc::clone(&connector), cursor.clone());
        tokio::spawn(async move { page(&client, &connector, &cursor, 100, 30).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    pair.pause_replay();
    let (status, answer) = post(&client, &connector, None, true, records(10..20, 0))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "stored on the primary: {answer}");
    let (lagging, _) = page(&client, &connector, &cursor, 100, 0).await;
    assert!(
        lagging.is_empty(),
        "the replica replays nothing now, so a GET from it shows nothing new: {lagging:?}"
    );
    assert!(
        !long_poll.is_finished(),
        "the long-poll waits for the replica"
    );

    pair.resume_replay();
    let resumed = Instant::now();
    let (woken, _) = long_poll.await.expect("the long-poll");
    // Far inside its 30 s: woken once the replica replayed the commit, not
    // answering at its deadline (whose last look would find them too).
    assert!(
        resumed.elapsed() < Duration::from_secs(20),
        "the long-poll answered at its deadline, not when the replica caught up"
    );
    assert_eq!(seqs(&woken), (10..20).collect::<Vec<_>>());
    assert_eq!(ids(&woken), (11..=20).collect::<Vec<_>>());
}
