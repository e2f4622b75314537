//! GET: values, pages, projection, filters, formats and bad parameters.

use serde_json::{Value, json};
use sluice_testkit::api;

use crate::helpers::{Connector, TestApp, all_types, spawn_app};

/// A connector with `count` records whose `n` runs 1..=count.
async fn numbered(app: &TestApp, count: usize) -> Connector {
    let connector = app
        .create_connector(
            "numbered",
            json!([
                {"name": "n", "type": "integer"},
                {"name": "label", "type": "string", "nullable": true},
            ]),
        )
        .await;
    let records: Vec<Value> = (1..=count)
        .map(|n| json!({"n": n, "label": if n % 2 == 0 { Value::Null } else { json!(format!("odd {n}")) }}))
        .collect();
    app.publish(connector.id, Value::Array(records)).await;
    app.wait_stored(connector.id, count as i64).await;
    app.wait_visible(&connector).await;
    connector
}

fn ns(page: &Value) -> Vec<i64> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn every_type_round_trips_exactly() {
    let app = spawn_app().await;
    let connector = app.create_connector("types", all_types()).await;
    // Raw text: a JSON number beyond u64 cannot go through serde_json::Value.
    app.publish_text(
        connector.id,
        r#"[
            {
                "s": "héllo, \"world\"\n",
                "i": -9223372036854775808,
                "n": 0.1,
                "d": "12345678901234567890.123456789012345678901234567890",
                "b": true,
                "day": "2024-02-29",
                "at": "2026-11-29T14:30:00.123456+01:30",
                "j": {"nested": [1, 2.5, "x", null, {"big": 123456789012345678901234567890}]}
            },
            {"s": null, "i": null, "n": null, "d": null, "b": null, "day": null, "at": null, "j": null},
            {"n": 1e300, "d": 0.5, "i": 9223372036854775807, "j": "just a string", "at": "2026-01-01T00:00:00Z"},
            {"j": [1, 2, 3], "d": "-0.000000000000000000000000000001"}
        ]"#,
    )
    .await;
    app.wait_stored(connector.id, 4).await;
    app.wait_visible(&connector).await;

    let records = app.all_records(&connector).await;
    assert_eq!(records.len(), 4);
    let first = &records[0];
    assert_eq!(first["_id"], "1");
    assert!(first["_received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["s"], "héllo, \"world\"\n");
    assert_eq!(first["i"], json!(-9223372036854775808i64));
    assert_eq!(first["n"], json!(0.1));
    assert_eq!(
        first["d"],
        "12345678901234567890.123456789012345678901234567890"
    );
    assert_eq!(first["b"], true);
    assert_eq!(first["day"], "2024-02-29");
    assert_eq!(first["at"], "2026-11-29T13:00:00.123456Z");
    assert_eq!(
        first["j"]["nested"].as_array().unwrap()[..4],
        json!([1, 2.5, "x", null]).as_array().unwrap()[..]
    );
    let second = &records[1];
    for field in ["s", "i", "n", "d", "b", "day", "at", "j"] {
        assert_eq!(second[field], Value::Null, "{field}");
    }
    let third = &records[2];
    assert_eq!(third["_id"], "3");
    assert_eq!(third["n"], json!(1e300));
    assert_eq!(third["d"], "0.5");
    assert_eq!(third["i"], json!(9223372036854775807i64));
    assert_eq!(third["j"], "just a string");
    assert_eq!(third["at"], "2026-01-01T00:00:00Z");
    assert_eq!(records[3]["j"], json!([1, 2, 3]));
    assert_eq!(records[3]["d"], "-0.000000000000000000000000000001");

    // Big JSON numbers survive byte for byte, not through a float.
    let text = app
        .records(&connector, "fields=j&limit=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("123456789012345678901234567890"), "{text}");
}

#[tokio::test]
async fn pages_follow_next_cursor_and_pick_up_later_records() {
    let app = spawn_app().await;
    let connector = numbered(&app, 25).await;

    let first = app.page(&connector, "limit=10").await;
    assert_eq!(ns(&first), (1..=10).collect::<Vec<_>>());
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .page(&connector, &format!("limit=10&cursor={cursor}"))
        .await;
    assert_eq!(ns(&second), (11..=20).collect::<Vec<_>>());
    let cursor = second["next_cursor"].as_str().unwrap();
    let third = app
        .page(&connector, &format!("limit=10&cursor={cursor}"))
        .await;
    assert_eq!(ns(&third), (21..=25).collect::<Vec<_>>());
    assert_eq!(third["has_more"], false);
    let ids: Vec<&str> = third["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["21", "22", "23", "24", "25"]);

    // At the end: an empty page that keeps the cursor.
    let end = third["next_cursor"].as_str().unwrap().to_owned();
    let empty = app.page(&connector, &format!("cursor={end}")).await;
    assert_eq!(empty["records"], json!([]));
    assert_eq!(empty["has_more"], false);
    assert_eq!(empty["next_cursor"], end.as_str());

    // Records that arrive later come after that cursor.
    app.publish(connector.id, json!([{"n": 26}, {"n": 27}]))
        .await;
    app.wait_stored(connector.id, 27).await;
    let later = app.page(&connector, &format!("cursor={end}")).await;
    assert_eq!(ns(&later), [26, 27]);

    // A connector without records still hands out a cursor.
    let fresh = app
        .create_connector("fresh", json!([{"name": "x", "type": "string"}]))
        .await;
    app.wait_visible(&fresh).await;
    let page = app.page(&fresh, "").await;
    assert_eq!(page["records"], json!([]));
    assert!(page["next_cursor"].is_string());
}

#[tokio::test]
async fn projection_returns_the_named_fields_only() {
    let app = spawn_app().await;
    let connector = numbered(&app, 3).await;
    let page = app.page(&connector, "fields=label").await;
    let first = page["records"][0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["_id", "_received_at", "label"]);
    assert_eq!(first["label"], "odd 1");

    let response = app
        .get(
            &format!("/v1/connectors/{}/records?fields=label,nope", connector.id),
            &connector.read_token,
        )
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "unknown_field");
    assert!(problem["detail"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn each_filter_operator_selects_its_records() {
    let app = spawn_app().await;
    let connector = numbered(&app, 10).await;
    let cases: &[(&str, Vec<i64>)] = &[
        ("n=eq.3", vec![3]),
        ("n=neq.3", vec![1, 2, 4, 5, 6, 7, 8, 9, 10]),
        ("n=gt.8", vec![9, 10]),
        ("n=gte.8", vec![8, 9, 10]),
        ("n=lt.3", vec![1, 2]),
        ("n=lte.3", vec![1, 2, 3]),
        ("label=is.null", vec![2, 4, 6, 8, 10]),
        ("label=not.null", vec![1, 3, 5, 7, 9]),
        ("label=eq.odd%205", vec![5]),
        ("n=gt.2&n=lt.6&label=not.null", vec![3, 5]),
        ("_received_at=gt.2000-01-01T00:00:00Z", (1..=10).collect()),
        ("_received_at=lt.2000-01-01T00:00:00%2B01:00", vec![]),
    ];
    for (query, expected) in cases {
        let page = app.page(&connector, query).await;
        assert_eq!(&ns(&page), expected, "{query}");
    }

    // A filtered page ends at its last match; the next one goes on.
    let page = app.page(&connector, "label=not.null&limit=2").await;
    assert_eq!(ns(&page), [1, 3]);
    assert_eq!(page["has_more"], true);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = app
        .page(
            &connector,
            &format!("label=not.null&limit=3&cursor={cursor}"),
        )
        .await;
    assert_eq!(ns(&page), [5, 7, 9]);
    assert_eq!(page["has_more"], false);

    for (query, code, names) in [
        ("n=eq.three", "invalid_filter", "n"),
        ("n=like.3", "invalid_filter", "n"),
        ("missing=eq.1", "unknown_field", "missing"),
        (
            "_received_at=gt.yesterday",
            "invalid_filter",
            "_received_at",
        ),
    ] {
        let response = app.records(&connector, query).await;
        assert_eq!(response.status(), 400, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{query}");
        assert!(
            problem["detail"].as_str().unwrap().contains(names),
            "{query}: {problem}"
        );
    }
}

#[tokio::test]
async fn filters_parse_values_by_field_type() {
    let app = spawn_app().await;
    let connector = app.create_connector("typed", all_types()).await;
    app.publish(
        connector.id,
        json!([
            {"s": "a", "n": 1.5, "d": "10.25", "b": true, "day": "2026-01-01", "at": "2026-01-01T10:00:00Z", "j": {"k": 1}},
            {"s": "b", "n": 2.5, "d": "20.5", "b": false, "day": "2026-06-01", "at": "2026-06-01T10:00:00Z", "j": [1]},
        ]),
    )
    .await;
    app.wait_stored(connector.id, 2).await;
    app.wait_visible(&connector).await;
    let ss = |page: Value| -> Vec<String> {
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["s"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, expected) in [
        ("n=gt.2", vec!["b"]),
        ("d=eq.10.250", vec!["a"]),
        ("d=gte.11", vec!["b"]),
        ("b=eq.false", vec!["b"]),
        ("day=lt.2026-03-01", vec!["a"]),
        ("at=gte.2026-06-01T12:00:00%2B02:00", vec!["b"]),
        ("j=eq.%7B%22k%22%3A1%7D", vec!["a"]),
        ("s=gt.a", vec!["b"]),
    ] {
        assert_eq!(ss(app.page(&connector, query).await), expected, "{query}");
    }
    for query in [
        "d=eq.1e99999",
        "b=eq.yes",
        "day=eq.2026-02-30",
        "j=gt.1",
        "j=eq.{",
        "n=eq.NaN",
    ] {
        let response = app.records(&connector, query).await;
        assert_eq!(response.status(), 400, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_filter", "{query}");
    }
}

#[tokio::test]
async fn ndjson_and_csv_stream_the_records_with_the_cursor_in_a_header() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "formats",
            json!([
                {"name": "name", "type": "string", "nullable": true},
                {"name": "meta", "type": "json", "nullable": true},
                {"name": "price", "type": "decimal", "nullable": true},
            ]),
        )
        .await;
    app.publish(
        connector.id,
        json!([
            {"name": "a, \"quoted\"", "meta": {"x": [1, 2]}, "price": "1.50"},
            {"name": null, "meta": null, "price": null},
            {"name": "c"},
        ]),
    )
    .await;
    app.wait_stored(connector.id, 3).await;
    app.wait_visible(&connector).await;
    let url = format!("/v1/connectors/{}/records", connector.id);

    let response = app
        .get(
            &format!("{url}?format=ndjson&limit=2"),
            &connector.read_token,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let cursor = response.headers()["sluice-next-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    let lines: Vec<Value> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["name"], "a, \"quoted\"");
    assert_eq!(lines[0]["meta"], json!({"x": [1, 2]}));
    assert_eq!(lines[0]["price"], "1.50");
    assert_eq!(lines[1]["_id"], "2");
    // The header cursor goes on where the body stopped.
    let rest = app.page(&connector, &format!("cursor={cursor}")).await;
    assert_eq!(rest["records"][0]["name"], "c");

    let response = app
        .get(&format!("{url}?format=csv"), &connector.read_token)
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(response.headers().contains_key("sluice-next-cursor"));
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "_id,_received_at,name,meta,price");
    assert!(
        lines[1].ends_with(r#","a, ""quoted""","{""x"": [1, 2]}",1.50"#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("2,") && lines[2].ends_with("Z,,,"),
        "{}",
        lines[2]
    );
    assert_eq!(lines.len(), 4);

    // The Accept header chooses too; format= wins over it.
    let accept = |value: &'static str| {
        app.client
            .get(format!("{}{url}", app.read_url()))
            .bearer_auth(&connector.read_token)
            .header("accept", value)
            .send()
    };
    let response = accept("text/csv").await.unwrap();
    assert!(response.text().await.unwrap().starts_with("_id,"));
    let response = accept("application/x-ndjson").await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let response = accept("*/*").await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let response = app
        .client
        .get(format!("{}{url}?format=json", app.read_url()))
        .bearer_auth(&connector.read_token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_stable_code() {
    let app = spawn_app().await;
    let connector = numbered(&app, 1).await;
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=10001", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("limit=1.5", "invalid_limit"),
        ("cursor=bm9wZQ", "invalid_cursor"),
        ("cursor=%%%", "invalid_cursor"),
        ("wait=31", "invalid_wait"),
        ("wait=-1", "invalid_wait"),
        ("format=xml", "invalid_format"),
        ("fields=", "invalid_fields"),
    ] {
        let response = app.records(&connector, query).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{query}");
    }
    // The largest page is allowed.
    let page = app.page(&connector, "limit=10000").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    // A cursor of /rejected is not one of /records.
    let rejected: Value = app
        .get(
            &format!("/v1/connectors/{}/rejected", connector.id),
            &connector.read_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .get(
            &format!(
                "/v1/connectors/{}/records?cursor={}",
                connector.id,
                rejected["next_cursor"].as_str().unwrap()
            ),
            &connector.read_token,
        )
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn rejected_records_are_served_with_their_errors() {
    let app = spawn_app().await;
    let connector = app
        .create_connector("partial", json!([{"name": "age", "type": "integer"}]))
        .await;
    app.publish(
        connector.id,
        json!([{"age": 1}, {"age": "x"}, {"age": 2}, {"extra": true, "age": 3}]),
    )
    .await;
    app.wait_stored(connector.id, 2).await;
    app.wait_visible(&connector).await;
    let response = app
        .get(
            &format!("/v1/connectors/{}/rejected?limit=1", connector.id),
            &connector.read_token,
        )
        .await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["has_more"], true);
    let first = &page["records"][0];
    assert_eq!(first["_id"], "1");
    assert_eq!(first["record"], json!({"age": "x"}));
    assert_eq!(first["errors"][0]["code"], "type_mismatch");
    assert!(first["_received_at"].is_string());
    let cursor = page["next_cursor"].as_str().unwrap();
    let page: Value = app
        .get(
            &format!("/v1/connectors/{}/rejected?cursor={cursor}", connector.id),
            &connector.read_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"][0]["_id"], "2");
    assert_eq!(
        page["records"][0]["record"],
        json!({"extra": true, "age": 3})
    );
    assert_eq!(page["has_more"], false);
    // The accepted ones are records 1 and 2.
    let records = app.all_records(&connector).await;
    let ages: Vec<&Value> = records.iter().map(|r| &r["age"]).collect();
    assert_eq!(ages, [&json!(1), &json!(2)]);
}

#[tokio::test]
async fn service_routes_answer() {
    let app = spawn_app().await;
    let url = app.read_url();
    let ready = app
        .client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body, json!({"postgres": "ok", "nats": "ok"}));
    let openapi = api::fetch_json(app.client.get(format!("{url}/openapi.json"))).await;
    assert!(openapi["paths"]["/v1/connectors/{id}/records"]["get"].is_object());
    assert!(openapi["paths"]["/v1/connectors/{id}/rejected"]["get"].is_object());
    // Storing shows up in the metrics (shared by the tests of this process,
    // so only their presence is checked).
    numbered(&app, 1).await;
    let metrics = api::fetch_text(app.client.get(format!("{url}/metrics"))).await;
    for name in [
        "sluice_read_records_stored_total",
        "sluice_read_batch_records",
        "sluice_read_store_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let missing = app.client.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn pages_read_after_a_type_change_show_the_converted_values() {
    let app = spawn_app().await;
    let connector = numbered(&app, 2).await;
    // Read through every pooled connection's statement cache, more or less.
    for _ in 0..20 {
        let page = app.page(&connector, "n=gte.1").await;
        assert_eq!(page["records"][0]["n"], 1);
    }
    app.patch_connector(
        connector.id,
        json!({"fields": [
            {"name": "n", "type": "string"},
            {"name": "label", "type": "string", "nullable": true},
        ]}),
    )
    .await;
    for _ in 0..20 {
        let page = app.page(&connector, "n=gte.1").await;
        assert_eq!(page["records"][0]["n"], "1");
    }
}
