//! Clustered JetStream (issue 15): three nats-server processes in one
//! cluster, the services on all three with every stream and bucket in
//! three copies. A node killed with SIGKILL under a steady load of POSTs,
//! and started again, loses no acknowledged record and stores none twice;
//! the POSTs meanwhile see at most a short spell of 503s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sluice_testkit::api::Connector;
use sluice_testkit::{NatsCluster, TestEnv};
use tokio::task::JoinHandle;

use crate::nats_faults::{assert_exactly_once, create, post, read_all, records, stored};
use crate::support::{Client, Process};

/// Requests of the load, each of [`PER_REQUEST`] records, sent by
/// [`SENDERS`] clients at once.
const REQUESTS: usize = 120;
const PER_REQUEST: usize = 25;
const SENDERS: usize = 4;

#[tokio::test]
async fn a_node_killed_under_load_loses_no_record_and_stores_none_twice() {
    let mut cluster = NatsCluster::start();
    let env = TestEnv::on_nats(&cluster.url()).await;
    let three_copies = [("SLUICE_STREAM_REPLICAS", "3")];
    let control = Process::start(&env, "sluice-control", &[], &three_copies).await;
    let gateways = [
        Process::start(&env, "sluice-ingest", &[], &three_copies).await,
        Process::start(&env, "sluice-ingest", &[], &three_copies).await,
    ];
    let read = Process::start(&env, "sluice-read", &[], &three_copies).await;
    let client = Arc::new(Client::new(
        &control,
        &[&gateways[0], &gateways[1]],
        &[&read],
    ));
    let connector = Arc::new(create(&client).await);

    // Every stream and bucket the services made is in three copies.
    let js = async_nats::jetstream::new(env.nats().await);
    let ns = &env.namespace;
    for stream in [
        ns.records_stream(),
        ns.dead_letter_stream(),
        format!("KV_{}", ns.connectors_bucket()),
        format!("KV_{}", ns.operators_bucket()),
        format!("KV_{}", ns.replicas_bucket()),
    ] {
        let mut found = js.get_stream(&stream).await.expect("the stream exists");
        let info = found.info().await.expect("its info");
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }
    // The records stream's leader: the node whose loss matters most.
    let mut records_stream = js.get_stream(ns.records_stream()).await.unwrap();
    let leader = records_stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.leader.clone())
        .expect("the records stream has a leader");
    let victim = cluster.node_named(&leader).expect("a node of ours leads");

    let served = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (client, connector) = (Arc::clone(&client), Arc::clone(&connector));
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                let mut longest_refusal = Duration::ZERO;
                for request in (sender..REQUESTS).step_by(SENDERS) {
                    let refused = send_until_accepted(&client, &connector, request).await;
                    longest_refusal = longest_refusal.max(refused);
                    served.fetch_add(1, Ordering::SeqCst);
                }
                longest_refusal
            })
        })
        .collect();
    wait_until_served(&served, REQUESTS / 3, &senders).await;
    cluster.kill(victim);
    wait_until_served(&served, 2 * REQUESTS / 3, &senders).await;
    cluster.restart(victim);
    let mut longest_refusal = Duration::ZERO;
    for sender in senders {
        longest_refusal = longest_refusal.max(sender.await.expect("a sender"));
    }
    eprintln!(
        "nats_cluster: {} killed and restarted under load; the longest a request was refused: {longest_refusal:?}",
        cluster.name(victim)
    );

    let total = REQUESTS * PER_REQUEST;
    for _ in 0..600 {
        if stored(&client, &connector).await >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_exactly_once(&read_all(&client, &connector).await, total);

    // The restarted node caught up: a current copy of the records stream
    // again (or its leader).
    let victim_name = cluster.name(victim).to_owned();
    let mut caught_up = false;
    for _ in 0..300 {
        let info = records_stream.info().await.expect("the stream's info");
        let cluster = info.cluster.as_ref().expect("a clustered stream");
        caught_up = cluster.leader.as_deref() == Some(victim_name.as_str())
            || cluster
                .replicas
                .iter()
                .any(|peer| peer.name == victim_name && peer.current && !peer.offline);
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        caught_up,
        "{victim_name} never caught up with the records stream"
    );
}

/// POSTs request `request` of the load (records `request * PER_REQUEST`
/// onwards) with an idempotency key, again while the gateways answer 503
/// or the connection fails, as a client following `Retry-After` does. The
/// time from the first refusal to the acceptance: the spell the client saw
/// the service unavailable. Panics after 30 s of refusals.
async fn send_until_accepted(client: &Client, connector: &Connector, request: usize) -> Duration {
    let seqs = request * PER_REQUEST..(request + 1) * PER_REQUEST;
    let body = records(seqs, 0);
    let key = format!("load-{request}");
    let mut first_refusal: Option<Instant> = None;
    for _ in 0..300 {
        match post(client, connector, Some(&key), false, body.clone()).await {
            Some((StatusCode::ACCEPTED, _)) => {
                return first_refusal.map_or(Duration::ZERO, |at| at.elapsed());
            }
            Some((StatusCode::SERVICE_UNAVAILABLE, _)) | None => {
                first_refusal.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some((status, answer)) => panic!("request {request}: {status}: {answer}"),
        }
        if first_refusal.is_some_and(|at| at.elapsed() > Duration::from_secs(30)) {
            break;
        }
    }
    panic!("request {request} was refused for 30 s: the gateways did not ride through");
}

/// Waits until `count` requests are served, or a sender stopped (failed).
async fn wait_until_served<T>(served: &AtomicUsize, count: usize, senders: &[JoinHandle<T>]) {
    while served.load(Ordering::SeqCst) < count && !senders.iter().any(JoinHandle::is_finished) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
