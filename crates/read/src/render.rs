//! Writing a page in JSON, NDJSON or CSV, row by row, into a byte buffer
//! that the caller sends off whenever it is full enough.
//!
//! Values appear as SPEC 5's table says: integers and numbers as JSON
//! numbers, decimals as exact strings, dates `YYYY-MM-DD`, timestamps
//! RFC 3339 in UTC, json as the value itself, `_id` as a string.

use std::io::Write as _;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::params::OutputFormat;
use crate::plan::{CellKind, OutputColumn};

/// One value of a row, borrowed from it, ready to write in any format.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'r> {
    Null,
    /// `_id`: shown as a string.
    Id(i64),
    Text(&'r str),
    Integer(i64),
    Number(f64),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    /// jsonb's text, which is always valid JSON: written as it is, which
    /// keeps big numbers exact and costs no parse.
    Json(&'r str),
}

impl<'r> Cell<'r> {
    /// Reads column `index` of `row` as `kind` says it was selected. The
    /// page's SQL casts every column to the type its kind reads, so the
    /// types are not checked again for every value.
    pub(crate) fn read(row: &'r PgRow, index: usize, kind: CellKind) -> sqlx::Result<Cell<'r>> {
        let cell = match kind {
            CellKind::Id => row
                .try_get_unchecked::<Option<i64>, _>(index)?
                .map(Cell::Id),
            CellKind::Text => row
                .try_get_unchecked::<Option<&str>, _>(index)?
                .map(Cell::Text),
            CellKind::Integer => row
                .try_get_unchecked::<Option<i64>, _>(index)?
                .map(Cell::Integer),
            CellKind::Number => row
                .try_get_unchecked::<Option<f64>, _>(index)?
                .map(Cell::Number),
            CellKind::Boolean => row
                .try_get_unchecked::<Option<bool>, _>(index)?
                .map(Cell::Boolean),
            CellKind::Date => row
                .try_get_unchecked::<Option<NaiveDate>, _>(index)?
                .map(Cell::Date),
            CellKind::Timestamp => row
                .try_get_unchecked::<Option<DateTime<Utc>>, _>(index)?
                .map(Cell::Timestamp),
            CellKind::Json => row
                .try_get_unchecked::<Option<&str>, _>(index)?
                .map(Cell::Json),
        };
        Ok(cell.unwrap_or(Cell::Null))
    }

    /// The value in JSON.
    fn write_json(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Id(id) => {
                out.push(b'"');
                out.extend_from_slice(itoa::Buffer::new().format(*id).as_bytes());
                out.push(b'"');
            }
            Cell::Text(s) => serde_json::to_writer(&mut *out, s)?,
            Cell::Integer(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            // Finite, as validation keeps numbers; serde_json writes null
            // for anything else.
            Cell::Number(n) => serde_json::to_writer(&mut *out, n)?,
            Cell::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Cell::Date(_) | Cell::Timestamp(_) => {
                out.push(b'"');
                self.write_text(out)?;
                out.push(b'"');
            }
            Cell::Json(json) => out.extend_from_slice(json.as_bytes()),
        }
        Ok(())
    }

    /// The value as text, unquoted: what a CSV cell holds. Null is empty.
    fn write_text(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Cell::Null => {}
            Cell::Id(i) | Cell::Integer(i) => {
                out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
            }
            Cell::Text(s) | Cell::Json(s) => out.extend_from_slice(s.as_bytes()),
            // Display of f64 is the shortest text that reads back exactly.
            Cell::Number(n) => write!(out, "{n}")?,
            Cell::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            // ISO 8601, `YYYY-MM-DD`.
            Cell::Date(d) => write!(out, "{d}")?,
            Cell::Timestamp(t) => {
                out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes())
            }
        }
        Ok(())
    }
}

/// Writes one page in one format. The JSON envelope puts `records` first,
/// so rows can be written as they come and the cursor after them.
pub(crate) struct PageWriter {
    format: OutputFormat,
    columns: Vec<OutputColumn>,
    /// Each column's `"name":`, escaped once for every row.
    json_keys: Vec<Vec<u8>>,
    rows: usize,
}

impl PageWriter {
    pub(crate) fn new(format: OutputFormat, columns: Vec<OutputColumn>) -> PageWriter {
        let json_keys = columns
            .iter()
            .map(|column| {
                let mut key = serde_json::to_vec(&column.name).expect("a string serialises");
                key.push(b':');
                key
            })
            .collect();
        PageWriter {
            format,
            columns,
            json_keys,
            rows: 0,
        }
    }

    pub(crate) fn begin(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Json => out.extend_from_slice(b"{\"records\":["),
            OutputFormat::Ndjson => {}
            OutputFormat::Csv => {
                for (i, column) in self.columns.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_csv_cell(out, column.name.as_bytes());
                }
                out.push(b'\n');
            }
        }
        Ok(())
    }

    /// Writes a row whose cells `cell` reads, by index and kind, as they
    /// are written: nothing of the row is gathered first.
    pub(crate) fn row<'r, E: From<std::io::Error>>(
        &mut self,
        out: &mut Vec<u8>,
        mut cell: impl FnMut(usize, CellKind) -> Result<Cell<'r>, E>,
    ) -> Result<(), E> {
        let PageWriter {
            format,
            columns,
            json_keys,
            rows,
        } = self;
        if *format == OutputFormat::Csv {
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match cell(i, column.kind)? {
                    Cell::Text(text) | Cell::Json(text) => write_csv_cell(out, text.as_bytes()),
                    // Numbers, booleans, dates and timestamps never need quotes.
                    value => value.write_text(out)?,
                }
            }
            out.push(b'\n');
        } else {
            if *format == OutputFormat::Json && *rows > 0 {
                out.push(b',');
            }
            out.push(b'{');
            for (i, (key, column)) in json_keys.iter().zip(columns.iter()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                cell(i, column.kind)?.write_json(out)?;
            }
            out.push(b'}');
            if *format == OutputFormat::Ndjson {
                out.push(b'\n');
            }
        }
        *rows += 1;
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

/// One RFC 4180 cell: quoted when it holds a comma, a quote, a line break
/// or edge spaces, its quotes then doubled.
fn write_csv_cell(out: &mut Vec<u8>, cell: &[u8]) {
    let quote = cell
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        || cell.first() == Some(&b' ')
        || cell.last() == Some(&b' ');
    if !quote {
        out.extend_from_slice(cell);
        return;
    }
    out.push(b'"');
    for &b in cell {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
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

    fn page(format: OutputFormat, rows: Vec<Vec<Cell<'_>>>) -> String {
        let mut writer = PageWriter::new(format, columns(&["_id", "a", "j"]));
        let mut out = Vec::new();
        writer.begin(&mut out).unwrap();
        for row in rows {
            writer.row(&mut out, cells_of(&row)).unwrap();
        }
        writer.end(&mut out, "CUR", false).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn cells_of<'a, 'r>(
        cells: &'a [Cell<'r>],
    ) -> impl FnMut(usize, CellKind) -> std::io::Result<Cell<'r>> + 'a {
        |i, _| Ok(cells[i])
    }

    fn sample() -> Vec<Vec<Cell<'static>>> {
        vec![
            vec![
                Cell::Id(1),
                Cell::Integer(5),
                Cell::Json(r#"{"x": [1, "a,b"]}"#),
            ],
            vec![Cell::Id(2), Cell::Null, Cell::Null],
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

    #[test]
    fn values_are_written_as_spec_5_shows_them() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T10:00:00.120+01:00")
            .unwrap()
            .with_timezone(&Utc);
        let cells = || {
            vec![
                Cell::Id(7),
                Cell::Date(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()),
                Cell::Timestamp(at),
                Cell::Number(1e20),
                Cell::Boolean(false),
                Cell::Text(" say \"hi\"\n"),
            ]
        };
        let write = |format| {
            let mut writer = PageWriter::new(format, columns(&["a", "b", "c", "d", "e", "f"]));
            let mut out = Vec::new();
            writer.row(&mut out, cells_of(&cells())).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            write(OutputFormat::Ndjson),
            r#"{"a":"7","b":"2026-03-01","c":"2026-11-29T09:00:00.120Z","d":1e+20,"e":false,"f":" say \"hi\"\n"}"#
                .to_owned()
                + "\n"
        );
        assert_eq!(
            write(OutputFormat::Csv),
            "7,2026-03-01,2026-11-29T09:00:00.120Z,100000000000000000000,false,\" say \"\"hi\"\"\n\"\n"
        );
    }
}
