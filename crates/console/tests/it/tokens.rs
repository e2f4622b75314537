//! The connector page manages named tokens (issue 17): create one with a
//! name, scope and expiry and see its secret once, list them with their
//! last use, revoke one, rotate with a grace period.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::browser::Browser;
use crate::{TestApp, spawn_app};

async fn post_status(app: &TestApp, id: &str, token: &str) -> StatusCode {
    app.client
        .post(format!("{}/v1/connectors/{id}/records", app.address))
        .bearer_auth(token)
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap()
        .status()
}

fn rows_script(count: usize) -> String {
    format!("return document.querySelectorAll('[data-testid=token-row]').length === {count};")
}

#[tokio::test]
async fn the_connector_page_creates_lists_revokes_and_rotates_tokens() {
    let app = spawn_app().await;
    let (status, created) = app
        .operator(
            Method::POST,
            "/v1/connectors",
            Some(json!({"name": "tokened", "fields": [{"name": "n", "type": "integer"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let old_write = created["write_token"].as_str().unwrap().to_owned();

    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app.address).await;
    browser
        .goto(&format!("{}/#/connectors/{id}", app.address))
        .await;
    browser.until_text("h1", "tokened").await;
    // The two made with the connector.
    browser.until("two tokens listed", &rows_script(2)).await;
    let listed = browser
        .until_text("[data-testid=tokens-table]", "rotated")
        .await;
    assert!(!listed.contains("sluice_"), "{listed}");

    // A named write token, with an expiry: its secret shown once.
    browser
        .type_into("[data-testid=token-name]", "backend")
        .await;
    browser
        .find("[data-testid=token-scope]")
        .await
        .select_by_value("write")
        .await
        .unwrap();
    browser.eval(
        "const el = document.querySelector('[data-testid=token-expires]'); el.value = arguments[0];",
        vec![json!("2099-01-01T12:00")],
    )
    .await;
    browser.press("[data-testid=create-token]").await;
    let secret = browser.find("[data-testid=new-token]").await;
    let secret = secret.prop("value").await.unwrap().unwrap_or_default();
    assert!(secret.starts_with("sluice_w_"), "{secret}");
    browser.until("three tokens listed", &rows_script(3)).await;
    let table = browser
        .until_text("[data-testid=tokens-table]", "backend")
        .await;
    assert!(table.contains("2099"), "{table}");
    assert!(!table.contains(&secret));
    assert_eq!(post_status(&app, &id, &secret).await, StatusCode::ACCEPTED);

    // A name the API refuses is said next to the form.
    browser.type_into("[data-testid=token-name]", " ").await;
    browser.press("[data-testid=create-token]").await;
    browser
        .until_text("[data-testid=token-error]", "name")
        .await;

    // Revoke it: confirmed, gone from the list, refused by the gateway.
    browser
        .press("[data-testid=token-row]:nth-child(3) [data-testid=revoke-token]")
        .await;
    browser.until_text("dialog[open]", "backend").await;
    browser.press("dialog[open] [data-confirm]").await;
    browser.until("two tokens listed", &rows_script(2)).await;
    // The gateway follows the revocation as its watch delivers it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while post_status(&app, &id, &secret).await != StatusCode::UNAUTHORIZED {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked token still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Rotate the write token with a grace period: both work for now.
    browser
        .find("[data-testid=rotate-grace]")
        .await
        .select_by_value("1h")
        .await
        .unwrap();
    browser.press("[data-testid=rotate-write]").await;
    browser
        .until_text("dialog[open]", "keeps working for 1 hour")
        .await;
    browser.press("dialog[open] [data-confirm]").await;
    let rotated = browser.find("[data-testid=new-write-token]").await;
    let new_write = rotated.prop("value").await.unwrap().unwrap_or_default();
    assert!(new_write.starts_with("sluice_w_") && new_write != old_write);
    assert_eq!(
        post_status(&app, &id, &new_write).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post_status(&app, &id, &old_write).await,
        StatusCode::ACCEPTED
    );
    // The old one is listed with its end, the new one as the rotated one.
    browser.until("three tokens listed", &rows_script(3)).await;
    browser.close().await;
}
