//! Per-token rate limits on GET (issue 17): each read-API replica takes its
//! share of a token's requests per second; past it, 429 with Retry-After
//! and the RateLimit headers. Rates are measured, never timed (see the
//! gateway's tests of the same).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sluice_read::StoreHooks;
use sluice_testkit::ADMIN_TOKEN;

use crate::helpers::{Connector, TestApp, spawn_app};

const WINDOW: Duration = Duration::from_secs(4);

async fn get(app: &TestApp, base: &str, connector: &Connector, token: &str) -> reqwest::Response {
    let path = format!("/v1/connectors/{}/records?limit=1", connector.id);
    app.get_from(base, &path, token).await
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}: {response:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_read_token_gets_its_rate_across_two_readers_and_no_more() {
    let mut app = spawn_app().await;
    let second = app.start_reader(StoreHooks::default()).await;
    let readers = [
        app.reader_url(0).to_owned(),
        app.reader_url(second).to_owned(),
    ];
    let fields = json!([{"name": "n", "type": "integer"}]);
    let free = app.create_connector("free", fields.clone()).await;
    let limited = app.create_connector("limited", fields).await;
    app.wait_visible(&limited).await;
    app.patch_connector(limited.id, json!({"limits": {"requests_per_second": 6}}))
        .await;

    // Until each reader has the limit and has spent its burst.
    for reader in &readers {
        let mut refused = None;
        for _ in 0..10_000 {
            let response = get(&app, reader, &limited, &limited.read_token).await;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                refused = Some(response);
                break;
            }
            assert_eq!(response.status(), StatusCode::OK);
        }
        let refused = refused.expect("the reader refuses at last");
        assert_eq!(header(&refused, "ratelimit-policy"), "\"requests\";q=6;w=1");
        let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
        assert!(retry_after >= 1);
        assert_eq!(
            header(&refused, "ratelimit"),
            format!("\"requests\";r=0;t={retry_after}")
        );
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "rate_limited");
    }

    let started = Instant::now();
    let mut accepted = 0u32;
    let mut turn = 0usize;
    while started.elapsed() < WINDOW {
        let reader = &readers[turn % 2];
        turn += 1;
        let response = get(&app, reader, &limited, &limited.read_token).await;
        match response.status() {
            StatusCode::OK => {
                accepted += 1;
                assert!(header(&response, "ratelimit").starts_with("\"requests\";r="));
                assert!(response.headers().contains_key("sluice-next-cursor"));
            }
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
        if turn.is_multiple_of(10) {
            let response = get(&app, reader, &free, &free.read_token).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert!(!response.headers().contains_key("ratelimit-policy"));
            // Nor is the operator ever limited.
            let response = get(&app, reader, &limited, ADMIN_TOKEN).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    let expected = 6.0 * started.elapsed().as_secs_f64();
    let accepted = f64::from(accepted);
    assert!(
        accepted >= expected * 0.6 && accepted <= expected * 1.25 + 2.0,
        "{accepted} pages served where about {expected:.0} were due"
    );
}
