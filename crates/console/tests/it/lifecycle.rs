//! The connector page replays and clears rejected records (issue 18).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::browser::Browser;
use crate::spawn_app;

#[tokio::test]
async fn the_connector_page_replays_and_clears_rejected_records() {
    let app = spawn_app().await;
    let (status, created) = app
        .operator(
            Method::POST,
            "/v1/connectors",
            Some(json!({"name": "fixable", "fields": [{"name": "n", "type": "integer"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let posted = app
        .client
        .post(format!(
            "{}/v1/connectors/{id}/records?mode=partial&wait=true",
            app.address
        ))
        .bearer_auth(created["write_token"].as_str().unwrap())
        .json(&json!([{"n": 1}, {"n": 2, "color": "red"}, {"n": "three"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);

    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app.address).await;
    browser
        .goto(&format!("{}/#/connectors/{id}", app.address))
        .await;
    browser.until_text("h1", "fixable").await;
    browser
        .until_text("[data-testid=rejected-preview]", "three")
        .await;

    // Before the schema is fixed, a replay stores nothing.
    browser.press("[data-testid=replay-rejected]").await;
    browser
        .until_text("[data-testid=rejected-result]", "0 records replayed")
        .await;

    // `color` becomes a field: the record that had it is stored now.
    let (status, body) = app
        .operator(
            Method::PATCH,
            &format!("/v1/connectors/{id}"),
            Some(json!({"fields": [
                {"name": "n", "type": "integer"},
                {"name": "color", "type": "string", "nullable": true}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    browser.press("[data-testid=replay-rejected]").await;
    let result = browser
        .until_text("[data-testid=rejected-result]", "1 record replayed")
        .await;
    assert!(result.contains("1 stays rejected"), "{result}");
    browser.until_text("[data-testid=stat-records]", "2").await;
    browser.until_text("[data-testid=stat-rejected]", "1").await;
    browser
        .until_text("[data-testid=refresh-records]", "Refresh")
        .await;
    browser.press("[data-testid=refresh-records]").await;
    browser
        .until_text("[data-testid=records-preview]", "red")
        .await;

    // Clearing asks first; cancelling keeps them.
    browser.press("[data-testid=clear-rejected]").await;
    browser
        .until_text("dialog[open]", "cannot be recovered")
        .await;
    browser
        .press("dialog[open] button:not([data-confirm])")
        .await;
    let (_, connector) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(connector["stats"]["rejected"], 1);
    browser.press("[data-testid=clear-rejected]").await;
    browser.press("dialog[open] [data-confirm]").await;
    browser
        .until_text("[data-testid=rejected-result]", "1 rejected record deleted")
        .await;
    browser.until_text("[data-testid=stat-rejected]", "0").await;
    browser
        .until_text("[data-testid=rejected-preview]", "No rejected records")
        .await;
    let (_, connector) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(
        (
            &connector["stats"]["records"],
            &connector["stats"]["rejected"]
        ),
        (&json!(2), &json!(0))
    );
    browser.close().await;
}
