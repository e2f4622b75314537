//! Issue 18: deleting records by filter, replaying and clearing rejected
//! records; counts exact, the tail guarantee kept, a replay exactly once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_read::StoreHooks;
use sluice_schema::Format;
use sluice_testkit::ADMIN_TOKEN;
use sluice_testkit::api::{self, Answer};
use uuid::Uuid;

use crate::helpers::{Connector, TestApp, spawn_app};

/// `method` on a lifecycle route of the reader at `base`.
async fn call(
    app: &TestApp,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Answer {
    let url = format!("{base}{path}");
    Answer::of(api::request(&app.client, method, &url, token, None)).await
}

/// DELETE `/records?query` on the first reader as the operator.
async fn delete_records(app: &TestApp, connector: &Connector, query: &str) -> Answer {
    let path = format!("/v1/connectors/{}/records?{query}", connector.id);
    call(
        app,
        app.read_url(),
        Method::DELETE,
        &path,
        Some(ADMIN_TOKEN),
    )
    .await
}

async fn replay(app: &TestApp, base: &str, connector: &Connector, token: &str) -> Answer {
    let path = format!("/v1/connectors/{}/rejected/replay", connector.id);
    call(app, base, Method::POST, &path, Some(token)).await
}

/// The connector's `records` and `rejected` counters.
async fn stats(app: &TestApp, connector: Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT records, rejected FROM connector_stats WHERE connector_id = $1")
        .bind(connector)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Every rejected record, from the start.
async fn all_rejected(app: &TestApp, connector: &Connector) -> Vec<Value> {
    let path = format!("/v1/connectors/{}/rejected?limit=1000", connector.id);
    let response = app.get(&path, &connector.read_token).await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["has_more"], false);
    page["records"].as_array().unwrap().clone()
}

fn ns(records: &[Value]) -> Vec<i64> {
    records.iter().map(|r| r["n"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn a_delete_by_filter_removes_exactly_the_matching_records() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "erase",
            json!([{"name": "n", "type": "integer"}, {"name": "keep", "type": "boolean"}]),
        )
        .await;
    app.wait_visible(&connector).await;
    let records: Vec<Value> = (0..30)
        .map(|n| json!({"n": n, "keep": n % 3 == 0}))
        .collect();
    app.publish(connector.id, Value::Array(records)).await;
    app.wait_stored(connector.id, 30).await;

    // Refused: no filter, page parameters, unknown fields, bad values,
    // and every token but the operator's.
    let refused = [
        ("", "filter_required"),
        ("all=false", "filter_required"),
        ("all=yes", "invalid_all"),
        ("keep=eq.false&limit=10", "unsupported_parameter"),
        ("keep=eq.false&cursor=", "unsupported_parameter"),
        ("nope=eq.1", "unknown_field"),
        ("n=gt.x", "invalid_filter"),
    ];
    for (query, code) in refused {
        let answer = delete_records(&app, &connector, query).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            answer.body
        );
        assert_eq!(answer.code(), code, "{query}");
    }
    let unknown = delete_records(&app, &connector, "nope=eq.1").await;
    assert_eq!(unknown.body["parameter"], "nope");
    let path = format!("/v1/connectors/{}/records?all=true", connector.id);
    for (token, status) in [
        (Some(connector.read_token.as_str()), StatusCode::FORBIDDEN),
        (Some(connector.write_token.as_str()), StatusCode::FORBIDDEN),
        (Some("sluice_r_unknown"), StatusCode::UNAUTHORIZED),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let answer = call(&app, app.read_url(), Method::DELETE, &path, token).await;
        assert_eq!(answer.status, status, "{token:?}");
    }
    let other = format!("/v1/connectors/{}/records?all=true", Uuid::now_v7());
    let answer = call(
        &app,
        app.read_url(),
        Method::DELETE,
        &other,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        stats(&app, connector.id).await,
        (30, 0),
        "nothing deleted yet"
    );

    // n >= 5 and not kept: 5, 7, 8, 10, 11, ... 29 but multiples of 3.
    let answer = delete_records(&app, &connector, "keep=eq.false&n=gte.5").await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let expected: Vec<i64> = (0..30).filter(|n| n < &5 || n % 3 == 0).collect();
    assert_eq!(answer.body, json!({"deleted": 30 - expected.len()}));
    assert_eq!(ns(&app.all_records(&connector).await), expected);
    assert_eq!(stats(&app, connector.id).await.0, expected.len() as i64);

    // Unfiltered pages over the gaps are full pages, and end where they
    // should.
    let page = app.page(&connector, "limit=4").await;
    assert_eq!(ns(page["records"].as_array().unwrap()), &expected[..4]);
    assert_eq!(page["has_more"], true);
    let page = app
        .page(
            &connector,
            &format!("limit=100&cursor={}", page["next_cursor"].as_str().unwrap()),
        )
        .await;
    assert_eq!(ns(page["records"].as_array().unwrap()), &expected[4..]);
    assert_eq!(page["has_more"], false);

    // Deleting again finds nothing; ids are never handed out again.
    let answer = delete_records(&app, &connector, "keep=eq.false&n=gte.5").await;
    assert_eq!(answer.body, json!({"deleted": 0}));
    let answer = delete_records(&app, &connector, "all=true").await;
    assert_eq!(answer.body, json!({"deleted": expected.len()}));
    assert_eq!(stats(&app, connector.id).await, (0, 0));
    app.publish(connector.id, json!([{"n": 100, "keep": true}]))
        .await;
    app.wait_stored(connector.id, 1).await;
    let records = app.all_records(&connector).await;
    assert_eq!(ns(&records), [100]);
    assert_eq!(records[0]["_id"], "31");
}

#[tokio::test]
async fn a_reader_following_the_tail_misses_no_record_that_remains_while_records_are_deleted() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "erase-tail",
            json!([{"name": "n", "type": "integer"}, {"name": "keep", "type": "boolean"}]),
        )
        .await;
    app.wait_visible(&connector).await;

    const BATCHES: i64 = 40;
    const PER_BATCH: i64 = 5;
    let mut batches = Vec::new();
    for b in 0..BATCHES {
        let records: Vec<Value> = (0..PER_BATCH)
            .map(|i| {
                let n = b * PER_BATCH + i;
                json!({"n": n, "keep": n % 2 == 0})
            })
            .collect();
        batches.push(
            app.batch_of(connector.id, &Value::Array(records).to_string())
                .await,
        );
    }
    // The producer stores batches one after the other; the eraser deletes
    // the records not kept every few milliseconds meanwhile.
    let produced = AtomicBool::new(false);
    let producer = async {
        for batch in &batches {
            app.publish_batch(connector.id, batch).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        app.wait_consumer_idle().await;
        produced.store(true, Ordering::SeqCst);
    };
    let eraser = async {
        let mut deleted = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let answer = delete_records(&app, &connector, "keep=eq.false").await;
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
            deleted += answer.body["deleted"].as_i64().unwrap();
        }
        deleted
    };
    let follower = async {
        let mut seen: Vec<(i64, i64)> = Vec::new();
        let mut cursor = String::new();
        let mut idle = 0;
        // Stops after two empty long-polls in a row once everything is
        // stored.
        while idle < 2 {
            let page = app
                .page(&connector, &format!("limit=7&wait=1&cursor={cursor}"))
                .await;
            let records = page["records"].as_array().unwrap();
            idle = if records.is_empty() && produced.load(Ordering::SeqCst) {
                idle + 1
            } else {
                0
            };
            for record in records {
                let id: i64 = record["_id"].as_str().unwrap().parse().unwrap();
                seen.push((id, record["n"].as_i64().unwrap()));
            }
            cursor = page["next_cursor"].as_str().unwrap().to_owned();
        }
        seen
    };
    let ((), deleted, seen) = tokio::join!(producer, eraser, follower);

    // In id order, each once.
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    let seen_ns: HashSet<i64> = seen.iter().map(|(_, n)| *n).collect();
    let remaining = ns(&app.all_records(&connector).await);
    for n in &remaining {
        assert!(
            seen_ns.contains(n),
            "record {n} remains but the tail missed it"
        );
    }
    // Every kept record remains; what went was not kept, and is counted.
    let kept: Vec<i64> = (0..BATCHES * PER_BATCH).filter(|n| n % 2 == 0).collect();
    assert!(kept.iter().all(|n| remaining.contains(n)));
    assert_eq!(remaining.len() as i64 + deleted, BATCHES * PER_BATCH);
    assert_eq!(stats(&app, connector.id).await.0, remaining.len() as i64);
    assert!(deleted > 0, "the eraser ran while records arrived");
}

/// A connector of `n` (integer) and `note` (string, not nullable), with
/// rejected records: `{"n": i, "color": ...}` (no such field yet) for i in
/// 0..10, `{"n": "x"}` twice, and `{"n": 20 + i}` stored as records.
async fn connector_with_rejected(app: &TestApp) -> Connector {
    let connector = app
        .create_connector(
            "replay",
            json!([{"name": "n", "type": "integer"}, {"name": "note", "type": "string", "nullable": true}]),
        )
        .await;
    app.wait_visible(&connector).await;
    let mut body: Vec<Value> = (0..10)
        .map(|i| json!({"n": i, "color": format!("c{i}")}))
        .collect();
    body.push(json!({"n": "x"}));
    body.extend((0..3).map(|i| json!({"n": 20 + i})));
    body.push(json!({"n": "y", "color": "red"}));
    app.publish(connector.id, Value::Array(body)).await;
    app.wait_stored(connector.id, 3).await;
    assert_eq!(stats(app, connector.id).await, (3, 12));
    connector
}

/// The schema fix: `color` becomes a field.
async fn add_color(app: &TestApp, connector: &Connector) {
    app.patch_connector(
        connector.id,
        json!({"fields": [
            {"name": "n", "type": "integer"},
            {"name": "note", "type": "string", "nullable": true},
            {"name": "color", "type": "string", "nullable": true}
        ]}),
    )
    .await;
}

#[tokio::test]
async fn a_replay_after_a_schema_fix_stores_the_records_that_now_pass_once() {
    let app = spawn_app().await;
    let connector = connector_with_rejected(&app).await;
    let before = all_rejected(&app, &connector).await;

    // Before the fix nothing passes, and only the operator and the write
    // token may replay.
    let answer = replay(&app, app.read_url(), &connector, &connector.read_token).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = replay(&app, app.read_url(), &connector, &connector.write_token).await;
    assert_eq!(answer.body, json!({"replayed": 0, "still_rejected": 12}));

    add_color(&app, &connector).await;
    // A reader waiting at the tail is woken by the replay.
    let tail = app.page(&connector, "limit=100").await;
    let cursor = tail["next_cursor"].as_str().unwrap().to_owned();
    let waiting = {
        let (client, token) = (app.client.clone(), connector.read_token.clone());
        let url = format!(
            "{}/v1/connectors/{}/records?wait=20&cursor={cursor}",
            app.read_url(),
            connector.id
        );
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let page: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (page, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = replay(&app, app.read_url(), &connector, ADMIN_TOKEN).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body, json!({"replayed": 10, "still_rejected": 2}));
    let (woken, waited) = waiting.await.unwrap();
    assert!(!woken["records"].as_array().unwrap().is_empty());
    assert!(waited < Duration::from_secs(15), "woken by the replay");

    // The replayed records follow the stored ones, keep their arrival time
    // and their values; each is stored once.
    let records = app.all_records(&connector).await;
    assert_eq!(ns(&records), [20, 21, 22, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let ids: Vec<&str> = records.iter().map(|r| r["_id"].as_str().unwrap()).collect();
    assert_eq!(ids[3], "4", "new ids after the 3 stored");
    assert_eq!(records[3]["color"], "c0");
    assert_eq!(records[3]["note"], Value::Null);
    assert_eq!(records[3]["_received_at"], before[0]["_received_at"]);

    // What still fails keeps its place, with the errors of now.
    let still = all_rejected(&app, &connector).await;
    assert_eq!(still.len(), 2);
    assert_eq!(still[0]["record"], json!({"n": "x"}));
    assert_eq!(still[1]["record"], json!({"n": "y", "color": "red"}));
    let codes: Vec<&str> = still[1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["type_mismatch"], "no unknown_field any more");
    assert_eq!(
        still[1]["errors"][0]["record"],
        before[11]["errors"][0]["record"]
    );
    assert_eq!(stats(&app, connector.id).await, (13, 2));

    // Again: nothing more to replay.
    let answer = replay(&app, app.read_url(), &connector, ADMIN_TOKEN).await;
    assert_eq!(answer.body, json!({"replayed": 0, "still_rejected": 2}));
    assert_eq!(app.all_records(&connector).await.len(), 13);

    // Clearing: the operator only; counts follow.
    let path = format!("/v1/connectors/{}/rejected", connector.id);
    let answer = call(
        &app,
        app.read_url(),
        Method::DELETE,
        &path,
        Some(&connector.write_token),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = call(
        &app,
        app.read_url(),
        Method::DELETE,
        &path,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(answer.body, json!({"deleted": 2}));
    assert_eq!(all_rejected(&app, &connector).await, Vec::<Value>::new());
    assert_eq!(stats(&app, connector.id).await, (13, 0));
}

#[tokio::test]
async fn a_replay_killed_after_its_first_batch_and_run_again_stores_every_record_once() {
    let mut app = spawn_app().await;
    let interrupted = app
        .start_reader(StoreHooks {
            replay_batch: Some(4),
            interrupt_replay: true,
            ..StoreHooks::default()
        })
        .await;
    let small_batches = app
        .start_reader(StoreHooks {
            replay_batch: Some(3),
            ..StoreHooks::default()
        })
        .await;
    let connector = connector_with_rejected(&app).await;
    add_color(&app, &connector).await;

    let base = app.reader_url(interrupted).to_owned();
    let answer = replay(&app, &base, &connector, ADMIN_TOKEN).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The first batch (4 rejected records, all passing) is in, the rest
    // untouched.
    assert_eq!(stats(&app, connector.id).await, (7, 8));
    assert_eq!(
        ns(&app.all_records(&connector).await),
        [20, 21, 22, 0, 1, 2, 3]
    );

    let base = app.reader_url(small_batches).to_owned();
    let answer = replay(&app, &base, &connector, &connector.write_token).await;
    assert_eq!(answer.body, json!({"replayed": 6, "still_rejected": 2}));
    let answer = replay(&app, &base, &connector, &connector.write_token).await;
    assert_eq!(answer.body, json!({"replayed": 0, "still_rejected": 2}));
    let records = app.all_records(&connector).await;
    assert_eq!(ns(&records), [20, 21, 22, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let ids: Vec<i64> = records
        .iter()
        .map(|r| r["_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=13).collect::<Vec<_>>());
    assert_eq!(all_rejected(&app, &connector).await.len(), 2);
    assert_eq!(stats(&app, connector.id).await, (13, 2));
}

#[tokio::test]
async fn rejected_csv_rows_are_replayed_by_the_grammar_of_csv() {
    let app = spawn_app().await;
    let connector = app
        .create_connector(
            "replay-csv",
            json!([{"name": "n", "type": "integer"}, {"name": "when", "type": "date"}]),
        )
        .await;
    app.wait_visible(&connector).await;
    let body = "n,when,extra\n5,2026-12-01,a\n6,,b\n";
    let batch = app.batch_in(connector.id, Format::Csv, body).await;
    assert_eq!(batch.rejected.len(), 2);
    app.publish_batch(connector.id, &batch).await;
    for _ in 0..200 {
        if stats(&app, connector.id).await.1 == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    app.patch_connector(connector.id, json!({"extra_fields": "ignore"}))
        .await;

    // "5" is an integer in CSV; the empty cell is a null, which `when`
    // does not allow.
    let answer = replay(&app, app.read_url(), &connector, ADMIN_TOKEN).await;
    assert_eq!(answer.body, json!({"replayed": 1, "still_rejected": 1}));
    let records = app.all_records(&connector).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["n"], 5);
    assert_eq!(records[0]["when"], "2026-12-01");
    let still = all_rejected(&app, &connector).await;
    assert_eq!(still[0]["errors"][0]["code"], "null_not_allowed");
    assert_eq!(still[0]["errors"][0]["line"], 3);
}

/// A rejected record can be older than every partition still there (none
/// held records of its time): the replay makes one for it, as the store
/// would for a late record.
#[tokio::test]
async fn a_replayed_record_older_than_every_partition_is_stored_in_one_made_for_it() {
    let app = spawn_app().await;
    let connector = app
        .create_connector("replay-old", json!([{"name": "n", "type": "integer"}]))
        .await;
    app.wait_visible(&connector).await;
    let received_at = Utc::now() - chrono::Duration::days(40);
    let mut batch = app
        .batch_of(connector.id, &json!([{"n": 1, "color": "red"}]).to_string())
        .await;
    batch.received_at = received_at;
    app.publish_batch(connector.id, &batch).await;
    for _ in 0..200 {
        if stats(&app, connector.id).await.1 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(stats(&app, connector.id).await, (0, 1));
    app.patch_connector(connector.id, json!({"extra_fields": "ignore"}))
        .await;

    let answer = replay(&app, app.read_url(), &connector, ADMIN_TOKEN).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body, json!({"replayed": 1, "still_rejected": 0}));
    let records = app.all_records(&connector).await;
    assert_eq!(ns(&records), [1]);
    let stored: chrono::DateTime<Utc> = records[0]["_received_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(stored.timestamp_micros(), received_at.timestamp_micros());
    assert_eq!(stats(&app, connector.id).await, (1, 0));
}
