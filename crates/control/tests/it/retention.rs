//! A connector's retention: given on create, edit and duplicate, checked
//! against the partition span, and shown in its largest exact unit.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Answer, TestApp, id_of, spawn_app, spawn_app_with};

fn definition(name: &str, retention: Value) -> Value {
    json!({"name": name, "fields": [{"name": "a", "type": "string"}], "retention": retention})
}

fn assert_invalid_retention(answer: &Answer, bad: &Value) {
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{bad}: {}",
        answer.body
    );
    assert_eq!(answer.code(), "invalid_schema", "{bad}");
    let errors = answer.body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{bad}: {}", answer.body);
    assert_eq!(errors[0]["field"], "retention", "{bad}");
    assert_eq!(errors[0]["code"], "invalid_retention", "{bad}");
}

async fn duplicate(app: &TestApp, id: &str, body: Value) -> Answer {
    app.admin(
        Method::POST,
        &format!("/v1/connectors/{id}/duplicate"),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn retention_is_checked_normalised_and_editable() {
    let app = spawn_app().await;
    let forever = app.post_connector(definition("forever", Value::Null)).await;
    assert_eq!(forever.status, StatusCode::CREATED, "{}", forever.body);
    assert_eq!(forever.body["retention"], Value::Null);

    let kept = app.post_connector(definition("kept", json!("720h"))).await;
    assert_eq!(kept.status, StatusCode::CREATED, "{}", kept.body);
    assert_eq!(kept.body["retention"], "30d");
    let id = id_of(&kept.body);
    let stored: (Option<i64>,) =
        sqlx::query_as("SELECT retention_seconds FROM connectors WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert_eq!(stored.0, Some(30 * 86_400));

    // Shorter than the partition span (a day by default), not a whole
    // number and one unit, or beyond a century: 422 naming the field, on
    // create, edit and duplicate alike, and nothing changes.
    for bad in [
        json!("1h"),
        json!("86399s"),
        json!("30 days"),
        json!("1.5d"),
        json!("1d12h"),
        json!("0d"),
        json!("36501d"),
        json!(""),
        json!("1M"),
    ] {
        assert_invalid_retention(
            &app.post_connector(definition("bad", bad.clone())).await,
            &bad,
        );
        assert_invalid_retention(&app.patch(&id, json!({"retention": bad})).await, &bad);
        let copy = duplicate(&app, &id, json!({"name": "bad", "retention": bad})).await;
        assert_invalid_retention(&copy, &bad);
    }
    // Not a string at all: the body's own error, naming the field.
    let number = app.post_connector(definition("number", json!(30))).await;
    assert_eq!(
        number.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        number.body
    );
    assert!(
        number.body.to_string().contains("retention"),
        "{}",
        number.body
    );
    assert_eq!(app.get(&id).await.body["retention"], "30d");

    // An edit changes it; other edits keep it; null keeps records forever.
    let edited = app.patch(&id, json!({"retention": "36h"})).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["retention"], "36h");
    let renamed = app.patch(&id, json!({"name": "renamed"})).await;
    assert_eq!(renamed.body["retention"], "36h");
    assert_eq!(
        renamed.body["schema_version"], 1,
        "retention changes no record"
    );
    let cleared = app.patch(&id, json!({"retention": null})).await;
    assert_eq!(cleared.body["retention"], Value::Null);
    assert_eq!(app.get(&id).await.body["retention"], Value::Null);

    // A copy takes the source's retention, or the one it is given.
    app.patch(&id, json!({"retention": "7d"})).await;
    let same = duplicate(&app, &id, json!({"name": "copy"})).await;
    assert_eq!(same.status, StatusCode::CREATED, "{}", same.body);
    assert_eq!(same.body["retention"], "7d");
    let own = duplicate(&app, &id, json!({"name": "copy 2", "retention": "2d"})).await;
    assert_eq!(own.body["retention"], "2d");
    let none = duplicate(&app, &id, json!({"name": "copy 3", "retention": null})).await;
    assert_eq!(none.body["retention"], Value::Null);

    let listed = app.admin(Method::GET, "/v1/connectors", None).await.body;
    let retentions: Vec<&Value> = listed["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["retention"])
        .collect();
    assert_eq!(
        retentions,
        [
            &Value::Null,
            &json!("7d"),
            &json!("7d"),
            &json!("2d"),
            &Value::Null
        ]
    );
}

#[tokio::test]
async fn the_shortest_retention_is_one_partition_span() {
    let app = spawn_app_with(|settings| settings.partition_span = Duration::from_secs(2)).await;
    let short = app.post_connector(definition("short", json!("2s"))).await;
    assert_eq!(short.status, StatusCode::CREATED, "{}", short.body);
    assert_eq!(short.body["retention"], "2s");
    let shorter = app.post_connector(definition("shorter", json!("1s"))).await;
    assert_invalid_retention(&shorter, &json!("1s"));
    let message = shorter.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("2s") && message.contains("SLUICE_PARTITION_SPAN"),
        "{message}"
    );
}
