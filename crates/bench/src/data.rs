//! The records of the benchmark: eight fields of mixed types, about 150
//! bytes of JSON each, numbered by `seq` so that a reader can tell which
//! request brought them.

use std::io::Write as _;

use chrono::{Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use serde_json::json;
use sluice_runtime::bus::{ColumnsOf, ConnectorDoc, RecordBatch};
use sluice_schema::{Format, validate};
use uuid::Uuid;

/// The connector's fields, as the control plane's create body takes them.
pub(crate) fn fields() -> serde_json::Value {
    json!([
        {"name": "seq", "type": "integer"},
        {"name": "customer", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "amount", "type": "decimal"},
        {"name": "score", "type": "number"},
        {"name": "active", "type": "boolean"},
        {"name": "day", "type": "date"},
        {"name": "at", "type": "timestamp"},
    ])
}

/// Appends record `seq` as a JSON object.
pub(crate) fn write_record(seq: i64, out: &mut Vec<u8>) {
    // Values vary with seq but need no randomness: a multiplicative hash is
    // enough to keep PostgreSQL and the parsers from seeing one repeated row.
    let mix = (seq as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    let customer = mix % 1_000_000;
    let cents = mix % 10_000_000;
    let score = (mix % 1_000_000) as f64 / 1_000_000.0;
    let day = NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date")
        + ChronoDuration::days((mix % 365) as i64);
    let at = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap()
        + ChronoDuration::milliseconds((mix % 86_400_000) as i64);
    let _ = write!(
        out,
        r#"{{"seq":{seq},"customer":"Customer {customer:06}","email":"c{customer:06}@example.com","amount":{}.{:02},"score":{score},"active":{},"day":"{day}","at":"{}"}}"#,
        cents / 100,
        cents % 100,
        !mix.is_multiple_of(3),
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
    );
}

/// A JSON array of `n` records numbered from `first_seq`.
pub(crate) fn json_body(first_seq: i64, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 170 + 2);
    out.push(b'[');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        write_record(first_seq + i as i64, &mut out);
    }
    out.push(b']');
    out
}

/// A JSON array of records numbered from `first_seq`, just over `bytes` long.
pub(crate) fn json_body_of_size(first_seq: i64, bytes: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(bytes + 256);
    out.push(b'[');
    let mut n = 0;
    while out.len() < bytes {
        if n > 0 {
            out.push(b',');
        }
        write_record(first_seq + n as i64, &mut out);
        n += 1;
    }
    out.push(b']');
    (out, n as usize)
}

/// `body` as the gateway would put it on the records stream: validated
/// against the connector's schema, laid out column by column as one
/// `RecordBatch`, serialised.
pub(crate) fn record_batch_message(doc: &ConnectorDoc, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let validation = validate(&doc.schema, doc.extra_fields, Format::Json, body)
        .map_err(|e| anyhow::anyhow!("the benchmark's own records do not parse: {e:?}"))?;
    anyhow::ensure!(
        validation.error_count == 0,
        "the benchmark's own records fail validation: {:?}",
        validation.errors.first()
    );
    let batch = RecordBatch {
        batch_id: Uuid::now_v7(),
        chunk: 0,
        chunks: 1,
        schema_version: doc.schema_version,
        received_at: Utc::now(),
        rows: validation.records.len(),
        columns: ColumnsOf::new(&doc.schema, &validation.records),
        rejected: Vec::<sluice_runtime::bus::RejectedRecord>::new(),
        format: None,
    };
    Ok(serde_json::to_vec(&batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_about_150_bytes_of_valid_json() {
        let body = json_body(1_000_000, 1000);
        let values: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(values.len(), 1000);
        assert_eq!(values[3]["seq"], 1_000_003);
        let per_record = body.len() / 1000;
        assert!(
            (130..=190).contains(&per_record),
            "{per_record} bytes a record"
        );
        let (big, n) = json_body_of_size(0, 1 << 20);
        assert!(big.len() >= 1 << 20 && n > 5000);
        assert_eq!(
            serde_json::from_slice::<Vec<serde_json::Value>>(&big)
                .unwrap()
                .len(),
            n
        );
    }
}
