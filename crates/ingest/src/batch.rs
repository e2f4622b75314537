//! Laying a validated body out as `RecordBatch` messages, each small enough
//! for the bus.
//!
//! NATS refuses a message (payload plus headers) larger than the server's
//! `max_payload`, 1 MiB by default, while a body may be up to
//! `SLUICE_MAX_BODY_BYTES`. So a body becomes several chunks: accepted
//! records first, in body order (the reader stores chunks in stream order,
//! so `_id`s follow the body), then the rejected ones of partial mode.
//!
//! Splitting is deterministic for a given body, schema and limit, which is
//! what lets a retried idempotent request produce the same message ids.

use std::ops::Range;

use chrono::{DateTime, Utc};
use sluice_runtime::bus::{ColumnsOf, RecordBatch, RejectedRecordOf};
use sluice_schema::{Format, Record, Rejected, Schema};
use uuid::Uuid;

/// What every chunk of one request shares.
pub(crate) struct BatchHeader<'a> {
    pub batch_id: Uuid,
    pub schema: &'a Schema,
    pub schema_version: i64,
    pub received_at: DateTime<Utc>,
    pub format: Format,
}

/// Room left in every message for the headers and for the final chunk
/// numbers (chunks are measured as "0 of 1").
pub(crate) const HEADROOM: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChunkError {
    /// This record (index in the body) does not fit in a message alone.
    #[error("record {0} alone exceeds the message size limit")]
    RecordTooLarge(usize),
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The memory for the messages was not granted.
    #[error("no memory for the messages")]
    NotHeld,
}

/// Encodes `records` and `rejected` as JSON `RecordBatch` messages of at
/// most `limit` bytes each. `size_hint` (the body's size) gives the first
/// guess of how many chunks are needed, so a large body is not encoded whole
/// only to learn that it must be split. `hold` is asked for each message's
/// bytes before it is kept.
pub(crate) fn encode_chunks(
    header: &BatchHeader<'_>,
    records: &[Record],
    rejected: &[Rejected],
    size_hint: usize,
    limit: usize,
    hold: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<Vec<u8>>, ChunkError> {
    let items = Items { records, rejected };
    let total = items.len();
    if total == 0 {
        return Ok(Vec::new());
    }
    let guess = (size_hint / limit.max(1) + 1).clamp(1, total);
    let mut parts = Vec::new();
    for range in even_ranges(total, guess) {
        fit(header, &items, range, limit, &mut parts, hold)?;
    }
    if parts.len() == 1 {
        // Measured as chunk 0 of 1, which it is.
        return Ok(parts.into_iter().map(|(_, bytes)| bytes).collect());
    }
    // Encoded again with their final numbers, each in place of its measure
    // (and a few bytes longer at most), so what was held for them holds.
    let chunks = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    for (i, (range, bytes)) in parts.iter_mut().enumerate() {
        let chunk = u32::try_from(i).unwrap_or(u32::MAX);
        *bytes = Vec::new();
        *bytes = encode(header, &items, range.clone(), chunk, chunks)?;
    }
    Ok(parts.into_iter().map(|(_, bytes)| bytes).collect())
}

/// Accepted records, then rejected ones, as one sequence of items.
struct Items<'a> {
    records: &'a [Record],
    rejected: &'a [Rejected],
}

impl Items<'_> {
    fn len(&self) -> usize {
        self.records.len() + self.rejected.len()
    }

    fn split(&self, range: &Range<usize>) -> (&[Record], &[Rejected]) {
        let n = self.records.len();
        let records = &self.records[range.start.min(n)..range.end.min(n)];
        let rejected = &self.rejected[range.start.max(n) - n..range.end.max(n) - n];
        (records, rejected)
    }

    /// The index in the body of item `i`. Accepted records carry no index,
    /// but they fill the places that rejected ones leave free.
    fn body_index(&self, i: usize) -> usize {
        if let Some(rejected) = i
            .checked_sub(self.records.len())
            .and_then(|j| self.rejected.get(j))
        {
            return rejected.record;
        }
        let mut index = i;
        for rejected in self.rejected {
            if rejected.record <= index {
                index += 1;
            } else {
                break;
            }
        }
        index
    }
}

/// Pushes `range` as one part if it fits, else its halves, recursively.
fn fit(
    header: &BatchHeader<'_>,
    items: &Items<'_>,
    range: Range<usize>,
    limit: usize,
    parts: &mut Vec<(Range<usize>, Vec<u8>)>,
    hold: &mut dyn FnMut(usize) -> bool,
) -> Result<(), ChunkError> {
    let bytes = encode(header, items, range.clone(), 0, 1)?;
    if bytes.len() + received_at_slack(header)? <= limit {
        if !hold(bytes.capacity()) {
            return Err(ChunkError::NotHeld);
        }
        parts.push((range, bytes));
        return Ok(());
    }
    if range.len() <= 1 {
        return Err(ChunkError::RecordTooLarge(items.body_index(range.start)));
    }
    drop(bytes);
    let middle = range.start + range.len() / 2;
    fit(header, items, range.start..middle, limit, parts, hold)?;
    fit(header, items, middle..range.end, limit, parts, hold)
}

/// How much longer `received_at` could be written than it is (its fraction
/// of a second takes 0 to 9 digits). Parts are measured as if it were its
/// longest, so that a retry, received at another instant, is cut exactly as
/// the first attempt was and its chunks keep their identities.
fn received_at_slack(header: &BatchHeader<'_>) -> Result<usize, serde_json::Error> {
    const LONGEST: usize = "\"2026-11-29T13:00:00.123456789Z\"".len();
    Ok(LONGEST.saturating_sub(serde_json::to_vec(&header.received_at)?.len()))
}

fn encode(
    header: &BatchHeader<'_>,
    items: &Items<'_>,
    range: Range<usize>,
    chunk: u32,
    chunks: u32,
) -> Result<Vec<u8>, serde_json::Error> {
    let (records, rejected) = items.split(&range);
    let batch = RecordBatch {
        batch_id: header.batch_id,
        chunk,
        chunks,
        schema_version: header.schema_version,
        received_at: header.received_at,
        rows: records.len(),
        columns: ColumnsOf::new(header.schema, records),
        rejected: rejected
            .iter()
            .map(|r| RejectedRecordOf::new(&r.raw, &r.errors))
            .collect(),
        // Only refused records are ever read again.
        format: (!rejected.is_empty()).then_some(header.format),
    };
    let mut bytes = serde_json::to_vec(&batch)?;
    // Doubling leaves up to half of it unused, for as long as it is queued.
    bytes.shrink_to_fit();
    Ok(bytes)
}

/// `total` items cut into `parts` consecutive ranges of near-equal length.
fn even_ranges(total: usize, parts: usize) -> impl Iterator<Item = Range<usize>> {
    (0..parts).map(move |i| (total * i / parts)..(total * (i + 1) / parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_schema::{ExtraFields, FieldSpec, Format, validate};

    fn schema() -> Schema {
        let specs: Vec<FieldSpec> = serde_json::from_value(serde_json::json!([
            {"name": "n", "type": "integer"},
            {"name": "s", "type": "string", "nullable": true}
        ]))
        .unwrap();
        Schema::define(&specs).unwrap()
    }

    fn header(schema: &Schema) -> BatchHeader<'_> {
        BatchHeader {
            batch_id: Uuid::nil(),
            schema,
            schema_version: 3,
            received_at: Utc::now(),
            format: Format::Ndjson,
        }
    }

    fn ndjson(schema: &Schema, body: &str) -> sluice_schema::Validation {
        validate(schema, ExtraFields::Reject, Format::Ndjson, body.as_bytes()).unwrap()
    }

    fn decode(chunks: &[Vec<u8>]) -> Vec<RecordBatch> {
        chunks
            .iter()
            .map(|c| serde_json::from_slice(c).unwrap())
            .collect()
    }

    #[test]
    fn a_small_body_is_one_chunk() {
        let schema = schema();
        let body = br#"[{"n": 1, "s": "a"}, {"n": 2}]"#;
        let v = validate(&schema, ExtraFields::Reject, Format::Json, body).unwrap();
        let chunks = encode_chunks(
            &header(&schema),
            &v.records,
            &v.rejected,
            30,
            1 << 20,
            &mut |_| true,
        )
        .unwrap();
        let batches = decode(&chunks);
        assert_eq!(batches.len(), 1);
        assert_eq!((batches[0].chunk, batches[0].chunks), (0, 1));
        assert_eq!(batches[0].rows, 2);
        assert_eq!(batches[0].schema_version, 3);
    }

    #[test]
    fn a_large_body_is_split_in_order_under_the_limit() {
        let schema = schema();
        let mut body = String::new();
        for i in 0..5000 {
            body.push_str(&format!(
                "{{\"n\": {i}, \"s\": \"{}\"}}\n",
                "x".repeat(i % 50)
            ));
        }
        body.push_str("{\"n\": \"bad\"}\n{\"n\": 1, \"zz\": 2}\n");
        let v = ndjson(&schema, &body);
        assert_eq!(v.rejected.len(), 2);
        let limit = 16 * 1024;
        // A hint far too small forces the halving path as well.
        for hint in [0, body.len()] {
            let chunks = encode_chunks(
                &header(&schema),
                &v.records,
                &v.rejected,
                hint,
                limit,
                &mut |_| true,
            )
            .unwrap();
            assert!(chunks.len() > 5);
            assert!(chunks.iter().all(|c| c.len() <= limit));
            let batches = decode(&chunks);
            let n = batches.len() as u32;
            let mut next = 0i64;
            for (i, batch) in batches.iter().enumerate() {
                assert_eq!((batch.chunk, batch.chunks), (i as u32, n));
                let sluice_runtime::bus::ColumnValues::Integer(values) = &batch.columns[0].values
                else {
                    panic!("n is an integer column");
                };
                for value in values {
                    assert_eq!(*value, Some(next));
                    next += 1;
                }
            }
            assert_eq!(next, 5000);
            let rejected: usize = batches.iter().map(|b| b.rejected.len()).sum();
            assert_eq!(rejected, 2);
        }
    }

    /// A retry is received at another instant, whose fraction of a second
    /// may take another number of digits; it must be cut the same way, at
    /// every limit, or its chunks would not match the first attempt's.
    #[test]
    fn a_body_is_cut_the_same_whenever_it_is_received() {
        let schema = schema();
        let body: String = (0..40)
            .map(|i| format!("{{\"n\": {i}, \"s\": \"{}\"}}\n", "x".repeat(i)))
            .collect();
        let v = ndjson(&schema, &body);
        let whole_second: DateTime<Utc> = "2026-11-29T13:00:00Z".parse().unwrap();
        let with_nanos: DateTime<Utc> = "2026-11-29T13:00:00.123456789Z".parse().unwrap();
        let rows = |received_at, limit| -> Vec<usize> {
            let header = BatchHeader {
                received_at,
                ..header(&schema)
            };
            let chunks =
                encode_chunks(&header, &v.records, &v.rejected, 0, limit, &mut |_| true).unwrap();
            decode(&chunks).iter().map(|b| b.rows).collect()
        };
        for limit in 600..1_400 {
            assert_eq!(
                rows(whole_second, limit),
                rows(with_nanos, limit),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn a_record_too_large_alone_is_named() {
        let schema = schema();
        let big = "y".repeat(10_000);
        let body = format!("{{\"n\": \"x\"}}\n{{\"n\": 1}}\n{{\"n\": 2, \"s\": \"{big}\"}}\n");
        let v = ndjson(&schema, &body);
        let outcome = encode_chunks(
            &header(&schema),
            &v.records,
            &v.rejected,
            0,
            4096,
            &mut |_| true,
        );
        assert!(matches!(outcome, Err(ChunkError::RecordTooLarge(2))));
    }

    #[test]
    fn nothing_to_send_is_no_chunk() {
        let schema = schema();
        let chunks = encode_chunks(&header(&schema), &[], &[], 0, 4096, &mut |_| true).unwrap();
        assert!(chunks.is_empty());
    }
}
