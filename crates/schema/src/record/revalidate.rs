//! A refused record validated again, as it was kept ([`Rejected::raw`]),
//! against the schema of now: what replaying rejected records asks.
//!
//! The record goes through the very validation a body gets, in the grammar
//! of the format it was sent in, so a record accepted here is exactly one
//! the gateway would accept now: a JSON or NDJSON record as one NDJSON line
//! (its text, which holds no raw newline), a CSV row as a two-line body of
//! its header and its cells.
//!
//! [`Rejected::raw`]: super::Rejected::raw

use super::{Format, Record, RecordError, validate};
use crate::connector::ExtraFields;
use crate::schema::Schema;

/// What a refused record is under the schema of now.
#[derive(Debug)]
pub enum Revalidated {
    Valid(Record),
    /// Still refused, with every error of now (at most
    /// [`super::Rejected::MAX_ERRORS`]), numbered as record 0 of line 1.
    Invalid(Vec<RecordError>),
    /// The kept form cannot be read as one record of `format` again: a
    /// record that was no object, one kept as its text (it held what
    /// PostgreSQL or serde_json cannot), a CSV row whose header named a
    /// column twice or whose cells did not match it. It stays as refused.
    Unreadable,
}

/// Validates `raw`, a refused record as it was kept, sent in `format`.
pub fn revalidate(
    schema: &Schema,
    extra: ExtraFields,
    format: Format,
    raw: &serde_json::Value,
) -> Revalidated {
    let Some(body) = body_of(format, raw) else {
        return Revalidated::Unreadable;
    };
    let as_format = match format {
        Format::Json | Format::Ndjson => Format::Ndjson,
        Format::Csv => Format::Csv,
    };
    let Ok(mut outcome) = validate(schema, extra, as_format, &body) else {
        return Revalidated::Unreadable;
    };
    match (outcome.records.pop(), outcome.rejected.pop()) {
        (Some(record), None) if outcome.records.is_empty() => Revalidated::Valid(record),
        (None, Some(rejected)) if outcome.rejected.is_empty() => {
            Revalidated::Invalid(rejected.errors)
        }
        _ => Revalidated::Unreadable,
    }
}

/// The body that holds `raw` alone, as it was sent in `format`.
fn body_of(format: Format, raw: &serde_json::Value) -> Option<Vec<u8>> {
    let object = raw.as_object()?;
    match format {
        Format::Json | Format::Ndjson => serde_json::to_vec(raw).ok(),
        Format::Csv => {
            let cells: Vec<&str> = object
                .values()
                .map(serde_json::Value::as_str)
                .collect::<Option<_>>()?;
            let mut writer = csv::Writer::from_writer(Vec::new());
            writer.write_record(object.keys()).ok()?;
            writer.write_record(cells).ok()?;
            writer.into_inner().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::{RecordErrorCode, Value};
    use crate::schema::FieldSpec;

    fn schema(fields: serde_json::Value) -> Schema {
        let specs: Vec<FieldSpec> = serde_json::from_value(fields).unwrap();
        Schema::define(&specs).unwrap()
    }

    fn codes(outcome: Revalidated) -> Vec<RecordErrorCode> {
        match outcome {
            Revalidated::Invalid(errors) => errors.iter().map(|e| e.code).collect(),
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn json_records_follow_the_schema_and_extra_fields_of_now() {
        let s = schema(json!([
            {"name": "n", "type": "integer"},
            {"name": "note", "type": "string", "nullable": true}
        ]));
        let raw = json!({"n": 5, "extra": 1});
        assert_eq!(
            codes(revalidate(&s, ExtraFields::Reject, Format::Json, &raw)),
            [RecordErrorCode::UnknownField]
        );
        match revalidate(&s, ExtraFields::Ignore, Format::Ndjson, &raw) {
            Revalidated::Valid(record) => {
                assert_eq!(record.0, [Value::Integer(5), Value::Null]);
            }
            other => panic!("expected a record, got {other:?}"),
        }
        // JSON's grammar: a numeric string is no integer.
        assert_eq!(
            codes(revalidate(
                &s,
                ExtraFields::Reject,
                Format::Json,
                &json!({"n": "5"})
            )),
            [RecordErrorCode::TypeMismatch]
        );
    }

    #[test]
    fn csv_rows_are_read_as_cells() {
        let s = schema(json!([
            {"name": "n", "type": "integer"},
            {"name": "s", "type": "string"}
        ]));
        match revalidate(
            &s,
            ExtraFields::Reject,
            Format::Csv,
            &json!({"s": "a,\"b\"\nc", "n": "7"}),
        ) {
            Revalidated::Valid(record) => assert_eq!(
                record.0,
                [Value::Integer(7), Value::String("a,\"b\"\nc".into())]
            ),
            other => panic!("expected a record, got {other:?}"),
        }
        // An empty cell is null in CSV, which `s` does not allow.
        assert_eq!(
            codes(revalidate(
                &s,
                ExtraFields::Reject,
                Format::Csv,
                &json!({"n": "1", "s": ""})
            )),
            [RecordErrorCode::NullNotAllowed]
        );
    }

    #[test]
    fn what_cannot_be_read_as_one_record_again_is_unreadable() {
        let s = schema(json!([{"name": "n", "type": "integer"}]));
        for (format, raw) in [
            (Format::Json, json!([{"n": 1}, {"n": 2}])),
            (Format::Json, json!("{\"n\": 1e999}")),
            (Format::Ndjson, json!(5)),
            (Format::Csv, json!(["1", "2"])),
            (Format::Csv, json!({"n": 1})),
        ] {
            assert!(
                matches!(
                    revalidate(&s, ExtraFields::Reject, format, &raw),
                    Revalidated::Unreadable
                ),
                "{format:?} {raw}"
            );
        }
    }
}
