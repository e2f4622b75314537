//! Definitions that PostgreSQL cannot store, and ids that do not decode:
//! each is a 4xx problem+json naming the problem, never a 500 from the
//! database, and the control plane goes on serving.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Answer, TestApp, spawn_app};

/// The answer is `status` problem+json with `code`.
fn assert_problem(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(
        answer.headers["content-type"], "application/problem+json",
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), code, "{}", answer.body);
    assert_eq!(answer.body["status"], status.as_u16(), "{}", answer.body);
    assert!(answer.body["type"].is_string(), "{}", answer.body);
    assert!(answer.body["title"].is_string(), "{}", answer.body);
    assert!(answer.body["detail"].is_string(), "{}", answer.body);
}

/// A 422 `invalid_schema` whose only problem is `code` at `field`.
fn assert_invalid(answer: &Answer, field: &str, code: &str) -> String {
    assert_problem(answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema");
    let errors = answer.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", answer.body);
    assert_eq!(errors[0]["field"], field, "{}", answer.body);
    assert_eq!(errors[0]["code"], code, "{}", answer.body);
    errors[0]["message"].as_str().unwrap().to_owned()
}

/// The connector still reads as `expected` and a new one can be created.
async fn assert_still_served(app: &TestApp, id: &str, expected: &Value) {
    let got = app.get(id).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["description"], expected["description"]);
    assert_eq!(got.body["fields"], expected["fields"]);
    assert_eq!(got.body["schema_version"], expected["schema_version"]);
    let name = format!("fine{}", uuid::Uuid::now_v7().simple());
    app.create(&name, json!([{"name": "a", "type": "string"}]))
        .await;
}

#[tokio::test]
async fn postgresql_system_column_names_are_reserved() {
    let app = spawn_app().await;
    let existing = app
        .create("existing", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = existing["id"].as_str().unwrap();
    for name in [
        "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "XMin", "TableOID",
    ] {
        let fields = json!([{"name": "a", "type": "string"}, {"name": name, "type": "integer"}]);
        let answer = app
            .post_connector(json!({"name": format!("with_{name}"), "fields": fields}))
            .await;
        let message = assert_invalid(&answer, "fields[1].name", "reserved_field_name");
        assert!(message.contains("system column"), "{message}");

        let answer = app.patch(id, json!({"fields": fields})).await;
        assert_invalid(&answer, "fields[1].name", "reserved_field_name");
        // Renaming onto one is refused the same way.
        let renamed = json!([{"name": name, "previous_name": "a", "type": "string"}]);
        let answer = app.patch(id, json!({"fields": renamed})).await;
        assert_invalid(&answer, "fields[0].name", "reserved_field_name");
    }
    assert_still_served(&app, id, &existing).await;
}

#[tokio::test]
async fn a_nul_in_a_connector_description_is_a_422() {
    let app = spawn_app().await;
    let fields = json!([{"name": "a", "type": "string"}]);
    let answer = app
        .post_connector(json!({"name": "nul", "description": "a\u{0}b", "fields": fields}))
        .await;
    let message = assert_invalid(&answer, "description", "invalid_description");
    assert!(message.contains("NUL"), "{message}");

    let existing = app.create("existing", fields).await;
    let id = existing["id"].as_str().unwrap();
    let answer = app.patch(id, json!({"description": "\u{0}"})).await;
    assert_invalid(&answer, "description", "invalid_description");
    assert_still_served(&app, id, &existing).await;
}

#[tokio::test]
async fn a_nul_in_a_field_description_is_a_422() {
    let app = spawn_app().await;
    let fields = |description: &str| {
        json!([
            {"name": "a", "type": "string"},
            {"name": "b", "type": "string", "description": description},
        ])
    };
    let answer = app
        .post_connector(json!({"name": "nul", "fields": fields("x\u{0}")}))
        .await;
    assert_invalid(&answer, "fields[1].description", "invalid_description");

    let existing = app.create("existing", fields("fine")).await;
    let id = existing["id"].as_str().unwrap();
    let answer = app.patch(id, json!({"fields": fields("\u{0}")})).await;
    assert_invalid(&answer, "fields[1].description", "invalid_description");
    assert_still_served(&app, id, &existing).await;
}

#[tokio::test]
async fn a_nul_in_a_connector_name_is_a_422_wherever_it_is_given() {
    let app = spawn_app().await;
    let fields = json!([{"name": "a", "type": "string"}]);
    let answer = app
        .post_connector(json!({"name": "a\u{0}b", "fields": fields}))
        .await;
    assert_invalid(&answer, "name", "invalid_connector_name");

    let existing = app.create("existing", fields).await;
    let id = existing["id"].as_str().unwrap();
    let answer = app.patch(id, json!({"name": "\u{0}"})).await;
    assert_invalid(&answer, "name", "invalid_connector_name");
    let answer = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "copy\u{0}"})),
        )
        .await;
    assert_invalid(&answer, "name", "invalid_connector_name");
    assert_still_served(&app, id, &existing).await;
}

#[tokio::test]
async fn a_connector_id_that_is_not_utf8_names_no_connector() {
    let app = spawn_app().await;
    let existing = app
        .create("existing", json!([{"name": "a", "type": "string"}]))
        .await;
    for (method, path, body) in [
        (Method::GET, "/v1/connectors/%FF", None),
        (
            Method::PATCH,
            "/v1/connectors/%FF",
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/v1/connectors/%FF", None),
        (
            Method::POST,
            "/v1/connectors/%FF/duplicate",
            Some(json!({"name": "x"})),
        ),
        (Method::POST, "/v1/connectors/%FF/tokens/read", None),
        (Method::GET, "/v1/connectors/%FF/schema", None),
    ] {
        let answer = app.admin(method.clone(), path, body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_problem(&answer, StatusCode::NOT_FOUND, answer.code());
        assert!(!answer.code().is_empty(), "{method} {path}");
    }
    // Query values that do not decode are refused too.
    let answer = app
        .admin(Method::GET, "/v1/connectors?cursor=%FF", None)
        .await;
    assert_problem(&answer, StatusCode::BAD_REQUEST, "invalid_cursor");
    assert_still_served(&app, existing["id"].as_str().unwrap(), &existing).await;
}
