//! SPEC 3 on the read routes.

use serde_json::{Value, json};
use sluice_testkit::ADMIN_TOKEN;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_control_only};

#[tokio::test]
async fn tokens_grant_exactly_what_spec_3_says() {
    let app = spawn_app().await;
    let fields = json!([{"name": "x", "type": "string"}]);
    let mine = app.create_connector("mine", fields.clone()).await;
    let other = app.create_connector("other", fields).await;
    app.wait_visible(&mine).await;
    app.wait_visible(&other).await;

    for route in ["records", "rejected"] {
        let url = format!("/v1/connectors/{}/{route}", mine.id);
        // The operator and the connector's own read token may read.
        assert_eq!(app.get(&url, ADMIN_TOKEN).await.status(), 200, "{route}");
        assert_eq!(app.get(&url, &mine.read_token).await.status(), 200);

        // No token, or an unknown one: 401 with the challenge.
        let response = app
            .client
            .get(format!("{}{url}", app.read_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let response = app.get(&url, "sluice_r_unknown").await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "unauthorized");
        assert!(!problem.to_string().contains("sluice_r_unknown"));

        // A write token reads nothing, another connector's token neither.
        assert_eq!(app.get(&url, &mine.write_token).await.status(), 403);
        assert_eq!(app.get(&url, &other.read_token).await.status(), 403);
    }

    // Whether or not the connector exists, a connector token used elsewhere
    // is 403; the operator learns that it does not exist.
    let nowhere = format!("/v1/connectors/{}/records", Uuid::now_v7());
    assert_eq!(app.get(&nowhere, &mine.read_token).await.status(), 403);
    assert_eq!(app.get(&nowhere, ADMIN_TOKEN).await.status(), 404);
    assert_eq!(
        app.get("/v1/connectors/not-a-uuid/records", ADMIN_TOKEN)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get("/v1/connectors/not-a-uuid/records", &mine.read_token)
            .await
            .status(),
        403
    );

    // Deleted: 404 for the operator; its tokens are gone with it.
    app.delete_connector(mine.id).await;
    let url = format!("/v1/connectors/{}/records", mine.id);
    let mut status = 0;
    for _ in 0..200 {
        status = app.get(&url, ADMIN_TOKEN).await.status().as_u16();
        if status == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status, 404);
    assert_eq!(app.get(&url, &mine.read_token).await.status(), 401);
}

#[tokio::test]
async fn a_burst_of_wrong_tokens_ends_in_429_while_valid_tokens_still_read() {
    let app = spawn_control_only().await;
    let connector = app
        .create_connector("mine", json!([{"name": "x", "type": "string"}]))
        .await;
    // A reader allowing three failures a minute; it loads the connector
    // from the bucket as it starts.
    let mut settings = app.env.settings();
    settings.auth_throttle.failures = 3;
    let shutdown = CancellationToken::new();
    let reader = sluice_read::Application::build(settings, shutdown.clone())
        .await
        .expect("the read API starts");
    let base = format!("http://{}", reader.local_addr());
    tokio::spawn(reader.run());
    let _stop = shutdown.drop_guard();

    let url = format!("/v1/connectors/{}/records", connector.id);
    let unknown = |n: u32| format!("sluice_r_{n:064x}");
    let missing = app.client.get(format!("{base}{url}")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    for token in ["nope".to_owned(), unknown(1)] {
        assert_eq!(app.get_from(&base, &url, &token).await.status(), 401);
    }

    for token in [unknown(2), unknown(3)] {
        let response = app.get_from(&base, &url, &token).await;
        assert_eq!(response.status(), 429);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // Three failures a minute: one is forgiven every 20 s.
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "too_many_failed_attempts");
        assert_eq!(problem["status"], 429);
        assert!(!problem.to_string().contains(&token));
    }

    // Valid tokens from the same address are not locked out; a write token
    // is still told it reads nothing.
    for token in [connector.read_token.as_str(), ADMIN_TOKEN] {
        assert_eq!(app.get_from(&base, &url, token).await.status(), 200);
    }
    let rejected = format!("/v1/connectors/{}/rejected", connector.id);
    assert_eq!(
        app.get_from(&base, &rejected, &connector.read_token)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get_from(&base, &url, &connector.write_token)
            .await
            .status(),
        403
    );
}
