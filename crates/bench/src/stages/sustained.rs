//! Stage 4, sustained: the highest load Sluice stores as fast as it accepts it.
//!
//! Open-loop load (as in stage 4) at stepped rates, each a fraction of the
//! raw binary `COPY` rate of stage 2, on a connector of its own: a step
//! holds when every POST was accepted at the offered rate, every record
//! came back to a reader following the tail, and the p99 from 202 to GET
//! stayed under a second. Stepping stops at the first step that does not
//! hold: past it the stream's backlog grows, and every later record waits
//! longer.

use std::time::Duration;

use serde::Serialize;

use super::freshness::{self, Freshness, FreshnessTarget};
use super::{create_connector, wait_until_gateway_knows};
use crate::data;
use crate::services::ServiceProcess;

/// The freshness a step must keep at its p99.
const FRESHNESS_P99_MS: f64 = 1000.0;
/// The share of the offered rate a step must be accepted at: an open-loop
/// sender that falls behind shows the gateway did not keep up.
const ACCEPTED_SHARE: f64 = 0.95;

#[derive(Debug, Serialize)]
pub(crate) struct Sustained {
    pub raw_copy_records_per_s: f64,
    pub steps: Vec<Step>,
    /// The offered rate of the last step that held.
    pub highest_records_per_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Step {
    pub share_of_raw: f64,
    pub held: bool,
    pub load: Freshness,
}

pub(crate) struct Services<'a> {
    pub http: &'a reqwest::Client,
    pub js: &'a async_nats::jetstream::Context,
    pub env: &'a sluice_testkit::TestEnv,
    pub control: &'a ServiceProcess,
    pub gateway: &'a ServiceProcess,
    pub reader: &'a ServiceProcess,
    pub pids: &'a [(&'a str, u32)],
}

/// Steps through `shares` of `raw_copy_records_per_s` (rounded down to
/// whole batches a second, at least one), `duration` each.
pub(crate) async fn run(
    services: &Services<'_>,
    raw_copy_records_per_s: f64,
    shares: &[f64],
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Sustained> {
    let mut sustained = Sustained {
        raw_copy_records_per_s,
        steps: Vec::new(),
        highest_records_per_s: None,
    };
    for (n, &share) in shares.iter().enumerate() {
        let batches_a_second = (raw_copy_records_per_s * share / batch as f64).max(1.0);
        let rate = (batches_a_second.floor() as usize * batch) as u32;
        eprintln!(
            "sluice-bench: sustained, {rate} records/s ({share:.2} of raw COPY) for {duration:?}"
        );
        let connector = create_connector(
            services.http,
            services.control,
            services.js,
            services.env,
            &format!("bench-sustained-{n}"),
            data::fields(),
        )
        .await?;
        wait_until_gateway_knows(services.http, services.gateway, &connector).await?;
        let records_url = |service: &ServiceProcess| {
            service.url(&format!("/v1/connectors/{}/records", connector.id))
        };
        let target = FreshnessTarget {
            http: services.http,
            post_url: records_url(services.gateway),
            get_url: records_url(services.reader),
            write_token: &connector.write_token,
            read_token: &connector.read_token,
        };
        let load = freshness::run(&target, rate, batch, duration, services.pids).await?;
        let held = holds(&load);
        sustained.steps.push(Step {
            share_of_raw: share,
            held,
            load,
        });
        if !held {
            break;
        }
        sustained.highest_records_per_s = Some(f64::from(rate));
    }
    Ok(sustained)
}

fn holds(load: &Freshness) -> bool {
    load.failed_requests == 0
        && load.unseen_requests == 0
        && load.accepted_records_per_s >= load.offered_records_per_s * ACCEPTED_SHARE
        && load.freshness.p99_ms < FRESHNESS_P99_MS
}

impl Sustained {
    pub(crate) fn summary(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|step| {
                format!(
                    "{} rec/s {}: accepted {}, p99 {:.0} ms",
                    crate::report::count(step.load.offered_records_per_s),
                    if step.held { "held" } else { "did not hold" },
                    crate::report::count(step.load.accepted_records_per_s),
                    step.load.freshness.p99_ms
                )
            })
            .collect();
        steps.join("; ")
    }
}
