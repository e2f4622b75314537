//! Connector-level settings: its name and the policy for unknown fields.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, ProblemCode};

/// A connector name: 1 to 100 characters, no control characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ConnectorName(String);

impl ConnectorName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(name: &str) -> Result<ConnectorName, Problem> {
        let chars = name.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(Problem::new(
                ProblemCode::InvalidConnectorName,
                "name",
                format!(
                    "name must be 1 to {} characters, got {chars}",
                    Self::MAX_CHARS
                ),
            ));
        }
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(Problem::new(
                ProblemCode::InvalidConnectorName,
                "name",
                "name must not be blank or hold control characters",
            ));
        }
        Ok(ConnectorName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ConnectorName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConnectorName::parse(&s).map_err(|p| serde::de::Error::custom(p.message))
    }
}

impl fmt::Display for ConnectorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to do with a record's fields that the schema does not name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraFields {
    #[default]
    Reject,
    Ignore,
}

impl ExtraFields {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtraFields::Reject => "reject",
            ExtraFields::Ignore => "ignore",
        }
    }

    pub fn parse(s: &str) -> Result<ExtraFields, Problem> {
        match s {
            "reject" => Ok(ExtraFields::Reject),
            "ignore" => Ok(ExtraFields::Ignore),
            other => Err(Problem::new(
                ProblemCode::InvalidExtraFields,
                "extra_fields",
                format!("extra_fields must be \"reject\" or \"ignore\", got {other:?}"),
            )),
        }
    }
}

/// Descriptions (of connectors and fields) are kept verbatim up to this size.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// Checks a description of a connector or a field, kept verbatim: at most
/// [`MAX_DESCRIPTION_CHARS`] characters, and no NUL character, which
/// PostgreSQL's `text` and `jsonb` cannot store. `path` locates it in the
/// request for the problem.
pub fn check_description(description: &str, path: &str) -> Result<(), Problem> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Problem::new(
            ProblemCode::DescriptionTooLong,
            path,
            format!("a description has at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if description.contains('\0') {
        return Err(Problem::new(
            ProblemCode::InvalidDescription,
            path,
            "a description may not hold the NUL character (U+0000), which PostgreSQL cannot store",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_bounded_and_storable() {
        assert!(check_description("", "description").is_ok());
        assert!(check_description(&"é".repeat(MAX_DESCRIPTION_CHARS), "description").is_ok());
        let long = check_description(&"x".repeat(MAX_DESCRIPTION_CHARS + 1), "description");
        assert_eq!(long.unwrap_err().code, ProblemCode::DescriptionTooLong);
        let nul = check_description("a\0b", "fields[3].description").unwrap_err();
        assert_eq!(nul.code, ProblemCode::InvalidDescription);
        assert_eq!(nul.field, "fields[3].description");
        // Other control characters are text PostgreSQL stores as it is.
        assert!(check_description("line\nline\ttab", "description").is_ok());
    }
}
