//! PostgreSQL's binary COPY format, both ways.
//!
//! In: rows for `COPY … FROM STDIN (FORMAT binary)`, the cheapest way into
//! PostgreSQL: no statement to plan and no text to parse per value (half
//! the server's time of an `INSERT … SELECT FROM UNNEST` of the same rows,
//! measured by `sluice-bench`). Each value is written as PostgreSQL's
//! `*_recv` function reads it. Integers, floats, booleans, dates and
//! timestamps have fixed layouts; `numeric` is built from the literal
//! exactly as `numeric_in` builds it from text, so a decimal stored by COPY
//! is the one `'literal'::numeric` gives.
//!
//! Out: the rows of `COPY … TO STDOUT (FORMAT binary)`, cut from the data
//! however it arrives, each value as PostgreSQL's `*_send` function wrote
//! it (the same bytes a query's binary results hold); a `numeric` is
//! written back as text exactly as `numeric_out` writes it.

use sluice_runtime::bus::{EpochDays, EpochMicros};
use sluice_schema::DecimalParts;

/// The signature, flags and header extension length that open the data,
/// both ways: PostgreSQL writes no flag and no extension either.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// What closes the data: a row of -1 fields.
pub(crate) const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// Rows for a `COPY … FROM STDIN (FORMAT binary)`, without the [`HEADER`]
/// and [`TRAILER`] that frame the whole statement: the rows of several
/// messages are sent in one statement.
pub(crate) struct BinaryRows {
    out: Vec<u8>,
}

impl BinaryRows {
    pub(crate) fn with_capacity(bytes: usize) -> BinaryRows {
        BinaryRows {
            out: Vec::with_capacity(bytes),
        }
    }

    /// Starts a row of `fields` values, to be written next in column order.
    pub(crate) fn row(&mut self, fields: i16) {
        self.out.extend_from_slice(&fields.to_be_bytes());
    }

    pub(crate) fn null(&mut self) {
        self.out.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// A value of `bytes`, after its length.
    fn value(&mut self, bytes: &[u8]) {
        let len = i32::try_from(bytes.len()).expect("a value under 2 GiB");
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(bytes);
    }

    pub(crate) fn int8(&mut self, value: i64) {
        self.value(&value.to_be_bytes());
    }

    pub(crate) fn float8(&mut self, value: f64) {
        self.value(&value.to_bits().to_be_bytes());
    }

    pub(crate) fn boolean(&mut self, value: bool) {
        self.value(&[u8::from(value)]);
    }

    pub(crate) fn text(&mut self, value: &str) {
        self.value(value.as_bytes());
    }

    /// `jsonb`: a version byte, then the text.
    pub(crate) fn jsonb(&mut self, json: &str) {
        let len = i32::try_from(json.len() + 1).expect("a value under 2 GiB");
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.push(1);
        self.out.extend_from_slice(json.as_bytes());
    }

    /// Days since 2000-01-01; `None` beyond `i32`.
    pub(crate) fn date(&mut self, value: EpochDays) -> Option<()> {
        self.value(&value.since_postgres_epoch()?.to_be_bytes());
        Some(())
    }

    /// Microseconds since 2000-01-01; `None` beyond `i64`.
    pub(crate) fn timestamptz(&mut self, value: EpochMicros) -> Option<()> {
        self.value(&value.since_postgres_epoch()?.to_be_bytes());
        Some(())
    }

    /// A decimal literal as the schema crate accepts one; `None` if it is
    /// not one.
    pub(crate) fn numeric(&mut self, literal: &str) -> Option<()> {
        let numeric = Numeric::parse(literal)?;
        let len = 8 + 2 * numeric.digits.len();
        self.out
            .extend_from_slice(&i32::try_from(len).ok()?.to_be_bytes());
        self.out
            .extend_from_slice(&i16::try_from(numeric.digits.len()).ok()?.to_be_bytes());
        self.out
            .extend_from_slice(&i16::try_from(numeric.weight).ok()?.to_be_bytes());
        self.out.extend_from_slice(&numeric.sign.to_be_bytes());
        self.out
            .extend_from_slice(&u16::try_from(numeric.dscale).ok()?.to_be_bytes());
        for digit in numeric.digits {
            self.out.extend_from_slice(&digit.to_be_bytes());
        }
        Some(())
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

/// PostgreSQL's `NumericVar`: base-10 000 digits, the weight of the first,
/// a sign and the display scale.
#[derive(Debug, PartialEq)]
struct Numeric {
    digits: Vec<i16>,
    weight: i32,
    sign: u16,
    dscale: i32,
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// Decimal digits in one base-10 000 digit.
const DEC_DIGITS: i32 = 4;

impl Numeric {
    /// `set_var_from_str` and `strip_var` of PostgreSQL's numeric.c, on a
    /// literal that the schema crate accepts as a decimal (what the gateway
    /// validated; anything else in a message is malformed).
    fn parse(literal: &str) -> Option<Numeric> {
        let DecimalParts {
            negative,
            whole,
            fraction,
            exponent,
        } = DecimalParts::of(literal)?;
        // ASCII digits, by the grammar.
        let decimal: Vec<u8> = whole
            .bytes()
            .chain(fraction.bytes())
            .map(|b| b - b'0')
            .collect();
        let dweight = whole.len() as i32 - 1 + exponent;
        let dscale = (fraction.len() as i32 - exponent).max(0);
        let weight = if dweight >= 0 {
            (dweight + DEC_DIGITS) / DEC_DIGITS - 1
        } else {
            -((-dweight - 1) / DEC_DIGITS + 1)
        };
        // Zeros before the first given digit that align it in its group.
        let offset = ((weight + 1) * DEC_DIGITS - (dweight + 1)) as usize;
        let groups = (decimal.len() + offset).div_ceil(DEC_DIGITS as usize);
        let mut padded = vec![0u8; groups * DEC_DIGITS as usize];
        padded[offset..offset + decimal.len()].copy_from_slice(&decimal);
        let mut digits: Vec<i16> = padded
            .chunks(DEC_DIGITS as usize)
            .map(|g| g.iter().fold(0i16, |n, d| n * 10 + i16::from(*d)))
            .collect();
        // strip_var: no leading or trailing zero digits; zero is positive.
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        let weight = weight - leading as i32;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        Some(if digits.is_empty() {
            Numeric {
                digits,
                weight: 0,
                sign: NUMERIC_POS,
                dscale,
            }
        } else {
            Numeric {
                digits,
                weight,
                sign: if negative { NUMERIC_NEG } else { NUMERIC_POS },
                dscale,
            }
        })
    }
}

/// What PostgreSQL sent that is not what its COPY format or a value's
/// `*_send` function writes.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL sent a malformed {0}")]
pub(crate) struct Malformed(pub &'static str);

/// A `numeric` as `numeric_send` writes it: digit count, weight, sign and
/// display scale, then the base-10 000 digits, all big-endian.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NumericValue<'a> {
    weight: i16,
    sign: u16,
    dscale: u16,
    /// Two bytes a digit, each checked to be below 10 000.
    digits: &'a [u8],
}

impl<'a> NumericValue<'a> {
    pub(crate) fn read(bytes: &'a [u8]) -> Result<NumericValue<'a>, Malformed> {
        let malformed = || Malformed("numeric");
        let header = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        if bytes.len() < 8 {
            return Err(malformed());
        }
        let ndigits = usize::try_from(header(0) as i16).map_err(|_| malformed())?;
        let digits = &bytes[8..];
        if digits.len() != 2 * ndigits
            || digits
                .chunks_exact(2)
                .any(|d| u16::from_be_bytes([d[0], d[1]]) >= 10_000)
        {
            return Err(malformed());
        }
        Ok(NumericValue {
            weight: header(2) as i16,
            sign: header(4),
            dscale: header(6),
            digits,
        })
    }

    /// The `i`-th base-10 000 digit; those beyond the stored ones are zero.
    fn digit(&self, i: i32) -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.digits.get(2 * i..2 * i + 2))
            .map_or(0, |d| u16::from_be_bytes([d[0], d[1]]))
    }

    /// The text `numeric_out` gives (`get_str_from_var` of numeric.c): the
    /// integer part without leading zeros, then exactly `dscale` digits.
    pub(crate) fn write_text(&self, out: &mut Vec<u8>) {
        match self.sign {
            NUMERIC_NAN => return out.extend_from_slice(b"NaN"),
            NUMERIC_PINF => return out.extend_from_slice(b"Infinity"),
            NUMERIC_NINF => return out.extend_from_slice(b"-Infinity"),
            NUMERIC_NEG => out.push(b'-'),
            _ => {}
        }
        let weight = i32::from(self.weight);
        let mut d = 0;
        if weight < 0 {
            out.push(b'0');
            d = weight + 1;
        } else {
            while d <= weight {
                let group = four_digits(self.digit(d));
                // Leading zeros only in the first group, and never its last digit.
                let skip = if d == 0 {
                    group[..3].iter().take_while(|b| **b == b'0').count()
                } else {
                    0
                };
                out.extend_from_slice(&group[skip..]);
                d += 1;
            }
        }
        let dscale = usize::from(self.dscale);
        if dscale > 0 {
            out.push(b'.');
            let end = out.len() + dscale;
            while out.len() < end {
                out.extend_from_slice(&four_digits(self.digit(d)));
                d += 1;
            }
            out.truncate(end);
        }
    }
}

/// A base-10 000 digit as four decimal digits.
fn four_digits(digit: u16) -> [u8; 4] {
    [
        b'0' + (digit / 1000) as u8,
        b'0' + (digit / 100 % 10) as u8,
        b'0' + (digit / 10 % 10) as u8,
        b'0' + (digit % 10) as u8,
    ]
}

/// The rows of one `COPY … TO STDOUT (FORMAT binary)` of `columns`
/// columns, fed its data as it arrives. PostgreSQL sends a row per message,
/// but nothing here depends on it: a row cut across chunks is kept until
/// its end comes.
pub(crate) struct CopyOutRows {
    columns: usize,
    /// The start of a row, or of the header, that is not whole yet.
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

/// The values of one row, read in column order: each one's bytes, or
/// `None` for null.
pub(crate) struct CopyRow<'a> {
    /// What follows the row's field count; its framing is checked already.
    rest: &'a [u8],
}

impl<'a> CopyRow<'a> {
    pub(crate) fn next_value(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_at_checked(4)?;
        let len = i32::from_be_bytes(len.try_into().ok()?);
        let len = usize::try_from(len).ok();
        let (value, rest) = rest.split_at_checked(len.unwrap_or(0))?;
        self.rest = rest;
        len.map(|_| value)
    }
}

impl CopyOutRows {
    pub(crate) fn new(columns: usize) -> CopyOutRows {
        CopyOutRows {
            columns,
            pending: Vec::new(),
            header_read: false,
            ended: false,
        }
    }

    /// Calls `row` with every row that `chunk` completes, in order.
    pub(crate) fn feed<E: From<Malformed>>(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(CopyRow<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.pending.is_empty() {
            let used = self.rows_in(chunk, &mut row)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let used = self.rows_in(&pending, &mut row)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Checks that the data ended where it should, after its trailer.
    pub(crate) fn finish(self) -> Result<(), Malformed> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(Malformed("end of COPY data"))
        }
    }

    /// Calls `row` with each whole row at the start of `data`; returns how
    /// many bytes they (and the header or trailer) took.
    fn rows_in<E: From<Malformed>>(
        &mut self,
        data: &[u8],
        row: &mut impl FnMut(CopyRow<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut at = 0;
        if !self.header_read {
            if data.len() < HEADER.len() {
                return Ok(0);
            }
            if &data[..HEADER.len()] != HEADER {
                return Err(Malformed("COPY header").into());
            }
            self.header_read = true;
            at = HEADER.len();
        }
        while let Some(count) = data.get(at..at + 2) {
            if self.ended {
                return Err(Malformed("COPY trailer").into());
            }
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.ended = true;
                at += 2;
                continue;
            }
            if usize::try_from(count).ok() != Some(self.columns) {
                return Err(Malformed("COPY row").into());
            }
            let Some(end) = row_end(data, at + 2, self.columns)? else {
                break;
            };
            row(CopyRow {
                rest: &data[at + 2..end],
            })?;
            at = end;
        }
        Ok(at)
    }
}

/// Where the row whose values start at `at` ends, or `None` if `data` does
/// not hold all of it yet.
fn row_end(data: &[u8], mut at: usize, columns: usize) -> Result<Option<usize>, Malformed> {
    for _ in 0..columns {
        let Some(len) = data.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        match i32::from_be_bytes([len[0], len[1], len[2], len[3]]) {
            -1 => {}
            len => at += usize::try_from(len).map_err(|_| Malformed("COPY value length"))?,
        }
    }
    Ok((at <= data.len()).then_some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(digits: &[i16], weight: i32, sign: u16, dscale: i32) -> Option<Numeric> {
        Some(Numeric {
            digits: digits.to_vec(),
            weight,
            sign,
            dscale,
        })
    }

    #[test]
    fn decimals_become_numerics_as_postgresql_reads_them() {
        assert_eq!(Numeric::parse("0"), numeric(&[], 0, NUMERIC_POS, 0));
        assert_eq!(Numeric::parse("-0.00"), numeric(&[], 0, NUMERIC_POS, 2));
        assert_eq!(
            Numeric::parse("1.50"),
            numeric(&[1, 5000], 0, NUMERIC_POS, 2)
        );
        assert_eq!(
            Numeric::parse("-12345.6789"),
            numeric(&[1, 2345, 6789], 1, NUMERIC_NEG, 4)
        );
        assert_eq!(Numeric::parse("1.5e3"), numeric(&[1500], 0, NUMERIC_POS, 0));
        assert_eq!(
            Numeric::parse("15E-1"),
            numeric(&[1, 5000], 0, NUMERIC_POS, 1)
        );
        assert_eq!(Numeric::parse(".0001"), numeric(&[1], -1, NUMERIC_POS, 4));
        assert_eq!(Numeric::parse("+10000"), numeric(&[1], 1, NUMERIC_POS, 0));
        assert_eq!(Numeric::parse("007."), numeric(&[7], 0, NUMERIC_POS, 0));
        assert_eq!(Numeric::parse("1e-1000").unwrap().weight, -250);
        for bad in ["", "-", "1.2.3", "1e", "abc", "1e1001", "٣"] {
            assert_eq!(Numeric::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_are_framed_by_their_lengths() {
        let mut rows = BinaryRows::with_capacity(0);
        rows.row(3);
        rows.int8(-2);
        rows.null();
        rows.text("é");
        assert_eq!(
            rows.into_bytes(),
            [
                &[0, 3][..],
                &[0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 254],
                &[255, 255, 255, 255],
                &[0, 0, 0, 2, 0xc3, 0xa9],
            ]
            .concat()
        );
        assert_eq!(TRAILER, [255, 255]);
    }

    /// The value bytes of one numeric, as `numeric_send` writes them.
    fn numeric_bytes(literal: &str) -> Vec<u8> {
        let mut rows = BinaryRows::with_capacity(0);
        rows.numeric(literal).unwrap();
        rows.into_bytes()[4..].to_vec()
    }

    fn numeric_text(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        NumericValue::read(bytes).unwrap().write_text(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// What `'literal'::numeric::text` gives in PostgreSQL, for literals
    /// stored as `numeric_in` stores them.
    #[test]
    fn numerics_are_written_back_as_numeric_out_writes_them() {
        for (literal, text) in [
            ("0", "0"),
            ("-0.00", "0.00"),
            ("1.50", "1.50"),
            ("-12345.6789", "-12345.6789"),
            ("1.5e3", "1500"),
            ("15E-1", "1.5"),
            (".0001", "0.0001"),
            ("+10000", "10000"),
            ("007.", "7"),
            ("100000000", "100000000"),
            ("0.10000", "0.10000"),
            (
                "-0.000000000000000000000000000001",
                "-0.000000000000000000000000000001",
            ),
            (
                "12345678901234567890.123456789012345678901234567890",
                "12345678901234567890.123456789012345678901234567890",
            ),
            ("9.99e2", "999"),
            ("1e20", "100000000000000000000"),
        ] {
            assert_eq!(numeric_text(&numeric_bytes(literal)), text, "{literal}");
        }
        assert_eq!(
            numeric_text(&numeric_bytes("1e-1000")),
            format!("0.{}1", "0".repeat(999))
        );
        let special = |sign: u16| [&[0, 0, 0, 0][..], &sign.to_be_bytes(), &[0, 0]].concat();
        assert_eq!(numeric_text(&special(NUMERIC_NAN)), "NaN");
        assert_eq!(numeric_text(&special(NUMERIC_PINF)), "Infinity");
        assert_eq!(numeric_text(&special(NUMERIC_NINF)), "-Infinity");
        for bad in [
            &[0, 1, 0, 0, 0, 0, 0, 0][..],
            &[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10],
            &[0xff, 0xff, 0, 0, 0, 0, 0, 0],
            &[0, 0, 0, 0],
        ] {
            assert!(NumericValue::read(bad).is_err(), "{bad:?}");
        }
    }

    /// Rows of two values, as `COPY … TO STDOUT (FORMAT binary)` sends them.
    fn copy_data(rows: &[(i64, Option<&str>)]) -> Vec<u8> {
        let mut data = BinaryRows::with_capacity(0);
        for (id, text) in rows {
            data.row(2);
            data.int8(*id);
            match text {
                Some(text) => data.text(text),
                None => data.null(),
            }
        }
        [HEADER, &data.into_bytes(), TRAILER].concat()
    }

    /// Each row's id bytes and text.
    type Seen = Vec<(Vec<u8>, Option<String>)>;

    fn rows_of(chunks: &[&[u8]]) -> Result<Seen, Malformed> {
        let mut rows = CopyOutRows::new(2);
        let mut seen = Vec::new();
        for chunk in chunks {
            rows.feed(chunk, |mut row| {
                let id = row.next_value().unwrap().to_vec();
                let text = row
                    .next_value()
                    .map(|t| String::from_utf8(t.to_vec()).unwrap());
                seen.push((id, text));
                Ok::<_, Malformed>(())
            })?;
        }
        rows.finish()?;
        Ok(seen)
    }

    #[test]
    fn copy_rows_are_read_however_the_data_is_cut() {
        let data = copy_data(&[(1, Some("a,b")), (2, None), (3, Some("")), (4, Some("é"))]);
        let whole = rows_of(&[&data]).unwrap();
        assert_eq!(whole.len(), 4);
        assert_eq!(
            whole[0],
            (1i64.to_be_bytes().to_vec(), Some("a,b".to_owned()))
        );
        assert_eq!(whole[1].1, None);
        assert_eq!(whole[2].1.as_deref(), Some(""));
        for size in [1, 2, 3, 7, 19, 20, 33] {
            let chunks: Vec<&[u8]> = data.chunks(size).collect();
            assert_eq!(rows_of(&chunks).unwrap(), whole, "chunks of {size}");
        }
        assert!(rows_of(&[&copy_data(&[])]).unwrap().is_empty());
    }

    #[test]
    fn malformed_copy_data_is_refused() {
        let data = copy_data(&[(1, Some("a"))]);
        // Cut short: no trailer, or half a row.
        assert!(rows_of(&[&data[..data.len() - 2]]).is_err());
        assert!(rows_of(&[&data[..data.len() - 4]]).is_err());
        // Anything after the trailer.
        assert!(rows_of(&[&data, &[0]]).is_err());
        // Another signature, or a row of three values.
        let mut bad = data.clone();
        bad[0] = b'X';
        assert!(rows_of(&[&bad]).is_err());
        let mut three = data.clone();
        three[HEADER.len() + 1] = 3;
        assert!(rows_of(&[&three]).is_err());
        // A length below -1.
        let mut length = data;
        length[HEADER.len() + 2..HEADER.len() + 6].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(rows_of(&[&length]).is_err());
    }
}
