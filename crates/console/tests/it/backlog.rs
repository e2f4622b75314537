//! The connector page tells how many records wait to be stored, and for
//! how long the oldest has waited.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sluice_testkit::TestEnv;

use crate::browser::Browser;
use crate::spawn_app;

#[tokio::test]
async fn the_connector_page_shows_the_records_waiting_to_be_stored() {
    let app = spawn_app().await;
    let (status, created) = app
        .operator(
            Method::POST,
            "/v1/connectors",
            Some(json!({"name": "queued", "fields": [{"name": "n", "type": "integer"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // The read API's consumer paused: what is posted waits on the stream.
    let stream = store_stream(&app.env).await;
    let consumer = app.env.namespace.store_consumer();
    let until = async_nats::datetime::add_std_duration(
        async_nats::datetime::now(),
        Duration::from_secs(300),
    )
    .unwrap();
    stream
        .pause_consumer(&consumer, until)
        .await
        .expect("pausing the store consumer");
    for request in 0..2 {
        let response = app
            .client
            .post(format!("{}/v1/connectors/{id}/records", app.address))
            .bearer_auth(created["write_token"].as_str().unwrap())
            .json(&json!([{"n": request}, {"n": request + 10}, {"n": request + 20}]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app.address).await;
    let page = format!("{}/#/connectors/{id}", app.address);
    browser.goto(&page).await;
    browser.until_text("h1", "queued").await;
    let waiting = browser
        .find("[data-testid=stat-backlog]")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        waiting.starts_with("6 records, the oldest waiting for ") && waiting.ends_with(" s"),
        "{waiting}"
    );

    // Once stored, nothing waits.
    stream.resume_consumer(&consumer).await.expect("resuming");
    let mut shown = String::new();
    for _ in 0..50 {
        // Through the list, so that the page is drawn anew.
        browser.goto(&format!("{}/#/", app.address)).await;
        browser.until_text("h1", "Connectors").await;
        browser.goto(&page).await;
        browser.until_text("h1", "queued").await;
        shown = browser
            .find("[data-testid=stat-backlog]")
            .await
            .text()
            .await
            .unwrap();
        if shown == "none" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(shown, "none");
    browser.close().await;
}

async fn store_stream(env: &TestEnv) -> async_nats::jetstream::stream::Stream {
    let js = async_nats::jetstream::new(env.nats().await);
    js.get_stream(env.namespace.records_stream())
        .await
        .expect("the records stream")
}
