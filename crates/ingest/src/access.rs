//! Who may post to a connector (SPEC 3): its write token, or the operator.
//!
//! The catalog (a watched copy of the bucket) answers almost every request
//! without a round trip. It trails the bucket by the time a watch update
//! takes, so a producer that posts right after the control plane created a
//! connector or rotated a token could be refused by a gateway that has not
//! seen the change yet. When the catalog refuses with 401 or 404, the
//! connector's entry is therefore read from the bucket itself before
//! answering: the control plane writes it before it answers, so what a
//! client was just told is always honoured.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use sluice_runtime::bus::ConnectorDoc;
use sluice_runtime::catalog::{AccessDenied, Catalog};
use sluice_runtime::throttle::AuthAttempt;
use sluice_runtime::token::{TokenHash, TokenKind};
use uuid::Uuid;

use crate::error::IngestError;

/// How long a refusal may wait on the bucket; past it, the catalog's answer
/// stands.
const BUCKET_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The connector definitions: the live copy and the bucket it follows.
pub(crate) struct Definitions {
    pub catalog: Catalog,
    pub bucket: kv::Store,
}

impl Definitions {
    /// The definition of `connector` if `token` may write to it.
    ///
    /// A missing or unknown token is a failed attempt of the client's
    /// (`attempt`), counted before the bucket is read (and given back if
    /// the bucket knows the token), so that a client that failed too often
    /// is answered 429 without a read, however many requests it sends at
    /// once. A token that cannot be a connector's is never looked for there.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn authorize_writer(
        &self,
        token: &str,
        admin: Option<&TokenHash>,
        connector: Uuid,
        attempt: &AuthAttempt,
    ) -> Result<Arc<ConnectorDoc>, IngestError> {
        let denied = match self
            .catalog
            .authorize(token, admin, connector, TokenKind::Write)
        {
            Ok(doc) => return Ok(doc),
            Err(AccessDenied::Forbidden) => {
                return Err(IngestError::Denied(AccessDenied::Forbidden));
            }
            Err(denied) => denied,
        };
        let unknown = denied == AccessDenied::Unauthorized;
        if unknown {
            attempt.fail()?;
        }
        // The operator was recognised in memory; what the bucket may still
        // know is a connector (or its tokens) the watch has not brought yet.
        let not_a_connector_token = unknown && TokenKind::of_secret(token).is_none();
        let fresh = if connector.is_nil() || not_a_connector_token {
            None
        } else {
            self.read_from_bucket(connector).await
        };
        if let Some(doc) = fresh {
            let operator = admin.is_some_and(|admin| admin.matches(token));
            let writer = operator || doc.write_token_hash.matches(token);
            let reader = doc.read_token_hash.matches(token);
            if unknown && (writer || reader) {
                attempt.forgive();
            }
            if writer {
                return Ok(Arc::new(doc));
            }
            if reader {
                return Err(IngestError::Denied(AccessDenied::Forbidden));
            }
        }
        Err(IngestError::Denied(denied))
    }

    async fn read_from_bucket(&self, connector: Uuid) -> Option<ConnectorDoc> {
        let read =
            tokio::time::timeout(BUCKET_READ_TIMEOUT, self.bucket.get(connector.to_string())).await;
        match read {
            Ok(Ok(Some(value))) => serde_json::from_slice(&value)
                .inspect_err(|error| {
                    tracing::error!(%connector, %error, "unreadable connector definition");
                })
                .ok(),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::warn!(%connector, %error, "reading a connector from the bucket failed");
                None
            }
            Err(_) => {
                tracing::warn!(%connector, "reading a connector from the bucket timed out");
                None
            }
        }
    }
}
