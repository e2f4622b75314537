//! One field's value, from a JSON literal or a CSV cell, into its normalised
//! form; and the messages that say why one does not fit.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use compact_str::CompactString;
use serde_json::value::RawValue;

use super::{MAX_DECIMAL_CHARS, MAX_DECIMAL_EXPONENT, MAX_JSON_DEPTH, RecordErrorCode, Value};
use crate::field::{Field, FieldType};

/// Why a value does not fit its field: a code and a message for a person.
pub(super) type Misfit = (RecordErrorCode, String);

/// Messages show at most this many characters of an offending value.
const MAX_SHOWN_CHARS: usize = 100;

/// `text` cut to [`MAX_SHOWN_CHARS`] characters, marked when cut: how every
/// message, of ingest and of the read API alike, shows a user's value.
pub fn snippet(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// A JSON literal described for a message, e.g. `string "x"` or `number 1.5`.
pub(super) fn describe_json(raw: &str) -> String {
    let kind = match raw.as_bytes().first() {
        Some(b'"') => "string",
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => return "null".to_owned(),
        _ => "number",
    };
    format!("{kind} {}", snippet(raw))
}

/// A CSV cell described for a message: quoted and escaped as JSON.
fn describe_cell(cell: &str) -> String {
    serde_json::to_string(&snippet(cell)).unwrap_or_default()
}

fn null_not_allowed(field: &Field) -> Misfit {
    (
        RecordErrorCode::NullNotAllowed,
        format!("field \"{}\" may not be null", field.name),
    )
}

fn mismatch(expected: &str, got: String) -> Misfit {
    (
        RecordErrorCode::TypeMismatch,
        format!("expected {expected}, got {got}"),
    )
}

/// The value of `field` from its JSON literal (valid JSON, as serde_json
/// skipped over it).
pub(super) fn from_json(field: &Field, raw: &RawValue) -> Result<Value, Misfit> {
    let text = raw.get();
    if text == "null" {
        return if field.nullable {
            Ok(Value::Null)
        } else {
            Err(null_not_allowed(field))
        };
    }
    let first = text.as_bytes()[0];
    let is_number = first == b'-' || first.is_ascii_digit();
    let expected = |what: &str| mismatch(what, describe_json(text));
    match field.ty {
        FieldType::String => match json_string(text) {
            Some(s) => storable_string(s.into()),
            None => Err(expected("string")),
        },
        FieldType::Integer if is_number => {
            if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
                return Err(expected("integer"));
            }
            parse_integer(text)
        }
        FieldType::Integer => Err(expected("integer")),
        FieldType::Number if is_number => parse_number(text),
        FieldType::Number => Err(expected("number")),
        FieldType::Decimal if is_number => {
            check_decimal(text).map(|()| Value::Decimal(text.into()))
        }
        FieldType::Decimal => match json_string(text) {
            Some(s) => decimal(&s).map(|()| Value::Decimal(s.into())),
            None => Err(expected("decimal (a number or a numeric string)")),
        },
        FieldType::Boolean => match text {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(expected("boolean")),
        },
        FieldType::Date => match json_string(text) {
            Some(s) => parse_date(&s),
            None => Err(expected("date (a \"YYYY-MM-DD\" string)")),
        },
        FieldType::Timestamp => match json_string(text) {
            Some(s) => parse_timestamp(&s),
            None => Err(expected("timestamp (an RFC 3339 string)")),
        },
        FieldType::Json => {
            check_json_text(text)?;
            Ok(Value::Json(raw.to_owned()))
        }
    }
}

/// The value of `field` from a CSV cell; the empty cell is null.
pub(super) fn from_csv(field: &Field, cell: &str) -> Result<Value, Misfit> {
    let value = if cell.is_empty() {
        Value::Null
    } else {
        from_text(field.ty, cell)?
    };
    if matches!(value, Value::Null) && !field.nullable {
        return Err(null_not_allowed(field));
    }
    Ok(value)
}

/// Why a text is no value of its type: the code that ingest reports for it,
/// and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    pub code: RecordErrorCode,
    pub message: String,
}

/// One value of type `ty` from its text form, the grammar of a CSV cell in
/// SPEC 5: the one owner of what a valid integer, decimal, date or
/// timestamp written as text is, shared by CSV ingest and the read API's
/// filters, so that a value means the same wherever it is written and
/// whatever PostgreSQL cannot hold (NUL, dates beyond year 9999) is refused
/// before it gets there.
///
/// The text is never trimmed. The empty text is the empty string for
/// `string` and no value of any other type (CSV reads an empty cell as null
/// before it gets here). The JSON text `null` of a `json` value is
/// [`Value::Null`].
pub fn parse_value(ty: FieldType, text: &str) -> Result<Value, ValueError> {
    from_text(ty, text).map_err(|(code, message)| ValueError { code, message })
}

/// [`parse_value`], with the error as a [`Misfit`].
fn from_text(ty: FieldType, text: &str) -> Result<Value, Misfit> {
    match ty {
        FieldType::String => storable_string(text.into()),
        FieldType::Integer => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                parse_integer(text)
            } else if is_decimal_literal(text) && text.contains(['.', 'e', 'E']) {
                Err(mismatch(
                    "integer",
                    format!("number {}", describe_cell(text)),
                ))
            } else {
                Err((
                    RecordErrorCode::InvalidNumber,
                    format!("expected integer, got {}", describe_cell(text)),
                ))
            }
        }
        FieldType::Number => {
            if is_decimal_literal(text) {
                parse_number(text)
            } else {
                Err((
                    RecordErrorCode::InvalidNumber,
                    format!("expected number, got {}", describe_cell(text)),
                ))
            }
        }
        FieldType::Decimal => decimal(text).map(|()| Value::Decimal(text.into())),
        FieldType::Boolean => {
            if text.eq_ignore_ascii_case("true") {
                Ok(Value::Boolean(true))
            } else if text.eq_ignore_ascii_case("false") {
                Ok(Value::Boolean(false))
            } else {
                Err(mismatch("boolean (true or false)", describe_cell(text)))
            }
        }
        FieldType::Date => parse_date(text),
        FieldType::Timestamp => parse_timestamp(text),
        FieldType::Json => match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) if raw.get() == "null" => Ok(Value::Null),
            Ok(raw) => {
                check_json_text(raw.get())?;
                Ok(Value::Json(raw.to_owned()))
            }
            Err(e) => Err(mismatch(
                "JSON text",
                format!("{} ({e})", describe_cell(text)),
            )),
        },
    }
}

/// The content of a JSON string literal; `None` when `raw` is no string.
fn json_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// PostgreSQL's `text` cannot hold the NUL character.
fn storable_string(s: CompactString) -> Result<Value, Misfit> {
    if s.contains('\0') {
        Err((
            RecordErrorCode::TypeMismatch,
            "expected string without the NUL character (U+0000), which PostgreSQL cannot store"
                .to_owned(),
        ))
    } else {
        Ok(Value::String(s))
    }
}

/// `text` is `-?[0-9]+`.
fn parse_integer(text: &str) -> Result<Value, Misfit> {
    text.parse::<i64>().map(Value::Integer).map_err(|_| {
        (
            RecordErrorCode::OutOfRange,
            format!(
                "integer {} is outside the signed 64-bit range",
                snippet(text)
            ),
        )
    })
}

/// `text` is a decimal or exponent literal.
fn parse_number(text: &str) -> Result<Value, Misfit> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(Value::Number(n)),
        _ => Err((
            RecordErrorCode::OutOfRange,
            format!(
                "number {} is beyond the range of a 64-bit float",
                snippet(text)
            ),
        )),
    }
}

/// `^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$`: the canonical syntax of
/// decimal literals, and of numbers in CSV.
pub(super) fn is_decimal_literal(text: &str) -> bool {
    decimal_parts(text).is_some()
}

/// The exponent digits of a decimal literal (empty when it has none), if
/// `text` is one.
fn decimal_parts(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa_digits = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa_digits += digits(&mut i);
    }
    if mantissa_digits == 0 {
        return None;
    }
    let mut exponent = "";
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let digits_start = i;
        if digits(&mut i) == 0 {
            return None;
        }
        exponent = &text[digits_start..i];
    }
    (i == b.len()).then_some(exponent)
}

/// A decimal value's literal taken apart, as PostgreSQL's `numeric` input
/// reads it: for writers that build the binary form themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecimalParts<'a> {
    pub negative: bool,
    /// ASCII digits before the point; empty in `.5`.
    pub whole: &'a str,
    /// ASCII digits after the point; empty in `5` and `5.`.
    pub fraction: &'a str,
    /// At most [`MAX_DECIMAL_EXPONENT`] in magnitude.
    pub exponent: i32,
}

impl<'a> DecimalParts<'a> {
    /// `literal` taken apart if it is a decimal value as this crate accepts
    /// one (canonical syntax within the size limits); `None` otherwise.
    pub fn of(literal: &'a str) -> Option<DecimalParts<'a>> {
        decimal(literal).ok()?;
        let (negative, unsigned) = match literal.as_bytes()[0] {
            b'-' => (true, &literal[1..]),
            b'+' => (false, &literal[1..]),
            _ => (false, literal),
        };
        let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
            // Checked above: digits after an optional sign, at most 1000.
            Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().ok()?),
            None => (unsigned, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        Some(DecimalParts {
            negative,
            whole,
            fraction,
            exponent,
        })
    }
}

/// A decimal literal sent as text: canonical syntax, then the size limits.
fn decimal(text: &str) -> Result<(), Misfit> {
    if is_decimal_literal(text) {
        check_decimal(text)
    } else {
        Err((
            RecordErrorCode::InvalidDecimal,
            format!(
                "expected a decimal literal such as 12.50 or -1.5e3, got {}",
                describe_cell(text)
            ),
        ))
    }
}

/// The size limits of a literal with canonical syntax (every JSON number has
/// it).
fn check_decimal(text: &str) -> Result<(), Misfit> {
    if text.len() > MAX_DECIMAL_CHARS {
        return Err((
            RecordErrorCode::OutOfRange,
            format!(
                "decimal literal has {} characters; at most {MAX_DECIMAL_CHARS} are kept",
                text.len()
            ),
        ));
    }
    let exponent = decimal_parts(text).unwrap_or_default();
    let significant = exponent.trim_start_matches('0');
    let too_large = significant.len() > 4
        || significant
            .parse::<u32>()
            .is_ok_and(|e| e > MAX_DECIMAL_EXPONENT);
    if too_large {
        return Err((
            RecordErrorCode::OutOfRange,
            format!(
                "decimal {} has an exponent beyond ±{MAX_DECIMAL_EXPONENT}",
                snippet(text)
            ),
        ));
    }
    Ok(())
}

/// `YYYY-MM-DD`, a real calendar date.
fn parse_date(text: &str) -> Result<Value, Misfit> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shaped {
        return Err((
            RecordErrorCode::InvalidDate,
            format!("expected a date as YYYY-MM-DD, got {}", describe_cell(text)),
        ));
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    // A four-digit year always fits an i32.
    NaiveDate::from_ymd_opt(year as i32, month, day)
        .map(Value::Date)
        .ok_or_else(|| {
            (
                RecordErrorCode::InvalidDate,
                format!("{text} is not a calendar date"),
            )
        })
}

/// RFC 3339 with an offset, normalised to UTC.
fn parse_timestamp(text: &str) -> Result<Value, Misfit> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => {
            let utc = t.with_timezone(&Utc);
            if (0..=9999).contains(&utc.year()) {
                Ok(Value::Timestamp(utc))
            } else {
                Err((
                    RecordErrorCode::OutOfRange,
                    format!("timestamp {text} falls outside years 0000 to 9999 in UTC"),
                ))
            }
        }
        Err(_) if has_no_offset(text) => Err((
            RecordErrorCode::InvalidTimestamp,
            format!(
                "timestamp {} has no UTC offset; add Z or an offset such as +02:00",
                describe_cell(text)
            ),
        )),
        Err(_) => Err((
            RecordErrorCode::InvalidTimestamp,
            format!(
                "expected an RFC 3339 timestamp such as 2026-11-29T13:00:00Z, got {}",
                describe_cell(text)
            ),
        )),
    }
}

fn has_no_offset(text: &str) -> bool {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .any(|format| NaiveDateTime::parse_from_str(text, format).is_ok())
}

/// Checks valid JSON text against what every reader downstream can hold:
/// nesting at most [`MAX_JSON_DEPTH`] deep (serde_json stops at 128), numbers
/// that are finite as `f64` and within PostgreSQL's `numeric` limits (jsonb
/// stores them so), and strings without `\u0000` or lone surrogates (jsonb
/// refuses both).
fn check_json_text(text: &str) -> Result<(), Misfit> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = skip_string(b, i + 1)?;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err((
                        RecordErrorCode::OutOfRange,
                        format!("JSON value nests deeper than {MAX_JSON_DEPTH} levels"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    i += 1;
                }
                check_json_number(&text[start..i])?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A number inside a `json` value.
fn check_json_number(literal: &str) -> Result<(), Misfit> {
    check_decimal(literal)?;
    // Without an exponent, 309 digits are needed to overflow an f64.
    let may_overflow = literal.len() > 300 || literal.contains(['e', 'E']);
    if may_overflow && !literal.parse::<f64>().is_ok_and(f64::is_finite) {
        return Err((
            RecordErrorCode::OutOfRange,
            format!(
                "number {} in the JSON value is beyond the range of a 64-bit float",
                snippet(literal)
            ),
        ));
    }
    Ok(())
}

/// Skips a JSON string whose opening quote is before `i`; returns the index
/// after its closing quote.
fn skip_string(b: &[u8], mut i: usize) -> Result<usize, Misfit> {
    let unstorable = |what: &str| {
        Err((
            RecordErrorCode::OutOfRange,
            format!("JSON value holds {what}, which PostgreSQL cannot store"),
        ))
    };
    loop {
        match b.get(i) {
            None => return Ok(i),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') if b.get(i + 1) == Some(&b'u') => match hex4(b, i + 2) {
                Some(0) => return unstorable("\\u0000"),
                Some(0xD800..=0xDBFF) => {
                    let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(b, i + 8))
                        .flatten();
                    if !matches!(low, Some(0xDC00..=0xDFFF)) {
                        return unstorable("a lone surrogate escape");
                    }
                    i += 12;
                }
                Some(0xDC00..=0xDFFF) => return unstorable("a lone surrogate escape"),
                _ => i += 6,
            },
            Some(b'\\') => i += 2,
            Some(_) => i += 1,
        }
    }
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_syntax_is_the_canonical_one() {
        for ok in [
            "0", "-1", "+1", "1.", ".5", "1.50", "1e3", "1E-3", "-.5e+10", "007",
        ] {
            assert!(is_decimal_literal(ok), "{ok}");
        }
        for bad in [
            "", ".", "-", "+.", "1e", "1e+", "e3", "1.2.3", "1,5", " 1", "1 ", "NaN", "inf",
            "0x10", "1_000",
        ] {
            assert!(!is_decimal_literal(bad), "{bad}");
        }
    }

    #[test]
    fn decimal_parts_are_those_of_a_valid_decimal() {
        let parts = |negative, whole, fraction, exponent| {
            Some(DecimalParts {
                negative,
                whole,
                fraction,
                exponent,
            })
        };
        assert_eq!(DecimalParts::of("-12.50"), parts(true, "12", "50", 0));
        assert_eq!(DecimalParts::of("+.5E-3"), parts(false, "", "5", -3));
        assert_eq!(DecimalParts::of("7."), parts(false, "7", "", 0));
        assert_eq!(
            DecimalParts::of("1e-000000001000"),
            parts(false, "1", "", -1000)
        );
        for bad in ["", "1e1001", "1,5", "٣", "1e99999999999", "NaN"] {
            assert_eq!(DecimalParts::of(bad), None, "{bad}");
        }
        assert_eq!(DecimalParts::of(&"1".repeat(MAX_DECIMAL_CHARS + 1)), None);
    }

    #[test]
    fn decimal_exponent_is_bounded_with_leading_zeros_ignored() {
        assert!(check_decimal("1e1000").is_ok());
        assert!(check_decimal("1e-000000001000").is_ok());
        assert_eq!(
            check_decimal("1e1001").unwrap_err().0,
            RecordErrorCode::OutOfRange
        );
        assert_eq!(
            check_decimal("1e99999999999").unwrap_err().0,
            RecordErrorCode::OutOfRange
        );
    }

    fn code_of(ty: FieldType, text: &str) -> RecordErrorCode {
        match parse_value(ty, text) {
            Ok(value) => panic!("{ty} {text:?} was read as {value:?}"),
            Err(error) => error.code,
        }
    }

    #[test]
    fn text_values_refuse_what_postgresql_cannot_hold() {
        use RecordErrorCode as Code;
        // Dates are YYYY-MM-DD exactly: no short parts, no sign, no fifth
        // year digit, so every one fits PostgreSQL's `date`.
        for (bad, code) in [
            ("2026-1-5", Code::InvalidDate),
            ("2026-01-5", Code::InvalidDate),
            ("-5000-01-01", Code::InvalidDate),
            ("+2026-01-05", Code::InvalidDate),
            ("10000-01-01", Code::InvalidDate),
            ("2026-02-30", Code::InvalidDate),
            (" 2026-01-05", Code::InvalidDate),
        ] {
            assert_eq!(code_of(FieldType::Date, bad), code, "{bad}");
        }
        assert_eq!(
            parse_value(FieldType::Date, "2026-01-05").unwrap(),
            Value::Date(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap())
        );
        assert_eq!(code_of(FieldType::String, "a\0b"), Code::TypeMismatch);
        assert_eq!(
            parse_value(FieldType::String, "").unwrap(),
            Value::String(CompactString::default())
        );
        for bad in [r#""\u0000""#, r#"{"\u0000": 1}"#, "[\"\0\"]", r#""\ud800""#] {
            assert!(parse_value(FieldType::Json, bad).is_err(), "{bad}");
        }
        assert_eq!(parse_value(FieldType::Json, "null").unwrap(), Value::Null);
        assert_eq!(
            code_of(FieldType::Integer, "9223372036854775808"),
            Code::OutOfRange
        );
        assert_eq!(code_of(FieldType::Integer, "+5"), Code::InvalidNumber);
        assert_eq!(code_of(FieldType::Integer, "1.5"), Code::TypeMismatch);
        assert_eq!(
            parse_value(FieldType::Integer, "-9223372036854775808").unwrap(),
            Value::Integer(i64::MIN)
        );
        for bad in ["inf", "NaN", "1e309", "0x10", ""] {
            assert!(parse_value(FieldType::Number, bad).is_err(), "{bad}");
        }
        assert_eq!(code_of(FieldType::Decimal, "1e1001"), Code::OutOfRange);
        assert_eq!(code_of(FieldType::Decimal, "1,5"), Code::InvalidDecimal);
        assert_eq!(code_of(FieldType::Boolean, "yes"), Code::TypeMismatch);
        assert_eq!(
            parse_value(FieldType::Boolean, "TRUE").unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            code_of(FieldType::Timestamp, "0000-01-01T00:00:00+01:00"),
            Code::OutOfRange
        );
        assert_eq!(
            code_of(FieldType::Timestamp, "10000-01-01T00:00:00Z"),
            Code::InvalidTimestamp
        );
        assert_eq!(
            code_of(FieldType::Timestamp, "2026-01-05T10:00:00"),
            Code::InvalidTimestamp
        );
    }

    /// CSV cells are read by the same grammar, null aside.
    #[test]
    fn csv_cells_are_text_values() {
        let field = |ty| Field {
            id: crate::field::FieldId(1),
            name: crate::field::FieldName::parse("f", "name").unwrap(),
            ty,
            nullable: true,
            description: None,
        };
        for ty in FieldType::ALL {
            for cell in [
                "x",
                "5",
                "-5",
                "+5",
                "1.5",
                "1e3",
                "true",
                "False",
                "2026-01-05",
                "2026-1-5",
                "2026-01-05T10:00:00Z",
                "{\"a\": 1}",
                "[1]",
                "a\0",
            ] {
                assert_eq!(
                    from_csv(&field(ty), cell),
                    from_text(ty, cell),
                    "{ty} {cell:?}"
                );
            }
        }
    }

    #[test]
    fn snippets_cut_on_character_boundaries() {
        let long = "é".repeat(150);
        let cut = snippet(&long);
        assert_eq!(cut.chars().count(), MAX_SHOWN_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(snippet("short"), "short");
    }

    #[test]
    fn json_text_checks_skip_string_contents() {
        let brackets = "[".repeat(MAX_JSON_DEPTH + 5);
        let in_string = format!("[\"{brackets}\\\"{brackets}\"]");
        assert!(check_json_text(&in_string).is_ok());
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert!(check_json_text(&deep).is_err());
        let limit = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(check_json_text(&limit).is_ok());
        assert!(check_json_text(r#"["\ud83d\ude00", "\\u0000", 1e308, -0.5e-1000]"#).is_ok());
        for bad in [
            r#""a\u0000""#,
            r#"["\ud83d"]"#,
            r#""\ude00x""#,
            "1e309",
            "1e-1001",
            r#"{"a": 1e400}"#,
        ] {
            assert_eq!(
                check_json_text(bad).unwrap_err().0,
                RecordErrorCode::OutOfRange,
                "{bad}"
            );
        }
    }
}
