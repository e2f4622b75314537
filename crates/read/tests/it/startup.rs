//! Starting while NATS is down: the control plane and the read API start
//! anyway, unready, and become ready by themselves once NATS answers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_testkit::{ADMIN_TOKEN, PrivateNats, TestEnv};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Polls `base`'s `/readyz` until it answers 200, for up to `patience`.
async fn becomes_ready(client: &reqwest::Client, base: &str, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        if ready.status() == StatusCode::OK {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn control_and_read_start_while_nats_is_down_and_become_ready_once_it_is_up() {
    let env = TestEnv::new().await;
    let mut nats = PrivateNats::start();
    nats.stop();
    let mut settings = env.settings();
    settings.nats_url = nats.url();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let control = sluice_control::Application::build(settings.clone(), shutdown.clone())
        .await
        .expect("the control plane starts without NATS");
    let read = sluice_read::Application::build(settings, shutdown.clone())
        .await
        .expect("the read API starts without NATS");
    let control_url = format!("http://{}", control.local_addr());
    let read_url = format!("http://{}", read.local_addr());
    tokio::spawn(control.run());
    tokio::spawn(read.run());
    let client = reqwest::Client::new();

    for base in [&control_url, &read_url] {
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "{base}");
        let checks: Value = ready.json().await.unwrap();
        assert_eq!(checks, json!({"postgres": "ok", "nats": "unavailable"}));
    }
    // Their routes say why they cannot serve yet.
    for url in [
        format!("{control_url}/v1/connectors"),
        format!("{read_url}/v1/connectors/{}/records", Uuid::now_v7()),
    ] {
        let answer = client
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{url}");
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(problem["code"], "bus_unavailable", "{url}");
    }

    nats.restart();
    for base in [&control_url, &read_url] {
        assert!(
            becomes_ready(&client, base, Duration::from_secs(30)).await,
            "{base} became ready once NATS answered"
        );
    }
    // And they serve: a connector made on the one is read on the other.
    let created: Value = client
        .post(format!("{control_url}/v1/connectors"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "late", "fields": [{"name": "n", "type": "integer"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page = client
        .get(format!(
            "{read_url}/v1/connectors/{}/records",
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(created["read_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["records"], json!([]));
}
