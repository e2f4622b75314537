//! Delete, duplicate, token rotation, JSON Schema export, hostile text, the
//! bucket's reconciliation, and the operational routes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_control::Application;
use sluice_runtime::token::TokenKind;
use tokio_util::sync::CancellationToken;

use crate::{connector_routes, id_of, spawn_app};

#[tokio::test]
async fn delete_removes_the_connector_its_table_and_its_key() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create("gone", json!([{"name": "a", "type": "string"}]))
            .await,
    );
    let other = id_of(
        &app.create("stays", json!([{"name": "a", "type": "string"}]))
            .await,
    );
    app.insert_record(&id, &[("a", "'x'")]).await;
    assert!(app.published(&id).await.is_some());

    let deleted = app
        .admin(Method::DELETE, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);

    assert!(app.columns(&id).await.is_empty(), "records table dropped");
    assert!(app.published(&id).await.is_none(), "key deleted");
    for (method, path, body) in connector_routes(&id) {
        let answer = app.admin(method.clone(), &path, body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(answer.code(), "not_found");
    }
    let list = app.admin(Method::GET, "/v1/connectors", None).await;
    let ids: Vec<String> = list.body["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, vec![other.clone()]);
    assert!(app.published(&other).await.is_some());
    // The name is free again.
    app.create("gone", json!([{"name": "a", "type": "string"}]))
        .await;
}

#[tokio::test]
async fn duplicate_copies_schema_and_settings_but_not_records_or_tokens() {
    let app = spawn_app().await;
    let fields = json!([
        {"name": "email", "type": "string", "description": "who"},
        {"name": "n", "type": "integer", "nullable": true},
    ]);
    let source = app
        .post_connector(
            json!({"name": "src", "description": "d", "fields": fields, "extra_fields": "ignore"}),
        )
        .await
        .body;
    let id = id_of(&source);
    app.insert_record(&id, &[("email", "'a'"), ("n", "1")])
        .await;
    // Bring the source to version 2, so the copy's version 1 means something.
    let edited = app
        .patch(
            &id,
            json!({"fields": [
                {"name": "email", "type": "string", "description": "who"},
                {"name": "n", "type": "number", "nullable": true},
            ]}),
        )
        .await;
    assert_eq!(edited.body["schema_version"], 2);

    let copy = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "dst"})),
        )
        .await;
    assert_eq!(copy.status, StatusCode::CREATED, "{}", copy.body);
    let copy = copy.body;
    let copy_id = id_of(&copy);
    assert_ne!(copy_id, id);
    assert_eq!(copy["name"], "dst");
    assert_eq!(copy["description"], "d");
    assert_eq!(copy["fields"], edited.body["fields"]);
    assert_eq!(copy["extra_fields"], "ignore");
    assert_eq!(copy["schema_version"], 1);
    assert_eq!(copy["stats"]["records"], 0);
    assert_eq!(
        copy["endpoint"],
        format!("http://sluice.test/v1/connectors/{copy_id}/records")
    );
    for kind in ["write_token", "read_token"] {
        assert_ne!(copy[kind], source[kind]);
        assert!(copy[kind].as_str().unwrap().starts_with("sluice_"));
    }
    assert!(app.stored(&copy_id, "email").await.is_empty());
    assert_eq!(app.stored(&id, "email").await, [json!("a")]);
    let doc = app.published(&copy_id).await.unwrap();
    assert_eq!(doc.schema_version, 1);
    assert!(doc.has_token(TokenKind::Write, copy["write_token"].as_str().unwrap()));

    let taken = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "src"})),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.code(), "name_taken");
    let invalid = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": ""})),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.body["errors"][0]["code"], "invalid_connector_name");
    let missing_name = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(missing_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing_name.code(), "invalid_body");
}

#[tokio::test]
async fn rotating_a_token_replaces_its_hash_everywhere() {
    let app = spawn_app().await;
    let created = app
        .create("rot", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = id_of(&created);
    let old_write = created["write_token"].as_str().unwrap();
    let old_read = created["read_token"].as_str().unwrap();

    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/write"),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new_write = rotated.body["token"].as_str().unwrap();
    assert!(new_write.starts_with("sluice_w_"));
    assert_ne!(new_write, old_write);
    let doc = app.published(&id).await.unwrap();
    assert!(doc.has_token(TokenKind::Write, new_write));
    assert!(!doc.has_token(TokenKind::Write, old_write));
    assert!(
        doc.has_token(TokenKind::Read, old_read),
        "the other token is kept"
    );
    assert_eq!(doc.schema_version, 1);

    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/read"),
            None,
        )
        .await;
    let new_read = rotated.body["token"].as_str().unwrap();
    assert!(new_read.starts_with("sluice_r_"));
    let doc = app.published(&id).await.unwrap();
    assert!(doc.has_token(TokenKind::Read, new_read));
    assert!(!doc.has_token(TokenKind::Read, old_read));

    // The old token is now unknown (401); the new one is a connector's (403).
    let old = app
        .call(Method::GET, "/v1/connectors", Some(old_write), None)
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = app
        .call(Method::GET, "/v1/connectors", Some(new_write), None)
        .await;
    assert_eq!(new.status, StatusCode::FORBIDDEN);

    let unknown_kind = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/admin"),
            None,
        )
        .await;
    assert_eq!(unknown_kind.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_json_schema_of_a_record_follows_the_fields() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create(
            "js",
            json!([
                {"name": "email", "type": "string", "description": "contact"},
                {"name": "age", "type": "integer", "nullable": true},
            ]),
        )
        .await,
    );
    let answer = app
        .admin(Method::GET, &format!("/v1/connectors/{id}/schema"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let schema = answer.body;
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["title"], "js");
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["required"], json!(["email"]));
    assert_eq!(schema["properties"]["email"]["description"], "contact");
    assert_eq!(
        schema["properties"]["age"]["type"],
        json!(["integer", "null"])
    );
    assert_eq!(schema["additionalProperties"], false);

    app.patch(&id, json!({"extra_fields": "ignore"})).await;
    let answer = app
        .admin(Method::GET, &format!("/v1/connectors/{id}/schema"), None)
        .await;
    assert_eq!(answer.body["additionalProperties"], true);
}

#[tokio::test]
async fn hostile_names_and_descriptions_are_stored_verbatim() {
    let app = spawn_app().await;
    let hostile = [
        "x'); DROP TABLE connectors; --",
        "\"; DELETE FROM connectors WHERE ''='",
        "Robert'); DROP TABLE records;--",
        "💧 sluice \\ \"quoted\" $1 %s",
    ];
    for name in hostile {
        let created = app
            .post_connector(json!({
                "name": name,
                "description": format!("{name} /* */ ;"),
                "fields": [{"name": "a", "type": "string"}],
            }))
            .await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{name}: {}",
            created.body
        );
        let got = app.get(&id_of(&created.body)).await.body;
        assert_eq!(got["name"], name);
        assert_eq!(got["description"], format!("{name} /* */ ;"));
        let renamed = app
            .patch(&id_of(&got), json!({"name": format!("{name}'")}))
            .await;
        assert_eq!(renamed.body["name"], format!("{name}'"));
    }
    let list = app.admin(Method::GET, "/v1/connectors", None).await;
    assert_eq!(
        list.body["connectors"].as_array().unwrap().len(),
        hostile.len()
    );

    // Hostile field names never reach SQL: the schema's rules refuse them.
    let refused = app
        .post_connector(json!({"name": "f", "fields": [
            {"name": "a\"; DROP TABLE connectors; --", "type": "string"},
            {"name": "b)", "type": "string"},
        ]}))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["errors"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_restart_puts_back_a_key_deleted_behind_its_back_and_removes_strays() {
    let mut app = spawn_app().await;
    let created = app
        .create("healed", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = id_of(&created);
    let bucket = app.bucket().await;
    bucket.delete(&id).await.unwrap();
    let stray = uuid::Uuid::now_v7().to_string();
    bucket.put(&stray, "{}".into()).await.unwrap();
    bucket.put("not-a-connector", "{}".into()).await.unwrap();
    assert!(app.published(&id).await.is_none());

    app.restart().await;

    let doc = app.published(&id).await.expect("the key is back");
    assert_eq!(doc.name, "healed");
    assert!(doc.has_token(TokenKind::Write, created["write_token"].as_str().unwrap()));
    assert_eq!(app.bucket_keys().await, vec![id.clone()]);
    // The restarted service answers as before.
    assert_eq!(app.get(&id).await.body["name"], "healed");
}

#[tokio::test]
async fn operational_routes_answer() {
    let app = spawn_app().await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.address)).send();
    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"postgres": "ok", "nats": "ok"})
    );
    let metrics = get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.headers().get("x-request-id").is_some());

    let openapi: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    let paths = openapi["paths"].as_object().unwrap();
    for path in [
        "/v1/connectors",
        "/v1/connectors/{id}",
        "/v1/connectors/{id}/duplicate",
        "/v1/connectors/{id}/tokens",
        "/v1/connectors/{id}/tokens/{token}",
        "/v1/connectors/{id}/schema",
        "/v1/operator/tokens",
        "/v1/operator/tokens/{token}",
    ] {
        assert!(paths.contains_key(path), "{path}");
    }
    assert!(paths["/v1/connectors/{id}"]["patch"].is_object());
    // Rotation and revocation share a path, one method each.
    let token = &paths["/v1/connectors/{id}/tokens/{token}"];
    assert!(token["post"].is_object() && token["delete"].is_object());
    let listed = &openapi["components"]["schemas"]["ConnectorTokenView"]["properties"];
    for field in ["id", "name", "scope", "expires_at", "last_used_at"] {
        assert!(listed[field].is_object(), "{field} in {listed}");
    }
    assert!(listed["token"].is_null() && listed["hash"].is_null());
    assert!(openapi["components"]["schemas"]["ConnectorView"].is_object());
    let backlog = &openapi["components"]["schemas"]["BacklogView"]["properties"];
    for field in [
        "messages",
        "records_estimate",
        "oldest_at",
        "seconds_behind",
    ] {
        assert!(backlog[field].is_object(), "{field} in {backlog}");
    }
    assert!(openapi["components"]["schemas"]["ProblemDoc"].is_object());
    assert!(openapi["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_service_refuses_to_start_without_the_admin_token() {
    let env = sluice_testkit::TestEnv::new().await;
    let mut settings = env.settings();
    settings.admin_token = None;
    let error = Application::build(settings, CancellationToken::new())
        .await
        .err()
        .expect("no admin token, no service");
    assert!(
        format!("{error:#}").contains("SLUICE_ADMIN_TOKEN"),
        "{error:#}"
    );
}
