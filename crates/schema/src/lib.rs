//! Sluice's domain, shared by every service and the CLI.
//!
//! This crate owns what a connector's schema is and what a valid record is:
//! the eight field types, field and connector names, schemas and their edits,
//! record validation straight from request bytes (JSON, NDJSON, CSV) into one
//! normalised form, and the JSON Schema export of a record.
//!
//! It must never do I/O: no HTTP, no database, no message bus. Everything here
//! is plain data and functions, so that it can be tested in isolation and used
//! wherever a schema needs checking.

pub mod change;
pub mod connector;
pub mod duration;
pub mod field;
pub mod json_schema;
pub mod limits;
pub mod problem;
pub mod record;
pub mod schema;

pub use change::{ChangeError, ChangeStep, Conversion, IncompatibleChange, SchemaChange};
pub use compact_str::CompactString;
pub use connector::{ConnectorName, ExtraFields, MAX_DESCRIPTION_CHARS, check_description};
pub use duration::{Retention, format_duration, parse_duration};
pub use field::{Field, FieldId, FieldName, FieldType};
pub use limits::RateLimits;
pub use problem::{Problem, ProblemCode};
pub use record::{
    DecimalParts, Format, NamedRecord, Record, RecordError, RecordErrorCode, Rejected, Revalidated,
    SyntaxError, Validation, Value, ValueError, parse_value, revalidate, snippet, validate,
    validate_with,
};
pub use schema::{FieldSpec, Schema};
