//! SPEC 3 on every control-plane route: the operator only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_runtime::token::TokenKind;

use crate::{connector_routes, id_of, spawn_app, spawn_app_with};

/// The collection's routes and every route on connector `id`.
fn routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    let fields = json!([{"name": "a", "type": "string"}]);
    let mut routes = vec![
        (
            Method::POST,
            "/v1/connectors".into(),
            Some(json!({"name": "new", "fields": fields})),
        ),
        (Method::GET, "/v1/connectors".into(), None),
        (
            Method::POST,
            "/v1/operator/tokens".into(),
            Some(json!({"name": "ops"})),
        ),
        (Method::GET, "/v1/operator/tokens".into(), None),
        (
            Method::DELETE,
            format!("/v1/operator/tokens/{}", uuid::Uuid::now_v7()),
            None,
        ),
    ];
    routes.extend(connector_routes(id));
    routes
}

#[tokio::test]
async fn every_route_needs_the_operator_token() {
    let app = spawn_app().await;
    let connector = app
        .create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = id_of(&connector);
    let write = connector["write_token"].as_str().unwrap();
    let read = connector["read_token"].as_str().unwrap();
    let unknown_id = uuid::Uuid::now_v7().to_string();

    for target in [id.as_str(), unknown_id.as_str()] {
        for (method, path, body) in routes(target) {
            for token in [None, Some("sluice_w_nope"), Some("admin")] {
                let answer = app.call(method.clone(), &path, token, body.clone()).await;
                assert_eq!(
                    answer.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {token:?}"
                );
                assert_eq!(answer.headers["www-authenticate"], "Bearer");
                assert_eq!(answer.code(), "unauthorized");
                assert_eq!(answer.headers["content-type"], "application/problem+json");
            }
            // A connector's own tokens are real but grant nothing here,
            // whether or not the connector in the path exists.
            for token in [write, read] {
                let answer = app
                    .call(method.clone(), &path, Some(token), body.clone())
                    .await;
                assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
                assert_eq!(answer.code(), "forbidden");
                assert!(!answer.body.to_string().contains(token));
            }
        }
    }

    // Nothing was changed by any of it.
    let got = app.get(&id).await;
    assert_eq!(got.body["name"], "orders");
    let list = app.admin(Method::GET, "/v1/connectors", None).await;
    assert_eq!(list.body["connectors"].as_array().unwrap().len(), 1);
    let doc = app.published(&id).await.unwrap();
    assert!(doc.has_token(TokenKind::Write, write));
    assert!(doc.has_token(TokenKind::Read, read));
}

#[tokio::test]
async fn a_malformed_authorization_header_is_401() {
    let app = spawn_app().await;
    for value in [
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer ",
        "sluice-test-admin-token",
    ] {
        let response = app
            .client
            .get(format!("{}/v1/connectors", app.address))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
}

#[tokio::test]
async fn authentication_comes_before_reading_the_body() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/v1/connectors", app.address))
        .header("content-type", "text/plain")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// Tokens of a connector token's form that no connector has.
fn unknown_tokens() -> impl Iterator<Item = String> {
    (0..).map(|n: u32| format!("sluice_w_{n:064x}"))
}

#[tokio::test]
async fn a_burst_of_wrong_tokens_from_one_address_ends_in_429_but_valid_tokens_still_work() {
    let app = spawn_app_with(|settings| settings.auth_throttle.failures = 5).await;
    let connector = app
        .create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let write = connector["write_token"].as_str().unwrap();

    // Missing, malformed and unknown tokens all count as failures.
    let mut unknown = unknown_tokens();
    let guesses = [
        None,
        Some("admin".to_owned()),
        unknown.next(),
        unknown.next(),
        unknown.next(),
    ];
    for token in &guesses {
        let answer = app
            .call(Method::GET, "/v1/connectors", token.as_deref(), None)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    for token in [None, unknown.next()] {
        let answer = app
            .call(Method::GET, "/v1/connectors", token.as_deref(), None)
            .await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{token:?}");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        assert_eq!(answer.code(), "too_many_failed_attempts");
        assert_eq!(answer.body["status"], 429);
        assert_eq!(
            answer.body["type"],
            "urn:sluice:problem:too_many_failed_attempts"
        );
        // Five failures a minute: one is forgiven every 12 s.
        let retry_after: u64 = answer.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=12).contains(&retry_after), "{retry_after}");
    }

    // The operator behind the same address is not locked out, and a
    // connector's token is still told apart from a guess.
    let list = app.admin(Method::GET, "/v1/connectors", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["connectors"].as_array().unwrap().len(), 1);
    let forbidden = app
        .call(Method::GET, "/v1/connectors", Some(write), None)
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    // And guessing is still refused.
    let answer = app
        .call(Method::GET, "/v1/connectors", Some("admin"), None)
        .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn tokens_are_told_apart_without_the_database() {
    let app = spawn_app().await;
    let connector = app
        .create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let write = connector["write_token"].as_str().unwrap().to_owned();
    let database = app.env.database_url.rsplit('/').next().unwrap().to_owned();

    // Cut the control plane off from its database: no new connection, and
    // the ones its pool holds are closed.
    let admin = sqlx::PgPool::connect(&app.env.database_url.replace(&database, "postgres"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();
    assert!(sqlx::PgPool::connect(&app.env.database_url).await.is_err());

    for token in unknown_tokens().take(20) {
        let answer = app
            .call(Method::GET, "/v1/connectors", Some(&token), None)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.code(), "unauthorized");
    }
    let answer = app
        .call(Method::GET, "/v1/connectors", Some(&write), None)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let list = app.admin(Method::GET, "/v1/connectors", None).await;
    assert_eq!(list.status, StatusCode::OK);
}
