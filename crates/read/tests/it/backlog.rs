//! The backlog (records accepted and not yet stored) in a connector's stats
//! and in the read API's metrics, and the records stream's size bound.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_read::StoreHooks;
use sluice_runtime::bus;
use sluice_testkit::api;
use uuid::Uuid;

use crate::helpers::{SHORT_ACK_WAIT, TestApp, spawn_control_only};

/// The connector's `stats.backlog`, as the control plane answers it.
async fn backlog(app: &TestApp, id: Uuid) -> Value {
    let url = format!("{}/v1/connectors/{id}", app.control);
    let answer = api::admin(&app.client, Method::GET, &url, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["stats"]["backlog"].clone()
}

/// The value of the series `series` (name and labels) in `reader`'s
/// metrics; `None` while it is not there.
async fn metric(app: &TestApp, reader: &str, series: &str) -> Option<f64> {
    let text = app
        .client
        .get(format!("{reader}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (the sampler runs every 5 s) until `reader`'s `series` satisfies
/// `wanted`; answers its value.
async fn metric_until(
    app: &TestApp,
    reader: &str,
    series: &str,
    wanted: impl Fn(f64) -> bool,
) -> f64 {
    let mut last = None;
    for _ in 0..150 {
        last = metric(app, reader, series).await;
        if let Some(value) = last.filter(|&v| wanted(v)) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} never reached the value wanted; last {last:?}");
}

#[tokio::test]
async fn the_backlog_shows_in_stats_and_metrics_until_it_is_stored() {
    let mut app = spawn_control_only().await;
    let lagging = app.integer_connector("lagging").await;
    let idle = app.integer_connector("idle").await;
    let none =
        json!({"messages": 0, "records_estimate": 0, "oldest_at": null, "seconds_behind": 0.0});
    assert_eq!(backlog(&app, lagging.id).await, none);

    // No reader runs: three requests of 2, 3 and 4 records wait.
    app.publish(lagging.id, json!([{"n": 1}, {"n": 2}])).await;
    app.publish(lagging.id, json!([{"n": 3}, {"n": 4}, {"n": 5}]))
        .await;
    app.publish(lagging.id, json!([{"n": 6}, {"n": 7}, {"n": 8}, {"n": 9}]))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let waiting = backlog(&app, lagging.id).await;
    assert_eq!(waiting["messages"], 3, "{waiting}");
    // Three messages times the mean of the oldest (2) and newest (4).
    assert_eq!(waiting["records_estimate"], 9, "{waiting}");
    assert!(
        waiting["seconds_behind"].as_f64().unwrap() >= 1.0,
        "{waiting}"
    );
    assert!(waiting["oldest_at"].is_string(), "{waiting}");
    let list = api::admin(
        &app.client,
        Method::GET,
        &format!("{}/v1/connectors", app.control),
        None,
    )
    .await
    .body;
    let listed: Vec<(&str, &Value)> = list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), &c["stats"]["backlog"]))
        .collect();
    assert_eq!(listed[0].0, "lagging");
    assert_eq!(listed[0].1["messages"], 3);
    assert_eq!(listed[0].1["records_estimate"], 9);
    assert_eq!(listed[1], ("idle", &none));
    assert_eq!(backlog(&app, idle.id).await, none);

    // A reader that stores and then dies before its acks: the messages
    // stay on the stream, and its sampler reports them.
    let stuck = app.reader_dead_after_commit().await;
    let connector_series = |name: &str| format!("{name}{{connector=\"{}\"}}", lagging.id);
    let messages = connector_series("sluice_read_connector_backlog_messages");
    let records = connector_series("sluice_read_connector_backlog_records_estimate");
    let seconds = connector_series("sluice_read_connector_backlog_seconds");
    metric_until(&app, &stuck.address, &messages, |v| v == 3.0).await;
    assert_eq!(metric(&app, &stuck.address, &records).await, Some(9.0));
    assert!(metric(&app, &stuck.address, &seconds).await.unwrap() >= 1.0);
    // The stream-wide gauges are the process's, which the readers of tests
    // running alongside set too: each is waited for, not read once.
    metric_until(&app, &stuck.address, "sluice_read_backlog_messages", |v| {
        v == 3.0
    })
    .await;
    metric_until(
        &app,
        &stuck.address,
        "sluice_read_backlog_records_estimate",
        |v| v == 9.0,
    )
    .await;
    metric_until(&app, &stuck.address, "sluice_read_backlog_seconds", |v| {
        v >= 1.0
    })
    .await;
    let idle_series = format!(
        "sluice_read_connector_backlog_messages{{connector=\"{}\"}}",
        idle.id
    );
    assert_eq!(metric(&app, &stuck.address, &idle_series).await, None);
    stuck.stop().await;

    // A reader that works: everything is stored, and the backlog is gone.
    let index = app
        .start_reader(StoreHooks {
            ack_wait: Some(SHORT_ACK_WAIT),
            ..StoreHooks::default()
        })
        .await;
    app.wait_stored(lagging.id, 9).await;
    app.wait_consumer_idle().await;
    assert_eq!(backlog(&app, lagging.id).await, none);
    let reader = app.reader_url(index).to_owned();
    for series in [
        "sluice_read_backlog_messages",
        "sluice_read_backlog_seconds",
        "sluice_read_backlog_records_estimate",
    ] {
        metric_until(&app, &reader, series, |v| v == 0.0).await;
    }
}

/// Upgrading to a bound (or lowering it) below what the stream holds
/// drops nothing: new messages are refused until the read API has stored
/// enough, then taken again.
#[tokio::test]
async fn a_bound_below_what_the_stream_holds_loses_nothing() {
    let mut app = spawn_control_only().await;
    let connector = app.integer_connector("bounded").await;
    for n in 0..20 {
        app.publish(connector.id, json!([{"n": n}])).await;
    }
    let stream_info = |app: &TestApp| {
        let js = app.js.clone();
        let name = app.env.namespace.records_stream();
        async move {
            js.get_stream(name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .clone()
        }
    };
    let before = stream_info(&app).await;
    assert_eq!(before.state.messages, 20);
    let bound = i64::try_from(before.state.bytes / 2).unwrap();

    let layout = bus::StreamLayout {
        max_bytes: Some(bound),
        replicas: 1,
    };
    bus::ensure_streams(&app.js, &app.env.namespace, layout)
        .await
        .expect("the bound applies to the existing stream");
    let after = stream_info(&app).await;
    assert_eq!(after.config.max_bytes, bound);
    assert_eq!(after.state.messages, 20, "nothing was dropped");
    let subject = app.env.namespace.records_subject(connector.id);
    let refused = async { app.js.publish(subject.clone(), "{}".into()).await?.await }.await;
    let refused = refused.expect_err("a full stream refuses a new message");
    assert!(refused.to_string().contains("maximum bytes"), "{refused}");

    // The read API, bound alike, stores all twenty; then the stream takes
    // messages again.
    let mut settings = app.env.settings();
    settings.stream_max_bytes = Some(bound);
    app.start_reader_with(settings, StoreHooks::default()).await;
    app.wait_stored(connector.id, 20).await;
    app.wait_consumer_idle().await;
    app.publish(connector.id, json!([{"n": 20}])).await;
    app.wait_stored(connector.id, 21).await;
    let stored = app.all_records(&connector).await;
    let ns: Vec<i64> = stored.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (0..=20).collect::<Vec<_>>());
    assert_eq!(stream_info(&app).await.config.max_bytes, bound);
}
