//! The catalog answers for a connector its watch has not brought yet by
//! reading the bucket, so that a connector or token the control plane has
//! just handed out works at once, on the gateway and the read API alike.
//! The watch is stopped first, so that the bucket read is the only way the
//! catalog can learn of it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use sluice_runtime::bus::{self, ConnectorDoc, OperatorTokenDoc, OperatorTokensDoc, TokenDoc};
use sluice_runtime::catalog::{AccessDenied, Catalog, Refused};
use sluice_runtime::settings::AuthThrottleSettings;
use sluice_runtime::throttle::{AuthAttempt, AuthThrottle};
use sluice_runtime::token::{NewToken, TokenHash, TokenKind};
use sluice_schema::{ExtraFields, FieldSpec, Schema};
use sluice_testkit::TestEnv;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const OPERATOR: &str = "the-operator-token";

/// A connector definition with its two tokens.
fn connector() -> (ConnectorDoc, NewToken, NewToken) {
    let (write, read) = (
        NewToken::generate(TokenKind::Write),
        NewToken::generate(TokenKind::Read),
    );
    let specs: Vec<FieldSpec> =
        serde_json::from_value(serde_json::json!([{"name": "n", "type": "integer"}])).unwrap();
    let token = |scope: TokenKind, new: &NewToken| TokenDoc {
        id: Uuid::now_v7(),
        name: scope.as_str().to_owned(),
        scope,
        hash: new.hash.clone(),
        expires_at: None,
    };
    let doc = ConnectorDoc::new(
        Uuid::now_v7(),
        "fresh".to_owned(),
        1,
        Schema::define(&specs).unwrap(),
        ExtraFields::Reject,
        vec![
            token(TokenKind::Write, &write),
            token(TokenKind::Read, &read),
        ],
    );
    (doc, write, read)
}

/// An attempt of a request that came with no client address: never
/// throttled, so every refusal below is the catalog's own.
async fn attempt() -> AuthAttempt {
    let throttle = Arc::new(AuthThrottle::new(&AuthThrottleSettings {
        failures: 1,
        window: Duration::from_secs(60),
        max_addresses: 16,
        trusted_proxies: Vec::new(),
    }));
    let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    AuthAttempt::from_request_parts(&mut parts, &throttle)
        .await
        .unwrap_or_else(|never| match never {})
}

#[tokio::test]
async fn a_connector_the_watch_has_not_brought_is_authorized_from_the_bucket() {
    let env = TestEnv::new().await;
    let js = bus::jetstream(env.nats().await, Duration::from_secs(5));
    let bucket = bus::connectors_bucket(&js, &env.namespace, 1)
        .await
        .unwrap();
    let operators = bus::operators_bucket(&js, &env.namespace, 1).await.unwrap();
    let watching = CancellationToken::new();
    let catalog = Catalog::start(bucket.clone(), operators.clone(), watching.clone())
        .await
        .unwrap();
    watching.cancel();
    // Time for the watch task to see the cancellation and end.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let put = |doc: &ConnectorDoc| {
        let (key, value) = (ConnectorDoc::key(doc.id), doc.encode().unwrap());
        let bucket = bucket.clone();
        async move { bucket.put(key, value).await.unwrap() }
    };
    let attempt = attempt().await;
    let admin = TokenHash::of(OPERATOR);
    let authorize = |token: String, connector: Option<Uuid>, kind: TokenKind| {
        let (catalog, admin, attempt) = (&catalog, &admin, &attempt);
        async move {
            catalog
                .authorize(&token, Some(admin), connector, kind, attempt)
                .await
                .map(|authorized| authorized.doc.id)
        }
    };

    // A reader's token, as the read API checks it.
    let (doc, _, read) = connector();
    put(&doc).await;
    assert!(catalog.get(doc.id).is_none(), "the watch is stopped");
    assert_eq!(
        authorize(read.secret.clone(), Some(doc.id), TokenKind::Read).await,
        Ok(doc.id)
    );
    // Taken in: known from now on without a read.
    assert_eq!(catalog.get(doc.id).map(|d| d.id), Some(doc.id));

    // A writer's token, as the gateway checks it.
    let (doc, write, _) = connector();
    put(&doc).await;
    assert_eq!(
        authorize(write.secret.clone(), Some(doc.id), TokenKind::Write).await,
        Ok(doc.id)
    );

    // The operator, on a connector just created.
    let (doc, _, _) = connector();
    put(&doc).await;
    assert_eq!(
        authorize(OPERATOR.to_owned(), Some(doc.id), TokenKind::Read).await,
        Ok(doc.id)
    );

    // An operator token created a moment ago, from the operators bucket.
    let (doc, _, _) = connector();
    put(&doc).await;
    let operator = NewToken::operator();
    let operators_doc = OperatorTokensDoc {
        tokens: vec![OperatorTokenDoc {
            id: Uuid::now_v7(),
            name: "ci".to_owned(),
            hash: operator.hash.clone(),
            expires_at: None,
        }],
    };
    operators
        .put(OperatorTokensDoc::KEY, operators_doc.encode().unwrap())
        .await
        .unwrap();
    assert_eq!(
        authorize(operator.secret.clone(), Some(doc.id), TokenKind::Write).await,
        Ok(doc.id)
    );
    let principal = catalog.identify(&operator.secret, Some(&admin)).unwrap();
    assert_eq!(principal.token_name, "ci");
    assert!(principal.is_operator());

    // A real token in the wrong place is still 403, and one the bucket
    // does not know is still 401.
    let (doc, write, _) = connector();
    put(&doc).await;
    assert_eq!(
        authorize(write.secret.clone(), Some(doc.id), TokenKind::Read).await,
        Err(Refused::Denied(AccessDenied::Forbidden))
    );
    let (doc, _, _) = connector();
    put(&doc).await;
    let stranger = NewToken::generate(TokenKind::Read).secret;
    assert_eq!(
        authorize(stranger, Some(doc.id), TokenKind::Read).await,
        Err(Refused::Denied(AccessDenied::Unauthorized))
    );

    // A connector deleted since, or a route naming none, is 404.
    let (doc, _, _) = connector();
    put(&doc).await;
    bucket.delete(ConnectorDoc::key(doc.id)).await.unwrap();
    assert_eq!(
        authorize(OPERATOR.to_owned(), Some(doc.id), TokenKind::Write).await,
        Err(Refused::Denied(AccessDenied::NotFound))
    );
    assert_eq!(
        authorize(OPERATOR.to_owned(), None, TokenKind::Write).await,
        Err(Refused::Denied(AccessDenied::NotFound))
    );
}

/// A token past its expiry is nobody's; and a definition published before
/// named tokens (two hashes, tokens of the old hex form) still lets its
/// tokens in.
#[tokio::test]
async fn expired_tokens_are_refused_and_old_definitions_still_read() {
    let env = TestEnv::new().await;
    let js = bus::jetstream(env.nats().await, Duration::from_secs(5));
    let bucket = bus::connectors_bucket(&js, &env.namespace, 1)
        .await
        .unwrap();
    let operators = bus::operators_bucket(&js, &env.namespace, 1).await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let catalog = Catalog::start(bucket.clone(), operators, shutdown)
        .await
        .unwrap();
    let attempt = attempt().await;

    let (mut doc, write, read) = connector();
    doc.tokens[0].expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    bucket
        .put(ConnectorDoc::key(doc.id), doc.encode().unwrap())
        .await
        .unwrap();
    let expired = catalog
        .authorize(
            &write.secret,
            None,
            Some(doc.id),
            TokenKind::Write,
            &attempt,
        )
        .await;
    assert_eq!(
        expired.map(|a| a.doc.id),
        Err(Refused::Denied(AccessDenied::Unauthorized))
    );
    let live = catalog
        .authorize(&read.secret, None, Some(doc.id), TokenKind::Read, &attempt)
        .await;
    assert_eq!(live.map(|a| a.principal.token_name), Ok("read".to_owned()));

    // As the control plane wrote a definition before named tokens.
    let legacy_write = format!("sluice_w_{}", "0123456789abcdef".repeat(4));
    let legacy_read = format!("sluice_r_{}", "fedcba9876543210".repeat(4));
    let id = Uuid::now_v7();
    let old = serde_json::json!({
        "id": id,
        "name": "old",
        "schema_version": 1,
        "schema": doc.schema,
        "extra_fields": "reject",
        "write_token_hash": TokenHash::of(&legacy_write),
        "read_token_hash": TokenHash::of(&legacy_read),
    });
    bucket
        .put(
            ConnectorDoc::key(id),
            serde_json::to_vec(&old).unwrap().into(),
        )
        .await
        .unwrap();
    let old_write = catalog
        .authorize(&legacy_write, None, Some(id), TokenKind::Write, &attempt)
        .await;
    assert_eq!(old_write.map(|a| a.doc.id), Ok(id));
    let old_read_to_write = catalog
        .authorize(&legacy_read, None, Some(id), TokenKind::Write, &attempt)
        .await;
    assert_eq!(
        old_read_to_write.map(|a| a.doc.id),
        Err(Refused::Denied(AccessDenied::Forbidden))
    );
}
