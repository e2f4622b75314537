//! Schema edits: what changes between two versions, and whether it may.
//!
//! An edit sends the full new field list; a field is the same field as before
//! when it keeps its name or names the old one in `previous_name`. The result
//! is the new [`Schema`] plus the steps that the stored data must go through.

use serde::Serialize;

use crate::field::{Field, FieldId, FieldName, FieldType};
use crate::problem::{Problem, ProblemCode};
use crate::schema::{FieldSpec, Schema, parse_specs};

/// How stored values of a field are converted when its type changes. Each of
/// these is lossless for every value, except `IntegerToNumber` for integers
/// beyond ±2^53, which the caller must check against the stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    IntegerToNumber,
    IntegerToDecimal,
    ToString,
    DateToTimestamp,
    ToJson,
}

impl Conversion {
    /// The conversion SPEC section 5 allows from `from` to `to`, if any.
    pub fn between(from: FieldType, to: FieldType) -> Option<Conversion> {
        use FieldType::*;
        match (from, to) {
            (Integer, Number) => Some(Conversion::IntegerToNumber),
            (Integer, Decimal) => Some(Conversion::IntegerToDecimal),
            (Integer | Number | Decimal | Boolean | Date | Timestamp, String) => {
                Some(Conversion::ToString)
            }
            (Date, Timestamp) => Some(Conversion::DateToTimestamp),
            (_, Json) => Some(Conversion::ToJson),
            _ => None,
        }
    }

    /// Integers beyond this magnitude do not survive the trip through `f64`.
    pub const MAX_EXACT_INTEGER_IN_NUMBER: i64 = 1 << 53;
}

/// One step the stored data goes through. Steps are listed removals first,
/// then renames, type changes (named by the field's new name) and additions.
/// Renames may form chains or swaps (`a`→`b`, `b`→`a`): whoever applies them
/// one by one must go through temporary names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ChangeStep {
    Remove {
        field: Field,
    },
    Rename {
        id: FieldId,
        from: FieldName,
        to: FieldName,
    },
    ChangeType {
        id: FieldId,
        /// The field's name after the edit.
        name: FieldName,
        from: FieldType,
        to: FieldType,
        conversion: Conversion,
    },
    Add {
        field: Field,
    },
}

/// A type change that SPEC section 5 does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncompatibleChange {
    pub field: String,
    pub from: FieldType,
    pub to: FieldType,
    pub message: String,
}

impl IncompatibleChange {
    pub fn new(field: &str, from: FieldType, to: FieldType, why: &str) -> Self {
        IncompatibleChange {
            field: field.to_owned(),
            from,
            to,
            message: format!("field {field:?} cannot change from {from} to {to}: {why}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The new field list is not a valid schema (422).
    #[error("the new schema is invalid")]
    Invalid(Vec<Problem>),
    /// Valid, but some type changes are not allowed (409).
    #[error("the schema change is incompatible")]
    Incompatible(Vec<IncompatibleChange>),
}

/// An allowed edit: the schema after it, and what the data must go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    pub schema: Schema,
    pub steps: Vec<ChangeStep>,
}

impl SchemaChange {
    /// Whether anything about the fields changed at all (nullability and
    /// descriptions included); an edit that changes nothing keeps its version.
    pub fn is_noop(&self, before: &Schema) -> bool {
        self.schema == *before
    }
}

impl Schema {
    /// Plans replacing this schema's fields with `specs`.
    pub fn change(&self, specs: &[FieldSpec]) -> Result<SchemaChange, ChangeError> {
        let mut problems = Vec::new();
        let parsed = parse_specs(specs, &mut problems);
        if !problems.is_empty() {
            return Err(ChangeError::Invalid(problems));
        }

        // Match each new field to the old one it continues, if any.
        let mut claimed: Vec<Option<usize>> = vec![None; self.fields().len()];
        let mut matches: Vec<Option<&Field>> = Vec::with_capacity(parsed.len());
        for (i, spec) in parsed.iter().enumerate() {
            let old_name = spec.previous_name.as_deref().unwrap_or(spec.name.as_str());
            let old = self
                .fields()
                .iter()
                .position(|f| f.name.as_str() == old_name);
            match (old, &spec.previous_name) {
                (None, Some(prev)) => problems.push(Problem::new(
                    ProblemCode::UnknownPreviousName,
                    format!("fields[{i}].previous_name"),
                    format!("there is no field named {prev:?} to rename"),
                )),
                (Some(o), _) if claimed[o].is_some() => {
                    problems.push(Problem::new(
                        ProblemCode::DuplicatePreviousName,
                        format!("fields[{i}]"),
                        format!(
                            "field {old_name:?} is already continued by fields[{}]",
                            claimed[o].unwrap_or_default()
                        ),
                    ));
                }
                (Some(o), _) => claimed[o] = Some(i),
                (None, None) => {}
            }
            matches.push(
                old.filter(|&o| claimed[o] == Some(i))
                    .map(|o| &self.fields()[o]),
            );
        }
        if !problems.is_empty() {
            return Err(ChangeError::Invalid(problems));
        }

        let mut incompatible = Vec::new();
        let mut removals = Vec::new();
        let mut renames = Vec::new();
        let mut type_changes = Vec::new();
        let mut additions = Vec::new();
        let mut next_id = self.next_field_id();
        let mut fields = Vec::with_capacity(parsed.len());

        for (o, field) in self.fields().iter().enumerate() {
            if claimed[o].is_none() {
                removals.push(ChangeStep::Remove {
                    field: field.clone(),
                });
            }
        }
        for (spec, old) in parsed.into_iter().zip(matches) {
            let Some(old) = old else {
                let field = spec.into_field(FieldId(next_id));
                next_id += 1;
                additions.push(ChangeStep::Add {
                    field: field.clone(),
                });
                fields.push(field);
                continue;
            };
            let field = spec.into_field(old.id);
            if field.name != old.name {
                renames.push(ChangeStep::Rename {
                    id: old.id,
                    from: old.name.clone(),
                    to: field.name.clone(),
                });
            }
            if field.ty != old.ty {
                match Conversion::between(old.ty, field.ty) {
                    Some(conversion) => type_changes.push(ChangeStep::ChangeType {
                        id: old.id,
                        name: field.name.clone(),
                        from: old.ty,
                        to: field.ty,
                        conversion,
                    }),
                    None => incompatible.push(IncompatibleChange::new(
                        field.name.as_str(),
                        old.ty,
                        field.ty,
                        "SPEC allows no such conversion",
                    )),
                }
            }
            fields.push(field);
        }
        if !incompatible.is_empty() {
            return Err(ChangeError::Incompatible(incompatible));
        }

        let mut steps = removals;
        steps.extend(renames);
        steps.extend(type_changes);
        steps.extend(additions);
        Ok(SchemaChange {
            schema: Schema::from_parts(fields, next_id),
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::spec;

    fn renamed(name: &str, ty: &str, previous: &str) -> FieldSpec {
        FieldSpec {
            previous_name: Some(previous.into()),
            ..spec(name, ty)
        }
    }

    fn base() -> Schema {
        Schema::define(&[
            spec("id", "integer"),
            spec("day", "date"),
            spec("note", "string"),
        ])
        .unwrap()
    }

    #[test]
    fn add_remove_rename_and_widen_in_one_edit() {
        let change = base()
            .change(&[
                renamed("key", "number", "id"),
                spec("day", "timestamp"),
                spec("extra", "json"),
            ])
            .unwrap();
        let ids: Vec<u32> = change.schema.fields().iter().map(|f| f.id.0).collect();
        assert_eq!(
            ids,
            [1, 2, 4],
            "kept fields keep their ids, new ones never reuse"
        );
        assert!(
            matches!(&change.steps[0], ChangeStep::Remove { field } if field.name.as_str() == "note")
        );
        assert!(
            matches!(&change.steps[1], ChangeStep::Rename { from, to, .. } if from.as_str() == "id" && to.as_str() == "key")
        );
        assert!(matches!(
            change.steps[2],
            ChangeStep::ChangeType {
                conversion: Conversion::IntegerToNumber,
                ..
            }
        ));
        assert!(matches!(
            change.steps[3],
            ChangeStep::ChangeType {
                conversion: Conversion::DateToTimestamp,
                ..
            }
        ));
        assert!(matches!(&change.steps[4], ChangeStep::Add { field } if field.id == FieldId(4)));
    }

    #[test]
    fn narrowing_is_incompatible_and_names_field_and_types() {
        let err = base()
            .change(&[
                spec("id", "string"),
                spec("day", "integer"),
                spec("note", "date"),
            ])
            .unwrap_err();
        let ChangeError::Incompatible(list) = err else {
            panic!("expected incompatible, got {err:?}")
        };
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].field.as_str(), list[0].from, list[0].to),
            ("day", FieldType::Date, FieldType::Integer)
        );
        assert!(list[1].message.contains("string") && list[1].message.contains("date"));
    }

    #[test]
    fn every_allowed_conversion_is_listed_and_nothing_else() {
        use FieldType::*;
        let allowed = [
            (Integer, Number),
            (Integer, Decimal),
            (Integer, String),
            (Number, String),
            (Decimal, String),
            (Boolean, String),
            (Date, String),
            (Timestamp, String),
            (Date, Timestamp),
        ];
        for from in FieldType::ALL {
            for to in FieldType::ALL {
                if from == to {
                    continue;
                }
                let expected = allowed.contains(&(from, to)) || to == Json;
                assert_eq!(
                    Conversion::between(from, to).is_some(),
                    expected,
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn swaps_are_allowed_and_rename_problems_reported() {
        let change = base()
            .change(&[
                renamed("day", "integer", "id"),
                renamed("id", "date", "day"),
                spec("note", "string"),
            ])
            .unwrap();
        assert_eq!(change.steps.len(), 2);
        assert_eq!(change.schema.fields()[0].id, FieldId(1));
        assert_eq!(change.schema.fields()[0].name.as_str(), "day");

        let err = base()
            .change(&[
                renamed("a", "integer", "nope"),
                renamed("b", "date", "day"),
                renamed("c", "date", "day"),
            ])
            .unwrap_err();
        let ChangeError::Invalid(problems) = err else {
            panic!("{err:?}")
        };
        let codes: Vec<ProblemCode> = problems.iter().map(|p| p.code).collect();
        assert_eq!(
            codes,
            [
                ProblemCode::UnknownPreviousName,
                ProblemCode::DuplicatePreviousName
            ]
        );
    }

    #[test]
    fn nullability_and_description_alone_are_changes_without_steps() {
        let before = base();
        let mut specs = vec![
            spec("id", "integer"),
            spec("day", "date"),
            spec("note", "string"),
        ];
        let same = before.change(&specs).unwrap();
        assert!(same.is_noop(&before));
        specs[2].nullable = true;
        let change = before.change(&specs).unwrap();
        assert!(change.steps.is_empty());
        assert!(!change.is_noop(&before));
    }
}
