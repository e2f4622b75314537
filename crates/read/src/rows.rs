//! A batch's columns laid out as rows of its connector's records table: the
//! CPU work of storing a message, done on a blocking thread while the
//! message before it is written (`db` runs the statements).
//!
//! Columns are mapped onto the connector's current schema by field id. When
//! every column is of its field's type, the rows are encoded in COPY's
//! binary format; when one is of an older type, each column becomes one
//! typed array for an INSERT whose SQL converts it exactly as the control
//! plane converted the stored values.

use chrono::{DateTime, NaiveDate, Utc};
use sluice_runtime::bus::{ColumnValues, EpochDays, EpochMicros, RecordBatch};
use sluice_schema::{Conversion, FieldType, Schema};

use crate::copy::BinaryRows;

/// Why a batch cannot be stored as it is, ever.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unstorable(pub String);

fn malformed(what: &str) -> Unstorable {
    Unstorable(format!("a {what} value is malformed"))
}

/// A batch's rows, ready to write.
pub(crate) enum RecordInsert {
    /// Only refused records: no row to write.
    Nothing,
    /// Every column is of its field's type: the rows in COPY's binary
    /// format, `_id`, `_received_at`, then the fields `columns` names.
    Copy { columns: Vec<String>, data: Vec<u8> },
    /// A column must be converted.
    Insert(ArrayRows),
}

impl RecordInsert {
    /// Maps the batch's columns onto `schema`, the connector's current one,
    /// and encodes them, the rows' ids from `first_id`.
    pub(crate) fn plan(
        schema: &Schema,
        batch: RecordBatch,
        first_id: i64,
    ) -> Result<RecordInsert, Unstorable> {
        let rows = Rows::map(schema, batch, first_id)?;
        Ok(if rows.rows == 0 {
            RecordInsert::Nothing
        } else if rows.columns.iter().any(|c| c.conversion.is_some()) {
            RecordInsert::Insert(rows.arrays()?)
        } else {
            RecordInsert::Copy {
                data: rows.binary_rows()?,
                columns: rows.columns.into_iter().map(|c| c.name).collect(),
            }
        })
    }
}

/// Rows as one typed array per column, for an `INSERT … SELECT … FROM
/// UNNEST`.
pub(crate) struct ArrayRows {
    pub first_id: i64,
    pub rows: usize,
    pub received_at: DateTime<Utc>,
    pub columns: Vec<ArrayColumn>,
}

pub(crate) struct ArrayColumn {
    /// The field's name, unquoted.
    pub name: String,
    /// The type of the values: the field's, or an older one that
    /// `conversion` turns into it.
    pub from: FieldType,
    pub conversion: Option<Conversion>,
    pub values: ArrayBind,
}

/// A column bound as one array. Dates and timestamps are sent in binary,
/// so PostgreSQL never parses their text.
pub(crate) enum ArrayBind {
    Integer(Vec<Option<i64>>),
    Number(Vec<Option<f64>>),
    Boolean(Vec<Option<bool>>),
    /// Strings, and decimal and json values as their text.
    Text(Vec<Option<String>>),
    Date(Vec<Option<NaiveDate>>),
    Timestamp(Vec<Option<DateTime<Utc>>>),
}

/// One column of a batch, mapped onto the field it now belongs to.
struct TargetColumn {
    /// The field's name, unquoted.
    name: String,
    values: ColumnValues,
    /// How its values become the field's current type, if they are of an
    /// older one.
    conversion: Option<Conversion>,
}

/// The rows of one batch, mapped onto the records table's columns.
struct Rows {
    first_id: i64,
    rows: usize,
    received_at: DateTime<Utc>,
    columns: Vec<TargetColumn>,
}

impl Rows {
    /// By field id, so renamed fields follow their id and removed ones are
    /// dropped; a column of an older type is converted; fields the batch
    /// lacks stay null.
    fn map(schema: &Schema, batch: RecordBatch, first_id: i64) -> Result<Rows, Unstorable> {
        let rows = batch.rows;
        i64::try_from(rows).map_err(|_| Unstorable("too many rows".into()))?;
        let mut columns: Vec<TargetColumn> = Vec::new();
        let mut seen = Vec::new();
        for column in batch.columns {
            if column.values.len() != rows {
                return Err(Unstorable(format!(
                    "column of field {} holds {} values for {rows} rows",
                    column.field.0,
                    column.values.len()
                )));
            }
            let Some(field) = schema.field_by_id(column.field) else {
                // Removed since the gateway validated: its values go.
                continue;
            };
            if seen.contains(&field.id) {
                return Err(Unstorable(format!(
                    "field {} has two columns",
                    column.field.0
                )));
            }
            seen.push(field.id);
            let from = column.values.field_type();
            let conversion = if from == field.ty {
                None
            } else {
                Some(Conversion::between(from, field.ty).ok_or_else(|| {
                    Unstorable(format!(
                        "field {:?} is now {} and a {from} value cannot become one",
                        field.name.as_str(),
                        field.ty
                    ))
                })?)
            };
            columns.push(TargetColumn {
                name: field.name.to_string(),
                values: column.values,
                conversion,
            });
        }
        Ok(Rows {
            first_id,
            rows,
            received_at: batch.received_at,
            columns,
        })
    }

    /// The rows in COPY's binary format; every column is of its field's type.
    fn binary_rows(&self) -> Result<Vec<u8>, Unstorable> {
        let fields = i16::try_from(self.columns.len() + 2)
            .map_err(|_| Unstorable("too many columns".into()))?;
        let mut out = BinaryRows::with_capacity(self.rows * (16 + 24 * self.columns.len()));
        // One value for every row of the batch: converted once.
        let received_at =
            EpochMicros::of(self.received_at).ok_or_else(|| malformed("received_at"))?;
        for row in 0..self.rows {
            out.row(fields);
            out.int8(self.first_id + row as i64);
            out.timestamptz(received_at)
                .ok_or_else(|| malformed("received_at"))?;
            for column in &self.columns {
                write_value(&mut out, &column.values, row)?;
            }
        }
        Ok(out.into_bytes())
    }

    fn arrays(self) -> Result<ArrayRows, Unstorable> {
        let columns = self
            .columns
            .into_iter()
            .map(|column| {
                Ok(ArrayColumn {
                    from: column.values.field_type(),
                    values: array_of(column.values)?,
                    name: column.name,
                    conversion: column.conversion,
                })
            })
            .collect::<Result<_, Unstorable>>()?;
        Ok(ArrayRows {
            first_id: self.first_id,
            rows: self.rows,
            received_at: self.received_at,
            columns,
        })
    }
}

/// Writes the value of `row` in `values`, as the column's own type.
fn write_value(out: &mut BinaryRows, values: &ColumnValues, row: usize) -> Result<(), Unstorable> {
    match values {
        ColumnValues::String(v) => match &v[row] {
            Some(s) => out.text(s),
            None => out.null(),
        },
        ColumnValues::Integer(v) => match v[row] {
            Some(i) => out.int8(i),
            None => out.null(),
        },
        ColumnValues::Number(v) => match v[row] {
            Some(n) => out.float8(n),
            None => out.null(),
        },
        ColumnValues::Decimal(v) => match &v[row] {
            Some(d) => out.numeric(d).ok_or_else(|| malformed("decimal"))?,
            None => out.null(),
        },
        ColumnValues::Boolean(v) => match v[row] {
            Some(b) => out.boolean(b),
            None => out.null(),
        },
        ColumnValues::Date(v) => match v[row] {
            Some(d) => out.date(d).ok_or_else(|| malformed("date"))?,
            None => out.null(),
        },
        ColumnValues::Timestamp(v) => match v[row] {
            Some(t) => out.timestamptz(t).ok_or_else(|| malformed("timestamp"))?,
            None => out.null(),
        },
        ColumnValues::Json(v) => match &v[row] {
            Some(j) => out.jsonb(j.get()),
            None => out.null(),
        },
    }
    Ok(())
}

fn array_of(values: ColumnValues) -> Result<ArrayBind, Unstorable> {
    Ok(match values {
        ColumnValues::String(v) | ColumnValues::Decimal(v) => ArrayBind::Text(v),
        ColumnValues::Integer(v) => ArrayBind::Integer(v),
        ColumnValues::Number(v) => ArrayBind::Number(v),
        ColumnValues::Boolean(v) => ArrayBind::Boolean(v),
        ColumnValues::Date(v) => ArrayBind::Date(each(v, EpochDays::date, "date")?),
        ColumnValues::Timestamp(v) => {
            ArrayBind::Timestamp(each(v, EpochMicros::time, "timestamp")?)
        }
        ColumnValues::Json(v) => ArrayBind::Text(
            v.into_iter()
                .map(|j| j.map(|j| String::from(Box::<str>::from(j))))
                .collect(),
        ),
    })
}

/// `read` of every value that is not null.
fn each<W, T>(
    values: Vec<Option<W>>,
    read: fn(W) -> Option<T>,
    what: &str,
) -> Result<Vec<Option<T>>, Unstorable> {
    values
        .into_iter()
        .map(|value| {
            value
                .map(|v| read(v).ok_or_else(|| malformed(what)))
                .transpose()
        })
        .collect()
}
