//! Query values that PostgreSQL cannot hold or that do not decode: each is a
//! 400 problem+json with a stable code, never a 500 from the database, and
//! the reader goes on serving.

use serde_json::{Value, json};
use sluice_schema::{ExtraFields, Format, validate};
use sluice_testkit::ADMIN_TOKEN;

use crate::helpers::{Connector, TestApp, spawn_app};

/// A connector of every type with one stored record.
async fn typed(app: &TestApp) -> Connector {
    let connector = app
        .create_connector(
            "typed",
            json!([
                {"name": "s", "type": "string", "nullable": true},
                {"name": "i", "type": "integer", "nullable": true},
                {"name": "n", "type": "number", "nullable": true},
                {"name": "dt", "type": "date", "nullable": true},
                {"name": "at", "type": "timestamp", "nullable": true},
                {"name": "j", "type": "json", "nullable": true},
            ]),
        )
        .await;
    app.publish(
        connector.id,
        json!([{"s": "a", "i": 1, "n": 1.5, "dt": "2026-01-05", "at": "2026-01-05T10:00:00Z", "j": {"k": 1}}]),
    )
    .await;
    app.wait_stored(connector.id, 1).await;
    app.wait_visible(&connector).await;
    connector
}

/// GET `path` answers 400 problem+json with `code`, naming `parameter`;
/// then an ordinary page of `connector` still holds its record.
async fn assert_refused(
    app: &TestApp,
    connector: &Connector,
    path: &str,
    code: &str,
    parameter: &str,
) {
    let response = app.get(path, &connector.read_token).await;
    assert_eq!(response.status(), 400, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{path}"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "{path}: {problem}");
    assert_eq!(problem["status"], 400, "{path}: {problem}");
    assert_eq!(problem["parameter"], parameter, "{path}: {problem}");
    assert!(problem["type"].is_string(), "{path}: {problem}");
    assert!(problem["title"].is_string(), "{path}: {problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{path}: {problem}"
    );
    let page = app.page(connector, "").await;
    assert_eq!(page["records"][0]["s"], "a", "served after {path}");
}

async fn assert_filter_refused(app: &TestApp, connector: &Connector, query: &str, field: &str) {
    let path = format!("/v1/connectors/{}/records?{query}", connector.id);
    assert_refused(app, connector, &path, "invalid_filter", field).await;
}

#[tokio::test]
async fn a_nul_in_a_string_filter_is_a_400() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    assert_filter_refused(&app, &connector, "s=eq.%00", "s").await;
    assert_filter_refused(&app, &connector, "s=gt.a%00b", "s").await;
}

#[tokio::test]
async fn a_nul_in_a_json_filter_is_a_400() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    // `"\u0000"` and `{"\u0000":1}`: jsonb refuses the escape.
    assert_filter_refused(&app, &connector, "j=eq.%22%5Cu0000%22", "j").await;
    assert_filter_refused(&app, &connector, "j=eq.%7B%22%5Cu0000%22%3A1%7D", "j").await;
    // A raw NUL inside a JSON string is no JSON text at all.
    assert_filter_refused(&app, &connector, "j=eq.%22%00%22", "j").await;
    assert_eq!(
        app.page(&connector, "j=eq.%7B%22k%22%3A1%7D").await["records"][0]["s"],
        "a"
    );
}

#[tokio::test]
async fn a_date_postgresql_cannot_hold_is_a_400() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    for value in ["-5000-01-01", "10000-01-01", "%2B2026-01-05"] {
        assert_filter_refused(&app, &connector, &format!("dt=eq.{value}"), "dt").await;
    }
}

/// One grammar: the date a filter refuses is the one ingest refuses.
#[tokio::test]
async fn a_date_filter_refuses_what_ingest_refuses() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    assert_filter_refused(&app, &connector, "dt=eq.2026-1-5", "dt").await;

    let (schema, _) = app.schema(connector.id).await;
    let ingested = validate(&schema, ExtraFields::Reject, Format::Csv, b"dt\n2026-1-5\n")
        .expect("well-formed CSV");
    let codes: Vec<&str> = ingested.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["invalid_date"]);
    assert_eq!(
        app.page(&connector, "dt=eq.2026-01-05").await["records"][0]["s"],
        "a"
    );
}

#[tokio::test]
async fn values_beyond_their_type_are_a_400() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    for (query, field) in [
        ("i=eq.9223372036854775808", "i"),
        ("i=lt.-9223372036854775809", "i"),
        ("n=gt.1e309", "n"),
        ("at=gt.10000-01-01T00:00:00Z", "at"),
        ("at=gt.0000-01-01T00:00:00%2B01:00", "at"),
        (
            "_received_at=gt.0000-01-01T00:00:00%2B01:00",
            "_received_at",
        ),
        ("_received_at=lt.-5000-01-01T00:00:00Z", "_received_at"),
        ("j=eq.null", "j"),
    ] {
        assert_filter_refused(&app, &connector, query, field).await;
    }
    // The rejected records' `_received_at` is read by the same grammar.
    let path = format!(
        "/v1/connectors/{}/rejected?_received_at=gt.0000-01-01T00:00:00%2B01:00",
        connector.id
    );
    assert_refused(&app, &connector, &path, "invalid_filter", "_received_at").await;
    // The extremes themselves are values.
    let page = app
        .page(
            &connector,
            "i=gte.-9223372036854775808&i=lte.9223372036854775807&at=gte.0000-01-01T00:00:00Z&at=lte.9999-12-31T23:59:59Z",
        )
        .await;
    assert_eq!(page["records"][0]["s"], "a");
}

#[tokio::test]
async fn a_query_value_that_is_not_utf8_is_a_400() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    for (query, parameter) in [
        ("s=eq.%FF", "s"),
        ("s=eq.a%C3", "s"),
        ("%FF=eq.1", "\u{fffd}"),
    ] {
        let path = format!("/v1/connectors/{}/records?{query}", connector.id);
        assert_refused(&app, &connector, &path, "invalid_query", parameter).await;
    }
    let path = format!("/v1/connectors/{}/rejected?limit=%FF", connector.id);
    assert_refused(&app, &connector, &path, "invalid_query", "limit").await;
}

#[tokio::test]
async fn a_connector_id_that_is_not_utf8_names_no_connector() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    for route in ["records", "rejected"] {
        let path = format!("/v1/connectors/%FF/{route}");
        for (token, status) in [
            (ADMIN_TOKEN, 404),
            (connector.read_token.as_str(), 403),
            ("sluice_r_unknown", 401),
        ] {
            let response = app.get(&path, token).await;
            assert_eq!(response.status(), status, "{path}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{path}"
            );
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["status"], status, "{path}: {problem}");
            assert!(problem["code"].is_string(), "{path}: {problem}");
        }
    }
    assert_eq!(app.page(&connector, "").await["records"][0]["s"], "a");
}

#[tokio::test]
async fn filters_are_bounded_in_number() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    let many = vec!["s=eq."; 101].join("&");
    let path = format!("/v1/connectors/{}/records?{many}", connector.id);
    assert_refused(&app, &connector, &path, "too_many_filters", "s").await;
    let hundred = vec!["s=neq."; 100].join("&");
    assert_eq!(app.page(&connector, &hundred).await["records"][0]["s"], "a");
}

#[tokio::test]
async fn limits_and_cursors_that_overflow_are_handled() {
    let app = spawn_app().await;
    let connector = typed(&app).await;
    let path = format!(
        "/v1/connectors/{}/records?limit=99999999999999999999",
        connector.id
    );
    assert_refused(&app, &connector, &path, "invalid_limit", "limit").await;
    // A cursor at the very end of the id space: an empty page, not an
    // overflow.
    use base64::Engine as _;
    let last = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("r:9223372036854775807");
    let page = app
        .page(&connector, &format!("cursor={last}&limit=10000"))
        .await;
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["has_more"], false);
}
