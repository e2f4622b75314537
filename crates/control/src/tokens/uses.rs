//! Stores the token uses every service reports (see
//! `sluice_runtime::token_use`) as `last_used_at`. Control-plane replicas
//! share the subject as a queue group, so each report is stored once.

use futures::StreamExt;
use sluice_runtime::bus::{Namespace, TokenUses};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::db;

/// Subscribes to the reports; stores each until `shutdown`.
pub(crate) async fn store_reported_uses(
    pool: PgPool,
    client: async_nats::Client,
    namespace: Namespace,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut reports = client
        .queue_subscribe(
            namespace.token_uses_subject(),
            format!("{}_control", namespace.as_str()),
        )
        .await?;
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                message = reports.next() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            let report: TokenUses = match serde_json::from_slice(&message.payload) {
                Ok(report) => report,
                Err(error) => {
                    tracing::warn!(%error, "ignoring an unreadable report of token uses");
                    continue;
                }
            };
            if let Err(error) = db::store_token_uses(&pool, &report.uses).await {
                tracing::warn!(%error, "storing token uses failed; they are reported again at their next use");
            }
        }
    });
    Ok(())
}
