//! JSON and NDJSON bodies, read by schema-driven seeds.
//!
//! serde_json drives the parse; each record object is visited key by key, the
//! key matched to a schema field, and the field's value taken as the borrowed
//! text of its literal (`&RawValue`), which [`values::from_json`] turns into
//! the field's type. Nothing builds a generic JSON tree, numbers are never
//! read through `f64` unless the field is a `number`, and nested values are
//! skipped by serde_json without recursion, so depth cannot exhaust the
//! stack.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::values::{self, snippet};
use super::{RecordErrorCode, RecordReader, SyntaxError, Validation, Value, held_by_json};
use crate::connector::ExtraFields;

/// One JSON object, or an array of them.
pub(super) fn validate_json(
    mut reader: RecordReader<'_>,
    text: &str,
) -> Result<Validation, SyntaxError> {
    if is_blank(text) {
        return Ok(reader.out);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    TopLevel {
        reader: &mut reader,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| SyntaxError::from_json(&e, 0))?;
    if !reader.out.rejected.is_empty() {
        recover_raw(&mut reader, text);
    }
    Ok(reader.out)
}

/// One JSON object per line; blank lines are skipped but counted.
pub(super) fn validate_ndjson(
    mut reader: RecordReader<'_>,
    text: &str,
) -> Result<Validation, SyntaxError> {
    let mut index = 0;
    // A JSON text never holds a raw newline, so lines split records.
    for (line_index, line) in text.split('\n').enumerate() {
        if is_blank(line) {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        OneRecord {
            reader: &mut reader,
            index,
            line: Some(line_index + 1),
            text: Some(line),
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| SyntaxError::from_json(&e, line_index))?;
        index += 1;
    }
    Ok(reader.out)
}

/// Only JSON's own whitespace.
fn is_blank(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// A refused record's JSON text as a value; as a string when serde_json
/// cannot hold it (numbers beyond `f64`, nesting deeper than its limit).
pub(super) fn raw_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// Fills in `raw` of refused records by reading the body again, which only
/// happens when some record failed: the fast path never keeps record text.
fn recover_raw(reader: &mut RecordReader<'_>, text: &str) {
    let top: Option<&RawValue> = serde_json::from_str(text).ok();
    let elements: Vec<&RawValue> = match top {
        Some(top) if top.get().starts_with('[') => {
            serde_json::from_str(top.get()).unwrap_or_default()
        }
        Some(top) => vec![top],
        None => Vec::new(),
    };
    for i in 0..reader.out.rejected.len() {
        let Some(refused) = reader.out.rejected.get_mut(i) else {
            // The outcome overflowed: nothing more to recover.
            return;
        };
        if let Some(element) = elements.get(refused.record) {
            refused.raw = raw_value(element.get());
            let (index, bytes) = (refused.record, held_by_json(&refused.raw));
            reader.index = index;
            reader.hold(bytes);
        }
    }
}

/// The body of a JSON request: an object is record 0, an array holds the
/// records, anything else is one record that is not an object.
struct TopLevel<'r, 's> {
    reader: &'r mut RecordReader<'s>,
}

impl<'r, 's> TopLevel<'r, 's> {
    /// The whole body as record 0.
    fn into_record(self) -> OneRecord<'r, 's, 'static> {
        OneRecord {
            reader: self.reader,
            index: 0,
            line: None,
            text: None,
        }
    }
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(OneRecord {
                reader: &mut *self.reader,
                index,
                line: None,
                text: None,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.into_record().visit_map(map)
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<(), E> {
        self.into_record().visit_bool(v)
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<(), E> {
        self.into_record().visit_i64(v)
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<(), E> {
        self.into_record().visit_u64(v)
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<(), E> {
        self.into_record().visit_f64(v)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<(), E> {
        self.into_record().visit_str(v)
    }

    fn visit_unit<E: Error>(self) -> Result<(), E> {
        self.into_record().visit_unit()
    }
}

/// One record: an object whose keys are matched to the schema's fields.
/// Anything else is a record that is `malformed`.
struct OneRecord<'r, 's, 't> {
    reader: &'r mut RecordReader<'s>,
    index: usize,
    line: Option<usize>,
    /// The record's own text, known for NDJSON; JSON recovers it afterwards.
    text: Option<&'t str>,
}

impl OneRecord<'_, '_, '_> {
    fn not_an_object<E: Error>(self, got: String) -> Result<(), E> {
        self.reader.begin(self.index, self.line);
        self.reader.error(
            None,
            RecordErrorCode::Malformed,
            format!("expected a JSON object, got {got}"),
        );
        let text = self.text;
        self.reader.finish(Vec::new(), || {
            text.map_or(serde_json::Value::Null, raw_value)
        });
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for OneRecord<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OneRecord<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.reader;
        reader.begin(self.index, self.line);
        let schema = reader.schema;
        let fields = schema.fields();
        let mut values = Vec::with_capacity(fields.len());
        values.resize_with(fields.len(), || Value::Null);
        let mut provided = std::mem::take(&mut reader.provided);
        provided.clear();
        provided.resize(fields.len(), false);

        let keep_unknown = reader.extra == ExtraFields::Reject;
        let mut guess = 0;
        loop {
            let key = map.next_key_seed(KeySeed {
                reader: &*reader,
                guess,
                keep_unknown,
            })?;
            match key {
                None => break,
                Some(Key::Field(i)) => {
                    guess = i + 1;
                    let name = fields[i].name.as_str();
                    if provided[i] {
                        map.next_value::<IgnoredAny>()?;
                        reader.error(
                            Some(name),
                            RecordErrorCode::DuplicateField,
                            format!("field \"{name}\" appears more than once"),
                        );
                        continue;
                    }
                    provided[i] = true;
                    let raw: &RawValue = map.next_value()?;
                    match values::from_json(&fields[i], raw) {
                        Ok(value) => values[i] = value,
                        Err((code, message)) => reader.error(Some(name), code, message),
                    }
                }
                Some(Key::Unknown(name)) => {
                    map.next_value::<IgnoredAny>()?;
                    let message = format!("field \"{}\" is not in the schema", snippet(&name));
                    reader.error(Some(&name), RecordErrorCode::UnknownField, message);
                }
                Some(Key::Skipped) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        reader.missing_fields(|i| provided[i]);
        reader.provided = provided;
        let text = self.text;
        reader.finish(values, || text.map_or(serde_json::Value::Null, raw_value));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Skipped without recursion, however deep.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object::<A::Error>("an array".to_owned())
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<(), E> {
        self.not_an_object(format!("boolean {v}"))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<(), E> {
        self.not_an_object(format!("number {v}"))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<(), E> {
        self.not_an_object(format!("number {v}"))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<(), E> {
        self.not_an_object(format!("number {v}"))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<(), E> {
        let shown = serde_json::to_string(&snippet(v)).unwrap_or_default();
        self.not_an_object(format!("string {shown}"))
    }

    fn visit_unit<E: Error>(self) -> Result<(), E> {
        self.not_an_object("null".to_owned())
    }
}

/// What an object key names.
enum Key {
    Field(usize),
    /// Not in the schema, and extra fields are rejected.
    Unknown(String),
    /// Not in the schema, and extra fields are ignored: nothing is kept.
    Skipped,
}

struct KeySeed<'r, 's> {
    reader: &'r RecordReader<'s>,
    guess: usize,
    keep_unknown: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: Error>(self, key: &str) -> Result<Key, E> {
        Ok(match self.reader.lookup.find(key, self.guess) {
            Some(i) => Key::Field(i),
            None if self.keep_unknown => Key::Unknown(snippet(key).into_owned()),
            None => Key::Skipped,
        })
    }
}
