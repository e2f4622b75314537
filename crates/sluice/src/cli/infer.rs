//! `sluice infer` and `connectors create --from-sample`: a schema proposed
//! from the first records of a file, as a person would choose it.
//!
//! Each value is tried against the grammars the server itself checks
//! ([`sluice_schema::parse_value`]), so what is proposed is what the file's
//! values will pass as:
//!
//! - `boolean`: only `true`/`false` (any case in CSV);
//! - `integer`: integer literals in the signed 64-bit range, except those
//!   with a leading zero (postcodes, account numbers: `string`);
//! - `decimal` or `number` for other numeric literals: `decimal` (exact)
//!   when the column reads as money (its name says price, amount, cost,
//!   total…, or every fractional value has exactly two decimals) or has
//!   more significant digits than a 64-bit float keeps; `number` otherwise,
//!   and always when a value has an exponent;
//! - `date` (`YYYY-MM-DD`) and `timestamp` (RFC 3339 with offset) when
//!   every value is one; other date forms stay `string`, which is what the
//!   server would take them as;
//! - `json` for objects and arrays, and in JSON input for a field whose
//!   values are of several kinds;
//! - `string` otherwise, and for a field with no value in the sample.
//!
//! A field is nullable when a sampled value is missing, empty (CSV) or
//! `null`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sluice_schema::{FieldName, FieldSpec, FieldType, Format, parse_value};

use super::connectors::SchemaDocument;
use super::input::{self, parse_format};
use super::records::RecordReader;

/// Records read by default.
pub(crate) const DEFAULT_SAMPLE: usize = 10_000;

/// Words in a column name that say it holds money.
const MONEY_WORDS: [&str; 16] = [
    "price", "amount", "cost", "total", "balance", "fee", "tax", "revenue", "salary", "payment",
    "paid", "charge", "discount", "income", "budget", "wage",
];

#[derive(Args)]
pub(crate) struct InferArgs {
    /// The file to read (`-` for stdin); gzip-compressed files too.
    file: PathBuf,
    /// json, ndjson or csv [default: from the file's name, else its first
    /// byte].
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
    /// Records to read.
    #[arg(long, default_value_t = DEFAULT_SAMPLE)]
    sample: usize,
}

pub(crate) fn run(args: InferArgs) -> anyhow::Result<ExitCode> {
    let proposal = propose(&args.file, args.format, args.sample)?;
    for note in &proposal.notes {
        eprintln!("sluice: {note}");
    }
    // A struct rather than `json!`, to keep the order a person reads in.
    #[derive(Serialize)]
    struct Document<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        fields: &'a [FieldSpec],
    }
    let document = Document {
        name: proposal.name.as_deref(),
        fields: &proposal.fields,
    };
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(ExitCode::SUCCESS)
}

/// For `connectors create --from-sample`: the proposal, its notes said.
pub(crate) fn proposal_for(path: &Path, sample: usize) -> anyhow::Result<SchemaDocument> {
    let proposal = propose(path, None, sample)?;
    for note in &proposal.notes {
        eprintln!("sluice: {note}");
    }
    Ok(SchemaDocument {
        name: proposal.name,
        description: None,
        fields: proposal.fields,
    })
}

/// A proposed schema, and what a person should know about it.
pub(crate) struct Proposal {
    /// The file's name, as a connector name; none for stdin.
    pub(crate) name: Option<String>,
    pub(crate) fields: Vec<FieldSpec>,
    pub(crate) notes: Vec<String>,
}

pub(crate) fn propose(
    path: &Path,
    format: Option<Format>,
    sample: usize,
) -> anyhow::Result<Proposal> {
    let mut reader = RecordReader::new(input::open(path, format)?)?;
    let name = reader.name().to_owned();
    let mut columns = Columns::default();
    let header = match reader.format() {
        Format::Csv => {
            let header = csv_cells(reader.header())
                .with_context(|| format!("{name} line 1: the header row is not CSV"))?;
            if header.is_empty() {
                bail!("{name} is empty: there is no header row to name the fields");
            }
            // One column a cell, a name given twice included (it is
            // mended into two names below), so that cells match by place.
            for cell in &header {
                columns.add(cell);
            }
            header
        }
        Format::Json | Format::Ndjson => Vec::new(),
    };
    let mut record = Vec::new();
    let mut records = 0;
    while records < sample {
        record.clear();
        let Some(start) = reader.next_record(&mut record)? else {
            break;
        };
        records += 1;
        match reader.format() {
            Format::Csv => {
                let cells = csv_cells(&record)
                    .with_context(|| format!("{name} line {}: the row is not CSV", start.line))?;
                if cells.len() != header.len() {
                    bail!(
                        "{name} line {}: the row has {} cells, the header has {}",
                        start.line,
                        cells.len(),
                        header.len()
                    );
                }
                for (i, cell) in cells.iter().enumerate() {
                    columns.columns[i].see(observe_cell(cell));
                }
            }
            Format::Json | Format::Ndjson => {
                let object = parse_object(&record).map_err(|(line, column, message)| {
                    anyhow::anyhow!(
                        "{name} line {}, column {column}: {message}",
                        start.line + line - 1
                    )
                })?;
                columns.see_object(object);
            }
        }
    }
    if records == 0 {
        bail!("{name} holds no record to infer a schema from");
    }
    let mut notes = vec![format!(
        "proposed from the first {records} records of {name}; a field the sample always has \
         may still be missing later: make it nullable if so"
    )];
    let fields = columns.into_fields(&mut notes);
    let connector_name = (path.as_os_str() != "-")
        .then(|| path.file_name())
        .flatten()
        .map(|file| {
            let file = file.to_string_lossy();
            let base = file.split('.').next().unwrap_or(&file);
            base.to_owned()
        })
        .filter(|n| !n.is_empty());
    Ok(Proposal {
        name: connector_name,
        fields,
        notes,
    })
}

fn csv_cells(row: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(row);
    let mut record = csv::StringRecord::new();
    reader.read_record(&mut record)?;
    Ok(record.iter().map(str::to_owned).collect())
}

/// What one value looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Null,
    Boolean,
    Integer,
    /// A numeric literal that is not an integer (or one beyond 64 bits).
    Fraction(Digits),
    Date,
    Timestamp,
    Json,
    Text,
}

/// The shape of a numeric literal.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Digits {
    fraction: usize,
    significant: usize,
    exponent: bool,
}

impl Digits {
    fn of(literal: &str) -> Digits {
        let unsigned = literal.trim_start_matches(['-', '+']);
        let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
            Some((mantissa, _)) => (mantissa, true),
            None => (unsigned, false),
        };
        let fraction = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
        let significant = mantissa
            .bytes()
            .filter(u8::is_ascii_digit)
            .skip_while(|&b| b == b'0')
            .count();
        Digits {
            fraction,
            significant,
            exponent,
        }
    }
}

fn observe_cell(cell: &str) -> Seen {
    if cell.is_empty() {
        return Seen::Null;
    }
    if cell.eq_ignore_ascii_case("true") || cell.eq_ignore_ascii_case("false") {
        return Seen::Boolean;
    }
    observe_text(cell, true)
}

/// A text value: CSV's every cell, JSON's strings (`numeric` false: the
/// server takes no number in a JSON string, bar decimals).
fn observe_text(text: &str, numeric: bool) -> Seen {
    if numeric {
        if parse_value(FieldType::Integer, text).is_ok() {
            let digits = text.trim_start_matches('-');
            return if digits.len() > 1 && digits.starts_with('0') {
                Seen::Text
            } else {
                Seen::Integer
            };
        }
        if parse_value(FieldType::Decimal, text).is_ok() {
            return Seen::Fraction(Digits::of(text));
        }
    }
    if parse_value(FieldType::Date, text).is_ok() {
        return Seen::Date;
    }
    if parse_value(FieldType::Timestamp, text).is_ok() {
        return Seen::Timestamp;
    }
    if numeric
        && (text.starts_with('{') || text.starts_with('['))
        && parse_value(FieldType::Json, text).is_ok()
    {
        return Seen::Json;
    }
    Seen::Text
}

fn observe_json(raw: &RawValue) -> Seen {
    let text = raw.get();
    match text.as_bytes()[0] {
        b'n' => Seen::Null,
        b't' | b'f' => Seen::Boolean,
        b'{' | b'[' => Seen::Json,
        b'"' => match serde_json::from_str::<String>(text) {
            Ok(s) => observe_text(&s, false),
            Err(_) => Seen::Text,
        },
        _ if !text.contains(['.', 'e', 'E']) && text.parse::<i64>().is_ok() => Seen::Integer,
        _ => Seen::Fraction(Digits::of(text)),
    }
}

#[derive(Default)]
struct Columns {
    columns: Vec<Column>,
    by_name: HashMap<String, usize>,
    /// JSON input: records read, to tell fields some records lack.
    records: u64,
    json: bool,
}

#[derive(Default)]
struct Column {
    name: String,
    /// Records that had the field (JSON), to tell missing ones.
    present: u64,
    nulls: u64,
    seen: Vec<Seen>,
    /// Every fractional value had exactly two decimals.
    cents: bool,
}

impl Column {
    fn see(&mut self, seen: Seen) {
        self.present += 1;
        match seen {
            Seen::Null => self.nulls += 1,
            Seen::Fraction(digits) => {
                if !self.seen.iter().any(|s| matches!(s, Seen::Fraction(_))) {
                    self.cents = true;
                }
                self.cents &= digits.fraction == 2;
                // Keep the widest literal seen, for the decision.
                match self
                    .seen
                    .iter_mut()
                    .find(|s| matches!(s, Seen::Fraction(_)))
                {
                    Some(Seen::Fraction(widest)) => {
                        widest.significant = widest.significant.max(digits.significant);
                        widest.exponent |= digits.exponent;
                    }
                    _ => self.seen.push(seen),
                }
            }
            other if !self.seen.contains(&other) => self.seen.push(other),
            _ => {}
        }
    }
}

impl Columns {
    fn add(&mut self, name: &str) -> usize {
        self.columns.push(Column {
            name: name.to_owned(),
            ..Column::default()
        });
        self.by_name.insert(name.to_owned(), self.columns.len() - 1);
        self.columns.len() - 1
    }

    /// The column of a JSON member's name, added when first seen.
    fn index_of(&mut self, name: &str) -> usize {
        match self.by_name.get(name) {
            Some(&i) => i,
            None => self.add(name),
        }
    }

    fn see_object(&mut self, object: Members) {
        self.json = true;
        self.records += 1;
        for (key, value) in object {
            let i = self.index_of(&key);
            self.columns[i].see(observe_json(&value));
        }
    }

    fn into_fields(self, notes: &mut Vec<String>) -> Vec<FieldSpec> {
        let mut taken: HashMap<String, ()> = HashMap::new();
        let json = self.json;
        let records = self.records;
        self.columns
            .into_iter()
            .map(|column| {
                let nullable = column.nulls > 0 || (json && column.present < records);
                let ty = choose_type(&column, json);
                if column.seen.is_empty() {
                    notes.push(format!(
                        "{:?} has no value in the sample: proposed a nullable string",
                        column.name
                    ));
                }
                let name = field_name(&column.name, &mut taken);
                if name != column.name {
                    let why = if FieldName::parse(&column.name, "name").is_ok() {
                        "is named twice (names ignore case)"
                    } else {
                        "is no valid field name"
                    };
                    notes.push(format!(
                        "{:?} {why}: proposed {name:?}; the file's records must use that \
                         name too",
                        column.name
                    ));
                }
                FieldSpec {
                    name,
                    ty: ty.as_str().to_owned(),
                    nullable: nullable || column.seen.is_empty(),
                    description: None,
                    previous_name: None,
                }
            })
            .collect()
    }
}

fn choose_type(column: &Column, json: bool) -> FieldType {
    let kinds = &column.seen;
    let only = |allowed: &[fn(&Seen) -> bool]| {
        !kinds.is_empty() && kinds.iter().all(|k| allowed.iter().any(|a| a(k)))
    };
    let is_integer = |s: &Seen| matches!(s, Seen::Integer);
    let is_fraction = |s: &Seen| matches!(s, Seen::Fraction(_));
    if kinds.is_empty() {
        return FieldType::String;
    }
    if only(&[|s| matches!(s, Seen::Boolean)]) {
        return FieldType::Boolean;
    }
    if only(&[is_integer]) {
        return FieldType::Integer;
    }
    if only(&[is_integer, is_fraction]) {
        let widest = kinds.iter().find_map(|s| match s {
            Seen::Fraction(d) => Some(*d),
            _ => None,
        });
        return match widest {
            Some(d) if d.exponent => FieldType::Number,
            Some(d) if d.significant > 15 => FieldType::Decimal,
            _ if reads_as_money(&column.name) || column.cents => FieldType::Decimal,
            _ => FieldType::Number,
        };
    }
    if only(&[|s| matches!(s, Seen::Date)]) {
        return FieldType::Date;
    }
    if only(&[|s| matches!(s, Seen::Timestamp)]) {
        return FieldType::Timestamp;
    }
    if only(&[|s| matches!(s, Seen::Json)]) {
        return FieldType::Json;
    }
    // JSON strings only take `string`; other kinds mixed in only `json`.
    let textual = |s: &Seen| matches!(s, Seen::Text | Seen::Date | Seen::Timestamp);
    if json && !only(&[textual]) {
        FieldType::Json
    } else {
        FieldType::String
    }
}

fn reads_as_money(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    MONEY_WORDS.iter().any(|word| name.contains(word))
}

/// `name` if it is a valid field name, else the closest one that is;
/// unique ignoring case among those `taken`.
fn field_name(name: &str, taken: &mut HashMap<String, ()>) -> String {
    let mut proposed = if FieldName::parse(name, "name").is_ok() {
        name.to_owned()
    } else {
        let cleaned: String = name
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let cleaned = cleaned.trim_matches('_');
        let cleaned = if cleaned.starts_with(|c: char| c.is_ascii_alphabetic()) {
            cleaned.to_owned()
        } else {
            format!("f_{cleaned}")
        };
        let mut cleaned: String = cleaned.chars().take(FieldName::MAX_LEN).collect();
        if FieldName::parse(&cleaned, "name").is_err() {
            cleaned = format!("f_{cleaned}")
                .chars()
                .take(FieldName::MAX_LEN)
                .collect();
        }
        cleaned
    };
    let base = proposed.clone();
    let mut n = 2;
    while taken.contains_key(&proposed.to_ascii_lowercase()) {
        let suffix = format!("_{n}");
        let room = FieldName::MAX_LEN - suffix.len();
        proposed = format!("{}{suffix}", &base[..base.len().min(room)]);
        n += 1;
    }
    taken.insert(proposed.to_ascii_lowercase(), ());
    proposed
}

/// A JSON object's members in their order, each value as its raw text.
type Members = Vec<(String, Box<RawValue>)>;

/// A JSON object's [`Members`]; or
/// where (line, column) and why it is no object.
fn parse_object(record: &[u8]) -> Result<Members, (u64, usize, String)> {
    let mut deserializer = serde_json::Deserializer::from_slice(record);
    let members = deserializer
        .deserialize_map(MembersVisitor)
        .and_then(|members| deserializer.end().map(|()| members));
    members.map_err(|error| {
        let message = error.to_string();
        let message = match message.find(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        };
        let message = if error.is_data() {
            "a record must be a JSON object".to_owned()
        } else {
            message
        };
        (error.line().max(1) as u64, error.column().max(1), message)
    })
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
            members.push((key, value));
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, cells: &[&str]) -> FieldType {
        let mut column = Column {
            name: name.into(),
            ..Column::default()
        };
        for cell in cells {
            column.see(observe_cell(cell));
        }
        choose_type(&column, false)
    }

    #[test]
    fn csv_cells_get_the_type_a_person_would_choose() {
        assert_eq!(column("n", &["1", "-20", ""]), FieldType::Integer);
        assert_eq!(column("zip", &["02134", "10001"]), FieldType::String);
        assert_eq!(column("ok", &["true", "FALSE"]), FieldType::Boolean);
        assert_eq!(column("temp", &["12.8", "3", "-0.5"]), FieldType::Number);
        assert_eq!(column("price", &["39.81", "28.4"]), FieldType::Decimal);
        assert_eq!(column("x", &["1.50", "2.00"]), FieldType::Decimal);
        assert_eq!(column("x", &["1.5e3", "2.00"]), FieldType::Number);
        assert_eq!(column("x", &["1.2345678901234567"]), FieldType::Decimal);
        assert_eq!(column("d", &["2026-01-31", ""]), FieldType::Date);
        assert_eq!(column("d", &["2012/01/01"]), FieldType::String);
        assert_eq!(column("t", &["2026-01-31T10:00:00Z"]), FieldType::Timestamp);
        assert_eq!(
            column("t", &["2026-01-31", "2026-01-31T10:00:00Z"]),
            FieldType::String
        );
        assert_eq!(column("j", &["{\"a\":1}", "[1]"]), FieldType::Json);
        assert_eq!(column("s", &["1", "x"]), FieldType::String);
        assert_eq!(column("e", &["", ""]), FieldType::String);
    }

    #[test]
    fn a_csv_column_named_twice_is_two_fields() {
        let dir = std::env::temp_dir().join(format!("sluice-infer-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("twice.csv");
        std::fs::write(&file, "a,A,b\n1,x,true\n").unwrap();
        let proposal = propose(&file, None, 10).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let fields: Vec<(&str, &str)> = proposal
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.ty.as_str()))
            .collect();
        assert_eq!(
            fields,
            [("a", "integer"), ("A_2", "string"), ("b", "boolean")]
        );
        assert!(
            proposal
                .notes
                .iter()
                .any(|n| n.contains("\"A\" is named twice"))
        );
    }

    #[test]
    fn invalid_names_are_mended_and_kept_unique() {
        let mut taken = HashMap::new();
        assert_eq!(field_name("ok_name", &mut taken), "ok_name");
        assert_eq!(
            field_name("Net Generation (MWh)", &mut taken),
            "Net_Generation__MWh"
        );
        assert_eq!(field_name("2nd", &mut taken), "f_2nd");
        assert_eq!(field_name("_id", &mut taken), "id");
        assert_eq!(field_name("ID", &mut taken), "ID_2");
        assert_eq!(field_name("xmin", &mut taken), "f_xmin");
    }

    #[test]
    fn json_records_keep_member_order_and_say_where_they_break() {
        let members = parse_object(b"{\"b\": 1.50, \"a\": null}").unwrap();
        let names: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(members[0].1.get(), "1.50");
        let (line, column, message) = parse_object(b"{\n\"a\": tru}").unwrap_err();
        assert_eq!((line, column), (2, 9), "{message}");
        assert_eq!(
            parse_object(b"[1]").unwrap_err().2,
            "a record must be a JSON object"
        );
    }
}
