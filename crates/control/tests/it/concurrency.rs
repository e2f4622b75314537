//! Edits racing each other: each applies whole, in some order, and the
//! bucket ends with what the database holds.

use reqwest::StatusCode;
use serde_json::json;

use crate::{id_of, spawn_app};

#[tokio::test]
async fn concurrent_edits_apply_one_by_one_and_the_bucket_ends_current() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create("race", json!([{"name": "a", "type": "string"}]))
            .await,
    );
    let edits = (0..8).map(|i| {
        let app = &app;
        let id = &id;
        async move {
            app.patch(
                id,
                json!({"fields": [
                    {"name": "a", "type": "string", "description": format!("edit {i}")},
                    {"name": format!("f{i}"), "type": "integer", "nullable": true},
                ]}),
            )
            .await
        }
    });
    for answer in futures::future::join_all(edits).await {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let got = app.get(&id).await.body;
    assert_eq!(got["schema_version"], 9, "every edit counted once");
    let fields = got["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 2);
    // The table matches the last edit: `a` and that edit's own field.
    let columns: Vec<String> = app.columns(&id).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        columns[2..],
        [
            fields[0]["name"].as_str().unwrap(),
            fields[1]["name"].as_str().unwrap()
        ]
    );
    let doc = app.published(&id).await.unwrap();
    assert_eq!(doc.schema_version, 9);
    assert_eq!(doc.schema.fields()[1].name.as_str(), fields[1]["name"]);
}

#[tokio::test]
async fn of_two_creates_with_one_name_exactly_one_wins() {
    let app = spawn_app().await;
    let body = || json!({"name": "twin", "fields": [{"name": "a", "type": "string"}]});
    let (first, second) = tokio::join!(app.post_connector(body()), app.post_connector(body()),);
    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
    assert_eq!(app.bucket_keys().await.len(), 1);
}
