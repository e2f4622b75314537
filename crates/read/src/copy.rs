//! Rows in the binary format of `COPY … FROM STDIN (FORMAT binary)`, the
//! cheapest way into PostgreSQL: no statement to plan and no text to parse
//! per value (half the server's time of an `INSERT … SELECT FROM UNNEST` of
//! the same rows, measured by `sluice-bench`).
//!
//! Each value is written as PostgreSQL's `*_recv` function reads it.
//! Integers, floats, booleans, dates and timestamps have fixed layouts;
//! `numeric` is built from the literal exactly as `numeric_in` builds it
//! from text, so a decimal stored by COPY is the one `'literal'::numeric`
//! gives.

use sluice_runtime::bus::{EpochDays, EpochMicros};
use sluice_schema::DecimalParts;

/// The signature, flags and header extension length that open the data.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The data of one `COPY … FROM STDIN (FORMAT binary)`, row by row.
pub(crate) struct BinaryRows {
    out: Vec<u8>,
}

impl BinaryRows {
    pub(crate) fn with_capacity(bytes: usize) -> BinaryRows {
        let mut out = Vec::with_capacity(HEADER.len() + bytes + 2);
        out.extend_from_slice(HEADER);
        BinaryRows { out }
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

    /// The data, with its trailer.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&(-1i16).to_be_bytes());
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
    fn rows_are_framed_with_lengths_and_a_trailer() {
        let mut rows = BinaryRows::with_capacity(0);
        rows.row(3);
        rows.int8(-2);
        rows.null();
        rows.text("é");
        let data = rows.finish();
        assert_eq!(&data[..HEADER.len()], HEADER);
        assert_eq!(
            &data[HEADER.len()..],
            [
                &[0, 3][..],
                &[0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 254],
                &[255, 255, 255, 255],
                &[0, 0, 0, 2, 0xc3, 0xa9],
                &[255, 255],
            ]
            .concat()
        );
    }
}
