//! What a GET asks for: the query string of SPEC 8 decoded and checked for
//! everything that does not depend on the connector's schema, one small
//! function per parameter. Filters are kept as given; `plan` reads their
//! values by their fields' types.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use sluice_schema::snippet;

use crate::error::ReadError;

pub(crate) const DEFAULT_LIMIT: i64 = 100;
pub(crate) const MAX_LIMIT: i64 = 10_000;
pub(crate) const MAX_WAIT_SECS: u64 = 30;
/// Most filters one GET may combine: each becomes a condition and usually a
/// bound parameter, and PostgreSQL takes at most 65 535 of those in one
/// statement; a hundred is more than any real query needs.
pub(crate) const MAX_FILTERS: usize = 100;

/// Parameters with a meaning of their own; any other name is a filter.
pub(crate) const RESERVED: [&str; 5] = ["limit", "cursor", "fields", "format", "wait"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Json,
    Ndjson,
    Csv,
}

impl OutputFormat {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    fn parse(value: &str) -> Option<OutputFormat> {
        match value {
            "json" => Some(OutputFormat::Json),
            "ndjson" => Some(OutputFormat::Ndjson),
            "csv" => Some(OutputFormat::Csv),
            _ => None,
        }
    }

    /// The first media type of `Accept` that names one of ours; anything
    /// else (`*/*`, `text/html`, nothing) gets JSON rather than a 406.
    fn from_accept(accept: &str) -> OutputFormat {
        accept
            .split(',')
            .filter_map(|item| {
                let media = item.split(';').next().unwrap_or_default().trim();
                match media.to_ascii_lowercase().as_str() {
                    "application/json" => Some(OutputFormat::Json),
                    "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                        Some(OutputFormat::Ndjson)
                    }
                    "text/csv" => Some(OutputFormat::Csv),
                    _ => None,
                }
            })
            .next()
            .unwrap_or(OutputFormat::Json)
    }
}

/// The two id spaces that cursors walk. A cursor carries its kind, so a
/// cursor of `/rejected` given to `/records` is refused rather than misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorKind {
    Records,
    Rejected,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Records => "r",
            CursorKind::Rejected => "j",
        }
    }
}

/// A position in a connector's records: every `_id` up to and including
/// `after` has been handed out. Opaque to clients: base64url of `r:<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordCursor {
    pub kind: CursorKind,
    pub after: i64,
}

impl RecordCursor {
    pub(crate) fn start(kind: CursorKind) -> RecordCursor {
        RecordCursor { kind, after: 0 }
    }

    pub(crate) fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.kind.tag(), self.after))
    }

    pub(crate) fn decode(kind: CursorKind, text: &str) -> Option<RecordCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (tag, id) = text.split_once(':')?;
        let after: i64 = id.parse().ok()?;
        (tag == kind.tag() && after >= 0).then_some(RecordCursor { kind, after })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    IsNull,
    NotNull,
}

impl FilterOp {
    /// Splits `op.value`; `is.null` and `not.null` take no value.
    pub(crate) fn parse(text: &str) -> Option<(FilterOp, Option<&str>)> {
        match text {
            "is.null" => return Some((FilterOp::IsNull, None)),
            "not.null" => return Some((FilterOp::NotNull, None)),
            _ => {}
        }
        let (op, value) = text.split_once('.')?;
        let op = match op {
            "eq" => FilterOp::Eq,
            "neq" => FilterOp::Neq,
            "gt" => FilterOp::Gt,
            "gte" => FilterOp::Gte,
            "lt" => FilterOp::Lt,
            "lte" => FilterOp::Lte,
            _ => return None,
        };
        Some((op, Some(value)))
    }
}

/// A filter as the query string gave it, before the schema is known.
#[derive(Debug, Clone)]
pub(crate) struct RawFilter {
    pub field: String,
    pub op: FilterOp,
    pub value: Option<String>,
}

/// The parameters of one GET, checked for everything that does not depend
/// on the connector's schema.
#[derive(Debug, Clone)]
pub(crate) struct PageParams {
    pub limit: i64,
    pub cursor: RecordCursor,
    pub wait: Duration,
    pub format: OutputFormat,
    pub fields: Option<Vec<String>>,
    pub filters: Vec<RawFilter>,
}

impl PageParams {
    pub(crate) fn parse(
        kind: CursorKind,
        pairs: &[(String, String)],
        accept: Option<&str>,
    ) -> Result<PageParams, ReadError> {
        let mut params = PageParams {
            limit: DEFAULT_LIMIT,
            cursor: RecordCursor::start(kind),
            wait: Duration::ZERO,
            format: accept.map_or(OutputFormat::Json, OutputFormat::from_accept),
            fields: None,
            filters: Vec::new(),
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            // A field may be called `limit` or `format`: a value shaped like
            // `op.value` is then a filter on it, since no value of those
            // parameters reads that way (cursors are base64url, fields are
            // names, the rest are numbers or words).
            let reserved = RESERVED.contains(&name.as_str()) && FilterOp::parse(value).is_none();
            if !reserved {
                let filter = filter(name, value)?;
                if params.filters.len() == MAX_FILTERS {
                    return Err(ReadError::bad_parameter(
                        "too_many_filters",
                        name,
                        format!("at most {MAX_FILTERS} filters can be combined in one request"),
                    ));
                }
                params.filters.push(filter);
                continue;
            }
            if seen.contains(&name.as_str()) {
                return Err(ReadError::bad_parameter(
                    "duplicate_parameter",
                    name,
                    format!("parameter {name:?} is given more than once"),
                ));
            }
            seen.push(name);
            match name.as_str() {
                "limit" => params.limit = limit(value)?,
                "cursor" => params.cursor = cursor(kind, value)?,
                "wait" => params.wait = wait(value)?,
                "format" => params.format = output_format(value)?,
                "fields" => params.fields = Some(fields(value)?),
                _ => unreachable!("every reserved name is handled above"),
            }
        }
        Ok(params)
    }
}

/// `name=op.value`, or `name=is.null` / `name=not.null`.
fn filter(name: &str, value: &str) -> Result<RawFilter, ReadError> {
    let (op, operand) = FilterOp::parse(value).ok_or_else(|| {
        ReadError::bad_parameter(
            "invalid_filter",
            name,
            format!(
                "filter {name:?} must read op.value with op one of eq, neq, gt, gte, lt, lte, or be is.null or not.null; got {:?}",
                snippet(value)
            ),
        )
    })?;
    Ok(RawFilter {
        field: name.to_owned(),
        op,
        value: operand.map(str::to_owned),
    })
}

fn limit(value: &str) -> Result<i64, ReadError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ReadError::bad_parameter(
                "invalid_limit",
                "limit",
                format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}; got {:?}",
                    snippet(value)
                ),
            )
        })
}

/// An empty cursor is the start, like no cursor.
fn cursor(kind: CursorKind, value: &str) -> Result<RecordCursor, ReadError> {
    if value.is_empty() {
        return Ok(RecordCursor::start(kind));
    }
    RecordCursor::decode(kind, value).ok_or_else(|| {
        ReadError::bad_parameter(
            "invalid_cursor",
            "cursor",
            "cursor is not one this endpoint handed out; use the next_cursor of a previous page, or omit it to start from the beginning",
        )
    })
}

fn wait(value: &str) -> Result<Duration, ReadError> {
    let secs = value
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_WAIT_SECS)
        .ok_or_else(|| {
            ReadError::bad_parameter(
                "invalid_wait",
                "wait",
                format!(
                    "wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}; got {:?}",
                    snippet(value)
                ),
            )
        })?;
    Ok(Duration::from_secs(secs))
}

fn output_format(value: &str) -> Result<OutputFormat, ReadError> {
    OutputFormat::parse(value).ok_or_else(|| {
        ReadError::bad_parameter(
            "invalid_format",
            "format",
            format!(
                "format must be json, ndjson or csv; got {:?}",
                snippet(value)
            ),
        )
    })
}

/// Comma-separated names; blanks around them are dropped.
fn fields(value: &str) -> Result<Vec<String>, ReadError> {
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(ReadError::bad_parameter(
            "invalid_fields",
            "fields",
            "fields must name at least one field, separated by commas",
        ));
    }
    Ok(names)
}

/// The name and value pairs of a query string, decoded as HTML forms
/// encode them (`+` is a space, `%XX` a byte). A name or value that is not
/// UTF-8 once decoded is refused: decoding it lossily would filter on a
/// value that nobody sent.
pub(crate) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ReadError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name);
            let value = percent_decode(value);
            match (String::from_utf8(name), String::from_utf8(value)) {
                (Ok(name), Ok(value)) => Ok((name, value)),
                (name, _) => {
                    let name = name.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    Err(ReadError::bad_parameter(
                        "invalid_query",
                        snippet(&name),
                        format!(
                            "query parameter {:?} is not UTF-8 once percent-decoded; send text as percent-encoded UTF-8",
                            snippet(&name)
                        ),
                    ))
                }
            }
        })
        .collect()
}

/// `+` as a space and `%XX` as its byte; a `%` without two hex digits after
/// it stays as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |at: usize| b.get(at).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn code(error: ReadError) -> &'static str {
        match error {
            ReadError::BadParameter { code, .. } => code,
            other => panic!("expected a bad parameter, got {other:?}"),
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let cursor = RecordCursor {
            kind: CursorKind::Records,
            after: 42,
        };
        assert_eq!(
            RecordCursor::decode(CursorKind::Records, &cursor.encode()),
            Some(cursor)
        );
        assert_eq!(
            RecordCursor::decode(CursorKind::Rejected, &cursor.encode()),
            None
        );
        for bad in [
            "",
            "42",
            "!!",
            &URL_SAFE_NO_PAD.encode("r:-1"),
            &URL_SAFE_NO_PAD.encode("r:x"),
        ] {
            assert_eq!(
                RecordCursor::decode(CursorKind::Records, bad),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn parameters_are_checked_and_filters_collected() {
        let p = PageParams::parse(
            CursorKind::Records,
            &pairs(&[
                ("limit", "5"),
                ("age", "gt.3"),
                ("name", "is.null"),
                ("limit", "eq.2"),
            ]),
            Some("text/csv"),
        )
        .unwrap();
        assert_eq!(p.limit, 5);
        assert_eq!(p.format, OutputFormat::Csv);
        // `limit=eq.2` filters a field named limit.
        assert_eq!(p.filters.len(), 3);
        assert_eq!(p.filters[1].op, FilterOp::IsNull);
        assert_eq!(p.filters[2].field, "limit");

        let bad = |items: &[(&str, &str)]| {
            code(PageParams::parse(CursorKind::Records, &pairs(items), None).unwrap_err())
        };
        assert_eq!(bad(&[("limit", "0")]), "invalid_limit");
        assert_eq!(bad(&[("limit", "10001")]), "invalid_limit");
        assert_eq!(bad(&[("limit", "x")]), "invalid_limit");
        assert_eq!(bad(&[("cursor", "nope")]), "invalid_cursor");
        assert_eq!(bad(&[("wait", "31")]), "invalid_wait");
        assert_eq!(bad(&[("format", "xml")]), "invalid_format");
        assert_eq!(bad(&[("age", "between.1")]), "invalid_filter");
        assert_eq!(bad(&[("age", "5")]), "invalid_filter");
        assert_eq!(
            bad(&[("limit", "1"), ("limit", "2")]),
            "duplicate_parameter"
        );
    }

    #[test]
    fn query_strings_decode_as_forms_and_refuse_what_is_not_utf8() {
        assert_eq!(
            query_pairs("a=eq.x+y%2B1&&b&c=%C3%A9%2&=v").unwrap(),
            pairs(&[("a", "eq.x y+1"), ("b", ""), ("c", "é%2"), ("", "v")])
        );
        assert_eq!(query_pairs("").unwrap(), pairs(&[]));
        for bad in ["s=eq.%FF", "%FF=eq.1", "s=eq.%C3", "s=eq.%ED%A0%80"] {
            assert_eq!(
                code(query_pairs(bad).unwrap_err()),
                "invalid_query",
                "{bad}"
            );
        }
    }

    #[test]
    fn filters_are_bounded_in_number() {
        let many: Vec<(String, String)> = (0..=MAX_FILTERS)
            .map(|_| ("n".to_owned(), "eq.1".to_owned()))
            .collect();
        let error = PageParams::parse(CursorKind::Records, &many, None).unwrap_err();
        assert_eq!(code(error), "too_many_filters");
        let params = PageParams::parse(CursorKind::Records, &many[..MAX_FILTERS], None).unwrap();
        assert_eq!(params.filters.len(), MAX_FILTERS);
    }
}
