//! NATS going away and coming back (SPEC 9): 503 quickly while it is down,
//! and recovery without a restart. Runs its own nats-server, since the
//! shared one must stay up for the other tests.

use std::time::Duration;

use reqwest::StatusCode;
use sluice_runtime::bus::{self, ConnectorDoc, TokenDoc};
use sluice_runtime::token::{NewToken, TokenKind};
use sluice_schema::{ExtraFields, FieldSpec, Schema};
use sluice_testkit::{PrivateNats, TestEnv};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{TestApp, eventually};

#[tokio::test]
async fn while_nats_is_down_ingest_answers_503_and_recovers_by_itself() {
    let env = TestEnv::new().await;
    let mut nats = PrivateNats::start();
    let mut settings = env.settings();
    settings.nats_url = nats.url();

    // Written to the bucket as the control plane would.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let bucket = bus::connectors_bucket(&js, &settings.namespace, 1)
        .await
        .unwrap();
    let write = NewToken::generate(TokenKind::Write);
    let specs: Vec<FieldSpec> =
        serde_json::from_value(serde_json::json!([{"name": "n", "type": "integer"}])).unwrap();
    let doc = ConnectorDoc::new(
        Uuid::now_v7(),
        "outage".to_owned(),
        1,
        Schema::define(&specs).unwrap(),
        ExtraFields::Reject,
        vec![TokenDoc {
            id: Uuid::now_v7(),
            name: "write".to_owned(),
            scope: TokenKind::Write,
            hash: write.hash.clone(),
            expires_at: None,
        }],
    );
    bucket
        .put(ConnectorDoc::key(doc.id), doc.encode().unwrap())
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let gateway = sluice_ingest::Application::build(settings, shutdown.clone())
        .await
        .unwrap();
    let address = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run());
    let client = reqwest::Client::new();
    let post = || {
        TestApp::send(
            client
                .post(format!("{address}/v1/connectors/{}/records", doc.id))
                .bearer_auth(&write.secret)
                .header("content-type", "application/json")
                .body(r#"{"n": 1}"#),
        )
    };
    assert_eq!(post().await.status, StatusCode::ACCEPTED);

    nats.stop();
    let unready = eventually(Duration::from_secs(5), || async {
        let ready = client
            .get(format!("{address}/readyz"))
            .send()
            .await
            .unwrap();
        ready.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(unready, "/readyz reports NATS gone");
    let answer = post().await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.code(), "bus_unavailable");
    assert!(answer.headers.contains_key("retry-after"));

    nats.restart();
    let recovered = eventually(Duration::from_secs(15), || async {
        post().await.status == StatusCode::ACCEPTED
    })
    .await;
    assert!(recovered, "ingest recovered once NATS came back");
}
