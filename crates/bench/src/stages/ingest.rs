//! Stage 1: POSTs of record batches through the gateway, next to the same
//! records published straight to JetStream; and the gateway's memory under
//! large requests (part of stage 5).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;
use sluice_runtime::bus::headers;
use uuid::Uuid;

use crate::measure::{self, CpuUse, Percentiles};

/// What a set of clients POSTing in a loop achieved.
#[derive(Debug, Serialize)]
pub(crate) struct HttpLoad {
    pub clients: usize,
    pub seconds: f64,
    pub requests: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    pub records: u64,
    pub body_bytes: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub latency: Percentiles,
    /// Filled in by the caller, which knows the processes.
    pub cpu: CpuUse,
    /// Gateway peak RSS during the load (filled in by the caller).
    pub gateway_peak_rss_bytes: Option<u64>,
}

/// One POST target: URL, token, and the bodies to send in turn.
pub(crate) struct Target<'a> {
    pub http: &'a reqwest::Client,
    pub url: String,
    pub token: &'a str,
    pub bodies: &'a [(Bytes, usize)],
}

struct ClientTally {
    requests: u64,
    failed: u64,
    first_failure: Option<String>,
    records: u64,
    body_bytes: u64,
    latency: Histogram<u64>,
}

/// `clients` tasks POST one body after another, each as soon as its
/// previous answer arrived (closed loop), for `warmup` then `duration`;
/// only requests that complete after the warm-up count. With a zero
/// `duration`, each client sends exactly one request.
pub(crate) async fn post_in_loop(
    target: &Target<'_>,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> HttpLoad {
    let began = Instant::now();
    let measure_from = began + warmup;
    let until = measure_from + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let http = target.http.clone();
        let url = target.url.clone();
        let token = target.token.to_owned();
        let bodies = target.bodies.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut tally = ClientTally {
                requests: 0,
                failed: 0,
                first_failure: None,
                records: 0,
                body_bytes: 0,
                latency: measure::latency_histogram(),
            };
            let mut turn = client;
            loop {
                let sent = Instant::now();
                if sent >= until && (tally.requests + tally.failed > 0) {
                    break;
                }
                let (body, _) = &bodies[turn % bodies.len()];
                turn += clients;
                let outcome = post_once(&http, &url, &token, body.clone()).await;
                let done = Instant::now();
                if done < measure_from {
                    continue;
                }
                match outcome {
                    Ok(accepted) => {
                        tally.requests += 1;
                        tally.records += accepted;
                        tally.body_bytes += body.len() as u64;
                        measure::record(&mut tally.latency, done - sent);
                    }
                    Err(failure) => {
                        tally.failed += 1;
                        tally.first_failure.get_or_insert(failure);
                    }
                }
                if duration.is_zero() {
                    break;
                }
            }
            tally
        }));
    }
    let mut latency = measure::latency_histogram();
    let mut load = HttpLoad {
        clients,
        seconds: 0.0,
        requests: 0,
        failed: 0,
        first_failure: None,
        records: 0,
        body_bytes: 0,
        records_per_s: 0.0,
        mb_per_s: 0.0,
        latency: Percentiles::of(&latency),
        cpu: CpuUse::default(),
        gateway_peak_rss_bytes: None,
    };
    for task in tasks {
        if let Ok(tally) = task.await {
            load.requests += tally.requests;
            load.failed += tally.failed;
            load.records += tally.records;
            load.body_bytes += tally.body_bytes;
            if load.first_failure.is_none() {
                load.first_failure = tally.first_failure;
            }
            let _ = latency.add(&tally.latency);
        }
    }
    // The window is the configured one, or the whole run in one-round mode.
    let seconds = if duration.is_zero() {
        measure_from.elapsed().as_secs_f64()
    } else {
        duration.as_secs_f64()
    };
    load.seconds = seconds;
    load.records_per_s = load.records as f64 / seconds;
    load.mb_per_s = load.body_bytes as f64 / seconds / 1e6;
    load.latency = Percentiles::of(&latency);
    load
}

async fn post_once(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Bytes,
) -> Result<u64, String> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    let text = response.bytes().await.map_err(|e| format!("{e}"))?;
    if status == reqwest::StatusCode::ACCEPTED {
        // Count what the gateway says it accepted, not what was sent.
        serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|answer| answer["accepted"].as_u64())
            .ok_or_else(|| format!("a 202 without an accepted count: {text:?}"))
    } else {
        Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(300)])
        ))
    }
}

/// Publishing straight to JetStream.
#[derive(Debug, Serialize)]
pub(crate) struct RawPublish {
    pub messages: u64,
    pub message_bytes: u64,
    pub records: u64,
    pub window: usize,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub cpu: CpuUse,
}

/// Publishes `count` of `messages` in turn, with the gateway's headers,
/// keeping up to `window` acks outstanding.
pub(crate) async fn publish_raw(
    js: &jetstream::Context,
    subject: &str,
    connector: Uuid,
    schema_version: i64,
    messages: &[(Bytes, usize)],
    count: usize,
    window: usize,
) -> anyhow::Result<RawPublish> {
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut message_bytes = 0u64;
    let mut records = 0u64;
    for i in 0..count {
        let (payload, rows) = &messages[i % messages.len()];
        let message = PublishMessage::build()
            .payload(payload.clone())
            .header(headers::CONNECTOR_ID, connector.to_string())
            .header(headers::SCHEMA_VERSION, schema_version.to_string())
            .header(headers::BATCH_ID, Uuid::now_v7().to_string());
        let ack = js.send_publish(subject.to_owned(), message).await?;
        pending.push(ack.into_future());
        message_bytes += payload.len() as u64;
        records += *rows as u64;
        if pending.len() >= window
            && let Some(ack) = pending.next().await
        {
            ack?;
        }
    }
    while let Some(ack) = pending.next().await {
        ack?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RawPublish {
        messages: count as u64,
        message_bytes,
        records,
        window,
        seconds,
        records_per_s: records as f64 / seconds,
        mb_per_s: message_bytes as f64 / seconds / 1e6,
        cpu: CpuUse::default(),
    })
}
