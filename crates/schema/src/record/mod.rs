//! Record validation straight from request bytes, into one normalised form.
//!
//! [`validate`] reads a body once and serves both ingest modes: the valid
//! records, the refused ones with every error, and the listing that a 422
//! answer shows. It never builds a generic JSON tree: JSON is deserialised by
//! schema-driven seeds, each field's value parsed straight into its type.
//!
//! Decisions that SPEC sections 5 and 7 leave open:
//!
//! - The body must be UTF-8 in every format; invalid UTF-8 anywhere, a CSV
//!   cell included, is a [`SyntaxError`] at its line and column. A UTF-8 byte
//!   order mark at the very start is skipped in every format.
//! - Columns of a [`SyntaxError`] count bytes from the start of the line,
//!   from 1, as serde_json does.
//! - JSON: a top-level value that is not an object or an array (`5`, `"x"`)
//!   is one record that is `malformed`. A record that is a number beyond the
//!   range of `f64` (`[1e999]`, or such an NDJSON line) is a syntax error,
//!   because serde_json refuses to read it outside a field; inside a field it
//!   is the field's error.
//! - CSV: the header names fields exactly. A column that the schema does not
//!   name gives every row an `unknown_field` error (unless extra fields are
//!   ignored); a column named twice gives every row a `duplicate_field`
//!   error; a field without a column is missing from every row. A row with
//!   more or fewer cells than the header is `malformed`, and only that is
//!   reported for it. Blank lines are skipped. An empty cell is null in every
//!   type, so an empty string cannot be sent in CSV. A `json` cell that is not
//!   JSON text is a `type_mismatch`.
//! - `integer` and `number` cells in CSV that are not numeric literals at all
//!   are `invalid_number`; a fractional literal in an `integer` field is a
//!   `type_mismatch`, in JSON as in CSV.
//! - `decimal` literals are kept exactly as sent, and are at most
//!   [`MAX_DECIMAL_CHARS`] characters with an exponent of at most
//!   [`MAX_DECIMAL_EXPONENT`] in magnitude (PostgreSQL's `numeric` refuses
//!   larger exponents); beyond that they are `out_of_range`.
//! - `json` values must be storable in PostgreSQL's `jsonb` and readable by
//!   serde_json again, else `out_of_range`: at most [`MAX_JSON_DEPTH`]
//!   levels deep (serde_json stops at 128, and a message envelope adds a
//!   few), numbers finite as `f64` and within the `decimal` limits, and no
//!   `\u0000` or lone surrogate escapes. The text is kept as sent.
//! - `string` values may not hold the NUL character, which PostgreSQL's
//!   `text` cannot store (`type_mismatch`).
//! - `timestamp` values must fall in years 0000 to 9999 once converted to UTC
//!   (else `out_of_range`), so that their normalised form is RFC 3339 again.
//!   Digits below the microsecond are kept here; PostgreSQL rounds them.
//! - Names match exactly, case included, in any key order. A key given twice
//!   in one object is `duplicate_field` (only the first value is checked).
//!   Values are never trimmed or coerced: `"5"` is no `integer` in JSON.
//! - A rejected JSON record whose text serde_json cannot hold as a value (a
//!   number beyond `f64`, nesting deeper than 128) keeps its `raw` as the JSON
//!   text in a string. A CSV row's `raw` is an object of header to cell,
//!   unless the header names a column twice or the row is ragged: then it is
//!   the array of the row's cells.

mod csv;
mod json;
mod revalidate;
mod values;

pub use revalidate::{Revalidated, revalidate};
pub use values::{DecimalParts, ValueError, parse_value, snippet};

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use compact_str::CompactString;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::connector::ExtraFields;
use crate::field::FieldType;
use crate::schema::Schema;

/// Longest `decimal` literal kept, in characters.
pub const MAX_DECIMAL_CHARS: usize = 1000;
/// Largest exponent magnitude of a `decimal` literal; PostgreSQL's `numeric`
/// input refuses larger ones.
pub const MAX_DECIMAL_EXPONENT: u32 = 1000;
/// Most bytes that [`validate`] lets the outcome of one body hold. Sparse
/// records of a wide schema, or refused records each kept with its errors,
/// would otherwise expand a 16 MiB body a thousandfold. Callers that share
/// memory between requests bound it themselves with [`validate_with`].
pub const MAX_HELD_BYTES: usize = 512 * 1024 * 1024;

/// Deepest nesting of arrays and objects in a `json` value.
pub const MAX_JSON_DEPTH: usize = 100;

/// The body formats producers may send. Named in lowercase where it is
/// stored (`json`, `ndjson`, `csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object, or an array of objects.
    Json,
    /// One JSON object per line; blank lines are skipped.
    Ndjson,
    /// A header row naming fields, then one record per row.
    Csv,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }

    /// The format [`Format::name`] names.
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "json" => Some(Format::Json),
            "ndjson" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// A value in normalised form: checked against its field's type and ready to
/// publish and store.
#[derive(Debug, Clone)]
///
/// Text is a [`CompactString`]: up to 24 bytes inline, which holds most
/// field values, so validating a record allocates little (the gateway spent
/// a fifth of its CPU in malloc and free with `String`; `sluice-bench`).
pub enum Value {
    Null,
    String(CompactString),
    Integer(i64),
    /// Always finite.
    Number(f64),
    /// The literal as sent (canonical syntax checked), never rounded.
    Decimal(CompactString),
    Boolean(bool),
    Date(NaiveDate),
    /// Normalised to UTC.
    Timestamp(DateTime<Utc>),
    /// Never JSON `null`: that is [`Value::Null`].
    Json(Box<RawValue>),
}

impl Value {
    /// The type of the field this value is valid for; `None` for null.
    pub fn field_type(&self) -> Option<FieldType> {
        Some(match self {
            Value::Null => return None,
            Value::String(_) => FieldType::String,
            Value::Integer(_) => FieldType::Integer,
            Value::Number(_) => FieldType::Number,
            Value::Decimal(_) => FieldType::Decimal,
            Value::Boolean(_) => FieldType::Boolean,
            Value::Date(_) => FieldType::Date,
            Value::Timestamp(_) => FieldType::Timestamp,
            Value::Json(_) => FieldType::Json,
        })
    }

    /// The value as SPEC section 5 returns it: decimals, dates and timestamps
    /// as strings, timestamps in UTC.
    ///
    /// A `json` value is parsed into a tree here, and serde_json (without its
    /// `float_roundtrip` feature) may change the last digit of a float in it;
    /// serialising the [`Value`] itself writes the text as sent.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::String(s) | Value::Decimal(s) => serde_json::Value::String(s.to_string()),
            Value::Integer(i) => (*i).into(),
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Boolean(b) => (*b).into(),
            Value::Date(_) | Value::Timestamp(_) => {
                serde_json::Value::String(self.csv_cell().into_owned())
            }
            // Validation keeps json values shallow enough for serde_json, so
            // the fallback is never taken; it only avoids a panic path.
            Value::Json(raw) => serde_json::from_str(raw.get())
                .unwrap_or_else(|_| serde_json::Value::String(raw.get().to_owned())),
        }
    }

    /// The CSV cell that reads back to this value: null is the empty cell,
    /// a `json` value its JSON text.
    pub fn csv_cell(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::String(s) | Value::Decimal(s) => Cow::Borrowed(s.as_str()),
            Value::Integer(i) => Cow::Owned(i.to_string()),
            // Display of f64 is the shortest text that parses back exactly.
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::Boolean(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            // ISO 8601, `YYYY-MM-DD` (validation keeps years to four digits).
            Value::Date(d) => Cow::Owned(d.to_string()),
            Value::Timestamp(t) => Cow::Owned(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Value::Json(raw) => Cow::Borrowed(raw.get()),
        }
    }
}

/// Compares `json` values by their text, which validation keeps as sent.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::String(a), Value::String(b)) | (Value::Decimal(a), Value::Decimal(b)) => a == b,
            (Value::Integer(a), Value::Integer(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::Boolean(a), Value::Boolean(b)) => a == b,
            (Value::Date(a), Value::Date(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            (Value::Json(a), Value::Json(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

/// Serialises to the normalised JSON form of [`Value::to_json`], without
/// building it; a `json` value is written as its text.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::String(s) | Value::Decimal(s) => serializer.serialize_str(s),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Number(n) => serializer.serialize_f64(*n),
            Value::Boolean(b) => serializer.serialize_bool(*b),
            Value::Date(d) => serializer.collect_str(d),
            Value::Timestamp(_) => serializer.serialize_str(&self.csv_cell()),
            Value::Json(raw) => raw.serialize(serializer),
        }
    }
}

/// One valid record: a value per schema field, in schema order.
#[derive(Debug, Clone, PartialEq)]
pub struct Record(pub Vec<Value>);

impl Record {
    /// The record as a JSON object keyed by the field names of `schema`, the
    /// schema it was validated against, for serialising without building a
    /// tree (and so exactly, `json` values included).
    pub fn named<'a>(&'a self, schema: &'a Schema) -> NamedRecord<'a> {
        NamedRecord {
            record: self,
            schema,
        }
    }

    /// The record as a JSON object keyed by the field names of `schema`; see
    /// [`Value::to_json`] for its one caveat.
    pub fn to_json_object(&self, schema: &Schema) -> serde_json::Map<String, serde_json::Value> {
        schema
            .fields()
            .iter()
            .zip(&self.0)
            .map(|(field, value)| (field.name.to_string(), value.to_json()))
            .collect()
    }
}

/// A [`Record`] that serialises as an object of field name to value.
#[derive(Debug, Clone, Copy)]
pub struct NamedRecord<'a> {
    record: &'a Record,
    schema: &'a Schema,
}

impl Serialize for NamedRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.schema.fields();
        let mut map = serializer.serialize_map(Some(fields.len().min(self.record.0.len())))?;
        for (field, value) in fields.iter().zip(&self.record.0) {
            map.serialize_entry(field.name.as_str(), value)?;
        }
        map.end()
    }
}

/// Stable codes of record errors; clients may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordErrorCode {
    TypeMismatch,
    MissingField,
    NullNotAllowed,
    UnknownField,
    DuplicateField,
    OutOfRange,
    InvalidNumber,
    InvalidDate,
    InvalidTimestamp,
    InvalidDecimal,
    Malformed,
}

impl RecordErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordErrorCode::TypeMismatch => "type_mismatch",
            RecordErrorCode::MissingField => "missing_field",
            RecordErrorCode::NullNotAllowed => "null_not_allowed",
            RecordErrorCode::UnknownField => "unknown_field",
            RecordErrorCode::DuplicateField => "duplicate_field",
            RecordErrorCode::OutOfRange => "out_of_range",
            RecordErrorCode::InvalidNumber => "invalid_number",
            RecordErrorCode::InvalidDate => "invalid_date",
            RecordErrorCode::InvalidTimestamp => "invalid_timestamp",
            RecordErrorCode::InvalidDecimal => "invalid_decimal",
            RecordErrorCode::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for RecordErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one record was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// Index of the record in the body, from 0.
    pub record: usize,
    /// 1-based line of the record, for NDJSON and CSV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub code: RecordErrorCode,
    pub message: String,
}

/// A body that is not well-formed JSON, NDJSON or CSV (a 400, not a 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line}, column {column}")]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SyntaxError {
    /// The error at byte `offset` of `text`, located by line and column.
    fn at_offset(text: &[u8], offset: usize, message: impl Into<String>) -> SyntaxError {
        let before = &text[..offset.min(text.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        SyntaxError {
            line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
            column: offset - line_start + 1,
            message: message.into(),
        }
    }

    /// serde_json's error without the location that its `Display` appends.
    fn from_json(error: &serde_json::Error, line_offset: usize) -> SyntaxError {
        let full = error.to_string();
        let location = format!(" at line {} column {}", error.line(), error.column());
        let message = full.strip_suffix(&location).unwrap_or(&full).to_owned();
        SyntaxError {
            line: error.line().max(1) + line_offset,
            column: error.column().max(1),
            message,
        }
    }
}

/// A refused record: where it was, what it was as sent, and every error.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub record: usize,
    pub line: Option<usize>,
    /// The record as sent: the JSON object, or for CSV an object of the row's
    /// cells keyed by header.
    pub raw: serde_json::Value,
    /// At most [`Rejected::MAX_ERRORS`]; [`Validation::error_count`] counts
    /// the rest.
    pub errors: Vec<RecordError>,
}

impl Rejected {
    pub const MAX_ERRORS: usize = 100;

    /// An estimate of what this refused record holds on the heap, itself
    /// excluded. Its `raw` object dominates: a small map of serde_json is a
    /// B-tree node of room for 11 entries, some 600 bytes for a one-cell CSV
    /// row; each error adds its own size and message.
    pub fn held_bytes(&self) -> usize {
        let errors: usize = self
            .errors
            .iter()
            .map(|e| e.message.capacity() + e.field.as_ref().map_or(0, String::capacity))
            .sum();
        held_by_json(&self.raw)
            + self.errors.capacity() * std::mem::size_of::<RecordError>()
            + errors
    }
}

/// An estimate of the heap that a valid record's values take.
fn held_by_values(values: &[Value]) -> usize {
    let heap: usize = values
        .iter()
        .map(|value| match value {
            Value::String(s) | Value::Decimal(s) if s.is_heap_allocated() => s.capacity(),
            Value::Json(raw) => raw.get().len(),
            _ => 0,
        })
        .sum();
    values.len().max(1) * std::mem::size_of::<Value>() + heap
}

/// An estimate of the heap that a JSON tree takes, the root excluded.
fn held_by_json(value: &serde_json::Value) -> usize {
    use serde_json::Value as Json;
    /// A B-tree node of `BTreeMap<String, Json>`, with room for 11 entries.
    const MAP_NODE: usize = 11 * (24 + std::mem::size_of::<Json>()) + 16;
    match value {
        Json::String(s) => s.capacity(),
        Json::Array(items) => {
            items.capacity() * std::mem::size_of::<Json>()
                + items.iter().map(held_by_json).sum::<usize>()
        }
        // Nodes are at least half full, except a lone root.
        Json::Object(map) => {
            (map.len() / 5 + 1) * MAP_NODE
                + map
                    .iter()
                    .map(|(key, value)| key.capacity() + held_by_json(value))
                    .sum::<usize>()
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => 0,
    }
}

/// The outcome of one pass over a body; both ingest modes read it.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// Valid records, in body order.
    pub records: Vec<Record>,
    /// Refused records, in body order.
    pub rejected: Vec<Rejected>,
    /// The first [`Validation::MAX_LISTED_ERRORS`] errors in body order.
    pub errors: Vec<RecordError>,
    /// Every error counted, listed or not.
    pub error_count: usize,
    /// The index of the record at which the outcome would have held more
    /// memory than the caller allowed. From there on nothing was kept:
    /// `records` and `rejected` are empty, while `errors` and `error_count`
    /// still cover the whole body.
    pub overflowed_at: Option<usize>,
}

impl Validation {
    pub const MAX_LISTED_ERRORS: usize = 100;
}

/// Validates every record of `body` against `schema` in one pass, holding
/// at most [`MAX_HELD_BYTES`] (see [`Validation::overflowed_at`]).
///
/// A body that is not well-formed is a [`SyntaxError`]; everything else,
/// records that are not objects included, lands in the [`Validation`]. An
/// empty body holds no records.
pub fn validate(
    schema: &Schema,
    extra: ExtraFields,
    format: Format,
    body: &[u8],
) -> Result<Validation, SyntaxError> {
    let mut held = 0usize;
    validate_with(schema, extra, format, body, &mut |more| {
        held += more;
        held <= MAX_HELD_BYTES
    })
}

/// [`validate`], asking `hold` before the outcome grows by that many bytes
/// (an estimate of what the records, refused ones and their errors take on
/// the heap). When `hold` answers `false`, validation stops keeping records
/// but reads the body to its end to count its errors; see
/// [`Validation::overflowed_at`].
pub fn validate_with(
    schema: &Schema,
    extra: ExtraFields,
    format: Format,
    body: &[u8],
    hold: &mut dyn FnMut(usize) -> bool,
) -> Result<Validation, SyntaxError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| SyntaxError::at_offset(body, e.valid_up_to(), "invalid UTF-8"))?;
    const BOM: &str = "\u{feff}";
    let (text, bom) = match text.strip_prefix(BOM) {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let reader = RecordReader::new(schema, extra, hold);
    match format {
        Format::Json => json::validate_json(reader, text),
        Format::Ndjson => json::validate_ndjson(reader, text),
        Format::Csv => csv::validate_csv(reader, text),
    }
    .map_err(|mut e| {
        // Columns count from the start of the body as sent.
        if bom && e.line == 1 {
            e.column += BOM.len();
        }
        e
    })
}

/// What every format shares while reading records: the schema's fields, how
/// to find them by name, and the outcome so far.
struct RecordReader<'s> {
    schema: &'s Schema,
    extra: ExtraFields,
    lookup: FieldLookup<'s>,
    /// Which fields the record being read has given, reused between records.
    provided: Vec<bool>,
    out: Validation,
    /// Errors of the record being read.
    current: Vec<RecordError>,
    index: usize,
    line: Option<usize>,
    /// Asked before the outcome grows (see [`validate_with`]).
    hold: &'s mut dyn FnMut(usize) -> bool,
}

impl<'s> RecordReader<'s> {
    fn new(schema: &'s Schema, extra: ExtraFields, hold: &'s mut dyn FnMut(usize) -> bool) -> Self {
        RecordReader {
            schema,
            extra,
            lookup: FieldLookup::new(schema),
            provided: Vec::new(),
            out: Validation::default(),
            current: Vec::new(),
            index: 0,
            line: None,
            hold,
        }
    }

    fn begin(&mut self, index: usize, line: Option<usize>) {
        self.index = index;
        self.line = line;
        self.current.clear();
    }

    fn error(&mut self, field: Option<&str>, code: RecordErrorCode, message: String) {
        self.out.error_count += 1;
        let listed = self.out.errors.len() < Validation::MAX_LISTED_ERRORS;
        let kept = self.current.len() < Rejected::MAX_ERRORS;
        if !listed && !kept {
            return;
        }
        let error = RecordError {
            record: self.index,
            line: self.line,
            field: field.map(|f| values::snippet(f).into_owned()),
            code,
            message,
        };
        if listed {
            self.out.errors.push(error.clone());
        }
        if kept {
            self.current.push(error);
        }
    }

    /// Ends the record: accepted if it had no error, else refused with `raw`,
    /// which is only built then, and never once the outcome overflowed.
    fn finish(&mut self, values: Vec<Value>, raw: impl FnOnce() -> serde_json::Value) {
        if self.out.overflowed_at.is_some() {
            self.current.clear();
            return;
        }
        let (records, rejected) = (self.out.records.capacity(), self.out.rejected.capacity());
        let mut bytes = if self.current.is_empty() {
            let bytes = held_by_values(&values);
            self.out.records.push(Record(values));
            bytes
        } else {
            let refused = Rejected {
                record: self.index,
                line: self.line,
                raw: raw(),
                errors: std::mem::take(&mut self.current),
            };
            let bytes = refused.held_bytes();
            self.out.rejected.push(refused);
            bytes
        };
        // What the lists themselves grew by.
        bytes += (self.out.records.capacity() - records) * std::mem::size_of::<Record>();
        bytes += (self.out.rejected.capacity() - rejected) * std::mem::size_of::<Rejected>();
        self.hold(bytes);
    }

    /// Asks for `bytes` more; if refused, lets go of every record kept.
    fn hold(&mut self, bytes: usize) {
        if self.out.overflowed_at.is_none() && !(self.hold)(bytes) {
            self.out.overflowed_at = Some(self.index);
            self.out.records = Vec::new();
            self.out.rejected = Vec::new();
        }
    }

    /// Reports every field that no key or column provided and that may not
    /// be null.
    fn missing_fields(&mut self, provided: impl Fn(usize) -> bool) {
        let schema = self.schema;
        for (i, field) in schema.fields().iter().enumerate() {
            if !field.nullable && !provided(i) {
                self.error(
                    Some(field.name.as_str()),
                    RecordErrorCode::MissingField,
                    format!("field \"{}\" is required", field.name),
                );
            }
        }
    }
}

/// Finds a field by exact name. Producers mostly send fields in schema
/// order, so the field after the previous match is tried first; then a
/// linear scan for small schemas and a hash map for large ones.
struct FieldLookup<'s> {
    names: Vec<&'s str>,
    by_name: Option<std::collections::HashMap<&'s str, usize>>,
}

impl<'s> FieldLookup<'s> {
    const LINEAR_UP_TO: usize = 16;

    fn new(schema: &'s Schema) -> Self {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name.as_str()).collect();
        let by_name = (names.len() > Self::LINEAR_UP_TO)
            .then(|| names.iter().enumerate().map(|(i, n)| (*n, i)).collect());
        FieldLookup { names, by_name }
    }

    fn find(&self, name: &str, guess: usize) -> Option<usize> {
        if self.names.get(guess) == Some(&name) {
            return Some(guess);
        }
        match &self.by_name {
            Some(map) => map.get(name).copied(),
            None => self.names.iter().position(|n| *n == name),
        }
    }
}

#[cfg(test)]
mod tests;
