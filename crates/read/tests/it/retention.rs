//! Retention by time partitions: old partitions dropped whole, with counts,
//! pages and cursors exact before and after; rejected records following
//! the same retention; and tables made before partitioning migrated online
//! while the store writes.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_read::StoreHooks;
use sluice_runtime::partitions::{self, Layout};
use sluice_runtime::store::records_table;
use sluice_testkit::api;
use uuid::Uuid;

use crate::helpers::{Connector, TestApp, spawn_control_only_with};

/// Each partition covers this much; retention is set to the same.
const SPAN: Duration = Duration::from_secs(10);
const MAINTENANCE: Duration = Duration::from_millis(300);

/// Control plane and one reader, both with a short partition span, the
/// reader maintaining often.
async fn spawn_short_spans() -> TestApp {
    let mut app = spawn_control_only_with(|s| s.partition_span = SPAN).await;
    let mut settings = app.env.settings();
    settings.partition_span = SPAN;
    settings.maintenance_interval = MAINTENANCE;
    app.start_reader_with(settings, StoreHooks::default()).await;
    app
}

async fn connector_json(app: &TestApp, id: Uuid) -> Value {
    let url = format!("{}/v1/connectors/{id}", app.control);
    let answer = api::admin(&app.client, Method::GET, &url, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// Publishes `records` as one batch received at `at`, as a gateway whose
/// clock said `at` would.
async fn publish_at(app: &TestApp, connector: Uuid, records: Value, at: DateTime<Utc>) {
    let mut batch = app.batch_of(connector, &records.to_string()).await;
    batch.received_at = at;
    app.publish_batch(connector, &batch).await;
}

async fn partition_names(app: &TestApp, connector: Uuid) -> Vec<String> {
    let mut conn = app.db.acquire().await.unwrap();
    partitions::list(&mut conn, connector)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

async fn rejected_count(app: &TestApp, connector: &Connector) -> usize {
    let path = format!("/v1/connectors/{}/rejected?limit=1000", connector.id);
    let response = app.get(&path, &connector.read_token).await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    page["records"].as_array().unwrap().len()
}

fn values(records: &[Value]) -> Vec<i64> {
    records.iter().map(|r| r["n"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn retention_drops_old_partitions_and_reads_stay_exact() {
    let app = spawn_short_spans().await;
    let connector = app.integer_connector("kept").await;
    let id = connector.id;
    app.wait_visible(&connector).await;

    // Three old partitions' worth (one bad record each, kept as rejected),
    // and recent records that retention keeps. (PostgreSQL keeps
    // microseconds.)
    let now = Utc::now().trunc_subsecs(6);
    let mut n = 0;
    for age in [95, 65, 45] {
        let at = now - TimeDelta::seconds(age);
        let records: Vec<Value> = (0..4)
            .map(|_| {
                n += 1;
                json!({"n": n})
            })
            .collect();
        let mut body = records.clone();
        body.push(json!({"n": "not a number"}));
        publish_at(&app, id, Value::Array(body), at).await;
    }
    publish_at(&app, id, json!([{"n": 13}, {"n": 14}]), now).await;
    app.wait_stored(id, 14).await;

    // Before: everything is there, in as many partitions.
    assert_eq!(
        values(&app.all_records(&connector).await),
        (1..=14).collect::<Vec<_>>()
    );
    assert!(partition_names(&app, id).await.len() >= 4);
    let before = connector_json(&app, id).await;
    assert_eq!(before["stats"]["records"], 14);
    assert_eq!(before["stats"]["rejected"], 3);
    let oldest: DateTime<Utc> = before["stats"]["oldest_received_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(oldest, now - TimeDelta::seconds(95));
    let bytes_before = before["stats"]["bytes"].as_i64().unwrap();
    assert!(bytes_before > 0, "{before}");
    assert_eq!(rejected_count(&app, &connector).await, 3);
    // A client part way through the old records.
    let first = app.page(&connector, "limit=3").await;
    assert_eq!(values(first["records"].as_array().unwrap()), [1, 2, 3]);
    let midway = first["next_cursor"].as_str().unwrap().to_owned();

    // Retention of two spans, by an edit: the old partitions go, the
    // recent one stays at least that long.
    app.patch_connector(id, json!({"retention": "20s"})).await;
    let mut after = Value::Null;
    for _ in 0..100 {
        after = connector_json(&app, id).await;
        if after["stats"]["records"] == 2 && after["stats"]["rejected"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after["retention"], "20s");
    assert_eq!(after["stats"]["records"], 2, "{after}");
    assert_eq!(after["stats"]["rejected"], 0, "{after}");
    let oldest: DateTime<Utc> = after["stats"]["oldest_received_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(oldest, now);
    assert!(
        after["stats"]["bytes"].as_i64().unwrap() < bytes_before,
        "{after}"
    );
    let names = partition_names(&app, id).await;
    let cutoff = now - TimeDelta::seconds(40);
    let (old_from, _) = partitions::aligned_range(cutoff, SPAN);
    assert!(
        !names
            .iter()
            .any(|name| *name <= partitions::partition_name(id, old_from)),
        "old partitions left: {names:?}"
    );

    // Pages hold what is left, a small page included (no empty page over
    // the dropped ids), and the cursor taken before goes on from there.
    assert_eq!(values(&app.all_records(&connector).await), [13, 14]);
    let small = app.page(&connector, "limit=1").await;
    assert_eq!(values(small["records"].as_array().unwrap()), [13]);
    assert_eq!(small["has_more"], true);
    let resumed = app.page(&connector, &format!("cursor={midway}")).await;
    assert_eq!(values(resumed["records"].as_array().unwrap()), [13, 14]);
    assert_eq!(resumed["has_more"], false);
    let last = resumed["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(rejected_count(&app, &connector).await, 0);

    // New records come after, once each.
    publish_at(&app, id, json!([{"n": 15}]), Utc::now()).await;
    app.wait_stored(id, 3).await;
    let next = app.page(&connector, &format!("cursor={last}")).await;
    assert_eq!(values(next["records"].as_array().unwrap()), [15]);
    let ids: Vec<&str> = next["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["15"]);
}

#[tokio::test]
async fn a_late_record_past_retention_is_stored_then_dropped() {
    let app = spawn_short_spans().await;
    let connector = app.integer_connector("late").await;
    let id = connector.id;
    app.patch_connector(id, json!({"retention": "10s"})).await;
    app.wait_visible(&connector).await;
    publish_at(&app, id, json!([{"n": 1}]), Utc::now()).await;
    // Received long ago: its partition is made on demand, and goes at the
    // next run of retention.
    publish_at(
        &app,
        id,
        json!([{"n": 2}]),
        Utc::now() - TimeDelta::hours(3),
    )
    .await;
    app.wait_consumer_idle().await;
    for _ in 0..100 {
        let stats = &connector_json(&app, id).await["stats"];
        if stats["records"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(values(&app.all_records(&connector).await), [1]);
    let stats: Vec<(i64,)> =
        sqlx::query_as("SELECT records FROM connector_stats WHERE connector_id = $1")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(stats, [(1,)]);
}

/// Makes the connector's table as it was made before partitioning, with
/// `rows` records received over the past hour.
async fn make_plain_table(app: &TestApp, connector: Uuid, rows: i64) {
    let table = records_table(connector);
    let hex = connector.simple();
    for sql in [
        format!("DROP TABLE {table}"),
        format!(
            "CREATE TABLE {table} (\"_id\" bigint PRIMARY KEY, \"_received_at\" timestamptz NOT NULL, \"n\" bigint)"
        ),
        format!("CREATE INDEX \"records_{hex}_received_at\" ON {table} (\"_received_at\")"),
        format!(
            "INSERT INTO {table} SELECT i, now() - interval '1 hour' + i * interval '1 ms', i \
             FROM generate_series(1, {rows}) AS i"
        ),
    ] {
        sqlx::query(&sql).execute(&app.db).await.unwrap();
    }
    sqlx::query(
        "UPDATE connector_stats SET last_record_id = $2, records = $2 WHERE connector_id = $1",
    )
    .bind(connector)
    .bind(rows)
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_table_from_before_partitioning_is_migrated_while_records_are_stored() {
    let mut app = spawn_control_only_with(|s| s.partition_span = SPAN).await;
    let connector = app.integer_connector("legacy").await;
    let id = connector.id;
    const OLD: i64 = 50_000;
    make_plain_table(&app, id, OLD).await;
    let mut conn = app.db.acquire().await.unwrap();
    assert_eq!(
        partitions::layout(&mut conn, id).await.unwrap(),
        Layout::Plain
    );

    // A reader that stores, and maintains a second after it starts, while
    // a producer keeps sending.
    let mut settings = app.env.settings();
    settings.partition_span = SPAN;
    settings.maintenance_interval = Duration::from_secs(1);
    app.start_reader_with(settings, StoreHooks::default()).await;
    let mut sent = OLD;
    let mut migrated_at = None;
    for round in 0..400 {
        let batch: Vec<Value> = (0..10).map(|k| json!({"n": sent + 1 + k})).collect();
        app.publish(id, Value::Array(batch)).await;
        sent += 10;
        if migrated_at.is_none()
            && partitions::layout(&mut conn, id).await.unwrap() == Layout::Partitioned
        {
            migrated_at = Some(round);
        }
        // Keep writing a while after the swap, too.
        if migrated_at.is_some_and(|at| round >= at + 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let migrated_at = migrated_at.expect("the table was never partitioned");
    assert!(migrated_at > 0, "the migration ran before any write");

    app.wait_stored(id, sent).await;

    // Everything once, in order, the old rows in the legacy partition.
    let records = app.all_records(&connector).await;
    assert_eq!(values(&records), (1..=sent).collect::<Vec<_>>());
    let ids: Vec<i64> = records
        .iter()
        .map(|r| r["_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=sent).collect::<Vec<_>>());
    let listed = partitions::list(&mut conn, id).await.unwrap();
    assert_eq!(listed[0].name, partitions::legacy_name(id));
    assert_eq!(listed[0].from, None);
    let in_legacy: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{}\"",
        partitions::legacy_name(id)
    ))
    .fetch_one(&app.db)
    .await
    .unwrap();
    // Until the boundary (two spans ahead) new records go there too.
    assert!(in_legacy > OLD, "{in_legacy}");
    assert_eq!(connector_json(&app, id).await["stats"]["records"], sent);

    // Schema edits still apply to every partition.
    app.patch_connector(
        id,
        json!({"fields": [{"name": "n", "type": "number"}, {"name": "m", "type": "string", "nullable": true}]}),
    )
    .await;
    app.publish(id, json!([{"n": 1.5, "m": "after"}])).await;
    app.wait_stored(id, sent + 1).await;
    let all = app.all_records(&connector).await;
    assert_eq!(all.len() as i64, sent + 1);
    assert_eq!(all[0]["n"], 1.0);
    assert_eq!(all[0]["m"], Value::Null);
    let last = all.last().unwrap();
    assert_eq!(last["n"], 1.5);
    assert_eq!(last["m"], "after");
}
