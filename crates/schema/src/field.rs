//! Fields: their names, types and the stable ids that survive renames.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, ProblemCode};

/// The eight field types of SPEC section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Decimal,
    Boolean,
    Date,
    Timestamp,
    Json,
}

impl FieldType {
    pub const ALL: [FieldType; 8] = [
        FieldType::String,
        FieldType::Integer,
        FieldType::Number,
        FieldType::Decimal,
        FieldType::Boolean,
        FieldType::Date,
        FieldType::Timestamp,
        FieldType::Json,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Timestamp => "timestamp",
            FieldType::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<FieldType> {
        FieldType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field name that matches `^[A-Za-z][A-Za-z0-9_]{0,62}$`: it fits a
/// PostgreSQL identifier (63 bytes), never starts with the `_` that Sluice's
/// system fields use, and is none of PostgreSQL's own system columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FieldName(String);

impl FieldName {
    pub const MAX_LEN: usize = 63;

    /// The system columns every PostgreSQL table has: a user column cannot
    /// take their names (in any case, since names fold to lower case for
    /// uniqueness), so creating a records table with one would fail.
    pub const POSTGRES_SYSTEM_COLUMNS: [&str; 6] =
        ["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

    /// Checks `name`; `path` locates it in the request for the problem.
    pub fn parse(name: &str, path: &str) -> Result<FieldName, Problem> {
        if name.starts_with('_') {
            return Err(Problem::new(
                ProblemCode::ReservedFieldName,
                path,
                format!("field name {name:?} starts with '_', which is reserved for system fields"),
            ));
        }
        let mut chars = name.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= Self::MAX_LEN;
        if valid
            && let Some(system) = Self::POSTGRES_SYSTEM_COLUMNS
                .iter()
                .find(|system| name.eq_ignore_ascii_case(system))
        {
            return Err(Problem::new(
                ProblemCode::ReservedFieldName,
                path,
                format!(
                    "field name {name:?} is reserved: {system} is a system column of every PostgreSQL table"
                ),
            ));
        }
        if valid {
            Ok(FieldName(name.to_owned()))
        } else {
            Err(Problem::new(
                ProblemCode::InvalidFieldName,
                path,
                format!(
                    "field name {name:?} must start with a letter, hold only letters, digits and '_', and be at most {} characters",
                    Self::MAX_LEN
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which names are unique: field names ignore case.
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FieldName::parse(&s, "name").map_err(|p| serde::de::Error::custom(p.message))
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for FieldName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A field's identity inside its connector. It is assigned when the field is
/// added and kept across renames and type changes, so that a record published
/// under an older schema version can still be matched to the current columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldId(pub u32);

/// One field of a schema, valid by construction (see [`crate::Schema`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub id: FieldId,
    pub name: FieldName,
    #[serde(rename = "type")]
    pub ty: FieldType,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresql_system_columns_are_no_field_names() {
        for name in ["ctid", "xmin", "XMAX", "cMin", "cmax", "TableOid"] {
            let problem = FieldName::parse(name, "fields[0].name").unwrap_err();
            assert_eq!(problem.code, ProblemCode::ReservedFieldName, "{name}");
            assert_eq!(problem.field, "fields[0].name");
            assert!(problem.message.contains("system column"), "{name}");
        }
        // Only the names themselves: longer names that hold them are fine.
        for name in ["ctid2", "xmin_at", "oid", "tableoids"] {
            assert!(FieldName::parse(name, "name").is_ok(), "{name}");
        }
    }
}
