//! Who may post (SPEC 3): the connector's write token or the operator.

use reqwest::{Method, StatusCode};
use sluice_testkit::ADMIN_TOKEN;
use uuid::Uuid;

use crate::{Answer, TestApp, spawn_app, spawn_app_with};

const BODY: &str = r#"{"n": 1}"#;

#[tokio::test]
async fn the_write_token_and_the_operator_may_post() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    for token in [connector.write_token.as_str(), ADMIN_TOKEN] {
        let answer = TestApp::send(app.post_to(
            &app.ingest,
            connector.id,
            Some(token),
            Some("application/json"),
            BODY,
        ))
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    assert_eq!(app.published().await.len(), 2);
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_401_with_a_challenge() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    for token in [None, Some("sluice_w_0000"), Some("")] {
        let answer = TestApp::send(app.post_to(
            &app.ingest,
            connector.id,
            token,
            Some("application/json"),
            BODY,
        ))
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
        assert_eq!(answer.code(), "unauthorized");
    }
    // Not even the body's format is looked at before the token.
    let answer = TestApp::send(app.post_to(
        &app.ingest,
        connector.id,
        Some("nope"),
        Some("text/plain"),
        "x",
    ))
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn another_connectors_token_or_a_read_token_is_403() {
    let app = spawn_app().await;
    let mine = app.simple_connector().await;
    let theirs = app
        .create_connector(
            "theirs",
            serde_json::json!([{"name": "n", "type": "integer"}]),
        )
        .await;
    let cases = [
        (mine.id, theirs.write_token.as_str()),
        (mine.id, mine.read_token.as_str()),
        // Whether or not the connector exists.
        (Uuid::now_v7(), mine.write_token.as_str()),
    ];
    for (id, token) in cases {
        let answer = TestApp::send(app.post_to(
            &app.ingest,
            id,
            Some(token),
            Some("application/json"),
            BODY,
        ))
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
        assert_eq!(answer.code(), "forbidden");
        assert!(
            !answer.body.to_string().contains(token),
            "never echo a token"
        );
    }
    assert!(app.published().await.is_empty());
}

#[tokio::test]
async fn an_unknown_connector_is_404_for_the_operator() {
    let app = spawn_app().await;
    for id in [Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let answer = TestApp::send(
            app.client
                .post(format!("{}/v1/connectors/{id}/records", app.ingest))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(BODY),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(answer.code(), "not_found");
    }
}

#[tokio::test]
async fn a_deleted_connector_is_404_and_its_token_401() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let answer = TestApp::send(app.post(&connector, "application/json", BODY)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);

    let deleted = app
        .admin(
            Method::DELETE,
            &format!("/v1/connectors/{}", connector.id),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    // The control plane publishes before it answers; the gateway follows
    // within a second (SPEC 5).
    let gone = crate::eventually(std::time::Duration::from_secs(1), || async {
        let answer = TestApp::send(app.post_to(
            &app.ingest,
            connector.id,
            Some(ADMIN_TOKEN),
            Some("application/json"),
            BODY,
        ))
        .await;
        answer.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(gone, "the deletion reached the gateway within a second");
    let answer = TestApp::send(app.post(&connector, "application/json", BODY)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

/// A token of a write token's form that no connector has.
fn unknown_token(n: u32) -> String {
    format!("sluice_w_{n:064x}")
}

fn assert_throttled(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{answer:?}");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(answer.code(), "too_many_failed_attempts");
    assert_eq!(answer.body["status"], 429);
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Four failures a minute: one is forgiven every 15 s.
    assert!((1..=15).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn a_burst_of_wrong_tokens_ends_in_429_while_valid_tokens_still_post() {
    let app = spawn_app_with(|settings| settings.auth_throttle.failures = 4).await;
    let connector = app.simple_connector().await;
    let post = |token: Option<&str>| {
        app.post_to(
            &app.ingest,
            connector.id,
            token,
            Some("application/json"),
            BODY,
        )
    };
    // Missing, malformed and unknown tokens all count.
    let guesses = [None, Some("nope".to_owned()), Some(unknown_token(1))];
    for token in &guesses {
        let answer = TestApp::send(post(token.as_deref())).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    let elsewhere = TestApp::send(app.post_to(
        &app.ingest,
        Uuid::now_v7(),
        Some(&unknown_token(2)),
        Some("application/json"),
        BODY,
    ))
    .await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);

    assert_throttled(&TestApp::send(post(Some(&unknown_token(3)))).await);
    assert_throttled(&TestApp::send(post(None)).await);
    // The client's own X-Forwarded-For changes nothing: no proxy is trusted.
    let spoofed = post(Some(&unknown_token(4))).header("x-forwarded-for", "198.51.100.1");
    assert_throttled(&TestApp::send(spoofed).await);

    // Valid tokens from the same address are not locked out, and a read
    // token is still told it writes nothing.
    for token in [connector.write_token.as_str(), ADMIN_TOKEN] {
        let answer = TestApp::send(post(Some(token))).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    let answer = TestApp::send(post(Some(&connector.read_token))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(app.published().await.len(), 2);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_is_throttled_alone() {
    let app = spawn_app_with(|settings| {
        settings.auth_throttle.failures = 2;
        settings.auth_throttle.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let connector = app.simple_connector().await;
    let post = |client: &str, token: &str| {
        app.post_to(
            &app.ingest,
            connector.id,
            Some(token),
            Some("application/json"),
            BODY,
        )
        .header("x-forwarded-for", client)
    };
    let guesser = "203.0.113.1";
    for n in 0..2 {
        let answer = TestApp::send(post(guesser, &unknown_token(n))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let answer = TestApp::send(post(guesser, &unknown_token(2))).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not concerned.
    let answer = TestApp::send(post("203.0.113.2", &unknown_token(3))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = TestApp::send(post("203.0.113.2", &connector.write_token)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
}
