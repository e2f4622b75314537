//! Rate limits as the control plane keeps them (issue 17): set on create,
//! PATCH and duplicate, checked, and published to the gateways.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{id_of, spawn_app};

fn fields() -> Value {
    json!([{"name": "n", "type": "integer"}])
}

#[tokio::test]
async fn limits_are_set_edited_copied_and_published() {
    let app = spawn_app().await;
    let created = app
        .post_connector(json!({
            "name": "limited", "fields": fields(),
            "limits": {"requests_per_second": 10, "records_per_second": 5000}
        }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.body["limits"],
        json!({"requests_per_second": 10, "records_per_second": 5000})
    );
    let id = id_of(&created.body);
    let doc = app.published(&id).await.unwrap();
    assert_eq!(doc.limits.requests_per_second.map(|n| n.get()), Some(10));
    assert_eq!(doc.limits.records_per_second.map(|n| n.get()), Some(5000));

    // A member left out stays; null returns one to the default.
    let edited = app
        .patch(&id, json!({"limits": {"records_per_second": null}}))
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(
        edited.body["limits"],
        json!({"requests_per_second": 10, "records_per_second": null})
    );
    // A limit changes nothing records are checked against.
    assert_eq!(edited.body["schema_version"], 1);
    let doc = app.published(&id).await.unwrap();
    assert_eq!(doc.limits.records_per_second, None);

    let copy = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "copy"})),
        )
        .await;
    assert_eq!(copy.body["limits"]["requests_per_second"], 10);
    let other = app
        .admin(
            Method::POST,
            &format!("/v1/connectors/{id}/duplicate"),
            Some(json!({"name": "other", "limits": {"records_per_second": 7}})),
        )
        .await;
    assert_eq!(
        other.body["limits"],
        json!({"requests_per_second": 10, "records_per_second": 7})
    );

    let cleared = app.patch(&id, json!({"limits": null})).await;
    assert_eq!(
        cleared.body["limits"],
        json!({"requests_per_second": null, "records_per_second": null})
    );
    // With no limit set, the definition holds none: as before limits.
    let stored = app
        .bucket()
        .await
        .get(&id)
        .await
        .unwrap()
        .expect("published");
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert!(stored.get("limits").is_none(), "{stored}");
    let plain = app.create("plain", fields()).await;
    assert_eq!(
        plain["limits"],
        json!({"requests_per_second": null, "records_per_second": null})
    );
}

#[tokio::test]
async fn nonsense_limits_are_422_naming_the_limit() {
    let app = spawn_app().await;
    let id = id_of(&app.create("checked", fields()).await);
    for (limits, code, field) in [
        (
            json!({"requests_per_second": 0}),
            "invalid_schema",
            "limits.requests_per_second",
        ),
        (
            json!({"records_per_second": -5}),
            "invalid_schema",
            "limits.records_per_second",
        ),
        (
            json!({"records_per_second": 1_000_000_001}),
            "invalid_schema",
            "limits.records_per_second",
        ),
        (
            json!({"requests_per_second": 1.5}),
            "invalid_body",
            "limits.requests_per_second",
        ),
        (
            json!({"requests_per_second": "10"}),
            "invalid_body",
            "limits.requests_per_second",
        ),
        (json!({"bytes_per_second": 10}), "invalid_body", "limits"),
        (json!(10), "invalid_body", "limits"),
    ] {
        for answer in [
            app.patch(&id, json!({"limits": limits})).await,
            app.post_connector(json!({"name": "x", "fields": fields(), "limits": limits}))
                .await,
        ] {
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{limits}");
            assert_eq!(answer.code(), code, "{limits}: {}", answer.body);
            let named = answer.body["errors"][0]["field"]
                .as_str()
                .unwrap_or_default();
            assert!(named.starts_with(field), "{limits}: {}", answer.body);
        }
    }
    let unchanged = app.get(&id).await;
    assert_eq!(
        unchanged.body["limits"],
        json!({"requests_per_second": null, "records_per_second": null})
    );
}
