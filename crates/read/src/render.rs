//! Writing a page in JSON, NDJSON or CSV, row by row, into a byte buffer
//! that the caller sends off whenever it is full enough.
//!
//! Values appear as SPEC 5's table says: integers and numbers as JSON
//! numbers, decimals as exact strings, dates `YYYY-MM-DD`, timestamps
//! RFC 3339 in UTC, json as the value itself, `_id` as a string.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::page::{CellKind, OutputColumn, OutputFormat};

/// One value of a row, ready to write in any format.
#[derive(Debug)]
pub(crate) enum Cell {
    Null,
    Text(String),
    Integer(i64),
    Number(f64),
    Boolean(bool),
    Json(Box<RawValue>),
}

impl Cell {
    /// Reads column `index` of `row` as `kind` says it was selected.
    pub(crate) fn read(row: &PgRow, index: usize, kind: CellKind) -> Result<Cell, sqlx::Error> {
        let cell = match kind {
            CellKind::Id => row
                .try_get::<Option<i64>, _>(index)?
                .map(|id| Cell::Text(id.to_string())),
            CellKind::Text => row.try_get::<Option<String>, _>(index)?.map(Cell::Text),
            CellKind::Integer => row.try_get::<Option<i64>, _>(index)?.map(Cell::Integer),
            CellKind::Number => row.try_get::<Option<f64>, _>(index)?.map(Cell::Number),
            CellKind::Boolean => row.try_get::<Option<bool>, _>(index)?.map(Cell::Boolean),
            CellKind::Date => row
                .try_get::<Option<NaiveDate>, _>(index)?
                .map(|d| Cell::Text(d.format("%Y-%m-%d").to_string())),
            CellKind::Timestamp => row
                .try_get::<Option<DateTime<Utc>>, _>(index)?
                .map(|t| Cell::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
            CellKind::Json => match row.try_get::<Option<String>, _>(index)? {
                None => None,
                // jsonb's text is always valid JSON; embedding it as raw
                // keeps big numbers exact and costs no parse tree.
                Some(text) => Some(Cell::Json(
                    RawValue::from_string(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                )),
            },
        };
        Ok(cell.unwrap_or(Cell::Null))
    }

    fn csv_text(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Cell::Null => Cow::Borrowed(""),
            Cell::Text(s) => Cow::Borrowed(s),
            Cell::Integer(i) => Cow::Owned(i.to_string()),
            // Display of f64 is the shortest text that reads back exactly.
            Cell::Number(n) => Cow::Owned(n.to_string()),
            Cell::Boolean(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Cell::Json(raw) => Cow::Borrowed(raw.get()),
        }
    }
}

impl serde::Serialize for Cell {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Null => serializer.serialize_unit(),
            Cell::Text(s) => serializer.serialize_str(s),
            Cell::Integer(i) => serializer.serialize_i64(*i),
            Cell::Number(n) => serializer.serialize_f64(*n),
            Cell::Boolean(b) => serializer.serialize_bool(*b),
            Cell::Json(raw) => raw.serialize(serializer),
        }
    }
}

/// A row as a JSON object, keys in column order.
struct JsonRow<'a> {
    columns: &'a [OutputColumn],
    cells: &'a [Cell],
}

impl serde::Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.columns.len()))?;
        for (column, cell) in self.columns.iter().zip(self.cells) {
            map.serialize_entry(&column.name, cell)?;
        }
        map.end()
    }
}

/// Writes one page in one format. The JSON envelope puts `records` first,
/// so rows can be written as they come and the cursor after them.
pub(crate) struct PageWriter {
    format: OutputFormat,
    columns: Vec<OutputColumn>,
    rows: usize,
}

impl PageWriter {
    pub(crate) fn new(format: OutputFormat, columns: Vec<OutputColumn>) -> PageWriter {
        PageWriter {
            format,
            columns,
            rows: 0,
        }
    }

    pub(crate) fn columns(&self) -> &[OutputColumn] {
        &self.columns
    }

    pub(crate) fn begin(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Json => out.extend_from_slice(b"{\"records\":["),
            OutputFormat::Ndjson => {}
            OutputFormat::Csv => {
                write_csv_record(out, self.columns.iter().map(|c| c.name.as_str()));
            }
        }
        Ok(())
    }

    pub(crate) fn row(&mut self, out: &mut Vec<u8>, cells: &[Cell]) -> std::io::Result<()> {
        let row = JsonRow {
            columns: &self.columns,
            cells,
        };
        match self.format {
            OutputFormat::Json => {
                if self.rows > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &row)?;
            }
            OutputFormat::Ndjson => {
                serde_json::to_writer(&mut *out, &row)?;
                out.push(b'\n');
            }
            OutputFormat::Csv => {
                let texts: Vec<_> = cells.iter().map(Cell::csv_text).collect();
                write_csv_record(out, texts.iter().map(|t| t.as_ref()));
            }
        }
        self.rows += 1;
        Ok(())
    }

    pub(crate) fn end(
        &mut self,
        out: &mut Vec<u8>,
        next_cursor: &str,
        has_more: bool,
    ) -> std::io::Result<()> {
        if self.format == OutputFormat::Json {
            out.extend_from_slice(b"],\"next_cursor\":");
            serde_json::to_writer(&mut *out, next_cursor)?;
            out.extend_from_slice(if has_more {
                b",\"has_more\":true}"
            } else {
                b",\"has_more\":false}"
            });
        }
        Ok(())
    }
}

/// One RFC 4180 line: a cell is quoted when it holds a comma, a quote, a
/// line break or edge spaces, and its quotes are doubled.
fn write_csv_record<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = &'a str>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let quote =
            cell.contains([',', '"', '\n', '\r']) || cell.starts_with(' ') || cell.ends_with(' ');
        if quote {
            out.push(b'"');
            out.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(cell.as_bytes());
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(names: &[&str]) -> Vec<OutputColumn> {
        names
            .iter()
            .map(|n| OutputColumn {
                name: (*n).to_owned(),
                kind: CellKind::Text,
            })
            .collect()
    }

    fn page(format: OutputFormat, rows: Vec<Vec<Cell>>) -> String {
        let mut writer = PageWriter::new(format, columns(&["_id", "a", "j"]));
        let mut out = Vec::new();
        writer.begin(&mut out).unwrap();
        for row in rows {
            writer.row(&mut out, &row).unwrap();
        }
        writer.end(&mut out, "CUR", false).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn sample() -> Vec<Vec<Cell>> {
        vec![
            vec![
                Cell::Text("1".into()),
                Cell::Integer(5),
                Cell::Json(RawValue::from_string(r#"{"x": [1, "a,b"]}"#.into()).unwrap()),
            ],
            vec![Cell::Text("2".into()), Cell::Null, Cell::Null],
        ]
    }

    #[test]
    fn each_format_writes_the_rows() {
        assert_eq!(
            page(OutputFormat::Json, sample()),
            r#"{"records":[{"_id":"1","a":5,"j":{"x": [1, "a,b"]}},{"_id":"2","a":null,"j":null}],"next_cursor":"CUR","has_more":false}"#
        );
        assert_eq!(
            page(OutputFormat::Json, vec![]),
            r#"{"records":[],"next_cursor":"CUR","has_more":false}"#
        );
        assert_eq!(
            page(OutputFormat::Ndjson, sample()),
            "{\"_id\":\"1\",\"a\":5,\"j\":{\"x\": [1, \"a,b\"]}}\n{\"_id\":\"2\",\"a\":null,\"j\":null}\n"
        );
        assert_eq!(
            page(OutputFormat::Csv, sample()),
            "_id,a,j\n1,5,\"{\"\"x\"\": [1, \"\"a,b\"\"]}\"\n2,,\n"
        );
    }
}
