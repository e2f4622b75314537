//! Named tokens and operator tokens on the read API (issue 17).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sluice_testkit::api;

use crate::helpers::{TestApp, spawn_app};

async fn control(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> api::Answer {
    api::admin(&app.client, method, &format!("{}{path}", app.control), body).await
}

/// Whether `check` holds within a second, asked every 20 ms: services
/// follow a revocation as their watch delivers it.
async fn within_a_second<F: std::future::Future<Output = bool>>(
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn operator_and_named_read_tokens_read_until_revoked() {
    let app = spawn_app().await;
    let connector = app.integer_connector("tokens").await;
    app.wait_visible(&connector).await;
    let records = format!("/v1/connectors/{}/records", connector.id);

    let operator = control(
        &app,
        Method::POST,
        "/v1/operator/tokens",
        Some(json!({"name": "analyst"})),
    )
    .await;
    assert_eq!(operator.status, 201, "{}", operator.body);
    let operator_token = operator.body["token"].as_str().unwrap().to_owned();
    let reader = control(
        &app,
        Method::POST,
        &format!("/v1/connectors/{}/tokens", connector.id),
        Some(json!({"name": "dashboard", "scope": "read"})),
    )
    .await;
    assert_eq!(reader.status, 201, "{}", reader.body);
    let read_token = reader.body["token"].as_str().unwrap().to_owned();
    assert!(read_token.starts_with("sluice_r_"));

    assert_eq!(app.get(&records, &operator_token).await.status(), 200);
    assert_eq!(app.get(&records, &read_token).await.status(), 200);
    // Deleting records is the operator's: an operator token may, a read
    // token may not.
    let delete = |token: String| {
        let request = app
            .client
            .delete(format!("{}{records}?all=true", app.read_url()))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(delete(operator_token.clone()).await, 200);
    assert_eq!(delete(read_token.clone()).await, 403);

    let revoked = control(
        &app,
        Method::DELETE,
        &format!(
            "/v1/operator/tokens/{}",
            operator.body["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(revoked.status, 204);
    let revoked_read = control(
        &app,
        Method::DELETE,
        &format!(
            "/v1/connectors/{}/tokens/{}",
            connector.id,
            reader.body["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(revoked_read.status, 204);
    for token in [&operator_token, &read_token] {
        let (app, records) = (&app, &records);
        let refused =
            within_a_second(move || async move { app.get(records, token).await.status() == 401 })
                .await;
        assert!(refused, "a revoked token is refused");
    }
    // The connector's own read token still reads.
    assert_eq!(app.get(&records, &connector.read_token).await.status(), 200);
}
