//! The attacks made of large bodies: partial mode's amplification (a small
//! CSV of records that are all rejected) while another connector posts,
//! and many large valid bodies at once.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::Services;
use crate::data;
use crate::stages::ingest;

/// One request's fate.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    /// `None`: no answer (the connection failed).
    pub status: Option<u16>,
    pub seconds: f64,
    /// The start of the answer's body, or the error.
    pub excerpt: String,
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self.status {
            Some(status) => format!("{status} in {:.2} s", self.seconds),
            None => format!("no answer after {:.2} s", self.seconds),
        }
    }
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: String,
    content_type: &'static str,
    body: Bytes,
) -> Outcome {
    let sent = Instant::now();
    let outcome = async {
        let response = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, text))
    }
    .await;
    let seconds = sent.elapsed().as_secs_f64();
    match outcome {
        Ok((status, text)) => Outcome {
            status: Some(status),
            seconds,
            excerpt: String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned(),
        },
        Err(error) => Outcome {
            status: None,
            seconds,
            excerpt: error.to_string(),
        },
    }
}

/// Attack 2.
#[derive(Debug, Serialize)]
pub(crate) struct PartialFlood {
    pub body_bytes: usize,
    pub rows: usize,
    /// The partial-mode CSVs, sent at once.
    pub floods: Vec<Outcome>,
    /// The one-record POST to another connector, sent meanwhile.
    pub bystander: Outcome,
}

impl PartialFlood {
    /// A bystander answered within this is served, not starved.
    pub const BYSTANDER_WAIT: Duration = Duration::from_secs(2);

    /// Every flood answered (refusing it is fine, a 500 is not), and the
    /// other connector served promptly.
    pub fn held(&self) -> bool {
        self.floods
            .iter()
            .all(|o| o.status.is_some_and(|s| s < 500 || s == 503))
            && self.bystander.status == Some(202)
            && self.bystander.seconds < Self::BYSTANDER_WAIT.as_secs_f64()
    }
}

/// Attack 2: `floods` POSTs at once of a CSV with header `zz` (a field the
/// connector lacks) and `rows` rows of `1`, with `?mode=partial`; while
/// they run, a one-record POST to another connector.
pub(crate) async fn partial_flood(
    http: &reqwest::Client,
    services: &Services<'_>,
    floods: usize,
    rows: usize,
) -> PartialFlood {
    let mut csv = Vec::with_capacity(3 + 2 * rows);
    csv.extend_from_slice(b"zz\n");
    for _ in 0..rows {
        csv.extend_from_slice(b"1\n");
    }
    let csv = Bytes::from(csv);
    let url = services.records_url(services.gateway, services.bulk) + "?mode=partial";
    let tasks: Vec<_> = (0..floods)
        .map(|_| {
            let (http, url, token, csv) = (
                http.clone(),
                url.clone(),
                services.bulk.write_token.clone(),
                csv.clone(),
            );
            tokio::spawn(async move { post(&http, url, token, "text/csv", csv).await })
        })
        .collect();
    // Long enough for the floods to be inside the gateway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bystander = post(
        http,
        services.records_url(services.gateway, services.other),
        services.other.write_token.clone(),
        "application/json",
        Bytes::from(data::json_body(0, 1)),
    )
    .await;
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|error| Outcome {
            status: None,
            seconds: 0.0,
            excerpt: error.to_string(),
        }));
    }
    PartialFlood {
        body_bytes: csv.len(),
        rows,
        floods: outcomes,
        bystander,
    }
}

/// Attack 4: `clients` valid bodies of `bytes` each, all at once, one per
/// client (the ingest stage's closed loop, one round).
pub(crate) async fn large_bodies(
    http: &reqwest::Client,
    services: &Services<'_>,
    clients: usize,
    bytes: usize,
) -> ingest::HttpLoad {
    let (body, records) = data::json_body_of_size(0, bytes);
    let bodies = vec![(Bytes::from(body), records)];
    let target = ingest::Target {
        http,
        url: services.records_url(services.gateway, services.bulk),
        token: &services.bulk.write_token,
        bodies: &bodies,
    };
    ingest::post_in_loop(&target, clients, Duration::ZERO, Duration::ZERO).await
}

/// Whether attack 4's answers were acceptances or a clean 503 (over
/// budget), never a failure or another error.
pub(crate) fn large_bodies_held(load: &ingest::HttpLoad) -> bool {
    load.first_failure
        .as_deref()
        .is_none_or(|failure| failure.starts_with("503"))
}
