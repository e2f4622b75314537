//! all_or_nothing and partial (SPEC 7).

use reqwest::StatusCode;

use crate::{TestApp, spawn_app};

const MIXED: &str = "{\"n\": 1}\n{\"n\": \"x\"}\n{\"n\": 3, \"s\": \"c\"}\n{\"m\": 4}\n";

#[tokio::test]
async fn all_or_nothing_refuses_the_whole_body_with_every_error() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    for query in [&[][..], &[("mode", "all_or_nothing")]] {
        let answer = TestApp::send(
            app.post(&connector, "application/x-ndjson", MIXED)
                .query(query),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{answer:?}"
        );
        assert_eq!(answer.code(), "validation_failed");
        assert_eq!(answer.body["error_count"], 3);
        let errors = answer.body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0]["record"], 1);
        assert_eq!(errors[0]["line"], 2);
        assert_eq!(errors[0]["field"], "n");
        assert_eq!(errors[0]["code"], "type_mismatch");
        assert!(errors[0]["message"].is_string());
        let codes: Vec<&str> = errors.iter().map(|e| e["code"].as_str().unwrap()).collect();
        assert!(codes.contains(&"unknown_field") && codes.contains(&"missing_field"));
    }
    assert!(app.published().await.is_empty(), "nothing published");
}

#[tokio::test]
async fn at_most_100_errors_are_listed_with_the_total() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let body = format!("n\nx\n{}", "y\n".repeat(150));
    let answer = TestApp::send(app.post(&connector, "text/csv", body)).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["errors"].as_array().unwrap().len(), 100);
    assert_eq!(answer.body["error_count"], 151);
}

#[tokio::test]
async fn partial_accepts_the_valid_records_and_carries_the_rejected_ones() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let answer = TestApp::send(
        app.post(&connector, "application/x-ndjson", MIXED)
            .query(&[("mode", "partial")]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.body["accepted"], 2);
    assert_eq!(answer.body["rejected"], 2);
    assert_eq!(answer.body["error_count"], 3);
    assert_eq!(answer.body["errors"].as_array().unwrap().len(), 3);
    assert_eq!(answer.body["errors"][0]["record"], 1);

    let published = app.published().await;
    assert_eq!(published.len(), 1);
    let batch = &published[0].batch;
    assert_eq!(batch.rows, 2);
    assert_eq!(batch.rejected.len(), 2);
    assert_eq!(batch.rejected[0].record, serde_json::json!({"n": "x"}));
    assert_eq!(batch.rejected[0].errors[0]["code"], "type_mismatch");
    assert_eq!(batch.rejected[1].record, serde_json::json!({"m": 4}));
    assert_eq!(batch.rejected[1].errors.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn partial_with_every_record_refused_still_keeps_them() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let answer = TestApp::send(
        app.post(
            &connector,
            "application/json",
            r#"[{"n": "a"}, {"n": "b"}]"#,
        )
        .query(&[("mode", "partial")]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body["accepted"], 0);
    assert_eq!(answer.body["rejected"], 2);
    let published = app.published().await;
    assert_eq!(published[0].batch.rows, 0);
    assert_eq!(published[0].batch.rejected.len(), 2);
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    for query in [
        &[("mode", "some")][..],
        &[("wait", "soon")],
        &[("mode", "partial"), ("mode", "partial")],
    ] {
        let answer = TestApp::send(
            app.post(&connector, "application/json", r#"{"n": 1}"#)
                .query(query),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(answer.code(), "invalid_parameter");
    }
    assert!(app.published().await.is_empty());
}
