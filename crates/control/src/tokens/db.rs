//! The SQL of the `connector_tokens` and `operator_tokens` tables. Each
//! function takes the executor or transaction it runs in.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sluice_runtime::bus::{OperatorTokenDoc, TokenDoc, TokenUse};
use sluice_runtime::token::{TokenHash, TokenKind};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A token as stored: never its secret, and its hash stays here.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TokenRow {
    pub id: Uuid,
    pub name: String,
    /// `write` or `read`; `None` for an operator token.
    pub scope: Option<String>,
    pub hash: String,
    pub rotatable: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    pub fn scope(&self) -> Option<TokenKind> {
        self.scope.as_deref().and_then(TokenKind::parse)
    }

    fn connector_doc(&self) -> Option<TokenDoc> {
        Some(TokenDoc {
            id: self.id,
            name: self.name.clone(),
            scope: self.scope()?,
            hash: TokenHash::from_hex(self.hash.clone()),
            expires_at: self.expires_at,
        })
    }

    fn operator_doc(&self) -> OperatorTokenDoc {
        OperatorTokenDoc {
            id: self.id,
            name: self.name.clone(),
            hash: TokenHash::from_hex(self.hash.clone()),
            expires_at: self.expires_at,
        }
    }
}

/// A new token's row.
pub(crate) struct NewTokenRow<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub hash: &'a TokenHash,
    pub expires_at: Option<DateTime<Utc>>,
}

const CONNECTOR_TOKEN: &str = "SELECT id, name, scope, hash, rotatable, created_at, expires_at, \
     last_used_at FROM connector_tokens";

const OPERATOR_TOKEN: &str = "SELECT id, name, NULL::text AS scope, hash, false AS rotatable, \
     created_at, expires_at, last_used_at FROM operator_tokens";

#[tracing::instrument(skip_all, fields(connector = %connector, token = %new.id))]
pub(crate) async fn insert_connector_token(
    conn: &mut PgConnection,
    connector: Uuid,
    scope: TokenKind,
    rotatable: bool,
    new: &NewTokenRow<'_>,
) -> sqlx::Result<TokenRow> {
    sqlx::query_as(
        "INSERT INTO connector_tokens (id, connector_id, name, scope, hash, rotatable, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING id, name, scope, hash, rotatable, created_at, expires_at, last_used_at",
    )
    .bind(new.id)
    .bind(connector)
    .bind(new.name)
    .bind(scope.as_str())
    .bind(new.hash.as_str())
    .bind(rotatable)
    .bind(new.expires_at)
    .fetch_one(conn)
    .await
}

/// A connector's tokens, oldest first, expired ones included.
#[tracing::instrument(skip(executor))]
pub(crate) async fn connector_tokens(
    executor: impl PgExecutor<'_>,
    connector: Uuid,
) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(&format!(
        "{CONNECTOR_TOKEN} WHERE connector_id = $1 ORDER BY created_at, id"
    ))
    .bind(connector)
    .fetch_all(executor)
    .await
}

/// The tokens a connector's definition carries: those not expired now.
#[tracing::instrument(skip(executor))]
pub(crate) async fn live_connector_token_docs(
    executor: impl PgExecutor<'_>,
    connector: Uuid,
) -> sqlx::Result<Vec<TokenDoc>> {
    let rows: Vec<TokenRow> = sqlx::query_as(&format!(
        "{CONNECTOR_TOKEN} WHERE connector_id = $1 \
         AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at, id"
    ))
    .bind(connector)
    .fetch_all(executor)
    .await?;
    Ok(rows.iter().filter_map(TokenRow::connector_doc).collect())
}

/// A token with the connector it belongs to.
#[derive(sqlx::FromRow)]
struct OwnedTokenRow {
    connector_id: Uuid,
    #[sqlx(flatten)]
    token: TokenRow,
}

/// Every connector's live tokens, for reconciling the bucket.
#[tracing::instrument(skip(executor))]
pub(crate) async fn all_live_connector_token_docs(
    executor: impl PgExecutor<'_>,
) -> sqlx::Result<HashMap<Uuid, Vec<TokenDoc>>> {
    let rows: Vec<OwnedTokenRow> = sqlx::query_as(
        "SELECT connector_id, id, name, scope, hash, rotatable, created_at, expires_at, \
         last_used_at FROM connector_tokens \
         WHERE expires_at IS NULL OR expires_at > now() ORDER BY created_at, id",
    )
    .fetch_all(executor)
    .await?;
    let mut docs: HashMap<Uuid, Vec<TokenDoc>> = HashMap::new();
    for row in rows {
        if let Some(doc) = row.token.connector_doc() {
            docs.entry(row.connector_id).or_default().push(doc);
        }
    }
    Ok(docs)
}

/// How many of a connector's tokens have not expired.
pub(crate) async fn count_live_connector_tokens(
    conn: &mut PgConnection,
    connector: Uuid,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM connector_tokens WHERE connector_id = $1 \
         AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(connector)
    .fetch_one(conn)
    .await
}

/// Deletes one of a connector's tokens; whether it was there.
#[tracing::instrument(skip(conn))]
pub(crate) async fn delete_connector_token(
    conn: &mut PgConnection,
    connector: Uuid,
    token: Uuid,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM connector_tokens WHERE connector_id = $1 AND id = $2")
        .bind(connector)
        .bind(token)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// The rotatable token of `scope` stops being the one rotation replaces:
/// deleted when `until` is `None`, else kept until `until` (or its own
/// earlier expiry). Answers its name, if there was one.
#[tracing::instrument(skip(conn))]
pub(crate) async fn retire_rotatable_token(
    conn: &mut PgConnection,
    connector: Uuid,
    scope: TokenKind,
    until: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<String>> {
    let retired = match until {
        None => {
            sqlx::query_scalar(
                "DELETE FROM connector_tokens \
                 WHERE connector_id = $1 AND scope = $2 AND rotatable RETURNING name",
            )
            .bind(connector)
            .bind(scope.as_str())
            .fetch_optional(conn)
            .await?
        }
        Some(until) => {
            sqlx::query_scalar(
                "UPDATE connector_tokens SET rotatable = false, \
                 expires_at = least(coalesce(expires_at, $3), $3) \
                 WHERE connector_id = $1 AND scope = $2 AND rotatable RETURNING name",
            )
            .bind(connector)
            .bind(scope.as_str())
            .bind(until)
            .fetch_optional(conn)
            .await?
        }
    };
    Ok(retired)
}

#[tracing::instrument(skip_all, fields(token = %new.id))]
pub(crate) async fn insert_operator_token(
    conn: &mut PgConnection,
    new: &NewTokenRow<'_>,
) -> sqlx::Result<TokenRow> {
    sqlx::query_as(
        "INSERT INTO operator_tokens (id, name, hash, expires_at) VALUES ($1, $2, $3, $4) \
         RETURNING id, name, NULL::text AS scope, hash, false AS rotatable, created_at, \
         expires_at, last_used_at",
    )
    .bind(new.id)
    .bind(new.name)
    .bind(new.hash.as_str())
    .bind(new.expires_at)
    .fetch_one(conn)
    .await
}

/// The operator tokens, oldest first, expired ones included.
#[tracing::instrument(skip(executor))]
pub(crate) async fn operator_tokens(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(&format!("{OPERATOR_TOKEN} ORDER BY created_at, id"))
        .fetch_all(executor)
        .await
}

/// The operator tokens the bucket carries: those not expired now.
#[tracing::instrument(skip(executor))]
pub(crate) async fn live_operator_token_docs(
    executor: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<OperatorTokenDoc>> {
    let rows: Vec<TokenRow> = sqlx::query_as(&format!(
        "{OPERATOR_TOKEN} WHERE expires_at IS NULL OR expires_at > now() ORDER BY created_at, id"
    ))
    .fetch_all(executor)
    .await?;
    Ok(rows.iter().map(TokenRow::operator_doc).collect())
}

pub(crate) async fn count_live_operator_tokens(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM operator_tokens WHERE expires_at IS NULL OR expires_at > now()",
    )
    .fetch_one(conn)
    .await
}

#[tracing::instrument(skip(conn))]
pub(crate) async fn delete_operator_token(
    conn: &mut PgConnection,
    token: Uuid,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM operator_tokens WHERE id = $1")
        .bind(token)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Stores reported uses: one statement per table, each token's
/// `last_used_at` moving only forward (reports of several services may
/// arrive in any order). Ids of tokens gone since match nothing.
#[tracing::instrument(skip_all, fields(uses = uses.len()))]
pub(crate) async fn store_token_uses(
    executor: impl PgExecutor<'_> + Copy,
    uses: &[TokenUse],
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = uses.iter().map(|u| u.token).collect();
    let times: Vec<DateTime<Utc>> = uses.iter().map(|u| u.at).collect();
    for table in ["connector_tokens", "operator_tokens"] {
        sqlx::query(&format!(
            "UPDATE {table} t SET last_used_at = u.at \
             FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
             WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)"
        ))
        .bind(&ids)
        .bind(&times)
        .execute(executor)
        .await?;
    }
    Ok(())
}

/// Serialises publications of the operator tokens' document across
/// replicas, as `db::lock_for_publishing` does a connector's.
pub(crate) async fn lock_operators_for_publishing(conn: &mut PgConnection) -> sqlx::Result<()> {
    // The two-int4 form: PostgreSQL keeps its keys apart from the bigint
    // keys the connectors' locks take.
    sqlx::query("SELECT pg_advisory_xact_lock(17, 0)")
        .execute(conn)
        .await?;
    Ok(())
}
