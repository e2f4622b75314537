//! GET renders every type byte for byte as SPEC 5 shows it, whichever way
//! the page is read: an unfiltered page by binary COPY, a filtered one by a
//! query with bound values.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sluice_runtime::store::records_table;

use crate::helpers::{Connector, TestApp, all_types, spawn_app};

/// Publishes `body` as one batch received at `received_at`, and waits
/// until its `count` records can be read.
async fn store_at(app: &TestApp, connector: &Connector, body: &str, received_at: &str, count: i64) {
    let mut batch = app.batch_of(connector.id, body).await;
    batch.received_at = DateTime::parse_from_rfc3339(received_at)
        .unwrap()
        .with_timezone(&Utc);
    app.publish_batch(connector.id, &batch).await;
    app.wait_stored(connector.id, count).await;
    app.wait_visible(connector).await;
}

/// The body and `Sluice-Next-Cursor` of one GET of records.
async fn body_of(app: &TestApp, connector: &Connector, query: &str) -> (String, String) {
    let response = app.records(connector, query).await;
    assert_eq!(response.status(), 200, "{query}");
    let cursor = response.headers()["sluice-next-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.text().await.unwrap(), cursor)
}

/// A filter that every record passes, with a value to bind: its pages are
/// read by a query, not by COPY (which takes no parameters).
const BOUND_FILTER: &str = "_received_at=gte.0001-01-01T00:00:00Z";

/// `body_of` the unfiltered page, after checking that [`BOUND_FILTER`]
/// gives the same bytes.
async fn both_ways(app: &TestApp, connector: &Connector, query: &str) -> String {
    let (copied, cursor) = body_of(app, connector, query).await;
    let filtered = body_of(app, connector, &format!("{query}&{BOUND_FILTER}")).await;
    assert_eq!((&copied, &cursor), (&filtered.0, &filtered.1), "{query}");
    copied
}

#[tokio::test]
async fn every_type_is_written_byte_for_byte_in_every_format() {
    let app = spawn_app().await;
    let connector = app.create_connector("rendering", all_types()).await;
    store_at(
        &app,
        &connector,
        r#"[
            {
                "s": "héllo, \"world\"\n", "i": -9223372036854775808, "n": 0.1,
                "d": "12345678901234567890.123456789012345678901234567890", "b": true,
                "day": "0000-01-01", "at": "0000-01-01T00:00:00Z", "j": {"a": [1, "x,y"]}
            },
            {"s": null, "i": null, "n": null, "d": null, "b": null, "day": null, "at": null, "j": null},
            {
                "s": " edge spaces ", "i": 9223372036854775807, "n": 1e20, "d": "-0.00",
                "b": false, "day": "9999-12-31", "at": "9999-12-31T23:59:59.999999Z",
                "j": "str\"q"
            },
            {
                "s": "tab\there\r\nCRLF 日本語 🦀", "n": -1.5, "d": "1e-5", "day": "2024-02-29",
                "at": "2026-11-29T14:30:00.123+01:30", "j": 123456789012345678901234567890
            },
            {"s": "", "i": 0, "n": 123.456, "d": "007.500", "j": [null, true, {"k": "\u00e9\n"}]}
        ]"#,
        "2026-12-03T10:00:00.5+00:00",
        5,
    )
    .await;

    let cursor = body_of(&app, &connector, "limit=1").await.1;
    let last = body_of(&app, &connector, "").await.1;
    let records = [
        r#"{"_id":"1","_received_at":"2026-12-03T10:00:00.500Z","s":"héllo, \"world\"\n","i":-9223372036854775808,"n":0.1,"d":"12345678901234567890.123456789012345678901234567890","b":true,"day":"0000-01-01","at":"0000-01-01T00:00:00Z","j":{"a": [1, "x,y"]}}"#,
        r#"{"_id":"2","_received_at":"2026-12-03T10:00:00.500Z","s":null,"i":null,"n":null,"d":null,"b":null,"day":null,"at":null,"j":null}"#,
        r#"{"_id":"3","_received_at":"2026-12-03T10:00:00.500Z","s":" edge spaces ","i":9223372036854775807,"n":1e+20,"d":"0.00","b":false,"day":"9999-12-31","at":"9999-12-31T23:59:59.999999Z","j":"str\"q"}"#,
        r#"{"_id":"4","_received_at":"2026-12-03T10:00:00.500Z","s":"tab\there\r\nCRLF 日本語 🦀","i":null,"n":-1.5,"d":"0.00001","b":null,"day":"2024-02-29","at":"2026-11-29T13:00:00.123Z","j":123456789012345678901234567890}"#,
        r#"{"_id":"5","_received_at":"2026-12-03T10:00:00.500Z","s":"","i":0,"n":123.456,"d":"7.500","b":null,"day":null,"at":null,"j":[null, true, {"k": "é\n"}]}"#,
    ];
    assert_eq!(
        both_ways(&app, &connector, "format=json").await,
        format!(
            r#"{{"records":[{}],"next_cursor":"{last}","has_more":false}}"#,
            records.join(",")
        )
    );
    assert_eq!(
        both_ways(&app, &connector, "format=json&limit=1").await,
        format!(
            r#"{{"records":[{}],"next_cursor":"{cursor}","has_more":true}}"#,
            records[0]
        )
    );
    assert_eq!(
        both_ways(&app, &connector, "format=ndjson").await,
        records.map(|r| format!("{r}\n")).concat()
    );
    assert_eq!(
        both_ways(&app, &connector, "format=csv").await,
        [
            "_id,_received_at,s,i,n,d,b,day,at,j\n",
            "1,2026-12-03T10:00:00.500Z,\"héllo, \"\"world\"\"\n\",-9223372036854775808,0.1,12345678901234567890.123456789012345678901234567890,true,0000-01-01,0000-01-01T00:00:00Z,\"{\"\"a\"\": [1, \"\"x,y\"\"]}\"\n",
            "2,2026-12-03T10:00:00.500Z,,,,,,,,\n",
            "3,2026-12-03T10:00:00.500Z,\" edge spaces \",9223372036854775807,100000000000000000000,0.00,false,9999-12-31,9999-12-31T23:59:59.999999Z,\"\"\"str\\\"\"q\"\"\"\n",
            "4,2026-12-03T10:00:00.500Z,\"tab\there\r\nCRLF 日本語 🦀\",,-1.5,0.00001,,2024-02-29,2026-11-29T13:00:00.123Z,123456789012345678901234567890\n",
            "5,2026-12-03T10:00:00.500Z,,0,123.456,7.500,,,,\"[null, true, {\"\"k\"\": \"\"é\\n\"\"}]\"\n",
        ]
        .concat()
    );
    // A projection, in the order asked, is read the same two ways.
    assert_eq!(
        both_ways(&app, &connector, "format=csv&fields=j,d&cursor=").await,
        "_id,_received_at,j,d\n1,2026-12-03T10:00:00.500Z,\"{\"\"a\"\": [1, \"\"x,y\"\"]}\",12345678901234567890.123456789012345678901234567890\n2,2026-12-03T10:00:00.500Z,,\n3,2026-12-03T10:00:00.500Z,\"\"\"str\\\"\"q\"\"\",0.00\n4,2026-12-03T10:00:00.500Z,123456789012345678901234567890,0.00001\n5,2026-12-03T10:00:00.500Z,\"[null, true, {\"\"k\"\": \"\"é\\n\"\"}]\",7.500\n"
    );
}

/// Decimals of every shape come back as PostgreSQL's own text of the
/// stored value, timestamps at any fraction as RFC 3339 in UTC.
#[tokio::test]
async fn decimals_and_timestamps_read_as_postgresql_holds_them() {
    let app = spawn_app().await;
    let connector = app.create_connector("numbers", all_types()).await;
    let decimals = [
        "0",
        "-0",
        "0.0",
        "1",
        "-1",
        "9999",
        "10000",
        "-10000.0001",
        "0.00009999",
        "1e4",
        "1E-4",
        "12.3400",
        "-98765432109876543210.0123456789",
        "5e20",
        "1.000000000000000000001",
        "0.1e-30",
        "31415926535897932384626433832795028841971693993751",
        "+7",
        ".5",
        "5.",
    ];
    let times = [
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z"),
        ("1999-12-31T23:59:59.9Z", "1999-12-31T23:59:59.900Z"),
        ("2000-02-29T12:00:00.010-12:00", "2000-03-01T00:00:00.010Z"),
        (
            "1900-03-01T00:00:00.000001+00:00",
            "1900-03-01T00:00:00.000001Z",
        ),
        (
            "2100-12-31T23:59:59.99999+14:00",
            "2100-12-31T09:59:59.999990Z",
        ),
        ("0001-01-01T00:00:00.100Z", "0001-01-01T00:00:00.100Z"),
    ];
    let records: Vec<Value> = decimals
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let at = times.get(k).map_or(Value::Null, |(at, _)| json!(at));
            json!({"d": d, "at": at})
        })
        .collect();
    store_at(
        &app,
        &connector,
        &Value::Array(records).to_string(),
        "2026-12-03T10:00:00Z",
        decimals.len() as i64,
    )
    .await;
    let stored: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT d::text FROM {} ORDER BY _id",
        records_table(connector.id)
    ))
    .fetch_all(&app.db)
    .await
    .unwrap();
    let body = both_ways(&app, &connector, "format=ndjson&fields=d,at").await;
    let read: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(read.len(), decimals.len());
    for (k, record) in read.iter().enumerate() {
        assert_eq!(record["d"], stored[k].0, "{}", decimals[k]);
        let at = times.get(k).map_or(Value::Null, |(_, shown)| json!(shown));
        assert_eq!(record["at"], at, "{k}");
    }
}

/// A client that goes away in the middle of a page leaves no connection
/// half way through its COPY: every later page is whole and right.
#[tokio::test]
async fn pages_stay_whole_after_clients_leave_in_the_middle() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "wide",
            json!([{"name": "n", "type": "integer"}, {"name": "s", "type": "string"}]),
        )
        .await;
    // Five MB of CSV, in messages under NATS's 1 MB limit.
    let filler = "x".repeat(500);
    for batch in 0..20 {
        let records: Vec<Value> = (batch * 500..(batch + 1) * 500)
            .map(|n| json!({"n": n, "s": filler}))
            .collect();
        store_at(
            &app,
            &connector,
            &Value::Array(records).to_string(),
            "2026-12-03T10:00:00Z",
            (batch + 1) * 500,
        )
        .await;
    }
    // More than the pool's connections, each dropped after its first bytes.
    for _ in 0..20 {
        let mut response = app.records(&connector, "limit=10000&format=csv").await;
        assert_eq!(response.status(), 200);
        assert!(response.chunk().await.unwrap().is_some());
    }
    for _ in 0..20 {
        let (body, _) = body_of(&app, &connector, "limit=10000&format=csv").await;
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 10_001);
        assert!(
            lines[10_000].starts_with("10000,"),
            "{}",
            &lines[10_000][..20]
        );
        assert!(lines[10_000].ends_with(&format!(",9999,{filler}")));
    }
}

/// Rejected records come by COPY too, and read the same as when filtered.
#[tokio::test]
async fn rejected_pages_are_the_same_both_ways() {
    let app = spawn_app().await;
    let connector = app
        .create_connector("refusals", json!([{"name": "age", "type": "integer"}]))
        .await;
    app.publish(
        connector.id,
        json!([{"age": "x"}, {"age": 1}, {"extra": "é,\"", "age": 3}]),
    )
    .await;
    app.wait_stored(connector.id, 1).await;
    app.wait_visible(&connector).await;
    let path = format!("/v1/connectors/{}/rejected", connector.id);
    for format in ["json", "ndjson", "csv"] {
        let get = |query: String| {
            let path = format!("{path}?{query}");
            let token = connector.read_token.clone();
            let app = &app;
            async move { app.get(&path, &token).await.text().await.unwrap() }
        };
        let copied = get(format!("format={format}")).await;
        let filtered = get(format!("format={format}&{BOUND_FILTER}")).await;
        assert_eq!(copied, filtered, "{format}");
        assert!(copied.contains("type_mismatch"), "{copied}");
    }
}
