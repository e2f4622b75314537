//! Problems found in a connector definition sent by an operator.

use std::fmt;

use serde::Serialize;

/// Stable, snake_case codes of definition problems; clients may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    InvalidConnectorName,
    InvalidFieldName,
    ReservedFieldName,
    DuplicateFieldName,
    UnknownFieldType,
    TooFewFields,
    TooManyFields,
    DescriptionTooLong,
    InvalidDescription,
    UnknownPreviousName,
    DuplicatePreviousName,
    InvalidExtraFields,
    InvalidRetention,
    InvalidLimit,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::InvalidConnectorName => "invalid_connector_name",
            ProblemCode::InvalidFieldName => "invalid_field_name",
            ProblemCode::ReservedFieldName => "reserved_field_name",
            ProblemCode::DuplicateFieldName => "duplicate_field_name",
            ProblemCode::UnknownFieldType => "unknown_field_type",
            ProblemCode::TooFewFields => "too_few_fields",
            ProblemCode::TooManyFields => "too_many_fields",
            ProblemCode::DescriptionTooLong => "description_too_long",
            ProblemCode::InvalidDescription => "invalid_description",
            ProblemCode::UnknownPreviousName => "unknown_previous_name",
            ProblemCode::DuplicatePreviousName => "duplicate_previous_name",
            ProblemCode::InvalidExtraFields => "invalid_extra_fields",
            ProblemCode::InvalidRetention => "invalid_retention",
            ProblemCode::InvalidLimit => "invalid_limit",
        }
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem of a definition: where it is (a JSON path such as
/// `fields[2].name`), its code, and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: ProblemCode,
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(code: ProblemCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            code,
            field: field.into(),
            message: message.into(),
        }
    }
}
