//! Stage 6: the schema crate's validation alone, next to a bare
//! `serde_json` parse of the same bytes into generic values.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_schema::{ExtraFields, FieldSpec, Format, Schema, validate};

use crate::data;

#[derive(Debug, Serialize)]
pub(crate) struct ValidationResult {
    pub body_bytes: usize,
    pub records_per_body: usize,
    pub sluice_iterations: u64,
    pub sluice_mb_per_s: f64,
    pub sluice_records_per_s: f64,
    pub serde_iterations: u64,
    pub serde_mb_per_s: f64,
    pub serde_records_per_s: f64,
}

/// Runs each side on one thread for `duration`.
pub(crate) fn run(duration: Duration, records: usize) -> anyhow::Result<ValidationResult> {
    let specs: Vec<FieldSpec> = serde_json::from_value(data::fields())?;
    let schema = Schema::define(&specs)
        .map_err(|problems| anyhow::anyhow!("the benchmark's schema is invalid: {problems:?}"))?;
    let body = data::json_body(0, records);
    // Both sides must do the whole job they claim to, or the race is unfair.
    let check = validate(&schema, ExtraFields::Reject, Format::Json, &body)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    anyhow::ensure!(check.records.len() == records && check.error_count == 0);

    let (sluice_iterations, sluice_seconds) = repeat(duration, || {
        black_box(validate(&schema, ExtraFields::Reject, Format::Json, black_box(&body)).is_ok());
    });
    let (serde_iterations, serde_seconds) = repeat(duration, || {
        black_box(serde_json::from_slice::<Vec<serde_json::Value>>(black_box(&body)).is_ok());
    });
    let mb = |iterations: u64, seconds: f64| body.len() as f64 * iterations as f64 / seconds / 1e6;
    let per_s = |iterations: u64, seconds: f64| (records as u64 * iterations) as f64 / seconds;
    Ok(ValidationResult {
        body_bytes: body.len(),
        records_per_body: records,
        sluice_iterations,
        sluice_mb_per_s: mb(sluice_iterations, sluice_seconds),
        sluice_records_per_s: per_s(sluice_iterations, sluice_seconds),
        serde_iterations,
        serde_mb_per_s: mb(serde_iterations, serde_seconds),
        serde_records_per_s: per_s(serde_iterations, serde_seconds),
    })
}

/// Calls `work` until `duration` passed (at least three times), returning
/// the count and the seconds taken.
fn repeat(duration: Duration, mut work: impl FnMut()) -> (u64, f64) {
    // One untimed call warms caches and the allocator.
    work();
    let started = Instant::now();
    let mut iterations = 0;
    while iterations < 3 || started.elapsed() < duration {
        work();
        iterations += 1;
    }
    (iterations, started.elapsed().as_secs_f64())
}
