//! Per-token rate limits at the gateways (issue 17): 429 with Retry-After
//! and the RateLimit headers past the limit, the limit held across two
//! gateways, records counted in records, and other tokens unaffected.
//!
//! Rates are measured, never timed: requests are sent as fast as the test
//! can, and what was accepted over the time it took must lie within bounds
//! wide enough for a slow machine, and narrow enough that a gateway
//! ignoring the other's share would fall outside them.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_testkit::ADMIN_TOKEN;

use crate::{Answer, Connector, TestApp, spawn_app, spawn_app_with};

/// How long each measurement runs.
const WINDOW: Duration = Duration::from_secs(4);

async fn limited_connector(app: &TestApp, name: &str, limits: Value) -> Connector {
    let answer = app
        .admin(
            Method::POST,
            "/v1/connectors",
            Some(json!({
                "name": name,
                "fields": [{"name": "n", "type": "integer"}],
                "limits": limits,
            })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    Connector::of(&answer.body)
}

fn records(n: usize) -> String {
    let records: Vec<Value> = (0..n).map(|i| json!({"n": i})).collect();
    Value::Array(records).to_string()
}

async fn post(app: &TestApp, gateway: &str, connector: &Connector, body: String) -> Answer {
    TestApp::send(app.post_to(
        gateway,
        connector.id,
        Some(&connector.write_token),
        Some("application/json"),
        body,
    ))
    .await
}

fn header(answer: &Answer, name: &str) -> String {
    answer
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} on {answer:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Posts to `gateway` until it refuses with 429.
async fn exhaust(app: &TestApp, gateway: &str, connector: &Connector) -> Answer {
    for _ in 0..10_000 {
        let answer = post(app, gateway, connector, records(1)).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            return answer;
        }
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    panic!("{gateway} never refused");
}

#[tokio::test]
async fn a_limited_token_gets_its_rate_across_two_gateways_and_no_more() {
    let app = spawn_app().await;
    let second = app.spawn_gateway().await;
    let gateways = [app.ingest.clone(), second];
    let limit = 10.0;
    let limited = limited_connector(&app, "limited", json!({"requests_per_second": 10})).await;
    let free = app.simple_connector().await;

    // Each gateway's allowance for a burst spent first.
    for gateway in &gateways {
        let refused = exhaust(&app, gateway, &limited).await;
        assert_eq!(refused.code(), "rate_limited");
        assert_eq!(header(&refused, "content-type"), "application/problem+json");
        let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        assert_eq!(
            header(&refused, "ratelimit-policy"),
            "\"requests\";q=10;w=1"
        );
        assert_eq!(
            header(&refused, "ratelimit"),
            format!("\"requests\";r=0;t={retry_after}")
        );
    }

    // Then, sent round the two gateways as fast as they answer, about the
    // limit is accepted; the other connector's token, in between, always is.
    let started = Instant::now();
    let (mut accepted, mut refused, mut free_accepted) = (0u32, 0u32, 0u32);
    let mut turn = 0usize;
    while started.elapsed() < WINDOW {
        let gateway = &gateways[turn % 2];
        turn += 1;
        let answer = post(&app, gateway, &limited, records(1)).await;
        match answer.status {
            StatusCode::ACCEPTED => {
                accepted += 1;
                assert_eq!(header(&answer, "ratelimit-policy"), "\"requests\";q=10;w=1");
                assert!(header(&answer, "ratelimit").starts_with("\"requests\";r="));
            }
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}: {answer:?}"),
        }
        if turn.is_multiple_of(10) {
            let answer = post(&app, gateway, &free, json!({"n": 1}).to_string()).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
            assert!(answer.headers.get("ratelimit").is_none());
            assert!(answer.headers.get("ratelimit-policy").is_none());
            free_accepted += 1;
        }
    }
    let expected = limit * started.elapsed().as_secs_f64();
    let accepted = f64::from(accepted);
    assert!(refused > 0 && free_accepted > 0);
    // Each gateway lets through half the limit: one that counted itself
    // alone would let through the whole, and the two about twice it.
    assert!(
        accepted >= expected * 0.6 && accepted <= expected * 1.25 + 2.0,
        "{accepted} accepted where about {expected:.0} were due"
    );
    // Every accepted request is on the stream, nothing of a refused one.
    let published = app.published().await;
    let limited_messages = published
        .iter()
        .filter(|m| m.header("Sluice-Connector") == Some(limited.id.to_string()))
        .count();
    assert!(limited_messages as f64 >= accepted);
}

#[tokio::test]
async fn records_per_second_are_counted_in_records_before_publishing() {
    let app = spawn_app().await;
    let limited = limited_connector(&app, "records", json!({"records_per_second": 100})).await;

    let first = post(&app, &app.ingest, &limited, records(60)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"records\";q=100;qu=\"records\";w=1"
    );
    assert!(header(&first, "ratelimit").starts_with("\"records\";r=40;"));

    // 60 more do not fit in what is left: refused whole, nothing published.
    let refused = post(&app, &app.ingest, &limited, records(60)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{refused:?}");
    assert_eq!(refused.code(), "rate_limited");
    assert_eq!(refused.body["policy"], "records");
    assert!(header(&refused, "retry-after").parse::<u64>().unwrap() >= 1);
    assert!(header(&refused, "ratelimit").starts_with("\"records\";r=0;"));
    assert_eq!(app.published().await.len(), 1);

    // More than a second's worth in one request can never pass: 413.
    let too_large = post(&app, &app.ingest, &limited, records(101)).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.code(), "exceeds_records_limit");

    // Sent in tens as fast as the gateway answers, about 100 records a
    // second are accepted, and every accepted one is on the stream.
    let mut accepted_records = 60u64;
    let started = Instant::now();
    let mut accepted_in_window = 0u64;
    while started.elapsed() < WINDOW {
        let answer = post(&app, &app.ingest, &limited, records(10)).await;
        match answer.status {
            StatusCode::ACCEPTED => {
                let n = answer.body["accepted"].as_u64().unwrap();
                accepted_records += n;
                accepted_in_window += n;
            }
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}: {answer:?}"),
        }
    }
    let expected = 100.0 * started.elapsed().as_secs_f64();
    let accepted = accepted_in_window as f64;
    // The window starts with up to a second's allowance refilled.
    assert!(
        accepted >= expected * 0.6 && accepted <= expected * 1.25 + 100.0,
        "{accepted} records accepted where about {expected:.0} were due"
    );
    let stored: usize = app
        .published()
        .await
        .iter()
        .map(|message| message.batch.rows)
        .sum();
    assert_eq!(stored as u64, accepted_records);
}

#[tokio::test]
async fn defaults_apply_to_connectors_without_limits_and_never_to_the_operator() {
    let app = spawn_app_with(|settings| {
        settings.default_limits.requests_per_second = NonZeroU32::new(2);
    })
    .await;
    let connector = app.simple_connector().await;
    let own = limited_connector(&app, "own", json!({"requests_per_second": 1000})).await;
    let answers = [
        post(&app, &app.ingest, &connector, records(1)).await,
        post(&app, &app.ingest, &connector, records(1)).await,
    ];
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(header(answer, "ratelimit-policy"), "\"requests\";q=2;w=1");
    }
    // Two a second: sent as fast as the gateway answers, requests are
    // soon refused.
    let mut refused = None;
    for _ in 0..100 {
        let answer = post(&app, &app.ingest, &connector, records(1)).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the default limit holds");
    assert_eq!(header(&refused, "ratelimit-policy"), "\"requests\";q=2;w=1");
    // The connector's own limit wins over the default.
    for _ in 0..20 {
        let answer = post(&app, &app.ingest, &own, records(1)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(
            header(&answer, "ratelimit-policy"),
            "\"requests\";q=1000;w=1"
        );
    }
    // The operator is not a connector's token: never limited.
    for _ in 0..20 {
        let answer = TestApp::send(app.post_to(
            &app.ingest,
            connector.id,
            Some(ADMIN_TOKEN),
            Some("application/json"),
            records(1),
        ))
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert!(answer.headers.get("ratelimit-policy").is_none());
    }
}

#[tokio::test]
async fn a_new_limit_reaches_the_gateway_and_other_answers_carry_the_headers() {
    let app = spawn_app().await;
    let connector = app.simple_connector().await;
    let answer = post(&app, &app.ingest, &connector, records(1)).await;
    assert!(answer.headers.get("ratelimit-policy").is_none());
    let path = format!("/v1/connectors/{}", connector.id);
    let edited = app
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"limits": {"requests_per_second": 3}})),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK);
    // The gateway takes the edit from the bucket's watch within moments.
    let reached = crate::eventually(Duration::from_secs(5), || async {
        let answer = post(&app, &app.ingest, &connector, records(1)).await;
        answer.headers.get("ratelimit-policy").is_some()
    })
    .await;
    assert!(reached);
    // A refused body of a limited token tells its limits too.
    let malformed = TestApp::send(app.post_to(
        &app.ingest,
        connector.id,
        Some(&connector.write_token),
        Some("application/json"),
        "[{",
    ))
    .await;
    assert!(matches!(
        malformed.status,
        StatusCode::BAD_REQUEST | StatusCode::TOO_MANY_REQUESTS
    ));
    assert_eq!(
        header(&malformed, "ratelimit-policy"),
        "\"requests\";q=3;w=1"
    );
}
