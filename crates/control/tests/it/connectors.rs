//! Create, get and list, and the errors of malformed requests.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_runtime::token::TokenKind;
use sluice_testkit::ADMIN_TOKEN;

use crate::{id_of, spawn_app, spawn_app_with};

#[tokio::test]
async fn create_answers_the_connector_with_its_tokens_once() {
    let app = spawn_app().await;
    let answer = app
        .post_connector(json!({
            "name": "orders",
            "description": "web shop orders",
            "fields": [
                {"name": "email", "type": "string"},
                {"name": "amount", "type": "decimal", "nullable": true, "description": "in EUR"},
            ],
            "extra_fields": "ignore",
        }))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let created = answer.body;
    let id = id_of(&created);
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7);
    assert_eq!(created["name"], "orders");
    assert_eq!(created["description"], "web shop orders");
    assert_eq!(
        created["fields"],
        json!([
            {"name": "email", "type": "string", "nullable": false},
            {"name": "amount", "type": "decimal", "nullable": true, "description": "in EUR"},
        ])
    );
    assert_eq!(created["extra_fields"], "ignore");
    assert_eq!(created["retention"], Value::Null);
    assert_eq!(created["schema_version"], 1);
    assert_eq!(
        created["endpoint"],
        format!("http://sluice.test/v1/connectors/{id}/records")
    );
    assert_eq!(
        created["stats"],
        json!({"records": 0, "rejected": 0, "last_received_at": null,
            "oldest_received_at": null, "bytes": 0, "backlog": {
            "messages": 0, "records_estimate": 0, "oldest_at": null, "seconds_behind": 0.0
        }})
    );
    assert_eq!(created["created_at"], created["updated_at"]);
    let write = created["write_token"].as_str().unwrap();
    let read = created["read_token"].as_str().unwrap();
    assert!(write.starts_with("sluice_w_") && read.starts_with("sluice_r_"));

    // GET shows the same connector, without the tokens.
    let got = app.get(&id).await;
    assert_eq!(got.status, StatusCode::OK);
    let mut expected = created.clone();
    let object = expected.as_object_mut().unwrap();
    object.remove("write_token");
    object.remove("read_token");
    assert_eq!(got.body, expected);

    // Gateways see it, with the token hashes only.
    let doc = app.published(&id).await.expect("published");
    assert_eq!(doc.name, "orders");
    assert_eq!(doc.schema_version, 1);
    assert!(doc.has_token(TokenKind::Write, write));
    assert!(doc.has_token(TokenKind::Read, read));

    // The records table exists with one column per field.
    let pool = app.db().await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = $1 ORDER BY ordinal_position",
    )
    .bind(format!("records_{}", uuid.simple()))
    .fetch_all(&pool)
    .await
    .unwrap();
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("_id", "bigint"),
            ("_received_at", "timestamp with time zone"),
            ("email", "text"),
            ("amount", "numeric"),
        ]
    );
    // Only hashes are stored.
    let (stored,): (String,) = sqlx::query_as(
        "SELECT hash FROM connector_tokens WHERE connector_id = $1 AND scope = 'write'",
    )
    .bind(uuid)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_ne!(stored, write);
}

#[tokio::test]
async fn a_taken_name_is_409() {
    let app = spawn_app().await;
    app.create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let answer = app
        .post_connector(json!({"name": "orders", "fields": [{"name": "b", "type": "integer"}]}))
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.code(), "name_taken");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let list = app.admin(Method::GET, "/v1/connectors", None).await;
    assert_eq!(list.body["connectors"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_invalid_definition_lists_every_problem() {
    let app = spawn_app().await;
    let answer = app
        .post_connector(json!({
            "name": "",
            "description": "x".repeat(2001),
            "fields": [
                {"name": "1bad", "type": "string"},
                {"name": "_id", "type": "string"},
                {"name": "email", "type": "strin"},
                {"name": "Email", "type": "string"},
            ],
            "extra_fields": "sometimes",
        }))
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "invalid_schema");
    let errors: Vec<(&str, &str)> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            ("name", "invalid_connector_name"),
            ("description", "description_too_long"),
            ("fields[0].name", "invalid_field_name"),
            ("fields[1].name", "reserved_field_name"),
            ("fields[2].type", "unknown_field_type"),
            ("fields[3].name", "duplicate_field_name"),
            ("extra_fields", "invalid_extra_fields"),
        ]
    );
    assert!(answer.body["errors"][0]["message"].as_str().unwrap().len() > 5);

    let none = app
        .post_connector(json!({"name": "empty", "fields": []}))
        .await;
    assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(none.body["errors"][0]["code"], "too_few_fields");
    let list = app.admin(Method::GET, "/v1/connectors", None).await;
    assert_eq!(list.body["connectors"], json!([]));
}

#[tokio::test]
async fn malformed_requests_get_problem_json() {
    let app = spawn_app().await;
    let url = format!("{}/v1/connectors", app.address);
    let send = |content_type: &'static str, body: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let problem = |response: reqwest::Response| async move {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        (response.status(), response.json::<Value>().await.unwrap())
    };

    let (status, body) = problem(
        send("application/json", "{\"name\": \n  oops}")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "malformed_json");
    assert_eq!(
        (body["line"].as_u64(), body["column"].as_u64()),
        (Some(2), Some(3))
    );

    let (status, body) = problem(send("text/plain", "{}").await.unwrap()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "unsupported_media_type");

    let (status, body) = problem(
        send(
            "application/json",
            r#"{"name": "x", "fields": [{"name": "a", "type": "string", "nullable": "yes"}]}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid_body");
    assert_eq!(body["errors"][0]["field"], "fields[0].nullable");

    let (status, body) = problem(send("application/json", r#"{"name": "x"}"#).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid_body");
    assert!(
        body["detail"].as_str().unwrap().contains("fields"),
        "{body}"
    );

    let (status, body) = problem(
        send(
            "application/json",
            r#"{"name": "x", "fields": [], "colour": 1}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["detail"].as_str().unwrap().contains("colour"));

    let (status, body) = problem(
        app.client
            .get(format!("{}/v1/nothing-here", app.address))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");

    let (status, body) = problem(
        app.client
            .put(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn get_of_an_unknown_or_malformed_id_is_404() {
    let app = spawn_app().await;
    for id in [uuid::Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let answer = app.get(&id).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.code(), "not_found");
    }
}

#[tokio::test]
async fn list_pages_oldest_first_with_a_cursor() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = app
            .create(&format!("c{i}"), json!([{"name": "a", "type": "string"}]))
            .await;
        ids.push(id_of(&created));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/connectors?limit=2".to_owned(),
            Some(c) => format!("/v1/connectors?limit=2&cursor={c}"),
        };
        let page = app.admin(Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        for c in page.body["connectors"].as_array().unwrap() {
            assert!(c.get("write_token").is_none());
            seen.push(id_of(c));
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let all = app.admin(Method::GET, "/v1/connectors", None).await;
    assert_eq!(all.body["connectors"].as_array().unwrap().len(), 5);
    assert_eq!(all.body["next_cursor"], Value::Null);

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("cursor=garbage", "invalid_cursor"),
    ] {
        let answer = app
            .admin(Method::GET, &format!("/v1/connectors?{query}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.code(), code, "{query}");
    }
    let max = app
        .admin(Method::GET, "/v1/connectors?limit=1000", None)
        .await;
    assert_eq!(max.status, StatusCode::OK);
}

#[tokio::test]
async fn stats_come_from_what_the_read_api_keeps() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create("counted", json!([{"name": "a", "type": "string"}]))
            .await,
    );
    let pool = app.db().await;
    sqlx::query(
        "UPDATE connector_stats SET records = 12, rejected = 3, \
         last_received_at = '2026-11-29T13:00:00Z' WHERE connector_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let got = app.get(&id).await.body;
    assert_eq!(
        got["stats"],
        json!({"records": 12, "rejected": 3, "last_received_at": "2026-11-29T13:00:00Z",
            "oldest_received_at": null, "bytes": 0,
            "backlog": {"messages": 0, "records_estimate": 0, "oldest_at": null, "seconds_behind": 0.0}})
    );
    let listed = app.admin(Method::GET, "/v1/connectors", None).await.body;
    assert_eq!(listed["connectors"][0]["stats"]["records"], 12);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(|settings| settings.max_body_bytes = 1024).await;
    let answer = app
        .post_connector(json!({
            "name": "big",
            "description": "x".repeat(2000),
            "fields": [{"name": "a", "type": "string"}],
        }))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "body_too_large");
}
