//! The audit log (issue 17): every change once, with who made it and from
//! where, never a secret, paged by cursor like records.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_testkit::ADMIN_TOKEN;

use crate::{TestApp, id_of, spawn_app, spawn_app_with};

fn fields() -> Value {
    json!([{"name": "n", "type": "integer"}])
}

/// Every entry of `path` (`/v1/audit…`), following `next_cursor` with
/// pages of `limit`, until a page says no more follows; and the cursor to
/// follow later.
async fn follow(app: &TestApp, path: &str, limit: usize, cursor: &str) -> (Vec<Value>, String) {
    let mut cursor = cursor.to_owned();
    let mut entries = Vec::new();
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let page = app
            .admin(
                Method::GET,
                &format!("{path}{separator}limit={limit}&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let listed = page.body["entries"].as_array().unwrap().clone();
        assert!(listed.len() <= limit);
        let next = page.body["next_cursor"].as_str().expect("always a cursor");
        assert_eq!(page.headers["sluice-next-cursor"], next);
        cursor = next.to_owned();
        entries.extend(listed);
        if !page.body["has_more"].as_bool().unwrap() {
            return (entries, cursor);
        }
    }
}

#[tokio::test]
async fn every_change_is_recorded_once_with_its_actor_and_what_changed() {
    let app = spawn_app().await;
    let created = app.create("orders", fields()).await;
    let id = id_of(&created);
    assert_eq!(
        app.patch(&id, json!({"name": "sales"})).await.status,
        StatusCode::OK
    );
    let limits = json!({"limits": {"requests_per_second": 10}});
    assert_eq!(app.patch(&id, limits).await.status, StatusCode::OK);
    // A PATCH that changes nothing, and refused ones, change nothing.
    assert_eq!(
        app.patch(&id, json!({"name": "sales"})).await.status,
        StatusCode::OK
    );
    let other = id_of(&app.create("other", fields()).await);
    let taken = app.patch(&other, json!({"name": "sales"})).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let invalid = app
        .patch(&id, json!({"limits": {"records_per_second": 0}}))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let copy = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "sales-copy"})),
        )
        .await;
    assert_eq!(copy.status, StatusCode::CREATED);
    let copy_id = id_of(&copy.body);
    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens/write"),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let deleted = app
        .admin(Method::DELETE, &format!("/v1/connectors/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let (entries, _) = follow(&app, "/v1/audit", 100, "").await;
    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["connector_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("connector.created", id.as_str()),
            ("connector.edited", id.as_str()),
            ("connector.limits_changed", id.as_str()),
            ("connector.created", other.as_str()),
            ("connector.duplicated", copy_id.as_str()),
            ("token.rotated", id.as_str()),
            ("connector.deleted", id.as_str()),
        ]
    );
    for entry in &entries {
        assert_eq!(entry["actor"], "SLUICE_ADMIN_TOKEN", "{entry}");
        assert_eq!(entry["client_address"], "127.0.0.1", "{entry}");
        assert!(entry["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    }
    assert_eq!(entries[0]["changes"]["name"], "orders");
    assert_eq!(
        entries[0]["changes"]["fields"],
        json!([{"name": "n", "type": "integer", "nullable": false}])
    );
    assert_eq!(
        entries[1]["changes"],
        json!({"name": {"from": "orders", "to": "sales"}})
    );
    assert_eq!(
        entries[2]["changes"],
        json!({"limits": {
            "from": {"requests_per_second": null, "records_per_second": null},
            "to": {"requests_per_second": 10, "records_per_second": null},
        }})
    );
    assert_eq!(entries[4]["changes"]["source_id"], id.as_str());
    assert_eq!(entries[4]["changes"]["limits"]["requests_per_second"], 10);
    assert_eq!(
        entries[5]["changes"],
        json!({"kind": "write", "token_id": rotated.body["id"], "old_token_expires_at": null})
    );
    assert_eq!(entries[6]["changes"], json!({"name": "sales"}));

    // No token, and no token's hash, is ever written.
    let text = serde_json::to_string(&entries).unwrap();
    let pool = app.db().await;
    let hashes: Vec<(String,)> = sqlx::query_as("SELECT hash FROM connector_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(!hashes.is_empty());
    for secret in [
        created["write_token"].as_str().unwrap(),
        created["read_token"].as_str().unwrap(),
        rotated.body["token"].as_str().unwrap(),
        copy.body["write_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret));
        assert!(!text.contains(sluice_runtime::token::TokenHash::of(secret).as_str()));
    }
    for (hash,) in hashes {
        assert!(!text.contains(&hash));
    }

    // A deleted connector's history stays, by route and by filter alike.
    let (by_route, _) = follow(&app, &format!("/v1/connectors/{id}/audit"), 2, "").await;
    let (by_filter, _) = follow(&app, &format!("/v1/audit?connector_id={id}"), 3, "").await;
    assert_eq!(by_route, by_filter);
    assert_eq!(by_route.len(), 5);
    assert!(by_route.iter().all(|e| e["connector_id"] == id.as_str()));
}

#[tokio::test]
async fn token_changes_are_recorded_under_the_name_of_the_token_that_made_them() {
    let app = spawn_app().await;
    let id = id_of(&app.create("orders", fields()).await);
    let bot = app
        .admin(
            Method::POST,
            "/v1/operator/tokens",
            Some(json!({"name": "ci-bot"})),
        )
        .await;
    assert_eq!(bot.status, StatusCode::CREATED, "{}", bot.body);
    let bot_secret = bot.body["token"].as_str().unwrap().to_owned();
    let bot_id = bot.body["id"].as_str().unwrap().to_owned();
    let made = app
        .call(
            Method::POST,
            &format!("/v1/connectors/{id}/tokens"),
            Some(&bot_secret),
            Some(json!({"name": "partner", "scope": "write"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let partner_secret = made.body["token"].as_str().unwrap().to_owned();
    let partner_id = made.body["id"].as_str().unwrap().to_owned();
    let revoked = app
        .call(
            Method::DELETE,
            &format!("/v1/connectors/{id}/tokens/{partner_id}"),
            Some(&bot_secret),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let gone = app
        .admin(
            Method::DELETE,
            &format!("/v1/operator/tokens/{bot_id}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);

    let (entries, _) = follow(&app, "/v1/audit", 100, "").await;
    let summary: Vec<(&str, &str, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["connector_id"].clone(),
            )
        })
        .collect();
    let admin = "SLUICE_ADMIN_TOKEN";
    assert_eq!(
        summary,
        [
            ("connector.created", admin, json!(id)),
            ("token.created", admin, Value::Null),
            ("token.created", "ci-bot", json!(id)),
            ("token.revoked", "ci-bot", json!(id)),
            ("token.revoked", admin, Value::Null),
        ]
    );
    assert_eq!(
        entries[2]["changes"],
        json!({"token_id": partner_id, "name": "partner", "scope": "write", "expires_at": null})
    );
    assert_eq!(entries[4]["changes"]["token_id"], json!(bot_id));
    let logged = serde_json::to_string(&entries).unwrap();
    for secret in [&bot_secret, &partner_secret] {
        assert!(!logged.contains(secret.as_str()), "a secret in the log");
    }
}

#[tokio::test]
async fn following_the_cursor_returns_every_entry_once_also_later_ones() {
    let app = spawn_app().await;
    let id = id_of(&app.create("paged", fields()).await);
    for n in 0..24 {
        let description = format!("description {n}");
        let answer = app.patch(&id, json!({"description": description})).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let (all, _) = follow(&app, "/v1/audit", 1000, "").await;
    assert_eq!(all.len(), 25);
    let (paged, cursor) = follow(&app, "/v1/audit", 7, "").await;
    assert_eq!(paged, all);
    let ids: Vec<u64> = paged
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());

    // The last cursor, followed after more changes, gives exactly those.
    let (nothing, same) = follow(&app, "/v1/audit", 7, &cursor).await;
    assert!(nothing.is_empty());
    assert_eq!(same, cursor);
    app.admin(
        Method::POST,
        &format!("/v1/connectors/{id}/tokens/read"),
        None,
    )
    .await;
    let (later, _) = follow(&app, "/v1/audit", 7, &cursor).await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["action"], "token.rotated");

    // Changes made at once, on many connections, are each listed once.
    let mut edits = Vec::new();
    for n in 0..16 {
        let (client, address, id) = (app.client.clone(), app.address.clone(), id.clone());
        edits.push(tokio::spawn(async move {
            client
                .patch(format!("{address}/v1/connectors/{id}"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"description": format!("concurrent {n}")}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut seen = 0;
    let mut cursor = cursor;
    for edit in edits {
        assert_eq!(edit.await.unwrap(), StatusCode::OK);
        let (page, next) = follow(&app, "/v1/audit", 5, &cursor).await;
        seen += page.len();
        cursor = next;
    }
    let (rest, _) = follow(&app, "/v1/audit", 5, &cursor).await;
    assert_eq!(seen + rest.len(), 1 + 16);
}

#[tokio::test]
async fn the_audit_log_is_the_operators_and_checks_its_parameters() {
    let app = spawn_app().await;
    let created = app.create("private", fields()).await;
    let id = id_of(&created);
    for path in ["/v1/audit".to_owned(), format!("/v1/connectors/{id}/audit")] {
        let anonymous = app.call(Method::GET, &path, None, None).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let token = created["read_token"].as_str().unwrap();
        let connector = app.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(connector.status, StatusCode::FORBIDDEN);
    }
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("cursor=zz", "invalid_cursor"),
        ("connector_id=nope", "invalid_connector_id"),
    ] {
        let answer = app
            .admin(Method::GET, &format!("/v1/audit?{query}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.code(), code, "{query}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_recorded() {
    let app = spawn_app_with(|settings| {
        settings.auth_throttle.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let answer = app
        .client
        .post(format!("{}/v1/connectors", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.7")
        .json(&json!({"name": "proxied", "fields": fields()}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let (entries, _) = follow(&app, "/v1/audit", 10, "").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["client_address"], "198.51.100.7");
}

#[tokio::test]
async fn the_openapi_document_has_the_audit_routes_and_the_limits() {
    let app = spawn_app().await;
    let openapi = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let paths = openapi["paths"].as_object().unwrap();
    assert!(paths["/v1/audit"]["get"].is_object());
    assert!(paths["/v1/connectors/{id}/audit"]["get"].is_object());
    let schemas = &openapi["components"]["schemas"];
    for schema in ["AuditPage", "EntryView", "LimitsBody", "LimitsView"] {
        assert!(schemas[schema].is_object(), "{schema}");
    }
    assert!(schemas["ConnectorView"]["properties"]["limits"].is_object());
}
