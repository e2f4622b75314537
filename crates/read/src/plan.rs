//! The SQL of one page against a connector's current schema: the columns
//! selected, the conditions of the filters, and the values they bind.
//!
//! Every field name reaches SQL through [`quote_ident`] after it was found in
//! the schema, and every value as a bound parameter, typed by its field.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use sluice_runtime::store::{ID_COLUMN, RECEIVED_AT_COLUMN, quote_ident};
use sluice_schema::{Field, FieldType, Schema, Value, parse_value, snippet};

use crate::error::ReadError;
use crate::params::{FilterOp, PageParams, RawFilter};

/// A value bound to a statement, typed as its field.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Integer(i64),
    Number(f64),
    Text(String),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
}

/// How a selected column is read back and shown (SPEC 5's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellKind {
    /// `_id` and rejected ids: a bigint shown as a string.
    Id,
    Text,
    Integer,
    Number,
    /// numeric, shown as its exact text.
    Decimal,
    Boolean,
    Date,
    Timestamp,
    /// jsonb, embedded as its text.
    Json,
}

#[derive(Debug, Clone)]
pub(crate) struct OutputColumn {
    pub name: String,
    pub kind: CellKind,
}

/// The SQL of one page, ready for the range its cursor and bound give.
///
/// Statements bind `$1` (after this id) and `$2` (up to this id), then
/// [`PagePlan::binds`] from `$3` on.
#[derive(Debug, Clone)]
pub(crate) struct PagePlan {
    pub columns: Vec<OutputColumn>,
    /// The select list, matching `columns`.
    select: String,
    from: String,
    id_column: String,
    /// ` AND ...` conditions beyond the id range.
    conditions: String,
    pub binds: Vec<Bind>,
    pub filtered: bool,
}

impl PagePlan {
    /// The page of a connector's records under its current `schema`.
    pub(crate) fn records(
        table: String,
        schema: &Schema,
        params: &PageParams,
    ) -> Result<PagePlan, ReadError> {
        let mut columns = vec![
            OutputColumn {
                name: ID_COLUMN.to_owned(),
                kind: CellKind::Id,
            },
            OutputColumn {
                name: RECEIVED_AT_COLUMN.to_owned(),
                kind: CellKind::Timestamp,
            },
        ];
        let mut select = vec![quote_ident(ID_COLUMN), quote_ident(RECEIVED_AT_COLUMN)];
        for field in chosen_fields(schema, params.fields.as_deref())? {
            let (expr, kind) = selected(field);
            select.push(expr);
            columns.push(OutputColumn {
                name: field.name.to_string(),
                kind,
            });
        }
        let mut plan = PagePlan {
            columns,
            select: select.join(", "),
            from: table,
            id_column: quote_ident(ID_COLUMN),
            conditions: String::new(),
            binds: Vec::new(),
            filtered: !params.filters.is_empty(),
        };
        for filter in &params.filters {
            let (column, ty) = if filter.field == RECEIVED_AT_COLUMN {
                (quote_ident(RECEIVED_AT_COLUMN), FieldType::Timestamp)
            } else {
                let field = schema
                    .field_by_name(&filter.field)
                    .ok_or_else(|| unknown_filter_field(&filter.field))?;
                (quote_ident(field.name.as_str()), field.ty)
            };
            plan.add_filter(&column, ty, filter)?;
        }
        Ok(plan)
    }

    /// The page of a connector's rejected records; only `_received_at` can
    /// be filtered, and `fields` does not apply.
    pub(crate) fn rejected(
        connector: uuid::Uuid,
        params: &PageParams,
    ) -> Result<PagePlan, ReadError> {
        if params.fields.is_some() {
            return Err(ReadError::bad_parameter(
                "invalid_fields",
                "fields",
                "rejected records always carry _id, _received_at, record and errors; fields does not apply",
            ));
        }
        let columns = [
            ("_id", CellKind::Id),
            ("_received_at", CellKind::Timestamp),
            ("record", CellKind::Json),
            ("errors", CellKind::Json),
        ]
        .into_iter()
        .map(|(name, kind)| OutputColumn {
            name: name.to_owned(),
            kind,
        })
        .collect();
        let mut plan = PagePlan {
            columns,
            select: "id, received_at, record, errors".to_owned(),
            from: "rejected_records".to_owned(),
            id_column: "id".to_owned(),
            // A UUID's text is hex digits and dashes: safe as a literal,
            // and it leaves the unfiltered page without a bound value.
            conditions: format!(" AND connector_id = '{connector}'"),
            binds: Vec::new(),
            filtered: false,
        };
        for filter in &params.filters {
            if filter.field != RECEIVED_AT_COLUMN {
                return Err(unknown_filter_field(&filter.field));
            }
            plan.add_filter("received_at", FieldType::Timestamp, filter)?;
            plan.filtered = true;
        }
        Ok(plan)
    }

    fn placeholder(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len() + 2)
    }

    fn add_filter(
        &mut self,
        column: &str,
        ty: FieldType,
        filter: &RawFilter,
    ) -> Result<(), ReadError> {
        let op = filter.op;
        let Some(text) = filter.value.as_deref() else {
            self.conditions
                .push_str(&format!(" AND {column} {}", operator_sql(op)));
            return Ok(());
        };
        if ty == FieldType::Json && !matches!(op, FilterOp::Eq | FilterOp::Neq) {
            return Err(invalid_filter_value(
                &filter.field,
                "json fields can be filtered with eq, neq, is.null and not.null only",
            ));
        }
        let text = if ty == FieldType::Timestamp {
            restore_offset_plus(text)
        } else {
            Cow::Borrowed(text)
        };
        // The grammar of ingest (a CSV cell's), so a filter value means
        // what the same text means in a record, and whatever PostgreSQL
        // could not hold is refused here rather than by the query.
        let value = parse_value(ty, &text)
            .map_err(|error| invalid_filter_value(&filter.field, &error.message))?;
        let operand = match value {
            Value::Null => {
                return Err(invalid_filter_value(
                    &filter.field,
                    "null is no value to compare with; use is.null or not.null",
                ));
            }
            Value::String(s) => self.placeholder(Bind::Text(s.into())),
            Value::Integer(i) => self.placeholder(Bind::Integer(i)),
            Value::Number(n) => self.placeholder(Bind::Number(n)),
            Value::Decimal(d) => format!("{}::numeric", self.placeholder(Bind::Text(d.into()))),
            Value::Boolean(b) => self.placeholder(Bind::Boolean(b)),
            Value::Date(d) => self.placeholder(Bind::Date(d)),
            Value::Timestamp(t) => self.placeholder(Bind::Timestamp(t)),
            Value::Json(raw) => format!(
                "{}::jsonb",
                self.placeholder(Bind::Text(raw.get().to_owned()))
            ),
        };
        self.conditions
            .push_str(&format!(" AND {column} {} {operand}", operator_sql(op)));
        Ok(())
    }

    fn range_condition(&self) -> String {
        self.range_between("$1", "$2")
    }

    fn range_between(&self, after: &str, up_to: &str) -> String {
        let id = &self.id_column;
        format!("{id} > {after} AND {id} <= {up_to}{}", self.conditions)
    }

    /// The rows of the page, in id order.
    pub(crate) fn rows_sql(&self) -> String {
        self.select_sql(&self.range_condition())
    }

    fn select_sql(&self, condition: &str) -> String {
        format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {}",
            self.select, self.from, self.id_column
        )
    }

    /// The rows of `(after, up_to]` as one `COPY … TO STDOUT (FORMAT
    /// binary)`, when the plan binds no value: COPY takes no parameters,
    /// and its rows cost the read API far less than a query's (measured by
    /// `sluice-bench`). The range is two integers, written in.
    pub(crate) fn copy_sql(&self, after: i64, up_to: i64) -> Option<String> {
        self.binds.is_empty().then(|| {
            let select =
                self.select_sql(&self.range_between(&after.to_string(), &up_to.to_string()));
            format!("COPY ({select}) TO STDOUT (FORMAT binary)")
        })
    }

    /// Deletes the matching rows of `($1, $2]`; the binds as for the rows.
    pub(crate) fn delete_sql(&self) -> String {
        format!("DELETE FROM {} WHERE {}", self.from, self.range_condition())
    }

    /// The ids of up to `$n` matching rows, where `$n` follows the binds:
    /// enough to learn where a filtered page ends and whether more follow.
    pub(crate) fn probe_sql(&self) -> String {
        format!(
            "SELECT {id} FROM {} WHERE {} ORDER BY {id} LIMIT ${}",
            self.from,
            self.range_condition(),
            self.binds.len() + 3,
            id = self.id_column,
        )
    }
}

/// The fields a page shows: those `fields` names, once each and in its
/// order, or all of them. The system fields are always there; naming them
/// is fine.
fn chosen_fields<'s>(
    schema: &'s Schema,
    fields: Option<&[String]>,
) -> Result<Vec<&'s Field>, ReadError> {
    let Some(names) = fields else {
        return Ok(schema.fields().iter().collect());
    };
    let mut chosen: Vec<&Field> = Vec::new();
    for name in names {
        if name == ID_COLUMN || name == RECEIVED_AT_COLUMN {
            continue;
        }
        let field = schema.field_by_name(name).ok_or_else(|| {
            ReadError::bad_parameter(
                "unknown_field",
                name.clone(),
                format!(
                    "fields names {:?}, which this connector does not have",
                    snippet(name)
                ),
            )
        })?;
        if !chosen.iter().any(|f| f.id == field.id) {
            chosen.push(field);
        }
    }
    Ok(chosen)
}

/// The select expression of a field's column, and how its value is read:
/// every column as it is stored, in its binary form (`render::Cell`).
fn selected(field: &Field) -> (String, CellKind) {
    let column = quote_ident(field.name.as_str());
    match field.ty {
        FieldType::String => (column, CellKind::Text),
        FieldType::Integer => (column, CellKind::Integer),
        FieldType::Number => (column, CellKind::Number),
        FieldType::Decimal => (column, CellKind::Decimal),
        FieldType::Boolean => (column, CellKind::Boolean),
        FieldType::Date => (column, CellKind::Date),
        FieldType::Timestamp => (column, CellKind::Timestamp),
        FieldType::Json => (column, CellKind::Json),
    }
}

fn operator_sql(op: FilterOp) -> &'static str {
    match op {
        FilterOp::Eq => "=",
        // Null is "not equal" to a value too: `status=neq.done` keeps the
        // records without a status. Add `status=not.null` to drop them.
        FilterOp::Neq => "IS DISTINCT FROM",
        FilterOp::Gt => ">",
        FilterOp::Gte => ">=",
        FilterOp::Lt => "<",
        FilterOp::Lte => "<=",
        FilterOp::IsNull => "IS NULL",
        FilterOp::NotNull => "IS NOT NULL",
    }
}

fn unknown_filter_field(name: &str) -> ReadError {
    ReadError::bad_parameter(
        "unknown_field",
        name,
        format!(
            "filter names {:?}, which is neither a field of this connector nor _received_at",
            snippet(name)
        ),
    )
}

fn invalid_filter_value(field: &str, why: &str) -> ReadError {
    ReadError::bad_parameter(
        "invalid_filter",
        field,
        format!("filter on {:?}: {why}", snippet(field)),
    )
}

/// A `+` that the query string turned into a space (an unencoded
/// `?at=gt.2026-11-29T13:00:00+01:00`) is taken back: the space where a
/// timestamp's offset sign stands, six characters from its end.
fn restore_offset_plus(text: &str) -> Cow<'_, str> {
    match text.len().checked_sub(6) {
        Some(at) if text.as_bytes()[at] == b' ' => {
            Cow::Owned(format!("{}+{}", &text[..at], &text[at + 1..]))
        }
        _ => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_sign_read_as_a_space_is_restored() {
        assert_eq!(
            restore_offset_plus("2026-11-29T13:00:00 01:00"),
            "2026-11-29T13:00:00+01:00"
        );
        for kept in ["2026-11-29T13:00:00Z", "2026-11-29 13:00:00Z", "", "a b"] {
            assert_eq!(restore_offset_plus(kept), kept);
        }
    }
}
