//! Records one at a time from a decompressed stream, cut at their
//! boundaries without parsing them: NDJSON at line ends, CSV at line ends
//! outside quoted fields, JSON (an array of records, or records one after
//! another) at the end of each top-level value. `push` gathers them into
//! requests, `infer` parses a sample of them.
//!
//! Memory is one record at a time, at most [`MAX_RECORD_BYTES`], whatever
//! the size of the input. Every byte read is hashed, so that a chunk's
//! `Idempotency-Key` can derive from the content before it, and counted in
//! lines, so that errors name the line of the file.

use std::io::BufRead;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use sluice_schema::Format;

use super::input::Input;

/// The largest record read: SPEC's default largest request body
/// (`SLUICE_MAX_BODY_BYTES`), which a record must fit in.
pub(crate) const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Where a record starts in its file: its 1-based line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordStart {
    pub(crate) line: u64,
}

/// Where the JSON reader is between records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonAt {
    /// Nothing read yet: an array of records, or records one after another.
    Start,
    /// Right after `[`: a record or `]`.
    ArrayOpened,
    /// After `,` inside the array: a record.
    ArrayElement,
    /// After a record inside the array: `,` or `]`.
    ArrayNext,
    /// Top-level records one after another (NDJSON or pretty-printed).
    Values,
    /// After the array's `]`: only blanks may follow.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsvState {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

pub(crate) struct RecordReader {
    name: String,
    format: Format,
    reader: Box<dyn BufRead + Send>,
    /// The line of the next byte to read.
    line: u64,
    /// Bytes read so far, decompressed.
    offset: u64,
    hasher: Sha256,
    /// CSV's header row, line end included; sent before every chunk's rows.
    header: Vec<u8>,
    json_at: JsonAt,
}

impl RecordReader {
    /// Starts reading `input`: skips a UTF-8 byte order mark, reads the CSV
    /// header.
    pub(crate) fn new(input: Input) -> anyhow::Result<RecordReader> {
        let mut reader = RecordReader {
            name: input.name,
            format: input.format,
            reader: input.reader,
            line: 1,
            offset: 0,
            hasher: Sha256::new(),
            header: Vec::new(),
            json_at: JsonAt::Start,
        };
        if reader.fill()?.starts_with(b"\xEF\xBB\xBF") {
            reader.take(3, None);
        }
        if reader.format == Format::Csv {
            let mut header = Vec::new();
            reader.next_csv_row(&mut header)?;
            reader.header = header;
        }
        Ok(reader)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// CSV's header row (empty for other formats, or an empty CSV file).
    pub(crate) fn header(&self) -> &[u8] {
        &self.header
    }

    /// Bytes read so far, decompressed.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The SHA-256 of every byte read so far.
    pub(crate) fn digest_so_far(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    /// Appends the next record to `out` (an NDJSON line or CSV row with its
    /// line end, or a JSON value alone); `None` at the end of the input.
    /// Blank lines are skipped; a record that is not UTF-8 is an error.
    pub(crate) fn next_record(&mut self, out: &mut Vec<u8>) -> anyhow::Result<Option<RecordStart>> {
        let start = out.len();
        let found = match self.format {
            Format::Ndjson => self.next_line(out)?,
            Format::Csv => self.next_csv_row(out)?,
            Format::Json => self.next_json_value(out)?,
        };
        if let Some(found) = found {
            self.check_utf8(&out[start..], found.line)?;
        }
        Ok(found)
    }

    fn fill(&mut self) -> anyhow::Result<&[u8]> {
        let name = &self.name;
        self.reader
            .fill_buf()
            .with_context(|| format!("reading {name}"))
    }

    /// Consumes the first `n` bytes of the buffer, keeping them in `out`.
    fn take(&mut self, n: usize, out: Option<&mut Vec<u8>>) {
        // The buffer is filled already (callers looked at it): this reads
        // nothing, and cannot fail.
        let Ok(buf) = self.reader.fill_buf() else {
            return;
        };
        let taken = &buf[..n];
        self.hasher.update(taken);
        self.line += memchr::memchr_iter(b'\n', taken).count() as u64;
        self.offset += n as u64;
        if let Some(out) = out {
            out.extend_from_slice(taken);
        }
        self.reader.consume(n);
    }

    fn too_large(&self, line: u64, held: usize) -> anyhow::Result<()> {
        if held > MAX_RECORD_BYTES {
            bail!(
                "{} line {line}: the record is larger than {} MiB, the largest request \
                 Sluice takes; it cannot be sent",
                self.name,
                MAX_RECORD_BYTES >> 20
            );
        }
        Ok(())
    }

    fn next_line(&mut self, out: &mut Vec<u8>) -> anyhow::Result<Option<RecordStart>> {
        loop {
            let start = out.len();
            let line = self.line;
            let mut ended = false;
            while !ended {
                let buf = self.fill()?;
                if buf.is_empty() {
                    break;
                }
                let n = match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        ended = true;
                        i + 1
                    }
                    None => buf.len(),
                };
                self.take(n, Some(out));
                self.too_large(line, out.len() - start)?;
            }
            let record = &out[start..];
            if record.is_empty() {
                return Ok(None);
            }
            if record.iter().all(u8::is_ascii_whitespace) {
                out.truncate(start);
                continue;
            }
            if !ended {
                out.push(b'\n');
            }
            return Ok(Some(RecordStart { line }));
        }
    }

    /// A CSV row as the `csv` crate (and so the server) reads it: a quote
    /// opens a quoted field only at the start of a field, `""` inside one
    /// is a quote, and a line end inside one is part of the field.
    fn next_csv_row(&mut self, out: &mut Vec<u8>) -> anyhow::Result<Option<RecordStart>> {
        loop {
            let start = out.len();
            let line = self.line;
            let mut state = CsvState::FieldStart;
            let mut ended = false;
            while !ended {
                let buf = self.fill()?;
                if buf.is_empty() {
                    break;
                }
                let mut n = buf.len();
                for (i, &byte) in buf.iter().enumerate() {
                    state = match (state, byte) {
                        (CsvState::Quoted, b'"') => CsvState::QuoteInQuoted,
                        (CsvState::Quoted, _) => CsvState::Quoted,
                        (CsvState::QuoteInQuoted, b'"') => CsvState::Quoted,
                        (_, b'\n') => {
                            ended = true;
                            n = i + 1;
                            break;
                        }
                        (CsvState::FieldStart, b'"') => CsvState::Quoted,
                        (_, b',') => CsvState::FieldStart,
                        _ => CsvState::Unquoted,
                    };
                }
                self.take(n, Some(out));
                self.too_large(line, out.len() - start)?;
            }
            let record = &out[start..];
            if record.is_empty() {
                return Ok(None);
            }
            if state == CsvState::Quoted {
                bail!(
                    "{} line {line}: a quoted field opened on this line is never closed",
                    self.name
                );
            }
            if record.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                out.truncate(start);
                continue;
            }
            if !ended {
                out.push(b'\n');
            }
            return Ok(Some(RecordStart { line }));
        }
    }

    /// Skips blanks; the next byte, not consumed, or `None` at the end.
    fn skip_blanks(&mut self) -> anyhow::Result<Option<u8>> {
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => {
                    let next = buf[i];
                    self.take(i, None);
                    return Ok(Some(next));
                }
                None => {
                    let n = buf.len();
                    self.take(n, None);
                }
            }
        }
    }

    fn next_json_value(&mut self, out: &mut Vec<u8>) -> anyhow::Result<Option<RecordStart>> {
        loop {
            let next = self.skip_blanks()?;
            let line = self.line;
            match (self.json_at, next) {
                (JsonAt::Start, None) | (JsonAt::Values, None) | (JsonAt::End, None) => {
                    return Ok(None);
                }
                (JsonAt::Start, Some(b'[')) => {
                    self.take(1, None);
                    self.json_at = JsonAt::ArrayOpened;
                }
                (JsonAt::Start, Some(_)) => self.json_at = JsonAt::Values,
                (JsonAt::ArrayOpened | JsonAt::ArrayNext, Some(b']')) => {
                    self.take(1, None);
                    self.json_at = JsonAt::End;
                }
                (JsonAt::ArrayNext, Some(b',')) => {
                    self.take(1, None);
                    self.json_at = JsonAt::ArrayElement;
                }
                (JsonAt::ArrayNext, Some(_)) => bail!(
                    "{} line {line}: expected ',' or ']' after a record of the array",
                    self.name
                ),
                (JsonAt::ArrayOpened | JsonAt::ArrayElement | JsonAt::ArrayNext, None) => {
                    bail!("{} line {line}: the array is never closed", self.name)
                }
                (JsonAt::ArrayOpened | JsonAt::ArrayElement, Some(_)) => {
                    self.json_value(out, line)?;
                    self.json_at = JsonAt::ArrayNext;
                    return Ok(Some(RecordStart { line }));
                }
                (JsonAt::Values, Some(_)) => {
                    self.json_value(out, line)?;
                    return Ok(Some(RecordStart { line }));
                }
                (JsonAt::End, Some(_)) => bail!(
                    "{} line {line}: more data after the end of the array",
                    self.name
                ),
            }
        }
    }

    /// One JSON value, found by its brackets and strings alone: the server
    /// parses it, and says where it is broken.
    fn json_value(&mut self, out: &mut Vec<u8>, line: u64) -> anyhow::Result<()> {
        let start = out.len();
        let mut depth = 0u32;
        let mut in_string = false;
        let mut escaped = false;
        let mut first = true;
        let mut scalar = false;
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                if in_string || depth > 0 {
                    bail!(
                        "{} line {line}: the record that starts here is cut short by the end of the input",
                        self.name
                    );
                }
                return Ok(());
            }
            let mut n = 0;
            let mut done = false;
            for &byte in buf {
                if first {
                    first = false;
                    match byte {
                        b'{' | b'[' => depth = 1,
                        b'"' => in_string = true,
                        _ => scalar = true,
                    }
                } else if in_string {
                    if escaped {
                        escaped = false;
                    } else if byte == b'\\' {
                        escaped = true;
                    } else if byte == b'"' {
                        in_string = false;
                        done = depth == 0;
                    }
                } else if scalar {
                    if byte.is_ascii_whitespace()
                        || matches!(byte, b',' | b']' | b'}' | b'[' | b'{')
                    {
                        done = true;
                        break;
                    }
                } else {
                    match byte {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            done = depth == 0;
                        }
                        _ => {}
                    }
                }
                n += 1;
                if done {
                    break;
                }
            }
            self.take(n, Some(out));
            self.too_large(line, out.len() - start)?;
            if done {
                return Ok(());
            }
        }
    }

    fn check_utf8(&self, record: &[u8], line: u64) -> anyhow::Result<()> {
        if let Err(error) = std::str::from_utf8(record) {
            let valid = &record[..error.valid_up_to()];
            let line = line + memchr::memchr_iter(b'\n', valid).count() as u64;
            let column = valid.len() - memchr::memrchr(b'\n', valid).map_or(0, |i| i + 1) + 1;
            bail!(
                "{} line {line}, column {column}: the bytes there are not UTF-8, the only \
                 encoding Sluice reads (convert the file first, e.g. `iconv -f latin1 -t utf-8`)",
                self.name
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn reader(format: Format, text: &[u8]) -> RecordReader {
        RecordReader::new(Input {
            name: "f".into(),
            format,
            size: None,
            consumed: Arc::new(AtomicU64::new(0)),
            reader: Box::new(std::io::Cursor::new(text.to_vec())),
        })
        .unwrap()
    }

    fn all(mut reader: RecordReader) -> anyhow::Result<Vec<(u64, String)>> {
        let mut found = Vec::new();
        loop {
            let mut out = Vec::new();
            match reader.next_record(&mut out)? {
                Some(start) => found.push((start.line, String::from_utf8(out).unwrap())),
                None => return Ok(found),
            }
        }
    }

    #[test]
    fn ndjson_lines_skip_blanks_and_end_with_a_newline() {
        let records = all(reader(Format::Ndjson, b"{\"a\":1}\n\n  \n{\"a\":2}")).unwrap();
        assert_eq!(
            records,
            [(1, "{\"a\":1}\n".into()), (4, "{\"a\":2}\n".into())]
        );
    }

    #[test]
    fn csv_rows_keep_quoted_line_ends_and_the_header_apart() {
        let r = reader(
            Format::Csv,
            b"\xEF\xBB\xBFa,b\r\n1,\"x\ny\"\"\"\r\n\r\n2,z\"q\n3,",
        );
        assert_eq!(r.header(), b"a,b\r\n");
        let records = all(r).unwrap();
        assert_eq!(
            records,
            [
                (2, "1,\"x\ny\"\"\"\r\n".into()),
                (5, "2,z\"q\n".into()),
                (6, "3,\n".into())
            ]
        );
    }

    #[test]
    fn an_unclosed_quote_names_its_line() {
        let error = all(reader(Format::Csv, b"a,b\n1,2\n3,\"open\n4,5\n")).unwrap_err();
        assert!(
            error.to_string().contains("f line 3: a quoted field"),
            "{error}"
        );
    }

    #[test]
    fn json_arrays_and_value_streams_give_each_record() {
        let array = b"[\n {\"a\": \"]}\\\"\"},\n  {\"b\": [1, {\"c\": 2}]} , 5 ]\n";
        assert_eq!(
            all(reader(Format::Json, array)).unwrap(),
            [
                (2, "{\"a\": \"]}\\\"\"}".into()),
                (3, "{\"b\": [1, {\"c\": 2}]}".into()),
                (3, "5".into())
            ]
        );
        let stream = b"{\"a\":1}\n{\n \"a\": 2\n}\n";
        assert_eq!(
            all(reader(Format::Json, stream)).unwrap(),
            [(1, "{\"a\":1}".into()), (2, "{\n \"a\": 2\n}".into())]
        );
        let error = all(reader(Format::Json, b"[{\"a\":1} {\"a\":2}]")).unwrap_err();
        assert!(error.to_string().contains("expected ','"), "{error}");
        let error = all(reader(Format::Json, b"[{\"a\":1},\n{\"a\":")).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_named_by_line_and_column() {
        let error = all(reader(Format::Csv, b"a,b\n1,2\n3,caf\xe9\n")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("f line 3, column 6: the bytes there are not UTF-8"),
            "{error}"
        );
    }

    #[test]
    fn the_digest_covers_every_byte_read() {
        let mut r = reader(Format::Ndjson, b"{}\n\n{}\n");
        let mut out = Vec::new();
        while r.next_record(&mut out).unwrap().is_some() {}
        assert_eq!(r.offset(), 7);
        let expected: [u8; 32] = Sha256::digest(b"{}\n\n{}\n").into();
        assert_eq!(r.digest_so_far(), expected);
    }
}
