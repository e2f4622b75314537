//! Stage 4: at a fixed offered load, the time from a POST's 202 to its
//! records coming back to a reader that long-polls along the cursor.
//!
//! The load is open-loop: request `i` is sent at `start + i × interval`
//! whether or not earlier ones were answered, so a slow system shows up as
//! latency, not as a politely lowered load. Records carry `seq`; request `i`
//! holds seqs `i × batch .. (i + 1) × batch`, which is how the reader maps
//! what it sees back to the request that sent it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::data;
use crate::measure::{self, CpuSampler, CpuUse, Percentiles};

#[derive(Debug, Serialize)]
pub(crate) struct Freshness {
    pub offered_records_per_s: f64,
    pub batch_records: usize,
    pub requests: usize,
    /// Records per second the gateway actually accepted.
    pub accepted_records_per_s: f64,
    pub failed_requests: usize,
    pub first_failure: Option<String>,
    /// Requests whose records were never seen by the reader in time.
    pub unseen_requests: usize,
    /// From when a POST was due to its 202.
    pub post_latency: Percentiles,
    /// 202 to the records returned by GET (0 when the reader saw them
    /// before the 202 arrived).
    pub freshness: Percentiles,
    pub reader_pages: u64,
    pub cpu: CpuUse,
}

pub(crate) struct FreshnessTarget<'a> {
    pub http: &'a reqwest::Client,
    pub post_url: String,
    pub get_url: String,
    pub write_token: &'a str,
    pub read_token: &'a str,
}

#[derive(Deserialize)]
struct Page {
    records: Vec<SeqOnly>,
    next_cursor: String,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: i64,
}

pub(crate) async fn run(
    target: &FreshnessTarget<'_>,
    rate: u32,
    batch: usize,
    duration: Duration,
    pids: &[(&str, u32)],
) -> anyhow::Result<Freshness> {
    let requests = ((rate as f64 * duration.as_secs_f64()) / batch as f64).ceil() as usize;
    let requests = requests.max(1);
    let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
    let bodies: Vec<Bytes> = (0..requests)
        .map(|i| Bytes::from(data::json_body((i * batch) as i64, batch)))
        .collect();
    let acked: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..requests).map(|_| OnceLock::new()).collect());
    let stop_reader = CancellationToken::new();

    let reader = tokio::spawn(read_along(
        target.http.clone(),
        target.get_url.clone(),
        target.read_token.to_owned(),
        requests,
        batch,
        stop_reader.clone(),
    ));
    // Let the reader's first long-poll reach the server.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sampler = CpuSampler::start(pids);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut senders = Vec::with_capacity(requests);
    for (i, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let http = target.http.clone();
        let url = target.post_url.clone();
        let token = target.write_token.to_owned();
        let acked = Arc::clone(&acked);
        senders.push(tokio::spawn(async move {
            let response = http
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match response {
                Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                    let _ = acked[i].set(Instant::now());
                    let _ = r.bytes().await;
                    Ok(())
                }
                Ok(r) => Err(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    let mut post_latency = measure::latency_histogram();
    let mut failed = 0;
    let mut first_failure = None;
    for sender in senders {
        if let Err(failure) = sender.await? {
            failed += 1;
            first_failure.get_or_insert(failure);
        }
    }
    let sending_took = start.elapsed().as_secs_f64();
    // Give the reader time to see the last records, then stop it.
    let stopper = stop_reader.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        stopper.cancel();
    });
    let (seen, reader_pages) = reader.await??;
    let cpu = sampler.finish();

    let mut freshness = measure::latency_histogram();
    let mut unseen = 0;
    let mut accepted = 0;
    for (ack, seen) in acked.iter().zip(&seen) {
        let Some(ack) = ack.get() else { continue };
        accepted += 1;
        match seen {
            Some(seen) => measure::record(&mut freshness, seen.saturating_duration_since(*ack)),
            None => unseen += 1,
        }
    }
    // POST latencies: from when each request was due (not when it went
    // out), so that a client held up by a slow system counts the delay.
    for (i, ack) in acked.iter().enumerate() {
        if let Some(ack) = ack.get() {
            let planned = start.into_std() + interval * i as u32;
            measure::record(&mut post_latency, ack.saturating_duration_since(planned));
        }
    }
    Ok(Freshness {
        offered_records_per_s: rate as f64,
        batch_records: batch,
        requests,
        accepted_records_per_s: (accepted * batch) as f64 / sending_took,
        failed_requests: failed,
        first_failure,
        unseen_requests: unseen,
        post_latency: Percentiles::of(&post_latency),
        freshness: Percentiles::of(&freshness),
        reader_pages,
        cpu,
    })
}

/// Long-polls along the cursor until every request's records were seen
/// (or `stop`), returning when each request was complete.
async fn read_along(
    http: reqwest::Client,
    url: String,
    token: String,
    requests: usize,
    batch: usize,
    stop: CancellationToken,
) -> anyhow::Result<(Vec<Option<Instant>>, u64)> {
    let mut seen_count = vec![0usize; requests];
    let mut complete: Vec<Option<Instant>> = vec![None; requests];
    let mut remaining = requests;
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    while remaining > 0 {
        let mut query = vec![("limit", "10000".to_owned()), ("wait", "5".to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let request = http.get(&url).bearer_auth(&token).query(&query).send();
        let response = tokio::select! {
            _ = stop.cancelled() => break,
            response = request => response?,
        };
        let status = response.status();
        anyhow::ensure!(status.is_success(), "GET records answered {status}");
        let page: Page = response.json().await?;
        let now = Instant::now();
        pages += 1;
        for record in &page.records {
            let request = usize::try_from(record.seq).unwrap_or(usize::MAX) / batch;
            if let Some(count) = seen_count.get_mut(request) {
                *count += 1;
                if *count == batch {
                    complete[request] = Some(now);
                    remaining -= 1;
                }
            }
        }
        cursor = Some(page.next_cursor);
    }
    Ok((complete, pages))
}
