//! CSV bodies: a header row naming fields, then one record per row.
//!
//! The header is matched to the schema once; each row is then read into one
//! reused record, its cells parsed by [`values::from_csv`].

use csv::{ReaderBuilder, StringRecord};

use super::values::{self, snippet};
use super::{RecordErrorCode, RecordReader, SyntaxError, Validation, Value};
use crate::connector::ExtraFields;

/// What a header cell names.
#[derive(Clone, Copy)]
enum Column {
    Field(usize),
    /// A field that an earlier column already names.
    Duplicate,
    /// Not in the schema, and extra fields are rejected.
    Unknown,
    /// Not in the schema, and extra fields are ignored.
    Skipped,
}

pub(super) fn validate_csv(
    mut reader: RecordReader<'_>,
    text: &str,
) -> Result<Validation, SyntaxError> {
    // Flexible: a ragged row is the record's own problem, not the body's.
    let mut rows = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut row = StringRecord::new();
    let syntax = |e: csv::Error| SyntaxError {
        line: e.position().map_or(1, |p| p.line() as usize),
        column: 1,
        message: format!("invalid CSV: {e}"),
    };

    if !rows.read_record(&mut row).map_err(syntax)? {
        return Ok(reader.out);
    }
    let header: Vec<String> = row.iter().map(str::to_owned).collect();
    let schema = reader.schema;
    let fields = schema.fields();
    let mut provided = vec![false; fields.len()];
    let columns: Vec<Column> = header
        .iter()
        .map(|name| match reader.lookup.find(name, 0) {
            Some(i) if provided[i] => Column::Duplicate,
            Some(i) => {
                provided[i] = true;
                Column::Field(i)
            }
            None if reader.extra == ExtraFields::Ignore => Column::Skipped,
            None => Column::Unknown,
        })
        .collect();
    // The raw object of a row can only say what the row said when every
    // header name is distinct.
    let header_is_distinct = {
        let mut names: Vec<&str> = header.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.windows(2).all(|w| w[0] != w[1])
    };

    let mut index = 0;
    while rows.read_record(&mut row).map_err(syntax)? {
        let line = row.position().map(|p| p.line() as usize);
        reader.begin(index, line);
        index += 1;
        let raw = || {
            if header_is_distinct && row.len() == header.len() {
                serde_json::Value::Object(
                    header
                        .iter()
                        .zip(row.iter())
                        .map(|(name, cell)| (name.clone(), cell.into()))
                        .collect(),
                )
            } else {
                serde_json::Value::Array(row.iter().map(Into::into).collect())
            }
        };
        if row.len() != header.len() {
            reader.error(
                None,
                RecordErrorCode::Malformed,
                format!(
                    "row has {} cells but the header has {}",
                    row.len(),
                    header.len()
                ),
            );
            reader.finish(Vec::new(), raw);
            continue;
        }

        let mut values = Vec::with_capacity(fields.len());
        values.resize_with(fields.len(), || Value::Null);
        for ((column, cell), name) in columns.iter().zip(row.iter()).zip(&header) {
            match *column {
                Column::Field(i) => match values::from_csv(&fields[i], cell) {
                    Ok(value) => values[i] = value,
                    Err((code, message)) => reader.error(Some(name), code, message),
                },
                Column::Duplicate => reader.error(
                    Some(name),
                    RecordErrorCode::DuplicateField,
                    format!("field \"{name}\" has more than one column"),
                ),
                Column::Unknown => reader.error(
                    Some(name),
                    RecordErrorCode::UnknownField,
                    format!("column \"{}\" is not a field of the schema", snippet(name)),
                ),
                Column::Skipped => {}
            }
        }
        reader.missing_fields(|i| provided[i]);
        reader.finish(values, raw);
    }
    Ok(reader.out)
}
