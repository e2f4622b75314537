//! Properties of record validation over generated schemas, records and
//! bytes: valid records validate to the expected values in every format and
//! read back from their normalised form unchanged; wrong types get the right
//! code; and no input makes validation panic.

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, Utc};
use proptest::prelude::*;
use serde_json::value::RawValue;
use sluice_schema::{
    ExtraFields, FieldSpec, FieldType, Format, Record, RecordErrorCode, Schema, Validation, Value,
    validate,
};

/// One field's value as a producer sends it, and what it normalises to.
#[derive(Debug, Clone)]
struct Sent {
    /// JSON text of the value; `None` leaves the key out.
    json: Option<String>,
    /// The CSV cell.
    csv: String,
    expected: Value,
}

fn sent(json: impl Into<String>, csv: impl Into<String>, expected: Value) -> Sent {
    Sent {
        json: Some(json.into()),
        csv: csv.into(),
        expected,
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn field_type() -> impl Strategy<Value = FieldType> {
    prop::sample::select(FieldType::ALL.to_vec())
}

/// Any JSON value that every reader can hold: finite numbers, no NUL.
fn json_tree() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop::num::f64::NORMAL.prop_map(serde_json::Value::from),
        "[^\u{0}]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[^\u{0}]{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid, non-null value of `ty`, in the forms a producer may send it.
fn valid_value(ty: FieldType) -> BoxedStrategy<Sent> {
    match ty {
        FieldType::String => "[^\u{0}]{1,24}"
            .prop_map(|s| sent(quoted(&s), s.clone(), Value::String(s.into())))
            .boxed(),
        FieldType::Integer => any::<i64>()
            .prop_map(|i| sent(i.to_string(), i.to_string(), Value::Integer(i)))
            .boxed(),
        FieldType::Number => prop_oneof![
            prop::num::f64::NORMAL,
            prop::num::f64::SUBNORMAL,
            prop::num::f64::ZERO,
        ]
        .prop_map(|n| {
            let json = serde_json::to_string(&n).unwrap();
            sent(json, n.to_string(), Value::Number(n))
        })
        .boxed(),
        FieldType::Decimal => prop_oneof![
            // JSON's own number grammar, sent as a number.
            r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?".prop_map(|d| sent(
                d.clone(),
                d.clone(),
                Value::Decimal(d.into())
            )),
            // The wider canonical syntax, sent as a string.
            r"[+-]?([0-9]{1,40}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?"
                .prop_map(|d| sent(quoted(&d), d.clone(), Value::Decimal(d.into()))),
        ]
        .boxed(),
        FieldType::Boolean => (any::<bool>(), any::<bool>())
            .prop_map(|(b, upper)| {
                let cell = if upper {
                    b.to_string().to_uppercase()
                } else {
                    b.to_string()
                };
                sent(b.to_string(), cell, Value::Boolean(b))
            })
            .boxed(),
        FieldType::Date => (0i32..=9999, 1u32..=12, 1u32..=31)
            .prop_filter_map("a calendar date", |(y, m, d)| {
                NaiveDate::from_ymd_opt(y, m, d)
            })
            .prop_map(|date| {
                let text = date.format("%Y-%m-%d").to_string();
                sent(quoted(&text), text, Value::Date(date))
            })
            .boxed(),
        FieldType::Timestamp => {
            // Years 0001 to 9998 in UTC, so that any offset keeps the local
            // time within RFC 3339's four-digit years.
            let seconds = -62_135_596_800i64..253_370_764_800;
            let micros = prop_oneof![Just(0u32), 0u32..1_000_000];
            let offset_minutes = -(23 * 60 + 59)..=(23 * 60 + 59);
            (seconds, micros, offset_minutes)
                .prop_map(|(s, us, off)| {
                    let utc = DateTime::<Utc>::from_timestamp(s, us * 1000).unwrap();
                    let local = utc.with_timezone(&FixedOffset::east_opt(off * 60).unwrap());
                    let text = local.to_rfc3339_opts(SecondsFormat::AutoSi, false);
                    sent(quoted(&text), text, Value::Timestamp(utc))
                })
                .boxed()
        }
        FieldType::Json => json_tree()
            .prop_filter("null is not a json value", |v| !v.is_null())
            .prop_map(|v| {
                let text = serde_json::to_string(&v).unwrap();
                let raw = RawValue::from_string(text.clone()).unwrap();
                sent(text.clone(), text, Value::Json(raw))
            })
            .boxed(),
    }
}

/// JSON text of a kind that a field of `ty` (not `json`, which takes any)
/// refuses, and the code it gets.
fn wrong_value(ty: FieldType) -> BoxedStrategy<(String, RecordErrorCode)> {
    let string_code = match ty {
        FieldType::Decimal => RecordErrorCode::InvalidDecimal,
        FieldType::Date => RecordErrorCode::InvalidDate,
        FieldType::Timestamp => RecordErrorCode::InvalidTimestamp,
        _ => RecordErrorCode::TypeMismatch,
    };
    let mismatch = RecordErrorCode::TypeMismatch;
    let mut kinds: Vec<BoxedStrategy<(String, RecordErrorCode)>> = Vec::new();
    if ty != FieldType::Boolean {
        kinds.push(
            any::<bool>()
                .prop_map(move |b| (b.to_string(), mismatch))
                .boxed(),
        );
    }
    if !matches!(
        ty,
        FieldType::Integer | FieldType::Number | FieldType::Decimal
    ) {
        kinds.push(
            any::<i64>()
                .prop_map(move |i| (i.to_string(), mismatch))
                .boxed(),
        );
    }
    if !matches!(ty, FieldType::Number | FieldType::Decimal) {
        // Always with a fraction or an exponent: a float literal.
        let float = prop::num::f64::NORMAL.prop_map(move |n| (format!("{n:e}"), mismatch));
        kinds.push(float.boxed());
    }
    if ty != FieldType::String {
        let text = "x[a-z ]{0,10}".prop_map(move |s| (quoted(&s), string_code));
        kinds.push(text.boxed());
    }
    let container = json_tree()
        .prop_filter("arrays and objects", |v| v.is_array() || v.is_object())
        .prop_map(move |v| (v.to_string(), mismatch));
    kinds.push(container.boxed());
    proptest::strategy::Union::new(kinds).boxed()
}

/// A field's value in a record: for a nullable field, also null or absent.
fn field_value(ty: FieldType, nullable: bool) -> BoxedStrategy<Sent> {
    if !nullable {
        return valid_value(ty);
    }
    prop_oneof![
        3 => valid_value(ty),
        1 => Just(sent("null", "", Value::Null)),
        1 => Just(Sent { json: None, csv: String::new(), expected: Value::Null }),
    ]
    .boxed()
}

/// A schema of up to 12 fields and a valid record of it.
fn schema_and_record() -> impl Strategy<Value = (Schema, Vec<Sent>)> {
    prop::collection::vec((field_type(), any::<bool>()), 1..12).prop_flat_map(|kinds| {
        let specs: Vec<FieldSpec> = kinds
            .iter()
            .enumerate()
            .map(|(i, (ty, nullable))| FieldSpec {
                name: format!("f{i}"),
                ty: ty.as_str().into(),
                nullable: *nullable,
                description: None,
                previous_name: None,
            })
            .collect();
        let schema = Schema::define(&specs).unwrap();
        let values: Vec<BoxedStrategy<Sent>> = kinds
            .iter()
            .map(|(ty, nullable)| field_value(*ty, *nullable))
            .collect();
        (Just(schema), values)
    })
}

fn json_object(schema: &Schema, record: &[Sent]) -> String {
    let members: Vec<String> = schema
        .fields()
        .iter()
        .zip(record)
        .filter_map(|(f, s)| Some(format!("{}: {}", quoted(f.name.as_str()), s.json.as_ref()?)))
        .collect();
    format!("{{{}}}", members.join(", "))
}

fn csv_line(cells: impl IntoIterator<Item = String>) -> String {
    let cells: Vec<String> = cells
        .into_iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    format!("{}\r\n", cells.join(","))
}

fn csv_body(schema: &Schema, rows: &[Vec<String>]) -> String {
    let mut body = csv_line(schema.fields().iter().map(|f| f.name.to_string()));
    for row in rows {
        body.push_str(&csv_line(row.iter().cloned()));
    }
    body
}

fn valid(schema: &Schema, format: Format, body: &str) -> Vec<Record> {
    let v = validate(schema, ExtraFields::Reject, format, body.as_bytes())
        .unwrap_or_else(|e| panic!("{format:?} syntax error {e} in {body}"));
    assert_eq!(v.error_count, 0, "{format:?} {:?} in {body}", v.errors);
    v.records
}

/// Invariants of every outcome, whatever the input.
fn check_outcome(v: &Validation) {
    assert_eq!(
        v.errors.len(),
        v.error_count.min(Validation::MAX_LISTED_ERRORS)
    );
    let mut indices: Vec<usize> = v.rejected.iter().map(|r| r.record).collect();
    assert!(indices.windows(2).all(|w| w[0] < w[1]));
    for refused in &v.rejected {
        assert!(!refused.errors.is_empty());
        assert!(refused.errors.iter().all(|e| e.record == refused.record));
    }
    let per_record: usize = v.rejected.iter().map(|r| r.errors.len()).sum();
    assert!(per_record <= v.error_count);
    indices.dedup();
    assert_eq!(indices.len(), v.rejected.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_records_validate_in_every_format_and_round_trip(
        (schema, records) in schema_and_record().prop_flat_map(|(schema, first)| {
            // A few records of the same schema.
            let more = prop::collection::vec(
                schema.fields().iter().map(|f| field_value(f.ty, f.nullable)).collect::<Vec<_>>(),
                0..3,
            );
            (Just(schema), Just(first), more)
        }).prop_map(|(schema, first, more)| {
            let mut all = vec![first];
            all.extend(more);
            (schema, all)
        })
    ) {
        let expected: Vec<Record> = records
            .iter()
            .map(|r| Record(r.iter().map(|s| s.expected.clone()).collect()))
            .collect();

        let objects: Vec<String> = records.iter().map(|r| json_object(&schema, r)).collect();
        let json = format!("[{}]", objects.join(",\n"));
        prop_assert_eq!(&valid(&schema, Format::Json, &json), &expected);
        let ndjson = objects.join("\n");
        prop_assert_eq!(&valid(&schema, Format::Ndjson, &ndjson), &expected);
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| r.iter().map(|s| s.csv.clone()).collect())
            .collect();
        prop_assert_eq!(&valid(&schema, Format::Csv, &csv_body(&schema, &rows)), &expected);

        // The normalised form reads back to the same values, as JSON...
        let named: Vec<_> = expected.iter().map(|r| r.named(&schema)).collect();
        let again = serde_json::to_string(&named).unwrap();
        prop_assert_eq!(&valid(&schema, Format::Json, &again), &expected);
        // (as a tree too, where json values may only lose a float's last digit)
        let trees: Vec<serde_json::Value> = expected
            .iter()
            .map(|r| serde_json::Value::Object(r.to_json_object(&schema)))
            .collect();
        let again: Vec<Record> = valid(&schema, Format::Json, &serde_json::to_string(&trees).unwrap());
        for (read, record) in again.iter().zip(&expected) {
            for ((read, value), field) in read.0.iter().zip(&record.0).zip(schema.fields()) {
                if field.ty != FieldType::Json {
                    prop_assert_eq!(read, value);
                }
            }
        }
        // ...and as CSV cells.
        let cells: Vec<Vec<String>> = expected
            .iter()
            .map(|r| r.0.iter().map(|v| v.csv_cell().into_owned()).collect())
            .collect();
        prop_assert_eq!(&valid(&schema, Format::Csv, &csv_body(&schema, &cells)), &expected);
    }

    #[test]
    fn wrong_types_get_the_right_code(
        (ty, nullable, (wrong, expected)) in prop::sample::select(FieldType::ALL[..7].to_vec())
            .prop_flat_map(|ty| (Just(ty), any::<bool>(), wrong_value(ty)))
    ) {
        let schema = Schema::define(&[FieldSpec {
            name: "v".into(),
            ty: ty.as_str().into(),
            nullable,
            description: None,
            previous_name: None,
        }]).unwrap();
        let body = format!("{{\"v\": {wrong}}}");
        let v = validate(&schema, ExtraFields::Reject, Format::Json, body.as_bytes()).unwrap();
        prop_assert!(v.records.is_empty());
        prop_assert_eq!(v.errors.len(), 1);
        prop_assert_eq!(v.errors[0].code, expected, "{}", v.errors[0].message);
        prop_assert_eq!(v.errors[0].field.as_deref(), Some("v"));
        prop_assert_eq!(&v.rejected[0].raw, &serde_json::from_str::<serde_json::Value>(&body).unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let schema = people();
        for format in [Format::Json, Format::Ndjson, Format::Csv] {
            for extra in [ExtraFields::Reject, ExtraFields::Ignore] {
                match validate(&schema, extra, format, &bytes) {
                    Ok(v) => check_outcome(&v),
                    Err(e) => prop_assert!(e.line >= 1 && e.column >= 1),
                }
            }
        }
    }

    #[test]
    fn json_like_text_never_panics(text in r#"[\[\]{}":,0-9a-z.eE+\- \n\\]{0,300}"#) {
        let schema = people();
        for format in [Format::Json, Format::Ndjson, Format::Csv] {
            match validate(&schema, ExtraFields::Reject, format, text.as_bytes()) {
                Ok(v) => check_outcome(&v),
                Err(e) => prop_assert!(e.line >= 1 && e.column >= 1),
            }
        }
    }
}

/// A schema with one field of each type, to reach every parser.
fn people() -> Schema {
    let specs: Vec<FieldSpec> = FieldType::ALL
        .iter()
        .enumerate()
        .map(|(i, ty)| FieldSpec {
            name: ["a", "b", "c", "d", "e", "f", "g", "h"][i].into(),
            ty: ty.as_str().into(),
            nullable: i % 2 == 0,
            description: None,
            previous_name: None,
        })
        .collect();
    Schema::define(&specs).unwrap()
}
