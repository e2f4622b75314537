//! Writing a page in JSON, NDJSON or CSV, row by row, into a byte buffer
//! that the caller sends off whenever it is full enough.
//!
//! Values appear as SPEC 5's table says: integers and numbers as JSON
//! numbers, decimals as exact strings, dates `YYYY-MM-DD`, timestamps
//! RFC 3339 in UTC, json as the value itself, `_id` as a string.

use std::io::Write as _;

use chrono::SecondsFormat;
use sluice_runtime::bus::{EpochDays, EpochMicros};

use crate::copy::{Malformed, NumericValue};
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
    /// Shown as PostgreSQL's own text of it, which is the value as stored,
    /// never a float.
    Decimal(NumericValue<'r>),
    Boolean(bool),
    Date(EpochDays),
    Timestamp(EpochMicros),
    /// jsonb's text, which is always valid JSON: written as it is, which
    /// keeps big numbers exact and costs no parse.
    Json(&'r str),
}

impl<'r> Cell<'r> {
    /// Reads a value of `kind` from the bytes that its type's `*_send`
    /// function wrote: what a row of binary COPY holds, and a query's
    /// binary results too. `None` is null. The page's SQL selects every
    /// column as the type its kind reads, so only the bytes are checked.
    pub(crate) fn decode(kind: CellKind, bytes: Option<&'r [u8]>) -> Result<Cell<'r>, Malformed> {
        let Some(bytes) = bytes else {
            return Ok(Cell::Null);
        };
        Ok(match kind {
            CellKind::Id => Cell::Id(i64::from_be_bytes(fixed(bytes, "bigint")?)),
            CellKind::Integer => Cell::Integer(i64::from_be_bytes(fixed(bytes, "bigint")?)),
            CellKind::Number => Cell::Number(f64::from_be_bytes(fixed(bytes, "float8")?)),
            CellKind::Boolean => Cell::Boolean(fixed::<1>(bytes, "boolean")? != [0]),
            CellKind::Text => Cell::Text(utf8(bytes, "text")?),
            CellKind::Decimal => Cell::Decimal(NumericValue::read(bytes)?),
            CellKind::Date => Cell::Date(
                EpochDays::from_postgres_epoch(i32::from_be_bytes(fixed(bytes, "date")?))
                    .ok_or(Malformed("date"))?,
            ),
            CellKind::Timestamp => Cell::Timestamp(
                EpochMicros::from_postgres_epoch(i64::from_be_bytes(fixed(bytes, "timestamptz")?))
                    .ok_or(Malformed("timestamptz"))?,
            ),
            // A version byte, then the text.
            CellKind::Json => match bytes.split_first() {
                Some((1, text)) => Cell::Json(utf8(text, "jsonb")?),
                _ => return Err(Malformed("jsonb")),
            },
        })
    }

    /// The value in JSON.
    fn write_json(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Text(s) => serde_json::to_writer(&mut *out, s)?,
            Cell::Integer(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            // Finite, as validation keeps numbers; serde_json writes null
            // for anything else.
            Cell::Number(n) => serde_json::to_writer(&mut *out, n)?,
            Cell::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            // Their text needs no escaping.
            Cell::Id(_) | Cell::Decimal(_) | Cell::Date(_) | Cell::Timestamp(_) => {
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
            Cell::Decimal(d) => d.write_text(out),
            Cell::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Cell::Date(d) => write_date(out, *d)?,
            Cell::Timestamp(t) => write_timestamp(out, *t)?,
        }
        Ok(())
    }
}

/// A value of fixed size.
fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], Malformed> {
    bytes.try_into().map_err(|_| Malformed(what))
}

fn utf8<'r>(bytes: &'r [u8], what: &'static str) -> Result<&'r str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed(what))
}

/// ISO 8601, `YYYY-MM-DD`, as chrono's `Display` writes it: by hand for
/// years 0000 to 9999 (which validation keeps to), by chrono beyond.
fn write_date(out: &mut Vec<u8>, date: EpochDays) -> std::io::Result<()> {
    let (year, month, day) = civil_from_days(i64::from(date.0));
    if !(0..=9999).contains(&year) {
        let date = date.date().ok_or_else(|| beyond_chrono("date"))?;
        return Ok(write!(out, "{date}")?);
    }
    push_ymd(out, year as u32, month, day);
    Ok(())
}

/// RFC 3339 in UTC with as many fractional digits as it takes (none, 3 or
/// 6), as chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes
/// it: by hand for years 0000 to 9999, by chrono beyond.
fn write_timestamp(out: &mut Vec<u8>, time: EpochMicros) -> std::io::Result<()> {
    let seconds = time.0.div_euclid(1_000_000);
    let micros = time.0.rem_euclid(1_000_000) as u32;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    if !(0..=9999).contains(&year) {
        let time = time.time().ok_or_else(|| beyond_chrono("timestamp"))?;
        out.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
        return Ok(());
    }
    let of_day = seconds.rem_euclid(86_400) as u32;
    push_ymd(out, year as u32, month, day);
    out.push(b'T');
    push_digits::<2>(out, of_day / 3600);
    out.push(b':');
    push_digits::<2>(out, of_day / 60 % 60);
    out.push(b':');
    push_digits::<2>(out, of_day % 60);
    if micros != 0 {
        out.push(b'.');
        if micros.is_multiple_of(1000) {
            push_digits::<3>(out, micros / 1000);
        } else {
            push_digits::<6>(out, micros);
        }
    }
    out.push(b'Z');
    Ok(())
}

fn beyond_chrono(what: &str) -> std::io::Error {
    std::io::Error::other(format!("a {what} beyond the range that can be shown"))
}

fn push_ymd(out: &mut Vec<u8>, year: u32, month: u32, day: u32) {
    push_digits::<4>(out, year);
    out.push(b'-');
    push_digits::<2>(out, month);
    out.push(b'-');
    push_digits::<2>(out, day);
}

/// `value`'s last `N` decimal digits, zero-padded.
fn push_digits<const N: usize>(out: &mut Vec<u8>, mut value: u32) {
    let mut digits = [b'0'; N];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits);
}

/// The proleptic Gregorian year, month and day of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    /// How many values each row has.
    pub(crate) fn columns(&self) -> usize {
        self.columns.len()
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
    use chrono::{DateTime, NaiveDate};

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
        let at = DateTime::parse_from_rfc3339("2026-11-29T10:00:00.120+01:00").unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let cells = || {
            vec![
                Cell::Id(7),
                Cell::Date(EpochDays::of(day)),
                Cell::Timestamp(EpochMicros::of(at.to_utc()).unwrap()),
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

    fn text_of(cell: Cell<'_>) -> String {
        let mut out = Vec::new();
        cell.write_text(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Every day from 300 BC to AD 10 300 written by hand as chrono writes
    /// it, the years beyond 0000–9999 (chrono's own) included.
    #[test]
    fn dates_are_written_as_chrono_writes_them() {
        let first = NaiveDate::from_ymd_opt(-300, 1, 1).unwrap().to_epoch_days();
        let last = NaiveDate::from_ymd_opt(10_300, 12, 31)
            .unwrap()
            .to_epoch_days();
        for days in first..=last {
            let date = EpochDays(days);
            assert_eq!(
                text_of(Cell::Date(date)),
                date.date().unwrap().to_string(),
                "{days}"
            );
        }
        let mut out = Vec::new();
        assert!(write_date(&mut out, EpochDays(i32::MIN)).is_err());
    }

    /// Timestamps across the years, each at a whole second and with 3 and
    /// 6 fractional digits, written by hand as chrono writes them.
    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        let micros = |text: &str| {
            EpochMicros::of(DateTime::parse_from_rfc3339(text).unwrap().to_utc())
                .unwrap()
                .0
        };
        let midnight = |year| {
            let date = NaiveDate::from_ymd_opt(year, 1, 1).unwrap();
            EpochMicros::of(date.and_hms_opt(0, 0, 0).unwrap().and_utc())
                .unwrap()
                .0
        };
        let (first, last) = (midnight(-300), midnight(10_300));
        let step: usize = 86_400_000_000 * 7 + 3_723_000_000;
        let mut edges = vec![
            micros("0000-01-01T00:00:00Z"),
            micros("9999-12-31T23:59:59.999999Z"),
            micros("1969-12-31T23:59:59.999Z"),
            micros("1970-01-01T00:00:00Z"),
            micros("2000-01-01T00:00:00.000001Z"),
        ];
        edges.extend((first..last).step_by(step));
        for base in edges {
            for fraction in [0, 120_000, 5, 999_999, 1000] {
                let time = EpochMicros(base + fraction);
                assert_eq!(
                    text_of(Cell::Timestamp(time)),
                    time.time()
                        .unwrap()
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    "{}",
                    time.0
                );
            }
        }
        let mut out = Vec::new();
        assert!(write_timestamp(&mut out, EpochMicros(i64::MAX)).is_err());
    }

    /// Each kind read from the bytes PostgreSQL sends, null included.
    #[test]
    fn values_are_decoded_from_postgresql_binary_form() {
        let text = |kind, bytes: &[u8]| text_of(Cell::decode(kind, Some(bytes)).unwrap());
        assert_eq!(text(CellKind::Id, &42i64.to_be_bytes()), "42");
        assert_eq!(text(CellKind::Integer, &(-7i64).to_be_bytes()), "-7");
        assert_eq!(text(CellKind::Number, &0.1f64.to_be_bytes()), "0.1");
        assert_eq!(text(CellKind::Boolean, &[1]), "true");
        assert_eq!(text(CellKind::Boolean, &[0]), "false");
        assert_eq!(text(CellKind::Text, "é,\"".as_bytes()), "é,\"");
        assert_eq!(text(CellKind::Json, b"\x01{\"a\": 1}"), "{\"a\": 1}");
        assert_eq!(text(CellKind::Date, &1i32.to_be_bytes()), "2000-01-02");
        assert_eq!(
            text(CellKind::Timestamp, &(-1i64).to_be_bytes()),
            "1999-12-31T23:59:59.999999Z"
        );
        // 1.50: one digit group before the point, one after, scale 2.
        let numeric = [0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88];
        assert_eq!(text(CellKind::Decimal, &numeric), "1.50");
        assert!(matches!(
            Cell::decode(CellKind::Decimal, None),
            Ok(Cell::Null)
        ));
        for (kind, bad) in [
            (CellKind::Integer, &[0u8; 4][..]),
            (CellKind::Boolean, &[][..]),
            (CellKind::Text, &[0xff][..]),
            (CellKind::Json, &[2, b'1'][..]),
            (CellKind::Date, &[0; 8][..]),
            (CellKind::Decimal, &[0, 1, 0, 0, 0, 0, 0, 0][..]),
        ] {
            assert!(Cell::decode(kind, Some(bad)).is_err(), "{kind:?} {bad:?}");
        }
    }
}
