//! The audit log: every change the control plane makes, who made it, from
//! where, and what changed (never a secret nor a token's hash), written in
//! the same transaction as the change, and paged by cursor like records.
//!
//! - [`Actor`]: who is calling, by the name of their token, and from which
//!   client address.
//! - [`record`]: one entry, in the caller's transaction.
//! - `api`: `GET /v1/audit` and `GET /v1/connectors/{id}/audit`.

pub(crate) mod api;
mod db;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::{Map, Value, json};
use sluice_schema::{ExtraFields, RateLimits, Retention, Schema};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::extract::Operator;

pub(crate) use api::router;

/// Who makes a change: the operator (every control-plane route checks it
/// first, as [`Operator`]), named by their token's name
/// (`SLUICE_ADMIN_TOKEN` for the bootstrap one), and the client address
/// the throttle would count (`X-Forwarded-For` read only from trusted
/// proxies).
pub(crate) struct Actor {
    pub name: String,
    pub address: Option<IpAddr>,
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Operator(principal) = Operator::from_request_parts(parts, state).await?;
        let name = principal.token_name;
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| state.throttle.client_address(peer.ip(), &parts.headers));
        Ok(Actor { name, address })
    }
}

/// What an entry records. The names are stable: clients filter on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuditAction {
    ConnectorCreated,
    ConnectorEdited,
    /// An edit that changed the rate limits and nothing else.
    LimitsChanged,
    ConnectorDuplicated,
    ConnectorDeleted,
    TokenRotated,
    TokenCreated,
    TokenRevoked,
}

impl AuditAction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuditAction::ConnectorCreated => "connector.created",
            AuditAction::ConnectorEdited => "connector.edited",
            AuditAction::LimitsChanged => "connector.limits_changed",
            AuditAction::ConnectorDuplicated => "connector.duplicated",
            AuditAction::ConnectorDeleted => "connector.deleted",
            AuditAction::TokenRotated => "token.rotated",
            AuditAction::TokenCreated => "token.created",
            AuditAction::TokenRevoked => "token.revoked",
        }
    }
}

/// Writes one entry in `conn`'s transaction, so it commits (or not) with
/// the change it describes. Call it last in the transaction: entries are
/// numbered under a lock held until commit (see `db::insert_entry`).
/// `connector` is `None` for a change of no connector (an operator token).
pub(crate) async fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    connector: impl Into<Option<Uuid>>,
    action: AuditAction,
    changes: Value,
) -> sqlx::Result<()> {
    db::insert_entry(conn, actor, connector.into(), action.as_str(), &changes).await
}

/// A connector's definition as the audit log shows it: what an operator
/// set, nothing secret.
#[derive(Clone, Copy)]
pub(crate) struct Definition<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub schema: &'a Schema,
    pub extra_fields: ExtraFields,
    pub retention: Option<Retention>,
    pub limits: RateLimits,
}

impl Definition<'_> {
    pub(crate) fn summary(&self) -> Value {
        let fields: Vec<Value> = self
            .schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name.to_string(), "type": f.ty.to_string(), "nullable": f.nullable}))
            .collect();
        json!({
            "name": self.name,
            "description": self.description,
            "fields": fields,
            "extra_fields": self.extra_fields.as_str(),
            "retention": self.retention.map(|r| r.to_string()),
            "limits": self.limits,
        })
    }
}

/// Each member whose value differs, as `{"from": …, "to": …}`.
pub(crate) fn diff(before: &Value, after: &Value) -> Map<String, Value> {
    let (Value::Object(before), Value::Object(after)) = (before, after) else {
        return Map::new();
    };
    after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(*value))
        .map(|(key, value)| {
            let from = before.get(key).cloned().unwrap_or(Value::Null);
            (key.clone(), json!({"from": from, "to": value}))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_each_changed_member_with_both_values() {
        let before =
            json!({"name": "a", "retention": null, "limits": {"requests_per_second": null}});
        let after = json!({"name": "a", "retention": "30d", "limits": {"requests_per_second": 5}});
        assert_eq!(
            Value::Object(diff(&before, &after)),
            json!({
                "retention": {"from": null, "to": "30d"},
                "limits": {"from": {"requests_per_second": null}, "to": {"requests_per_second": 5}},
            })
        );
        assert!(diff(&after, &after).is_empty());
    }
}
