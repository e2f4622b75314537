//! SPEC 3 on every control-plane route: the operator only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{id_of, spawn_app};

fn routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    let fields = json!([{"name": "a", "type": "string"}]);
    vec![
        (
            Method::POST,
            "/v1/connectors".into(),
            Some(json!({"name": "new", "fields": fields})),
        ),
        (Method::GET, "/v1/connectors".into(), None),
        (Method::GET, format!("/v1/connectors/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/connectors/{id}"),
            Some(json!({"name": "renamed"})),
        ),
        (Method::DELETE, format!("/v1/connectors/{id}"), None),
        (
            Method::POST,
            format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "copy"})),
        ),
        (
            Method::POST,
            format!("/v1/connectors/{id}/tokens/write"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/connectors/{id}/tokens/read"),
            None,
        ),
        (Method::GET, format!("/v1/connectors/{id}/schema"), None),
    ]
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
    assert!(doc.write_token_hash.matches(write));
    assert!(doc.read_token_hash.matches(read));
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
