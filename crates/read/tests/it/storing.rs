//! The store loop: exactly once, poison messages, deleted connectors and
//! records in flight across a schema edit.

use std::time::Duration;

use async_nats::HeaderMap;
use serde_json::{Value, json};
use sluice_read::StoreHooks;
use sluice_runtime::bus::headers;

use crate::helpers::{Connector, SHORT_ACK_WAIT, TestApp, spawn_app, spawn_control_only};

/// The connector holds records `n` = 1 to `count`, in that order, each
/// stored once: `_id`s 1 to `count`.
async fn assert_stored_once_in_order(app: &TestApp, connector: &Connector, count: i64) {
    let records = app.all_records(connector).await;
    let ns: Vec<Value> = records.iter().map(|r| r["n"].clone()).collect();
    assert_eq!(ns, (1..=count).map(|n| json!(n)).collect::<Vec<_>>());
    let ids: Vec<Value> = records.iter().map(|r| r["_id"].clone()).collect();
    assert_eq!(
        ids,
        (1..=count)
            .map(|n| json!(n.to_string()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_crash_between_commit_and_ack_stores_nothing_twice() {
    let mut app = spawn_control_only().await;
    let connector = app.integer_connector("once").await;
    // Two messages, stored together in one transaction.
    app.publish(connector.id, json!([{"n": 1}, {"n": 2}])).await;
    app.publish(connector.id, json!([{"n": 3}])).await;

    // The first reader commits the batch, then "dies" before its ack.
    let first = app.reader_dead_after_commit().await;
    // At least the first message was committed (both, if they came together).
    app.wait_stored(connector.id, 2).await;
    first.stop().await;

    // A new reader on the same deployment gets the message again, after the
    // ack wait, and must recognise it.
    app.start_reader(StoreHooks {
        ack_wait: Some(SHORT_ACK_WAIT),
        ..StoreHooks::default()
    })
    .await;
    let info = app.wait_consumer_idle().await;
    assert!(
        info.delivered.consumer_sequence >= 3,
        "the message was delivered again: {info:?}"
    );
    app.publish(connector.id, json!([{"n": 4}])).await;
    app.wait_stored(connector.id, 4).await;
    app.wait_visible(&connector).await;

    assert_stored_once_in_order(&app, &connector, 4).await;
}

#[tokio::test]
async fn messages_of_a_deleted_connector_are_dropped_without_blocking_others() {
    let mut app = spawn_control_only().await;
    let gone = app.integer_connector("gone").await;
    let kept = app.integer_connector("kept").await;
    for n in 0..3 {
        app.publish(gone.id, json!([{"n": n}])).await;
    }
    app.publish(kept.id, json!([{"n": 1}])).await;
    app.delete_connector(gone.id).await;
    app.publish(kept.id, json!([{"n": 2}])).await;

    app.start_reader(StoreHooks::default()).await;
    app.wait_stored(kept.id, 2).await;
    app.wait_consumer_idle().await;
    app.wait_visible(&kept).await;
    assert_eq!(app.all_records(&kept).await.len(), 2);
    let leftovers: (i64,) =
        sqlx::query_as("SELECT count(*) FROM connector_stats WHERE connector_id = $1")
            .bind(gone.id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(leftovers.0, 0);
}

/// A retry that JetStream did not catch (its duplicate table is rebuilt
/// after a restart only from what it holds) arrives as a new message, with
/// a new stream sequence, but as the same batch and chunk.
#[tokio::test]
async fn a_chunk_that_comes_again_as_a_new_message_is_stored_once() {
    let app = spawn_app().await;
    let connector = app.integer_connector("again").await;
    let batch = app.batch_of(connector.id, r#"[{"n": 1}, {"n": 2}]"#).await;
    let first = app.publish_batch(connector.id, &batch).await;
    app.wait_stored(connector.id, 2).await;
    app.wait_consumer_idle().await;
    let again = app.publish_batch(connector.id, &batch).await;
    assert!(again > first, "a new message: {again} after {first}");
    // Another chunk of the same batch is another identity.
    let mut next = app.batch_of(connector.id, r#"[{"n": 3}]"#).await;
    (next.batch_id, next.chunk, next.chunks) = (batch.batch_id, 1, 2);
    app.publish_batch(connector.id, &next).await;
    app.wait_stored(connector.id, 3).await;
    app.wait_consumer_idle().await;
    app.wait_visible(&connector).await;

    assert_stored_once_in_order(&app, &connector, 3).await;
}

/// A message whose headers name another chunk than its payload holds could
/// be taken for that chunk: it is set aside, not stored.
#[tokio::test]
async fn a_message_whose_headers_and_payload_disagree_is_set_aside() {
    let app = spawn_app().await;
    let connector = app.integer_connector("disagree").await;
    let batch = app.batch_of(connector.id, r#"[{"n": 1}]"#).await;
    let mut message_headers = HeaderMap::new();
    message_headers.insert(headers::CONNECTOR_ID, connector.id.to_string());
    message_headers.insert(headers::BATCH_ID, batch.batch_id.to_string());
    message_headers.insert(headers::CHUNK, "7");
    app.publish_with_headers(
        connector.id,
        message_headers,
        serde_json::to_vec(&batch).unwrap(),
    )
    .await;
    app.publish(connector.id, json!([{"n": 2}])).await;
    app.wait_stored(connector.id, 1).await;
    app.wait_consumer_idle().await;
    app.wait_visible(&connector).await;
    let records = app.all_records(&connector).await;
    let ns: Vec<&Value> = records.iter().map(|r| &r["n"]).collect();
    assert_eq!(ns, [&json!(2)]);
    let dead = app
        .js
        .get_stream(app.env.namespace.dead_letter_stream())
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .expect("a dead letter");
    let reason = dead.headers.get("Sluice-Dead-Letter-Reason").unwrap();
    assert!(
        reason.as_str().contains("headers say chunk 7"),
        "{reason:?}"
    );
}

#[tokio::test]
async fn poison_messages_go_to_the_dead_letter_stream_and_the_rest_is_stored() {
    let app = spawn_app().await;
    let connector = app
        .create_connector("poison", json!([{"name": "text", "type": "string"}]))
        .await;

    // Not JSON; no connector header; a value PostgreSQL refuses (NUL).
    app.publish_raw(connector.id, b"{not json".to_vec()).await;
    app.publish_with_headers(connector.id, HeaderMap::new(), b"{}".to_vec())
        .await;
    let mut nul = app.batch_of(connector.id, r#"[{"text": "ok"}]"#).await;
    if let sluice_runtime::bus::ColumnValues::String(values) = &mut nul.columns[0].values {
        values[0] = Some("nul \u{0} inside".to_owned());
    }
    app.publish_raw(connector.id, serde_json::to_vec(&nul).unwrap())
        .await;
    app.publish(connector.id, json!([{"text": "good"}])).await;

    app.wait_stored(connector.id, 1).await;
    app.wait_consumer_idle().await;
    app.wait_visible(&connector).await;
    let records = app.all_records(&connector).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["text"], "good");

    let dead = app
        .js
        .get_stream(app.env.namespace.dead_letter_stream())
        .await
        .unwrap();
    let mut reasons = Vec::new();
    for sequence in 1..=3 {
        let message = dead.get_raw_message(sequence).await.expect("dead letter");
        let reason = message
            .headers
            .get("Sluice-Dead-Letter-Reason")
            .expect("a reason")
            .as_str()
            .to_owned();
        reasons.push((message.subject.to_string(), reason));
    }
    let ns = app.env.namespace.as_str();
    assert_eq!(reasons[0].0, format!("{ns}.dead.{}", connector.id));
    assert!(reasons[0].1.contains("not a record batch"), "{reasons:?}");
    assert_eq!(reasons[1].0, format!("{ns}.dead.unknown"));
    assert!(reasons[1].1.contains(headers::CONNECTOR_ID), "{reasons:?}");
    assert!(reasons[2].1.contains("PostgreSQL refused"), "{reasons:?}");
}

#[tokio::test]
async fn records_in_flight_across_a_schema_edit_are_stored_under_the_new_schema() {
    let mut app = spawn_control_only().await;
    let connector = app
        .create_connector(
            "evolving",
            json!([
                {"name": "name", "type": "string"},
                {"name": "count", "type": "integer"},
                {"name": "day", "type": "date", "nullable": true},
                {"name": "dropped", "type": "string", "nullable": true},
            ]),
        )
        .await;
    // Published under version 1, not yet stored.
    app.publish(
        connector.id,
        json!([{"name": "a", "count": 7, "day": "2026-03-01", "dropped": "x"}]),
    )
    .await;
    // Rename name to title, widen count to decimal and day to timestamp,
    // remove one field and add another.
    app.patch_connector(
        connector.id,
        json!({"fields": [
            {"name": "title", "type": "string", "previous_name": "name"},
            {"name": "count", "type": "decimal"},
            {"name": "day", "type": "timestamp", "nullable": true},
            {"name": "added", "type": "boolean", "nullable": true},
        ]}),
    )
    .await;
    app.start_reader(StoreHooks::default()).await;
    app.wait_stored(connector.id, 1).await;
    app.wait_visible(&connector).await;
    let records = app.all_records(&connector).await;
    assert_eq!(records.len(), 1);
    let record = records[0].as_object().unwrap();
    let mut keys: Vec<&str> = record.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["_id", "_received_at", "added", "count", "day", "title"]
    );
    // Fields come in schema order.
    let text = app.records(&connector, "").await.text().await.unwrap();
    let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
    assert!(at("_id") < at("_received_at"));
    assert!(at("_received_at") < at("title"));
    assert!(at("title") < at("count") && at("count") < at("day") && at("day") < at("added"));
    assert_eq!(record["title"], "a");
    assert_eq!(record["count"], "7");
    assert_eq!(record["day"], "2026-03-01T00:00:00Z");
    assert_eq!(record["added"], Value::Null);
}

#[tokio::test]
async fn a_lost_consumer_is_made_again_without_replaying_stored_messages() {
    let app = spawn_app().await;
    let connector = app.integer_connector("lost").await;
    app.publish(connector.id, json!([{"n": 1}])).await;
    app.publish(connector.id, json!([{"n": 2}])).await;
    app.wait_stored(connector.id, 2).await;
    app.wait_consumer_idle().await;
    // As if their applied chunks had been forgotten, then the consumer
    // lost: a consumer replaying the stream from its start would store the
    // first two messages again, but acked messages have left the stream.
    sqlx::query("DELETE FROM applied_chunks")
        .execute(&app.db)
        .await
        .unwrap();
    let stream = app.env.namespace.records_stream();
    app.js
        .get_stream(&stream)
        .await
        .unwrap()
        .delete_consumer(&app.env.namespace.store_consumer())
        .await
        .unwrap();
    app.publish(connector.id, json!([{"n": 3}])).await;
    app.wait_stored(connector.id, 3).await;
    app.wait_visible(&connector).await;
    let records = app.all_records(&connector).await;
    let ns: Vec<&Value> = records.iter().map(|r| &r["n"]).collect();
    assert_eq!(ns, [&json!(1), &json!(2), &json!(3)]);
}

#[tokio::test]
async fn one_reader_gives_a_connectors_records_ids_in_stream_order() {
    let mut app = spawn_control_only().await;
    let a = app.integer_connector("a").await;
    let b = app.integer_connector("b").await;
    // Queued before the reader starts, so they arrive together in one pull
    // and are stored concurrently across connectors.
    for n in 0..20 {
        app.publish(a.id, json!([{"n": n}, {"n": n}])).await;
        app.publish(b.id, json!([{"n": n}])).await;
    }
    app.start_reader(StoreHooks::default()).await;
    app.wait_stored(a.id, 40).await;
    app.wait_stored(b.id, 20).await;
    app.wait_visible(&a).await;
    app.wait_visible(&b).await;
    for (connector, per_message) in [(&a, 2), (&b, 1)] {
        let ns: Vec<i64> = app
            .all_records(connector)
            .await
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = (0..20)
            .flat_map(|n| std::iter::repeat_n(n, per_message))
            .collect();
        assert_eq!(ns, expected);
    }
}

#[tokio::test]
async fn decimals_are_stored_as_postgresql_reads_their_text() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "decimals",
            json!([{"name": "i", "type": "integer"}, {"name": "d", "type": "decimal"}]),
        )
        .await;
    let literals = [
        "0",
        "-0.00",
        "1.50",
        "-12345.6789",
        "1.5e3",
        "15E-1",
        ".0001",
        "+10000",
        "007.",
        "0.00001e5",
        "99999.99990",
        "123456789012345678901234567890.123456789",
        "-9.99e999",
        "1e-1000",
    ];
    let records: Vec<Value> = literals
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"i": i, "d": d}))
        .collect();
    app.publish(connector.id, Value::Array(records)).await;
    app.wait_stored(connector.id, literals.len() as i64).await;
    app.wait_visible(&connector).await;

    let stored = app.all_records(&connector).await;
    assert_eq!(stored.len(), literals.len());
    for (record, literal) in stored.iter().zip(literals) {
        let expected: String = sqlx::query_scalar("SELECT $1::numeric::text")
            .bind(literal)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(record["d"], json!(expected), "{literal}");
    }
}

#[tokio::test]
async fn a_poison_message_stored_together_with_good_ones_is_set_aside_alone() {
    let mut app = spawn_control_only().await;
    let connector = app.integer_connector("together").await;
    // All in the stream before the reader starts, so they arrive together
    // and are first tried in one transaction.
    app.publish(connector.id, json!([{"n": 1}, {"n": 2}])).await;
    app.publish_raw(connector.id, b"{not json".to_vec()).await;
    app.publish(connector.id, json!([{"n": 3}])).await;
    app.publish(connector.id, json!([{"n": 4}])).await;
    app.start_reader(StoreHooks::default()).await;

    app.wait_stored(connector.id, 4).await;
    app.wait_consumer_idle().await;
    app.wait_visible(&connector).await;
    assert_stored_once_in_order(&app, &connector, 4).await;
    let dead = app
        .js
        .get_stream(app.env.namespace.dead_letter_stream())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(dead, 1);
}

/// Times around the ones that round differently, sent with digits finer
/// than PostgreSQL's microsecond.
fn fine_times() -> Value {
    json!([
        {"n": 1, "at": "2026-11-29T10:00:00.1234567+01:00", "d": "2026-11-29"},
        {"n": 2, "at": "1999-12-31T23:59:59.9999995Z", "d": "1999-12-31"},
        {"n": 3, "at": "1990-06-01T12:00:00.000000999Z", "d": "1970-01-01"},
        {"n": 4, "at": "1969-12-31T23:59:59.9999999Z", "d": "1969-12-31"},
        {"n": 5, "at": "0001-01-01T00:00:00.0000001Z", "d": "0001-01-01"},
        {"n": 6, "at": "9999-12-31T23:59:59.9999999Z", "d": "9999-12-31"},
    ])
}

/// What GET shows of [`fine_times`] once stored: digits beyond the
/// microsecond cut toward 2000-01-01, as sqlx cuts a bound timestamp.
const FINE_TIMES_STORED: [&str; 6] = [
    "2026-11-29T09:00:00.123456Z",
    "2000-01-01T00:00:00Z",
    "1990-06-01T12:00:00.000001Z",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00.000001Z",
    "9999-12-31T23:59:59.999999Z",
];

/// A batch written by a COPY (every column of its field's type) and one
/// written by an INSERT that converts a column (validated before a type
/// change) store the same dates and timestamps.
#[tokio::test]
async fn dates_and_timestamps_store_alike_by_copy_and_by_insert() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "fine",
            json!([
                {"name": "n", "type": "integer"},
                {"name": "at", "type": "timestamp"},
                {"name": "d", "type": "date"},
            ]),
        )
        .await;
    let before_the_change = app.batch_of(connector.id, &fine_times().to_string()).await;
    app.publish(connector.id, fine_times()).await;
    app.wait_stored(connector.id, 6).await;
    app.patch_connector(
        connector.id,
        json!({"fields": [
            {"name": "n", "type": "integer"},
            {"name": "at", "type": "timestamp"},
            {"name": "d", "type": "timestamp"},
        ]}),
    )
    .await;
    app.publish_batch(connector.id, &before_the_change).await;
    app.wait_stored(connector.id, 12).await;
    app.wait_visible(&connector).await;
    let records = app.all_records(&connector).await;
    let column = |key: &str, range: std::ops::Range<usize>| -> Vec<String> {
        records[range]
            .iter()
            .map(|r| r[key].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(column("at", 0..6), FINE_TIMES_STORED);
    assert_eq!(column("at", 6..12), FINE_TIMES_STORED);
    let days: Vec<String> = fine_times()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}T00:00:00Z", r["d"].as_str().unwrap()))
        .collect();
    assert_eq!(column("d", 0..6), days);
    assert_eq!(column("d", 6..12), days);
}

/// A batch as a gateway wrote it before dates and timestamps travelled as
/// numbers: `YYYY-MM-DD` and RFC 3339 text.
fn text_form_batch(
    schema: &sluice_schema::Schema,
    version: i64,
    dates: Value,
    times: Value,
) -> Value {
    let id = |name: &str| json!(schema.field_by_name(name).unwrap().id);
    let rows = dates.as_array().unwrap().len();
    json!({
        "batch_id": uuid::Uuid::now_v7(),
        "chunk": 0,
        "chunks": 1,
        "schema_version": version,
        "received_at": "2026-11-29T10:00:00.1234567Z",
        "rows": rows,
        "columns": [
            {"field": id("d"), "type": "date", "values": dates},
            {"field": id("at"), "type": "timestamp", "values": times},
        ],
    })
}

async fn publish_json(app: &crate::helpers::TestApp, connector: uuid::Uuid, batch: &Value) {
    let mut message_headers = HeaderMap::new();
    message_headers.insert(headers::CONNECTOR_ID, connector.to_string());
    message_headers.insert(headers::BATCH_ID, batch["batch_id"].as_str().unwrap());
    message_headers.insert(headers::CHUNK, "0");
    app.publish_with_headers(
        connector,
        message_headers,
        serde_json::to_vec(batch).unwrap(),
    )
    .await;
}

/// Messages that older gateways left on the stream are stored as the
/// typed ones are; one whose date or timestamp does not decode is set
/// aside on the dead-letter stream.
#[tokio::test]
async fn dates_and_timestamps_in_the_older_text_form_are_stored() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "older",
            json!([
                {"name": "n", "type": "integer", "nullable": true},
                {"name": "at", "type": "timestamp", "nullable": true},
                {"name": "d", "type": "date", "nullable": true},
            ]),
        )
        .await;
    let (schema, version) = app.schema(connector.id).await;
    let fine = fine_times();
    let field = |key: &str| -> Value {
        fine.as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].clone())
            .collect()
    };
    publish_json(
        &app,
        connector.id,
        &text_form_batch(&schema, version, field("d"), field("at")),
    )
    .await;
    for (dates, times) in [
        (json!(["someday"]), json!([null])),
        (json!([null]), json!(["2026-11-29T10:00:00"])),
        (json!([99_999_999_999_i64]), json!([null])),
    ] {
        publish_json(
            &app,
            connector.id,
            &text_form_batch(&schema, version, dates, times),
        )
        .await;
    }
    app.publish(connector.id, json!([{"n": 7, "d": null, "at": null}]))
        .await;
    app.wait_stored(connector.id, 7).await;
    app.wait_consumer_idle().await;
    app.wait_visible(&connector).await;
    let records = app.all_records(&connector).await;
    let times: Vec<&str> = records[..6]
        .iter()
        .map(|r| r["at"].as_str().unwrap())
        .collect();
    assert_eq!(times, FINE_TIMES_STORED);
    let dates: Vec<&Value> = records[..6].iter().map(|r| &r["d"]).collect();
    let sent: Vec<&Value> = fine.as_array().unwrap().iter().map(|r| &r["d"]).collect();
    assert_eq!(dates, sent);
    assert_eq!(records[0]["_received_at"], "2026-11-29T10:00:00.123456Z");
    assert_eq!(records[6]["n"], 7);

    let dead = app
        .js
        .get_stream(app.env.namespace.dead_letter_stream())
        .await
        .unwrap();
    for sequence in 1..=3 {
        dead.get_raw_message(sequence).await.expect("a dead letter");
    }
    assert!(dead.get_raw_message(4).await.is_err(), "three dead letters");
}

/// Messages stored together share one `COPY` while their columns agree: a
/// message validated under a newer schema, between two of the older one,
/// ends one statement and starts another, and the refused records of every
/// message are kept under their own ids, in order.
#[tokio::test]
async fn a_group_whose_messages_change_columns_is_stored_whole_and_in_order() {
    let mut app = spawn_control_only().await;
    let connector = app
        .create_connector(
            "shifting",
            json!([
                {"name": "n", "type": "integer"},
                {"name": "s", "type": "string", "nullable": true},
            ]),
        )
        .await;
    let older = app
        .batch_of(
            connector.id,
            &json!([{"n": 6, "s": "f"}, {"n": "bad-2"}]).to_string(),
        )
        .await;
    app.publish(connector.id, json!([{"n": 1, "s": "a"}, {"n": 2}]))
        .await;
    app.publish(connector.id, json!([{"n": "bad-1"}, {"n": 3, "s": "c"}]))
        .await;
    app.patch_connector(
        connector.id,
        json!({"fields": [
            {"name": "n", "type": "integer"},
            {"name": "s", "type": "string", "nullable": true},
            {"name": "flag", "type": "boolean", "nullable": true},
        ]}),
    )
    .await;
    app.publish(
        connector.id,
        json!([{"n": 4, "flag": true}, {"n": 5, "s": "e", "flag": false}]),
    )
    .await;
    // Validated before the edit, published after the newer one.
    app.publish_batch(connector.id, &older).await;
    app.start_reader(StoreHooks::default()).await;
    app.wait_stored(connector.id, 6).await;
    app.wait_visible(&connector).await;

    assert_stored_once_in_order(&app, &connector, 6).await;
    let records = app.all_records(&connector).await;
    let column = |key: &str| -> Vec<Value> { records.iter().map(|r| r[key].clone()).collect() };
    assert_eq!(
        column("s"),
        [
            json!("a"),
            Value::Null,
            json!("c"),
            Value::Null,
            json!("e"),
            json!("f")
        ]
    );
    assert_eq!(
        column("flag"),
        [
            Value::Null,
            Value::Null,
            Value::Null,
            json!(true),
            json!(false),
            Value::Null
        ]
    );
    let rejected: Value = app
        .get(
            &format!("/v1/connectors/{}/rejected", connector.id),
            &connector.read_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let rejected: Vec<(Value, Value)> = rejected["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["_id"].clone(), r["record"]["n"].clone()))
        .collect();
    assert_eq!(
        rejected,
        [(json!("1"), json!("bad-1")), (json!("2"), json!("bad-2"))]
    );
}

/// PostgreSQL ending the store's connection in the middle of a group's
/// `COPY` (a crash, a failover, an operator's `pg_terminate_backend`): the
/// transaction is lost whole, its messages come again, and every record is
/// stored once under ids without holes. (Messages handed back after a
/// failure may be stored after later ones.)
#[tokio::test]
async fn a_connection_lost_in_the_middle_of_a_copy_stores_nothing_twice() {
    const MESSAGES: i64 = 20;
    const PER_MESSAGE: i64 = 1_000;
    let mut app = spawn_control_only().await;
    let connector = app.integer_connector("cut").await;
    for m in 0..MESSAGES {
        let records = (1..=PER_MESSAGE)
            .map(|i| json!({"n": m * PER_MESSAGE + i}))
            .collect();
        app.publish(connector.id, Value::Array(records)).await;
    }
    // Ends the store's connection whenever it is seen copying, three times.
    let db = app.db.clone();
    let ending = tokio::spawn(async move {
        let mut ended = 0;
        while ended < 3 {
            ended += sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ended \
                 FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE 'COPY %') t \
                 WHERE ended",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    app.start_reader(StoreHooks::default()).await;
    tokio::time::timeout(Duration::from_secs(60), ending)
        .await
        .expect("the store was seen copying three times")
        .unwrap();
    app.wait_stored(connector.id, MESSAGES * PER_MESSAGE).await;
    app.wait_consumer_idle().await;
    app.wait_visible(&connector).await;

    let records = app.all_records(&connector).await;
    let ids: Vec<i64> = records
        .iter()
        .map(|r| r["_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=MESSAGES * PER_MESSAGE).collect::<Vec<_>>());
    let mut ns: Vec<i64> = records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..=MESSAGES * PER_MESSAGE).collect::<Vec<_>>());
}
