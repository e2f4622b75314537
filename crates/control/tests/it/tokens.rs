//! Named tokens on the control plane (issue 17): created with a name, a
//! scope and an expiry, listed without secrets, revoked; operator tokens
//! the same way; rotation with a grace period.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_runtime::token::TokenKind;

use crate::{TestApp, id_of, spawn_app, spawn_app_with};

async fn create_token(app: &TestApp, id: &str, body: Value) -> crate::Answer {
    app.admin(
        Method::POST,
        &format!("/v1/connectors/{id}/tokens"),
        Some(body),
    )
    .await
}

async fn list_tokens(app: &TestApp, id: &str) -> Vec<Value> {
    let answer = app
        .admin(Method::GET, &format!("/v1/connectors/{id}/tokens"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["tokens"].as_array().unwrap().clone()
}

#[tokio::test]
async fn named_tokens_are_created_listed_without_secrets_and_revoked() {
    let app = spawn_app().await;
    let created = app
        .create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = id_of(&created);
    let expires_at = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let made = create_token(
        &app,
        &id,
        json!({"name": "shop backend", "scope": "write", "expires_at": expires_at}),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secret = made.body["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sluice_w_"), "{secret}");
    assert_eq!(secret.len(), "sluice_w_".len() + 36);
    assert_eq!(made.body["name"], "shop backend");
    assert_eq!(made.body["scope"], "write");
    assert_eq!(made.body["rotatable"], false);
    assert_eq!(made.body["expired"], false);
    assert!(made.body["last_used_at"].is_null());
    let token_id = made.body["id"].as_str().unwrap().to_owned();
    let doc = app.published(&id).await.unwrap();
    assert!(doc.has_token(TokenKind::Write, &secret));
    assert!(!doc.has_token(TokenKind::Read, &secret));

    // The two made with the connector, named after their scopes, and the new
    // one; no secret nor hash anywhere in the list.
    let listed = list_tokens(&app, &id).await;
    let names: Vec<(&str, &str, bool)> = listed
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["scope"].as_str().unwrap(),
                t["rotatable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("write", "write", true),
            ("read", "read", true),
            ("shop backend", "write", false)
        ]
    );
    let text = serde_json::to_string(&listed).unwrap();
    let pool = app.db().await;
    let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM connector_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 3);
    for secret_or_hash in hashes.iter().map(String::as_str).chain([
        secret.as_str(),
        created["write_token"].as_str().unwrap(),
        created["read_token"].as_str().unwrap(),
    ]) {
        assert!(
            !text.contains(secret_or_hash),
            "the list shows {secret_or_hash}"
        );
    }
    for token in &listed {
        let mut members: Vec<&str> = token
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        members.sort_unstable();
        assert_eq!(
            members,
            [
                "created_at",
                "expired",
                "expires_at",
                "id",
                "last_used_at",
                "name",
                "rotatable",
                "scope"
            ]
        );
    }

    // Revoked: gone from the list and from what gateways see; a second
    // revocation finds nothing.
    let path = format!("/v1/connectors/{id}/tokens/{token_id}");
    let revoked = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    assert_eq!(list_tokens(&app, &id).await.len(), 2);
    assert!(
        !app.published(&id)
            .await
            .unwrap()
            .has_token(TokenKind::Write, &secret)
    );
    let again = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // Another connector's token is not found through this one.
    let other = app
        .create("other", json!([{"name": "a", "type": "string"}]))
        .await;
    let others = list_tokens(&app, &id_of(&other)).await;
    let foreign = others[0]["id"].as_str().unwrap();
    let crossed = app
        .admin(
            Method::DELETE,
            &format!("/v1/connectors/{id}/tokens/{foreign}"),
            None,
        )
        .await;
    assert_eq!(crossed.status, StatusCode::NOT_FOUND);
    assert_eq!(list_tokens(&app, &id_of(&other)).await.len(), 2);
}

#[tokio::test]
async fn bad_token_requests_are_refused_listing_every_problem() {
    let app = spawn_app().await;
    let created = app
        .create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = id_of(&created);
    let past = (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let bad = create_token(
        &app,
        &id,
        json!({"name": " ", "scope": "admin", "expires_at": past}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(bad.code(), "invalid_token");
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "scope", "expires_at"]);
    let long = create_token(&app, &id, json!({"name": "x".repeat(101), "scope": "read"})).await;
    assert_eq!(long.code(), "invalid_token");
    let not_a_time = create_token(
        &app,
        &id,
        json!({"name": "x", "scope": "read", "expires_at": "tomorrow"}),
    )
    .await;
    assert_eq!(not_a_time.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(not_a_time.code(), "invalid_body");
    let missing = create_token(
        &app,
        &uuid::Uuid::now_v7().to_string(),
        json!({"name": "x", "scope": "read"}),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    for grace in ["10", "1.5h", "8d", "0s", "-1m"] {
        let rotated = app
            .admin(
                Method::POST,
                &format!("/v1/connectors/{id}/tokens/write?grace={grace}"),
                None,
            )
            .await;
        assert_eq!(rotated.status, StatusCode::BAD_REQUEST, "{grace}");
        assert_eq!(rotated.code(), "invalid_grace");
    }
    // Nothing was rotated by any of it.
    let doc = app.published(&id).await.unwrap();
    assert!(doc.has_token(TokenKind::Write, created["write_token"].as_str().unwrap()));
    assert_eq!(list_tokens(&app, &id).await.len(), 2);
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_token_until_then_and_other_tokens_always() {
    let app = spawn_app().await;
    let created = app
        .create("orders", json!([{"name": "a", "type": "string"}]))
        .await;
    let id = id_of(&created);
    let old = created["write_token"].as_str().unwrap();
    let named = create_token(&app, &id, json!({"name": "etl", "scope": "write"})).await;
    let named = named.body["token"].as_str().unwrap().to_owned();

    let before = Utc::now();
    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/write?grace=1h"),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["token"].as_str().unwrap();
    let ends: DateTime<Utc> = rotated.body["old_token_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ends >= before + chrono::Duration::hours(1));
    let doc = app.published(&id).await.unwrap();
    for token in [old, new, named.as_str()] {
        assert!(doc.has_token(TokenKind::Write, token));
    }
    // The new one is the rotatable one now, under the same name; the old one
    // is listed with its end.
    let listed = list_tokens(&app, &id).await;
    let writes: Vec<(&str, bool, bool)> = listed
        .iter()
        .filter(|t| t["scope"] == "write")
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["rotatable"].as_bool().unwrap(),
                t["expires_at"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        writes,
        [
            ("write", false, false),
            ("etl", false, true),
            ("write", true, true)
        ]
    );

    // A rotation without grace cuts the rotatable token at once, and only
    // that one: the old one in its grace and the named one stay.
    let again = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/write"),
            None,
        )
        .await;
    let newest = again.body["token"].as_str().unwrap();
    let doc = app.published(&id).await.unwrap();
    assert!(!doc.has_token(TokenKind::Write, new));
    for token in [old, newest, named.as_str()] {
        assert!(doc.has_token(TokenKind::Write, token));
    }
}

#[tokio::test]
async fn operator_tokens_work_until_revoked_and_are_listed_without_secrets() {
    let app = spawn_app().await;
    let made = app
        .admin(
            Method::POST,
            "/v1/operator/tokens",
            Some(json!({"name": "ci deploys"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secret = made.body["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sluice_o_"));
    let token_id = made.body["id"].as_str().unwrap().to_owned();

    // It is the operator: it creates a connector and another operator token.
    let connector = app
        .call(
            Method::POST,
            "/v1/connectors",
            Some(&secret),
            Some(json!({"name": "by-ci", "fields": [{"name": "a", "type": "string"}]})),
        )
        .await;
    assert_eq!(connector.status, StatusCode::CREATED, "{}", connector.body);
    let second = app
        .call(
            Method::POST,
            "/v1/operator/tokens",
            Some(&secret),
            Some(json!({"name": "second"})),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED);

    let listed = app.admin(Method::GET, "/v1/operator/tokens", None).await;
    let tokens = listed.body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["name"], "ci deploys");
    let text = listed.body.to_string();
    assert!(!text.contains(&secret));
    assert!(!text.contains(second.body["token"].as_str().unwrap()));
    assert!(
        !text.contains(
            &sluice_runtime::token::TokenHash::of(&secret)
                .as_str()
                .to_owned()
        )
    );

    let revoked = app
        .admin(
            Method::DELETE,
            &format!("/v1/operator/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let refused = app
        .call(Method::GET, "/v1/connectors", Some(&secret), None)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let again = app
        .admin(
            Method::DELETE,
            &format!("/v1/operator/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_operator_token_past_its_expiry_is_401() {
    let app = spawn_app().await;
    let expires_at = Utc::now() + chrono::Duration::seconds(3);
    let made = app
        .admin(
            Method::POST,
            "/v1/operator/tokens",
            Some(json!({"name": "short", "expires_at": expires_at.to_rfc3339()})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secret = made.body["token"].as_str().unwrap().to_owned();
    let before = app
        .call(Method::GET, "/v1/connectors", Some(&secret), None)
        .await;
    assert_eq!(before.status, StatusCode::OK);

    // Past its expiry, by the clock of this test's process.
    let wait = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    let after = app
        .call(Method::GET, "/v1/connectors", Some(&secret), None)
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let listed = app.admin(Method::GET, "/v1/operator/tokens", None).await;
    assert_eq!(listed.body["tokens"][0]["expired"], true);
}

#[tokio::test]
async fn last_use_is_reported_and_shown_in_the_list() {
    let app = spawn_app_with(|settings| {
        settings.token_use_interval = Duration::from_millis(100);
    })
    .await;
    let made = app
        .admin(
            Method::POST,
            "/v1/operator/tokens",
            Some(json!({"name": "used"})),
        )
        .await;
    let secret = made.body["token"].as_str().unwrap().to_owned();
    let unused = app
        .admin(
            Method::POST,
            "/v1/operator/tokens",
            Some(json!({"name": "unused"})),
        )
        .await;
    assert_eq!(unused.status, StatusCode::CREATED);
    let before = Utc::now();
    let used = app
        .call(Method::GET, "/v1/connectors", Some(&secret), None)
        .await;
    assert_eq!(used.status, StatusCode::OK);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let tokens = loop {
        let listed = app.admin(Method::GET, "/v1/operator/tokens", None).await;
        let tokens = listed.body["tokens"].as_array().unwrap().clone();
        if !tokens[0]["last_used_at"].is_null() || tokio::time::Instant::now() >= deadline {
            break tokens;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last_used: DateTime<Utc> = tokens[0]["last_used_at"]
        .as_str()
        .expect("the use was reported")
        .parse()
        .unwrap();
    assert!(last_used >= before - chrono::Duration::milliseconds(1));
    assert!(tokens[1]["last_used_at"].is_null(), "{}", tokens[1]);
}

/// A connector made before named tokens (its two hashes in `connectors`,
/// tokens of the hex form) keeps both tokens through the migration: they
/// become its rotatable `write` and `read` tokens, published to gateways.
#[tokio::test]
async fn tokens_of_connectors_made_before_named_tokens_keep_working() {
    let env = sluice_testkit::TestEnv::new().await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let mut before = sqlx::migrate!("../runtime/migrations");
    let earlier: Vec<_> = before
        .migrations
        .iter()
        .filter(|m| m.version < 20261203170000)
        .cloned()
        .collect();
    assert!(earlier.len() < before.migrations.len());
    before.migrations = earlier.into();
    before.run(&pool).await.unwrap();

    let write = format!("sluice_w_{}", "0123456789abcdef".repeat(4));
    let read = format!("sluice_r_{}", "fedcba9876543210".repeat(4));
    let specs: Vec<sluice_schema::FieldSpec> =
        serde_json::from_value(json!([{"name": "a", "type": "string"}])).unwrap();
    let schema = sluice_schema::Schema::define(&specs).unwrap();
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO connectors (id, name, schema, schema_version, extra_fields, \
         write_token_hash, read_token_hash) VALUES ($1, 'old', $2, 1, 'reject', $3, $4)",
    )
    .bind(id)
    .bind(sqlx::types::Json(&schema))
    .bind(sluice_runtime::token::TokenHash::of(&write).as_str())
    .bind(sluice_runtime::token::TokenHash::of(&read).as_str())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    // The control plane migrates, then publishes what it reconciles.
    let shutdown = env.shutdown_token().child_token();
    let app = TestApp {
        address: sluice_testkit::spawn_control(env.settings(), shutdown.clone()).await,
        client: reqwest::Client::new(),
        server: shutdown.drop_guard(),
        env,
    };
    let id = id.to_string();
    let doc = app.published(&id).await.expect("published");
    assert!(doc.has_token(TokenKind::Write, &write));
    assert!(doc.has_token(TokenKind::Read, &read));
    assert!(!doc.has_token(TokenKind::Write, &read));
    let listed = list_tokens(&app, &id).await;
    let mut names: Vec<(&str, bool)> = listed
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["rotatable"].as_bool().unwrap(),
            )
        })
        .collect();
    // Made at the same moment, they list in either order.
    names.sort_unstable();
    assert_eq!(names, [("read", true), ("write", true)]);

    // And rotation replaces the old write token as it did before.
    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/write"),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let doc = app.published(&id).await.unwrap();
    assert!(!doc.has_token(TokenKind::Write, &write));
    assert!(doc.has_token(TokenKind::Read, &read));
}
