//! Schemas: the validated list of a connector's fields.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::connector::check_description;
use crate::field::{Field, FieldId, FieldName, FieldType};
use crate::problem::{Problem, ProblemCode};

/// A field as an operator sends it. Nothing about it is trusted yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Set on an edit to rename a field while keeping its values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_name: Option<String>,
}

/// 1 to 500 fields with valid names, unique ignoring case. A `Schema` that
/// exists is valid: the only ways to get one are [`Schema::define`] and
/// [`Schema::change`](crate::change), and deserialising one that was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    fields: Vec<Field>,
    /// Ids are never reused, so that a record in flight under an older version
    /// cannot land in a field that was removed and added again.
    next_field_id: u32,
}

impl Schema {
    pub const MAX_FIELDS: usize = 500;

    /// Builds the schema of a new connector, reporting every problem found.
    pub fn define(specs: &[FieldSpec]) -> Result<Schema, Vec<Problem>> {
        let mut problems = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if spec.previous_name.is_some() {
                problems.push(Problem::new(
                    ProblemCode::UnknownPreviousName,
                    format!("fields[{i}].previous_name"),
                    "previous_name only applies when editing an existing connector",
                ));
            }
        }
        let parsed = parse_specs(specs, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let fields: Vec<Field> = parsed
            .into_iter()
            .zip(1..)
            .map(|(p, id)| p.into_field(FieldId(id)))
            .collect();
        let next_field_id = fields.len() as u32 + 1;
        Ok(Schema {
            fields,
            next_field_id,
        })
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn field_by_id(&self, id: FieldId) -> Option<&Field> {
        self.fields.iter().find(|f| f.id == id)
    }

    /// Finds a field by exact name, as records and filters name it.
    pub fn field_by_name(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name.as_str() == name)
    }

    pub(crate) fn from_parts(fields: Vec<Field>, next_field_id: u32) -> Schema {
        Schema {
            fields,
            next_field_id,
        }
    }

    pub(crate) fn next_field_id(&self) -> u32 {
        self.next_field_id
    }
}

/// A spec whose own parts are valid; ids are assigned by the caller.
pub(crate) struct ParsedSpec {
    pub name: FieldName,
    pub ty: FieldType,
    pub nullable: bool,
    pub description: Option<String>,
    pub previous_name: Option<String>,
}

impl ParsedSpec {
    pub(crate) fn into_field(self, id: FieldId) -> Field {
        Field {
            id,
            name: self.name,
            ty: self.ty,
            nullable: self.nullable,
            description: self.description,
        }
    }
}

/// Checks each spec and the list as a whole; pushes every problem found.
pub(crate) fn parse_specs(specs: &[FieldSpec], problems: &mut Vec<Problem>) -> Vec<ParsedSpec> {
    if specs.is_empty() {
        problems.push(Problem::new(
            ProblemCode::TooFewFields,
            "fields",
            "a connector needs at least one field",
        ));
    }
    if specs.len() > Schema::MAX_FIELDS {
        problems.push(Problem::new(
            ProblemCode::TooManyFields,
            "fields",
            format!(
                "a connector has at most {} fields, got {}",
                Schema::MAX_FIELDS,
                specs.len()
            ),
        ));
        // Checking thousands of fields one by one would only bury that problem.
        return Vec::new();
    }

    let mut parsed = Vec::with_capacity(specs.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let name = FieldName::parse(&spec.name, &format!("fields[{i}].name"));
        let ty = FieldType::parse(&spec.ty).ok_or_else(|| {
            Problem::new(
                ProblemCode::UnknownFieldType,
                format!("fields[{i}].type"),
                format!(
                    "unknown type {:?}; expected one of string, integer, number, decimal, boolean, date, timestamp, json",
                    spec.ty
                ),
            )
        });
        if let Some(description) = &spec.description
            && let Err(problem) =
                check_description(description, &format!("fields[{i}].description"))
        {
            problems.push(problem);
        }
        if let Ok(name) = &name
            && let Some(first) = seen.insert(name.folded(), i)
        {
            problems.push(Problem::new(
                ProblemCode::DuplicateFieldName,
                format!("fields[{i}].name"),
                format!(
                    "field name {:?} is already used by fields[{first}] (names are unique ignoring case)",
                    spec.name
                ),
            ));
        }
        match (name, ty) {
            (Ok(name), Ok(ty)) => parsed.push(ParsedSpec {
                name,
                ty,
                nullable: spec.nullable,
                description: spec.description.clone(),
                previous_name: spec.previous_name.clone(),
            }),
            (name, ty) => problems.extend(name.err().into_iter().chain(ty.err())),
        }
    }
    parsed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A required field, as a request would name it (also used by the
    /// schema change tests).
    pub(crate) fn spec(name: &str, ty: &str) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            ty: ty.into(),
            nullable: false,
            description: None,
            previous_name: None,
        }
    }

    fn codes(problems: &[Problem]) -> Vec<ProblemCode> {
        problems.iter().map(|p| p.code).collect()
    }

    #[test]
    fn a_valid_schema_numbers_its_fields_from_one() {
        let schema = Schema::define(&[spec("email", "string"), spec("age", "integer")]).unwrap();
        let ids: Vec<u32> = schema.fields().iter().map(|f| f.id.0).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(schema.fields()[1].ty, FieldType::Integer);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = Schema::define(&[
            spec("1bad", "string"),
            spec("_id", "string"),
            spec("Email", "string"),
            spec("email", "strin"),
            spec("eMail", "integer"),
        ])
        .unwrap_err();
        assert_eq!(
            codes(&problems),
            [
                ProblemCode::InvalidFieldName,
                ProblemCode::ReservedFieldName,
                ProblemCode::DuplicateFieldName,
                ProblemCode::UnknownFieldType,
                ProblemCode::DuplicateFieldName,
            ]
        );
        assert_eq!(problems[3].field, "fields[3].type");
    }

    #[test]
    fn field_count_is_bounded() {
        assert_eq!(
            codes(&Schema::define(&[]).unwrap_err()),
            [ProblemCode::TooFewFields]
        );
        let many: Vec<FieldSpec> = (0..501).map(|i| spec(&format!("f{i}"), "json")).collect();
        assert_eq!(
            codes(&Schema::define(&many).unwrap_err()),
            [ProblemCode::TooManyFields]
        );
        assert!(Schema::define(&many[..500]).is_ok());
    }

    #[test]
    fn names_fit_postgres_identifiers() {
        let longest = format!("a{}", "b".repeat(62));
        assert!(FieldName::parse(&longest, "x").is_ok());
        assert!(FieldName::parse(&format!("{longest}c"), "x").is_err());
        for bad in ["", "a-b", "a b", "é", "a\"b", "a;drop table x"] {
            assert!(FieldName::parse(bad, "x").is_err(), "{bad:?}");
        }
    }
}
