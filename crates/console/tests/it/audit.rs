//! The connector page sets rate limits and shows the connector's history;
//! the audit log has a page of its own (issue 17).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::browser::Browser;
use crate::spawn_app;

#[tokio::test]
async fn limits_are_set_on_the_connector_page_and_every_change_is_in_the_history() {
    let app = spawn_app().await;
    let (status, created) = app
        .operator(
            Method::POST,
            "/v1/connectors",
            Some(json!({"name": "audited", "fields": [{"name": "n", "type": "integer"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app.address).await;
    browser
        .goto(&format!("{}/#/connectors/{id}", app.address))
        .await;
    browser.until_text("h1", "audited").await;
    browser
        .until_text("[data-testid=history]", "connector.created")
        .await;

    // Nonsense is refused next to the field, and nothing changes.
    let requests = "[data-testid=limit-requests_per_second]";
    browser.type_into(requests, "0").await;
    browser.press("[data-testid=save-limits]").await;
    browser
        .until_text("#main", "requests_per_second must be a whole number")
        .await;
    let (_, connector) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(connector["limits"]["requests_per_second"], json!(null));

    browser
        .eval(
            "document.querySelector(arguments[0]).value = '';",
            vec![json!(requests)],
        )
        .await;
    browser.type_into(requests, "25").await;
    browser.press("[data-testid=save-limits]").await;
    browser
        .until_text("[data-testid=saved]", "Rate limits saved")
        .await;
    let (_, connector) = app
        .operator(Method::GET, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(
        connector["limits"],
        json!({"requests_per_second": 25, "records_per_second": null})
    );
    assert_eq!(browser.value(requests).await, "25");
    let history = browser
        .until_text("[data-testid=history]", "connector.limits_changed")
        .await;
    assert!(history.contains("SLUICE_ADMIN_TOKEN"), "{history}");
    assert!(history.contains("127.0.0.1"), "{history}");
    assert!(history.contains("requests_per_second"), "{history}");
    // Newest first.
    let actions = browser
        .eval(
            "return [...document.querySelectorAll('[data-testid=history] [data-testid=action]')].map((td) => td.innerText);",
            vec![],
        )
        .await;
    assert_eq!(
        actions,
        json!(["connector.limits_changed", "connector.created"])
    );

    // The global page lists every connector's changes, linked.
    let (status, _) = app
        .operator(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/read"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    browser.goto(&format!("{}/#/audit", app.address)).await;
    browser.until_text("h1", "Audit log").await;
    let log = browser
        .until_text("[data-testid=audit-log]", "token.rotated")
        .await;
    assert!(log.contains("connector.created"), "{log}");
    let link = browser
        .find(&format!(
            "[data-testid=audit-log] a[href='#/connectors/{id}']"
        ))
        .await;
    assert!(link.text().await.unwrap().contains(&id));
    browser.close().await;
}
