//! Named tokens at the gateway (issue 17): revocation on every gateway,
//! expiry, rotation with a grace period, the checksum, operator tokens, and
//! tokens of the form made before checksums.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sluice_runtime::bus::{self, ConnectorDoc, TokenDoc};
use sluice_runtime::token::{NewToken, TokenHash, TokenKind};
use sluice_schema::{ExtraFields, FieldSpec, Schema};
use uuid::Uuid;

use crate::{TestApp, eventually, spawn_app};

/// POST `{"n": 1}` to `gateway` with `token`; the status.
async fn post_with(app: &TestApp, gateway: &str, connector: Uuid, token: &str) -> StatusCode {
    TestApp::send(app.post_to(
        gateway,
        connector,
        Some(token),
        Some("application/json"),
        r#"{"n": 1}"#,
    ))
    .await
    .status
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_every_gateway() {
    let app = spawn_app().await;
    let second = app.spawn_gateway().await;
    let connector = app.simple_connector().await;
    let made = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{}/tokens", connector.id),
            Some(json!({"name": "to revoke", "scope": "write"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let token = made.body["token"].as_str().unwrap().to_owned();
    for gateway in [&app.ingest, &second] {
        assert_eq!(
            post_with(&app, gateway, connector.id, &token).await,
            StatusCode::ACCEPTED
        );
    }

    let revoked = app
        .admin(
            Method::DELETE,
            &format!(
                "/v1/connectors/{}/tokens/{}",
                connector.id,
                made.body["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    // The revocation is in the bucket before the answer; each gateway
    // follows it as its watch delivers it (the guarantee rotation has).
    for gateway in [&app.ingest, &second] {
        let (app, token) = (&app, &token);
        let refused = eventually(Duration::from_secs(1), move || async move {
            post_with(app, gateway, connector.id, token).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused, "{gateway} refuses the revoked token");
        // The connector's other tokens are untouched.
        assert_eq!(
            post_with(app, gateway, connector.id, &connector.write_token).await,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn a_token_past_its_expiry_is_401() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let expires_at = Utc::now() + chrono::Duration::seconds(3);
    let made = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{}/tokens", connector.id),
            Some(json!({"name": "short", "scope": "write", "expires_at": expires_at.to_rfc3339()})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let token = made.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        post_with(&app, &app.ingest, connector.id, &token).await,
        StatusCode::ACCEPTED
    );

    let wait = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    let after = TestApp::send(app.post_to(
        &app.ingest,
        connector.id,
        Some(&token),
        Some("application/json"),
        r#"{"n": 1}"#,
    ))
    .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{after:?}");
    assert_eq!(after.headers["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn rotation_with_a_grace_period_accepts_both_until_it_ends() {
    let app = spawn_app().await;
    let second = app.spawn_gateway().await;
    let connector = app.simple_connector().await;
    let old = connector.write_token.clone();
    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{}/tokens/write?grace=3s", connector.id),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new = rotated.body["token"].as_str().unwrap().to_owned();
    let ends: DateTime<Utc> = rotated.body["old_token_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for gateway in [&app.ingest, &second] {
        assert_eq!(
            post_with(&app, gateway, connector.id, &new).await,
            StatusCode::ACCEPTED
        );
        assert_eq!(
            post_with(&app, gateway, connector.id, &old).await,
            StatusCode::ACCEPTED
        );
    }

    let wait = (ends - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    for gateway in [&app.ingest, &second] {
        assert_eq!(
            post_with(&app, gateway, connector.id, &old).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post_with(&app, gateway, connector.id, &new).await,
            StatusCode::ACCEPTED
        );
    }

    // Without grace, the old one stops as SPEC 6 says.
    let rotated = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{}/tokens/write", connector.id),
            None,
        )
        .await;
    let newest = rotated.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        post_with(&app, &app.ingest, connector.id, &newest).await,
        StatusCode::ACCEPTED
    );
    let (app, second, new) = (&app, &second, &new);
    let refused = eventually(Duration::from_secs(1), move || async move {
        post_with(app, second, connector.id, new).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused);
}

/// A token whose checksum does not match its body is refused for its form:
/// the gateway knows its hash (it is in the connector's definition, as a
/// control plane could have written it) and still answers 401, while
/// tokens of a valid form written the same way, a checksummed one and one
/// of the hex form made before checksums, are accepted.
#[tokio::test]
async fn a_token_with_a_wrong_checksum_is_refused_by_its_form() {
    let app = spawn_app().await;
    let good = NewToken::generate(TokenKind::Write).secret;
    // The same body with its last checksum character changed: one typo.
    let mut mistyped = good.clone().into_bytes();
    let last = mistyped.len() - 1;
    mistyped[last] = if mistyped[last] == b'0' { b'1' } else { b'0' };
    let mistyped = String::from_utf8(mistyped).unwrap();
    let legacy = format!("sluice_w_{}", hex_of(Uuid::new_v4(), Uuid::new_v4()));

    let specs: Vec<FieldSpec> =
        serde_json::from_value(json!([{"name": "n", "type": "integer"}])).unwrap();
    let token = |name: &str, secret: &str| TokenDoc {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        scope: TokenKind::Write,
        hash: TokenHash::of(secret),
        expires_at: None,
    };
    let doc = ConnectorDoc::new(
        Uuid::now_v7(),
        "written".to_owned(),
        1,
        Schema::define(&specs).unwrap(),
        ExtraFields::Reject,
        vec![
            token("good", &good),
            token("mistyped", &mistyped),
            token("legacy", &legacy),
        ],
    );
    let js = async_nats::jetstream::new(app.env.nats().await);
    let bucket = bus::connectors_bucket(&js, &app.settings.namespace, 1)
        .await
        .unwrap();
    bucket
        .put(ConnectorDoc::key(doc.id), doc.encode().unwrap())
        .await
        .unwrap();

    assert_eq!(
        post_with(&app, &app.ingest, doc.id, &good).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post_with(&app, &app.ingest, doc.id, &legacy).await,
        StatusCode::ACCEPTED
    );
    let refused = TestApp::send(app.post_to(
        &app.ingest,
        doc.id,
        Some(&mistyped),
        Some("application/json"),
        r#"{"n": 1}"#,
    ))
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
    assert!(!refused.body.to_string().contains(&mistyped));
}

fn hex_of(a: Uuid, b: Uuid) -> String {
    format!("{}{}", a.simple(), b.simple())
}

#[tokio::test]
async fn operator_tokens_are_taken_by_every_gateway_until_revoked() {
    let app = spawn_app().await;
    let second = app.spawn_gateway().await;
    let connector = app.simple_connector().await;
    let made = app
        .admin(
            Method::POST,
            "/v1/operator/tokens",
            Some(json!({"name": "backfill"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let token = made.body["token"].as_str().unwrap().to_owned();
    for gateway in [&app.ingest, &second] {
        assert_eq!(
            post_with(&app, gateway, connector.id, &token).await,
            StatusCode::ACCEPTED
        );
    }
    let revoked = app
        .admin(
            Method::DELETE,
            &format!("/v1/operator/tokens/{}", made.body["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    for gateway in [&app.ingest, &second] {
        let (app, token) = (&app, &token);
        let refused = eventually(Duration::from_secs(1), move || async move {
            post_with(app, gateway, connector.id, token).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused, "{gateway} refuses the revoked operator token");
    }
}
