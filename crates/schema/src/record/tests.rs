//! The rules of SPEC sections 5 and 7, one by one, through [`validate`].

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::schema::FieldSpec;
use RecordErrorCode as Code;

fn schema(fields: &[(&str, &str, bool)]) -> Schema {
    let specs: Vec<FieldSpec> = fields
        .iter()
        .map(|(name, ty, nullable)| FieldSpec {
            name: (*name).into(),
            ty: (*ty).into(),
            nullable: *nullable,
            description: None,
            previous_name: None,
        })
        .collect();
    Schema::define(&specs).unwrap()
}

fn people() -> Schema {
    schema(&[
        ("name", "string", false),
        ("age", "integer", false),
        ("note", "string", true),
    ])
}

fn run(schema: &Schema, format: Format, body: &str) -> Validation {
    validate(schema, ExtraFields::Reject, format, body.as_bytes()).unwrap()
}

fn run_ignoring(schema: &Schema, format: Format, body: &str) -> Validation {
    validate(schema, ExtraFields::Ignore, format, body.as_bytes()).unwrap()
}

/// (record, line, field, code) of every listed error.
fn errors(v: &Validation) -> Vec<(usize, Option<usize>, Option<&str>, Code)> {
    v.errors
        .iter()
        .map(|e| (e.record, e.line, e.field.as_deref(), e.code))
        .collect()
}

fn codes(v: &Validation) -> Vec<Code> {
    v.errors.iter().map(|e| e.code).collect()
}

/// The value that a one-field record holding `literal` gets, as JSON.
fn from_json(ty: &str, nullable: bool, literal: &str) -> Result<Value, Code> {
    let schema = schema(&[("v", ty, nullable)]);
    let v = run(&schema, Format::Json, &format!(r#"{{"v": {literal}}}"#));
    single(v)
}

/// The value that a one-field CSV record holding `cell` gets.
fn from_csv(ty: &str, nullable: bool, cell: &str) -> Result<Value, Code> {
    let schema = schema(&[("v", ty, nullable)]);
    let quoted = format!("\"{}\"", cell.replace('"', "\"\""));
    single(run(&schema, Format::Csv, &format!("v\n{quoted}\n")))
}

fn single(v: Validation) -> Result<Value, Code> {
    match (v.records.as_slice(), v.errors.as_slice()) {
        ([record], []) => Ok(record.0[0].clone()),
        ([], [error]) => Err(error.code),
        _ => panic!("expected one record or one error, got {v:?}"),
    }
}

fn json_value(text: &str) -> Value {
    Value::Json(serde_json::from_str::<Box<RawValue>>(text).unwrap())
}

// Bodies and their shapes.

#[test]
fn a_json_array_of_objects_validates_in_body_order() {
    let v = run(
        &people(),
        Format::Json,
        r#"[{"name": "ada", "age": 36}, {"age": 41, "name": "grace", "note": "navy"}]"#,
    );
    assert_eq!(v.error_count, 0);
    assert_eq!(
        v.records,
        [
            Record(vec![
                Value::String("ada".into()),
                Value::Integer(36),
                Value::Null
            ]),
            Record(vec![
                Value::String("grace".into()),
                Value::Integer(41),
                Value::String("navy".into())
            ]),
        ]
    );
}

#[test]
fn a_single_json_object_is_one_record() {
    let v = run(&people(), Format::Json, r#" {"name": "ada", "age": 36} "#);
    assert_eq!(v.records.len(), 1);
    assert!(v.rejected.is_empty());
}

#[test]
fn empty_bodies_hold_no_records() {
    for format in [Format::Json, Format::Ndjson, Format::Csv] {
        let blank = if format == Format::Csv {
            "\r\n\n"
        } else {
            "  \n\r\n\t"
        };
        for body in ["", blank] {
            let v = run(&people(), format, body);
            assert!(
                v.records.is_empty() && v.rejected.is_empty(),
                "{format:?} {body:?}"
            );
        }
    }
    let v = run(&people(), Format::Json, " [ ] ");
    assert!(v.records.is_empty() && v.rejected.is_empty());
    let v = run(&people(), Format::Csv, "name,age\n");
    assert!(v.records.is_empty() && v.rejected.is_empty());
}

#[test]
fn elements_that_are_not_objects_are_malformed_records() {
    let v = run(
        &people(),
        Format::Json,
        r#"[5, {"name": "a", "age": 1}, "x", [1, [2]], null, true]"#,
    );
    assert_eq!(v.records.len(), 1);
    assert_eq!(
        errors(&v),
        [
            (0, None, None, Code::Malformed),
            (2, None, None, Code::Malformed),
            (3, None, None, Code::Malformed),
            (4, None, None, Code::Malformed),
            (5, None, None, Code::Malformed),
        ]
    );
    assert_eq!(v.errors[0].message, "expected a JSON object, got number 5");
    assert_eq!(
        v.errors[1].message,
        "expected a JSON object, got string \"x\""
    );
    assert_eq!(v.rejected[2].raw, json!([1, [2]]));

    let v = run(&people(), Format::Json, "5");
    assert_eq!(errors(&v), [(0, None, None, Code::Malformed)]);
    assert_eq!(v.rejected[0].raw, json!(5));
}

#[test]
fn json_syntax_errors_carry_line_and_column() {
    let schema = people();
    let err = validate(
        &schema,
        ExtraFields::Reject,
        Format::Json,
        b"[\n  {\"name\": \"a\",, \"age\": 1}\n]",
    )
    .unwrap_err();
    assert_eq!((err.line, err.column), (2, 16));
    assert!(!err.message.contains("line"), "{}", err.message);

    let err = validate(&schema, ExtraFields::Reject, Format::Json, b"[{}] x").unwrap_err();
    assert_eq!((err.line, err.column), (1, 6));
    assert_eq!(err.message, "trailing characters");

    let err = validate(&schema, ExtraFields::Reject, Format::Json, b"[{}\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.column >= 1);
}

#[test]
fn invalid_utf8_is_a_syntax_error_at_its_place_in_every_format() {
    let schema = people();
    for format in [Format::Json, Format::Ndjson, Format::Csv] {
        let body: &[u8] = match format {
            Format::Json => b"[\n{\"name\": \"a\xff\", \"age\": 1}]",
            Format::Ndjson => b"\n{\"name\": \"a\xff\", \"age\": 1}",
            Format::Csv => b"name,age\nab\xff,1\n",
        };
        let err = validate(&schema, ExtraFields::Reject, format, body).unwrap_err();
        let column = if format == Format::Csv { 3 } else { 12 };
        assert_eq!((err.line, err.column), (2, column), "{format:?}");
        assert_eq!(err.message, "invalid UTF-8");
    }
    // Even where the value would be skipped.
    let err = validate(
        &schema,
        ExtraFields::Ignore,
        Format::Json,
        b"{\"name\": \"a\", \"age\": 1, \"x\": \"\xc3\"}",
    )
    .unwrap_err();
    assert_eq!(err.line, 1);
}

#[test]
fn a_byte_order_mark_is_skipped_in_every_format() {
    let schema = people();
    for (format, body) in [
        (Format::Json, "\u{feff}{\"name\": \"a\", \"age\": 1}"),
        (Format::Ndjson, "\u{feff}{\"name\": \"a\", \"age\": 1}\n"),
        (Format::Csv, "\u{feff}name,age\na,1\n"),
    ] {
        let v = run(&schema, format, body);
        assert_eq!(v.records.len(), 1, "{format:?}");
        assert_eq!(v.error_count, 0);
    }
    let err = validate(
        &schema,
        ExtraFields::Reject,
        Format::Json,
        "\u{feff}[x]".as_bytes(),
    )
    .unwrap_err();
    assert_eq!((err.line, err.column), (1, 5));
}

// NDJSON.

#[test]
fn ndjson_counts_lines_from_one_and_skips_blank_ones() {
    let body = "{\"name\": \"a\", \"age\": 1}\r\n\n   \n{\"name\": \"b\", \"age\": \"x\"}\n[1]\n{\"name\": \"c\", \"age\": 3}\n";
    let v = run(&people(), Format::Ndjson, body);
    assert_eq!(v.records.len(), 2);
    assert_eq!(
        errors(&v),
        [
            (1, Some(4), Some("age"), Code::TypeMismatch),
            (2, Some(5), None, Code::Malformed),
        ]
    );
    assert_eq!(v.errors[0].message, "expected integer, got string \"x\"");
    assert_eq!(v.rejected[0].raw, json!({"name": "b", "age": "x"}));
    assert_eq!(v.rejected[1].raw, json!([1]));
    assert_eq!(v.rejected[1].line, Some(5));
}

#[test]
fn ndjson_syntax_errors_name_their_line() {
    let body = "{\"name\": \"a\", \"age\": 1}\n\n{\"name\": \"b\" \"age\": 2}\n";
    let err = validate(
        &people(),
        ExtraFields::Reject,
        Format::Ndjson,
        body.as_bytes(),
    )
    .unwrap_err();
    assert_eq!((err.line, err.column), (3, 14));
    let err = validate(&people(), ExtraFields::Reject, Format::Ndjson, b"{} {}\n").unwrap_err();
    assert_eq!((err.line, err.column), (1, 4));
}

// CSV.

#[test]
fn csv_reads_quoted_cells_crlf_and_multi_line_rows() {
    let body = "name,age,note\r\n\"Smith, \"\"Jo\"\"\",41,\"two\r\nlines\"\r\nada,36,\r\n";
    let v = run(&people(), Format::Csv, body);
    assert_eq!(v.error_count, 0, "{:?}", v.errors);
    assert_eq!(
        v.records,
        [
            Record(vec![
                Value::String("Smith, \"Jo\"".into()),
                Value::Integer(41),
                Value::String("two\r\nlines".into()),
            ]),
            Record(vec![
                Value::String("ada".into()),
                Value::Integer(36),
                Value::Null
            ]),
        ]
    );
}

#[test]
fn csv_errors_carry_the_line_where_the_row_starts() {
    let body = "name,age\n\"multi\nline\",x\n\nb,2\nc,y\n";
    let v = run(&people(), Format::Csv, body);
    assert_eq!(v.records.len(), 1);
    assert_eq!(
        errors(&v),
        [
            (0, Some(2), Some("age"), Code::InvalidNumber),
            (2, Some(6), Some("age"), Code::InvalidNumber),
        ]
    );
    assert_eq!(
        v.rejected[0].raw,
        json!({"name": "multi\nline", "age": "x"})
    );
}

#[test]
fn ragged_csv_rows_are_malformed() {
    let v = run(&people(), Format::Csv, "name,age\na,1,extra\nb\nc,3\n");
    assert_eq!(
        errors(&v),
        [
            (0, Some(2), None, Code::Malformed),
            (1, Some(3), None, Code::Malformed)
        ]
    );
    assert_eq!(v.errors[0].message, "row has 3 cells but the header has 2");
    assert_eq!(v.rejected[0].raw, json!(["a", "1", "extra"]));
    assert_eq!(v.records.len(), 1);
}

#[test]
fn csv_headers_name_fields_exactly() {
    let v = run(&people(), Format::Csv, "name,age,Extra\na,1,z\nb,2,\n");
    assert_eq!(
        errors(&v),
        [
            (0, Some(2), Some("Extra"), Code::UnknownField),
            (1, Some(3), Some("Extra"), Code::UnknownField),
        ]
    );
    let v = run_ignoring(&people(), Format::Csv, "name,age,Extra\na,1,z\n");
    assert_eq!(v.error_count, 0);
    assert_eq!(v.records.len(), 1);

    let v = run(&people(), Format::Csv, "Name,age\na,1\n");
    assert_eq!(
        errors(&v),
        [
            (0, Some(2), Some("Name"), Code::UnknownField),
            (0, Some(2), Some("name"), Code::MissingField),
        ]
    );
}

#[test]
fn a_csv_column_named_twice_is_a_duplicate_in_every_row() {
    let v = run(&people(), Format::Csv, "name,age,age\na,1,2\n");
    assert_eq!(
        errors(&v),
        [(0, Some(2), Some("age"), Code::DuplicateField)]
    );
    assert_eq!(v.rejected[0].raw, json!(["a", "1", "2"]));
}

#[test]
fn a_missing_csv_column_is_missing_from_every_row() {
    let v = run(&people(), Format::Csv, "name\na\nb\n");
    assert_eq!(
        errors(&v),
        [
            (0, Some(2), Some("age"), Code::MissingField),
            (1, Some(3), Some("age"), Code::MissingField),
        ]
    );
    // A nullable field may go without a column.
    let v = run(&people(), Format::Csv, "age,name\n1,a\n");
    assert_eq!(
        v.records,
        [Record(vec![
            Value::String("a".into()),
            Value::Integer(1),
            Value::Null
        ])]
    );
}

// Field rules shared by the formats.

#[test]
fn null_and_missing_need_a_nullable_field() {
    let v = run(
        &people(),
        Format::Json,
        r#"[{"name": null, "age": 1}, {"age": 1}, {"name": "a", "age": 1, "note": null}]"#,
    );
    assert_eq!(
        errors(&v),
        [
            (0, None, Some("name"), Code::NullNotAllowed),
            (1, None, Some("name"), Code::MissingField),
        ]
    );
    assert_eq!(v.records[0].0[2], Value::Null);

    let v = run(&people(), Format::Csv, "name,age,note\n,1,\n");
    assert_eq!(
        errors(&v),
        [(0, Some(2), Some("name"), Code::NullNotAllowed)]
    );
    for ty in [
        "string",
        "integer",
        "number",
        "decimal",
        "boolean",
        "date",
        "timestamp",
        "json",
    ] {
        assert_eq!(from_json(ty, true, "null"), Ok(Value::Null), "{ty}");
        assert_eq!(
            from_json(ty, false, "null"),
            Err(Code::NullNotAllowed),
            "{ty}"
        );
        assert_eq!(from_csv(ty, true, ""), Ok(Value::Null), "{ty}");
        assert_eq!(from_csv(ty, false, ""), Err(Code::NullNotAllowed), "{ty}");
    }
}

#[test]
fn unknown_keys_are_rejected_unless_ignored() {
    let body = r#"{"name": "a", "age": 1, "Age": 2, "x": {"deep": [1, 2]}}"#;
    let v = run(&people(), Format::Json, body);
    assert_eq!(
        errors(&v),
        [
            (0, None, Some("Age"), Code::UnknownField),
            (0, None, Some("x"), Code::UnknownField),
        ]
    );
    assert_eq!(v.errors[1].message, "field \"x\" is not in the schema");
    let v = run_ignoring(&people(), Format::Json, body);
    assert_eq!(v.error_count, 0);
    assert_eq!(v.records[0].0[1], Value::Integer(1));
}

#[test]
fn a_key_given_twice_is_a_duplicate() {
    let v = run(
        &people(),
        Format::Json,
        r#"{"name": "a", "age": 1, "name": "b"}"#,
    );
    assert_eq!(errors(&v), [(0, None, Some("name"), Code::DuplicateField)]);
    assert_eq!(v.rejected[0].raw["age"], json!(1));
}

#[test]
fn keys_with_escapes_match_their_unescaped_name() {
    let v = run(&people(), Format::Json, r#"{"n\u0061me": "a", "age": 1}"#);
    assert_eq!(v.error_count, 0);
}

#[test]
fn every_error_of_a_record_is_reported_in_one_pass() {
    let v = run(
        &people(),
        Format::Json,
        r#"[{"age": "x", "zip": 1, "note": 5}]"#,
    );
    assert_eq!(
        errors(&v),
        [
            (0, None, Some("age"), Code::TypeMismatch),
            (0, None, Some("zip"), Code::UnknownField),
            (0, None, Some("note"), Code::TypeMismatch),
            (0, None, Some("name"), Code::MissingField),
        ]
    );
    assert_eq!(v.rejected.len(), 1);
    assert_eq!(v.rejected[0].errors.len(), 4);
}

#[test]
fn one_pass_serves_partial_and_all_or_nothing() {
    let body =
        r#"[{"name": "a", "age": 1}, {"name": "b", "age": 2.5}, {"name": "c", "age": 3}, 7]"#;
    let v = run(&people(), Format::Json, body);
    // Partial: the good ones, in order.
    let names: Vec<&Value> = v.records.iter().map(|r| &r.0[0]).collect();
    assert_eq!(
        names,
        [&Value::String("a".into()), &Value::String("c".into())]
    );
    // The refused ones, as sent, with their errors.
    let refused: Vec<usize> = v.rejected.iter().map(|r| r.record).collect();
    assert_eq!(refused, [1, 3]);
    assert_eq!(v.rejected[0].raw, json!({"name": "b", "age": 2.5}));
    assert_eq!(
        v.rejected[0].errors[0].message,
        "expected integer, got number 2.5"
    );
    assert_eq!(v.rejected[1].raw, json!(7));
    // All or nothing: the listing and the count.
    assert_eq!(v.error_count, 2);
    assert_eq!(v.errors.len(), 2);
}

#[test]
fn listed_errors_stop_at_one_hundred_but_all_are_counted() {
    let body: String = std::iter::repeat_n(r#"{"name": 1, "age": "x"}"#, 150)
        .collect::<Vec<_>>()
        .join("\n");
    let v = run(&people(), Format::Ndjson, &body);
    assert_eq!(v.errors.len(), Validation::MAX_LISTED_ERRORS);
    assert_eq!(v.error_count, 300);
    assert_eq!(v.rejected.len(), 150);
    assert_eq!(v.errors[99].record, 49);
    assert!(v.rejected.iter().all(|r| r.errors.len() == 2));
}

#[test]
fn a_record_keeps_at_most_one_hundred_errors() {
    let names: Vec<String> = (0..150).map(|i| format!("f{i}")).collect();
    let fields: Vec<(&str, &str, bool)> = names
        .iter()
        .map(|n| (n.as_str(), "integer", false))
        .collect();
    let schema = schema(&fields);
    let v = run(&schema, Format::Json, "[{}, {}]");
    assert_eq!(v.error_count, 300);
    assert_eq!(v.rejected[0].errors.len(), Rejected::MAX_ERRORS);
    assert_eq!(v.rejected[1].errors.len(), Rejected::MAX_ERRORS);
    assert_eq!(v.errors.len(), 100);
    assert!(v.errors.iter().all(|e| e.record == 0));
}

#[test]
fn large_schemas_find_fields_in_any_order() {
    let names: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
    let fields: Vec<(&str, &str, bool)> = names
        .iter()
        .map(|n| (n.as_str(), "integer", false))
        .collect();
    let schema = schema(&fields);
    let object: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .rev()
        .map(|(i, n)| (n.clone(), json!(i)))
        .collect();
    let v = run(
        &schema,
        Format::Json,
        &serde_json::to_string(&object).unwrap(),
    );
    assert_eq!(v.error_count, 0);
    assert_eq!(v.records[0].0[39], Value::Integer(39));
    let v = run(&schema, Format::Json, r#"{"f1x": 1}"#);
    assert_eq!(v.errors[0].code, Code::UnknownField);
}

#[test]
fn messages_never_echo_more_than_a_hundred_characters() {
    let long = "x".repeat(10_000);
    let v = run(
        &people(),
        Format::Json,
        &format!(r#"{{"name": "a", "age": "{long}", "{long}": 1}}"#),
    );
    assert_eq!(v.errors.len(), 2);
    for error in &v.errors {
        assert!(
            error.message.chars().count() < 160,
            "{}",
            error.message.len()
        );
        assert!(error.field.as_ref().unwrap().chars().count() <= 101);
    }
}

// Types, per format.

#[test]
fn strings() {
    assert_eq!(
        from_json("string", false, r#""a\"b\u00e9""#),
        Ok(Value::String("a\"bé".into()))
    );
    assert_eq!(
        from_json("string", false, r#""""#),
        Ok(Value::String(CompactString::default()))
    );
    for bad in ["1", "true", "{}", "[]"] {
        assert_eq!(
            from_json("string", false, bad),
            Err(Code::TypeMismatch),
            "{bad}"
        );
    }
    assert_eq!(
        from_csv("string", false, " a,b "),
        Ok(Value::String(" a,b ".into()))
    );
}

#[test]
fn integers() {
    for (literal, n) in [
        ("0", 0),
        ("-0", 0),
        ("42", 42),
        ("9223372036854775807", i64::MAX),
        ("-9223372036854775808", i64::MIN),
    ] {
        assert_eq!(
            from_json("integer", false, literal),
            Ok(Value::Integer(n)),
            "{literal}"
        );
        assert_eq!(
            from_csv("integer", false, literal),
            Ok(Value::Integer(n)),
            "{literal}"
        );
    }
    for literal in [
        "9223372036854775808",
        "-9223372036854775809",
        &"9".repeat(5000),
    ] {
        assert_eq!(from_json("integer", false, literal), Err(Code::OutOfRange));
        assert_eq!(from_csv("integer", false, literal), Err(Code::OutOfRange));
    }
    for literal in ["1.0", "1e3", "1E3", "-2.5", "\"5\"", "true", "[1]"] {
        assert_eq!(
            from_json("integer", false, literal),
            Err(Code::TypeMismatch),
            "{literal}"
        );
    }
    for cell in ["1.0", "1e3"] {
        assert_eq!(
            from_csv("integer", false, cell),
            Err(Code::TypeMismatch),
            "{cell}"
        );
    }
    for cell in ["+5", " 5", "5 ", "x", "0x1", "1_000", "-"] {
        assert_eq!(
            from_csv("integer", false, cell),
            Err(Code::InvalidNumber),
            "{cell}"
        );
    }
}

#[test]
fn numbers() {
    for (literal, n) in [
        ("1.5", 1.5),
        ("-0.0", -0.0),
        ("1e308", 1e308),
        ("5", 5.0),
        ("1E-400", 0.0),
    ] {
        assert_eq!(
            from_json("number", false, literal),
            Ok(Value::Number(n)),
            "{literal}"
        );
        assert_eq!(
            from_csv("number", false, literal),
            Ok(Value::Number(n)),
            "{literal}"
        );
    }
    for cell in [".5", "5.", "+5", "1e+2"] {
        assert!(
            matches!(from_csv("number", false, cell), Ok(Value::Number(_))),
            "{cell}"
        );
    }
    let huge = format!("1{}", "0".repeat(5000));
    for literal in ["1e999", "-1e309", &huge] {
        assert_eq!(
            from_json("number", false, literal),
            Err(Code::OutOfRange),
            "{literal}"
        );
        assert_eq!(
            from_csv("number", false, literal),
            Err(Code::OutOfRange),
            "{literal}"
        );
    }
    let tiny = format!("0.{}1", "0".repeat(5000));
    assert_eq!(from_json("number", false, &tiny), Ok(Value::Number(0.0)));
    for literal in ["\"1.5\"", "true", "{}"] {
        assert_eq!(
            from_json("number", false, literal),
            Err(Code::TypeMismatch),
            "{literal}"
        );
    }
    for cell in ["NaN", "inf", "-infinity", "1,5", "abc", "1e"] {
        assert_eq!(
            from_csv("number", false, cell),
            Err(Code::InvalidNumber),
            "{cell}"
        );
    }
}

#[test]
fn decimals_are_kept_exactly() {
    let exact = "0.1000000000000000000000000000001";
    assert_eq!(
        from_json("decimal", false, exact),
        Ok(Value::Decimal(exact.into()))
    );
    assert_eq!(
        from_json("decimal", false, "12.50"),
        Ok(Value::Decimal("12.50".into()))
    );
    assert_eq!(
        from_json("decimal", false, "-1.5E+3"),
        Ok(Value::Decimal("-1.5E+3".into()))
    );
    assert_eq!(
        from_json("decimal", false, "\"+.5\""),
        Ok(Value::Decimal("+.5".into()))
    );
    assert_eq!(
        from_json("decimal", false, "\"12.\""),
        Ok(Value::Decimal("12.".into()))
    );
    let digits = "9".repeat(1000);
    assert_eq!(
        from_json("decimal", false, &digits),
        Ok(Value::Decimal(digits.as_str().into()))
    );
    assert_eq!(
        from_csv("decimal", false, exact),
        Ok(Value::Decimal(exact.into()))
    );

    for literal in ["\"abc\"", "\"1,5\"", "\" 1\"", "\"NaN\"", "\"\"", "\"1e\""] {
        assert_eq!(
            from_json("decimal", false, literal),
            Err(Code::InvalidDecimal),
            "{literal}"
        );
    }
    for literal in ["true", "[1]", "{}"] {
        assert_eq!(
            from_json("decimal", false, literal),
            Err(Code::TypeMismatch),
            "{literal}"
        );
    }
    let too_long = "9".repeat(1001);
    for literal in [
        too_long.as_str(),
        "1e1001",
        "1e-1001",
        "1e99999999999999999999",
    ] {
        assert_eq!(
            from_json("decimal", false, literal),
            Err(Code::OutOfRange),
            "{literal}"
        );
        assert_eq!(
            from_csv("decimal", false, literal),
            Err(Code::OutOfRange),
            "{literal}"
        );
    }
    for cell in ["abc", "Infinity", "1.2.3"] {
        assert_eq!(
            from_csv("decimal", false, cell),
            Err(Code::InvalidDecimal),
            "{cell}"
        );
    }
}

#[test]
fn booleans() {
    assert_eq!(
        from_json("boolean", false, "true"),
        Ok(Value::Boolean(true))
    );
    assert_eq!(
        from_json("boolean", false, "false"),
        Ok(Value::Boolean(false))
    );
    for literal in ["\"true\"", "1", "0", "[]"] {
        assert_eq!(
            from_json("boolean", false, literal),
            Err(Code::TypeMismatch),
            "{literal}"
        );
    }
    for (cell, b) in [
        ("true", true),
        ("TRUE", true),
        ("False", false),
        ("fAlSe", false),
    ] {
        assert_eq!(
            from_csv("boolean", false, cell),
            Ok(Value::Boolean(b)),
            "{cell}"
        );
    }
    for cell in ["yes", "1", "t", " true"] {
        assert_eq!(
            from_csv("boolean", false, cell),
            Err(Code::TypeMismatch),
            "{cell}"
        );
    }
}

#[test]
fn dates_are_real_calendar_dates() {
    let date = |y, m, d| Ok(Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap()));
    assert_eq!(
        from_json("date", false, "\"2026-11-29\""),
        date(2026, 11, 29)
    );
    assert_eq!(
        from_json("date", false, "\"2024-02-29\""),
        date(2024, 2, 29)
    );
    assert_eq!(from_csv("date", false, "0001-01-01"), date(1, 1, 1));
    for text in [
        "2026-02-30",
        "2025-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-2-3",
        "2026/02/03",
        "26-02-03",
        "2026-02-03T00:00:00Z",
        "+2026-02-03",
    ] {
        assert_eq!(
            from_json("date", false, &format!("\"{text}\"")),
            Err(Code::InvalidDate),
            "{text}"
        );
        assert_eq!(
            from_csv("date", false, text),
            Err(Code::InvalidDate),
            "{text}"
        );
    }
    assert_eq!(
        from_json("date", false, "20260101"),
        Err(Code::TypeMismatch)
    );
    let v = run(
        &schema(&[("d", "date", false)]),
        Format::Json,
        r#"{"d": "2026-02-30"}"#,
    );
    assert_eq!(v.errors[0].message, "2026-02-30 is not a calendar date");
}

#[test]
fn timestamps_need_an_offset_and_are_normalised_to_utc() {
    let at = |h, m| {
        Ok(Value::Timestamp(
            Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap(),
        ))
    };
    assert_eq!(
        from_json("timestamp", false, "\"2026-11-29T13:00:00Z\""),
        at(13, 0)
    );
    assert_eq!(
        from_json("timestamp", false, "\"2026-11-29T15:30:00+02:30\""),
        at(13, 0)
    );
    assert_eq!(
        from_csv("timestamp", false, "2026-11-29T08:00:00-05:00"),
        at(13, 0)
    );
    let Ok(Value::Timestamp(t)) = from_csv("timestamp", false, "2026-11-29T13:00:00.123456Z")
    else {
        panic!("fractional seconds");
    };
    assert_eq!(t.timestamp_subsec_micros(), 123_456);

    for text in ["2026-11-29T13:00:00", "2026-11-29 13:00:00.5"] {
        assert_eq!(
            from_csv("timestamp", false, text),
            Err(Code::InvalidTimestamp),
            "{text}"
        );
    }
    let v = run(
        &schema(&[("t", "timestamp", false)]),
        Format::Json,
        r#"{"t": "2026-11-29T13:00:00"}"#,
    );
    assert!(
        v.errors[0].message.contains("no UTC offset"),
        "{}",
        v.errors[0].message
    );
    for text in [
        "2026-11-31T13:00:00Z",
        "2026-11-29",
        "yesterday",
        "2026-11-29T25:00:00Z",
    ] {
        assert_eq!(
            from_csv("timestamp", false, text),
            Err(Code::InvalidTimestamp),
            "{text}"
        );
    }
    assert_eq!(
        from_json("timestamp", false, "1700000000"),
        Err(Code::TypeMismatch)
    );
    assert_eq!(
        from_csv("timestamp", false, "9999-12-31T23:00:00-05:00"),
        Err(Code::OutOfRange)
    );
    assert_eq!(
        from_csv("timestamp", false, "0000-01-01T00:00:00+01:00"),
        Err(Code::OutOfRange)
    );
}

#[test]
fn json_fields_take_any_value_and_keep_its_text() {
    for literal in [
        r#"{"a": [1, "x", null]}"#,
        "[]",
        "3.14",
        r#""s""#,
        "false",
        r#"["\ud83d\ude00"]"#,
    ] {
        assert_eq!(
            from_json("json", false, literal),
            Ok(json_value(literal)),
            "{literal}"
        );
    }
    assert_eq!(
        from_csv("json", false, r#"{"a":1}"#),
        Ok(json_value(r#"{"a":1}"#))
    );
    assert_eq!(
        from_csv("json", false, "  [1, 2] "),
        Ok(json_value("[1, 2]"))
    );
    assert_eq!(from_csv("json", true, "null"), Ok(Value::Null));
    assert_eq!(from_csv("json", false, "null"), Err(Code::NullNotAllowed));
    for cell in ["{a:1}", "[1,", "hello", "1 2"] {
        assert_eq!(
            from_csv("json", false, cell),
            Err(Code::TypeMismatch),
            "{cell}"
        );
    }
}

#[test]
fn json_fields_refuse_what_postgresql_or_serde_json_cannot_hold() {
    for literal in ["1e999", "[1e-1001]", r#"{"a": "\u0000"}"#, r#""\udc00""#] {
        assert_eq!(
            from_json("json", false, literal),
            Err(Code::OutOfRange),
            "{literal}"
        );
        assert_eq!(
            from_csv("json", false, literal),
            Err(Code::OutOfRange),
            "{literal}"
        );
    }
}

#[test]
fn strings_refuse_the_nul_character() {
    assert_eq!(
        from_json("string", false, r#""a\u0000b""#),
        Err(Code::TypeMismatch)
    );
    assert_eq!(from_csv("string", false, "a\0b"), Err(Code::TypeMismatch));
}

// Hostile input.

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deep_json_values_are_refused_without_recursion() {
    let deep = nested(10_000);
    assert_eq!(from_json("json", false, &deep), Err(Code::OutOfRange));
    assert_eq!(from_csv("json", false, &deep), Err(Code::OutOfRange));
    assert_eq!(from_json("string", false, &deep), Err(Code::TypeMismatch));
    assert_eq!(
        from_json("json", false, &nested(MAX_JSON_DEPTH)),
        Ok(json_value(&nested(MAX_JSON_DEPTH)))
    );

    // As an element, as an unknown field, and as the whole body.
    let v = run(&people(), Format::Json, &format!("[{deep}]"));
    assert_eq!(codes(&v), [Code::Malformed]);
    assert!(matches!(v.rejected[0].raw, serde_json::Value::String(_)));
    let v = run_ignoring(
        &people(),
        Format::Json,
        &format!(r#"{{"name": "a", "age": 1, "x": {deep}}}"#),
    );
    assert_eq!(v.records.len(), 1);
    let v = run(&people(), Format::Json, &deep);
    assert_eq!(codes(&v), [Code::Malformed]);
    let v = run(&people(), Format::Ndjson, &format!("{deep}\n"));
    assert_eq!(codes(&v), [Code::Malformed]);
    let objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let v = run(&people(), Format::Json, &objects);
    assert_eq!(
        codes(&v),
        [Code::UnknownField, Code::MissingField, Code::MissingField]
    );
    // Unbalanced depth is a syntax error, not a crash.
    let open = "[".repeat(100_000);
    assert!(
        validate(
            &people(),
            ExtraFields::Reject,
            Format::Json,
            open.as_bytes()
        )
        .is_err()
    );
}

#[test]
fn numbers_with_thousands_of_digits_are_handled_in_every_type() {
    let long = "1".repeat(20_000);
    for ty in ["string", "boolean", "date", "timestamp"] {
        assert_eq!(from_json(ty, false, &long), Err(Code::TypeMismatch), "{ty}");
    }
    assert_eq!(from_json("integer", false, &long), Err(Code::OutOfRange));
    assert_eq!(from_json("number", false, &long), Err(Code::OutOfRange));
    assert_eq!(from_json("decimal", false, &long), Err(Code::OutOfRange));
    assert_eq!(from_json("json", false, &long), Err(Code::OutOfRange));
    // Outside any field serde_json reads numbers itself; a long one is fine,
    // an infinite one is its syntax error (see the module docs).
    let v = run(&people(), Format::Json, &format!("[0.{long}]"));
    assert_eq!(codes(&v), [Code::Malformed]);
    assert!(validate(&people(), ExtraFields::Reject, Format::Json, b"[1e999]").is_err());
}

#[test]
fn a_rejected_record_that_serde_json_cannot_hold_keeps_its_text() {
    let body = r#"[{"name": "a", "age": 1e999}]"#;
    let v = run(&people(), Format::Json, body);
    assert_eq!(codes(&v), [Code::TypeMismatch]);
    assert_eq!(v.rejected[0].raw, json!(r#"{"name": "a", "age": 1e999}"#));
}

// The normalised form.

#[test]
fn values_serialise_to_their_normalised_json() {
    let t = Utc.with_ymd_and_hms(2026, 11, 29, 13, 0, 0).unwrap();
    let values = [
        (Value::Null, json!(null)),
        (Value::String("s".into()), json!("s")),
        (Value::Integer(-3), json!(-3)),
        (Value::Number(1.5), json!(1.5)),
        (Value::Decimal("12.50".into()), json!("12.50")),
        (Value::Boolean(true), json!(true)),
        (
            Value::Date(NaiveDate::from_ymd_opt(2026, 2, 3).unwrap()),
            json!("2026-02-03"),
        ),
        (Value::Timestamp(t), json!("2026-11-29T13:00:00Z")),
        (json_value(r#"{"a": [1]}"#), json!({"a": [1]})),
    ];
    for (value, expected) in values {
        assert_eq!(value.to_json(), expected);
        assert_eq!(serde_json::to_value(&value).unwrap(), expected);
    }
    let record = Record(vec![
        Value::String("ada".into()),
        Value::Integer(36),
        Value::Null,
    ]);
    assert_eq!(
        serde_json::Value::Object(record.to_json_object(&people())),
        json!({"name": "ada", "age": 36, "note": null})
    );
    assert_eq!(Value::Timestamp(t).csv_cell(), "2026-11-29T13:00:00Z");
    assert_eq!(json_value("[1]"), json_value("[1]"));
    assert_ne!(json_value("[1]"), json_value("[ 1 ]"));
}

#[test]
fn error_codes_serialise_in_snake_case() {
    for code in [
        Code::TypeMismatch,
        Code::NullNotAllowed,
        Code::InvalidDecimal,
        Code::Malformed,
    ] {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
    }
    let error = RecordError {
        record: 0,
        line: Some(1),
        field: Some("age".into()),
        code: Code::TypeMismatch,
        message: "expected integer, got string \"x\"".into(),
    };
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        json!({"record": 0, "line": 1, "field": "age", "code": "type_mismatch", "message": "expected integer, got string \"x\""})
    );
}

/// Validates with the outcome allowed `limit` bytes; also returns what it
/// asked for in all.
fn run_within(schema: &Schema, format: Format, body: &str, limit: usize) -> (Validation, usize) {
    let mut held = 0usize;
    let v = validate_with(
        schema,
        ExtraFields::Reject,
        format,
        body.as_bytes(),
        &mut |more| {
            held += more;
            held <= limit
        },
    )
    .unwrap();
    (v, held)
}

#[test]
fn a_body_cannot_expand_beyond_what_the_caller_allows() {
    // Sparse records count every field of the schema.
    let schema = schema(&[("a", "string", true), ("b", "integer", true)]);
    let body = format!("[{}]", vec!["{}"; 50].join(","));
    let (v, needed) = run_within(&schema, Format::Json, &body, usize::MAX);
    assert_eq!((v.records.len(), v.overflowed_at), (50, None));
    assert!(needed >= 50 * 2 * std::mem::size_of::<Value>(), "{needed}");
    let (v, _) = run_within(&schema, Format::Json, &body, needed - 1);
    assert!(v.records.is_empty());
    assert_eq!(v.overflowed_at, Some(49));

    // Past the limit nothing is kept, but every error is still counted.
    let strict = people();
    let body = ["{}"; 10].join("\n");
    let (v, needed) = run_within(&strict, Format::Ndjson, &body, usize::MAX);
    assert_eq!((v.rejected.len(), v.error_count), (10, 20));
    let (v, _) = run_within(&strict, Format::Ndjson, &body, needed / 2);
    assert!(v.rejected.is_empty() && v.records.is_empty());
    assert!(v.overflowed_at.is_some_and(|i| i < 10));
    assert_eq!((v.errors.len(), v.error_count), (20, 20));

    // A JSON array's refused records count their text once recovered.
    let body = format!("[{}]", [r#"{"name": "x", "age": "y"}"#; 10].join(","));
    let (v, needed) = run_within(&strict, Format::Json, &body, usize::MAX);
    assert_eq!(v.rejected.len(), 10);
    assert_eq!(v.rejected[9].raw, json!({"name": "x", "age": "y"}));
    let (v, _) = run_within(&strict, Format::Json, &body, needed - 1);
    assert!(v.rejected.is_empty());
    assert_eq!((v.overflowed_at, v.error_count), (Some(9), 10));
}

#[test]
fn a_refused_csv_row_counts_its_raw_object_and_errors() {
    // A one-cell row of an unknown column: tiny in the body, a map node and
    // three errors once kept.
    let (v, needed) = run_within(&people(), Format::Csv, "zz\n1\n", usize::MAX);
    assert_eq!((v.rejected.len(), v.error_count), (1, 3));
    assert!(needed > 600, "{needed}");
}

#[test]
fn values_stay_small_for_the_budget_to_hold() {
    assert!(std::mem::size_of::<Value>() <= 32);
}
