//! Distribution of connector definitions through the NATS key-value bucket
//! that gateways and readers watch.
//!
//! The database is the source of truth. After each commit the connector's
//! current row is written to the bucket (or its key deleted); at start, and
//! again whenever a publication failed, the whole bucket is reconciled with
//! the database, so a crash or a NATS outage between commit and publish
//! heals by itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{AppState, db};

/// How often a failed publication is retried in the background.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Writes connector `id`'s committed definition to the bucket, or deletes
/// its key if the connector is gone.
///
/// Reading the row and writing the bucket happen under a per-connector lock,
/// so two replicas publishing edits of one connector at once cannot leave
/// the older one in the bucket.
#[tracing::instrument(skip(state))]
pub(crate) async fn publish_connector(state: &AppState, id: Uuid) -> anyhow::Result<()> {
    let mut tx = state.pool.begin().await?;
    db::lock_for_publishing(&mut tx, id).await?;
    match db::fetch_connector(&mut *tx, id).await? {
        Some(row) => {
            let doc = row.doc();
            let revision = state
                .bucket
                .put(id.to_string(), serde_json::to_vec(&doc)?.into())
                .await?;
            // A token just made or rotated is known to the auth check at
            // once, not only when the watch brings it back.
            state.catalog.remember(id, revision, Arc::new(doc));
        }
        None => state.bucket.delete(id.to_string()).await?,
    }
    tx.commit().await?;
    Ok(())
}

/// Publishes after a commit. A failure does not undo the commit (the change
/// is made, and a token just created must still reach its user): it is
/// logged, and the background reconciler publishes once NATS answers.
pub(crate) async fn publish_after_commit(state: &AppState, id: Uuid) {
    if let Err(error) = publish_connector(state, id).await {
        tracing::error!(connector = %id, error = format!("{error:#}"), "publishing the connector definition failed; will retry");
        state.needs_reconcile.store(true, Ordering::SeqCst);
    }
}

/// Makes the bucket hold exactly the database's connectors: every
/// definition written as it is stored, every other key deleted.
#[tracing::instrument(skip(state))]
pub(crate) async fn reconcile(state: &AppState) -> anyhow::Result<()> {
    let rows = db::all_connectors(&state.pool).await?;
    let keys: Vec<String> = state.bucket.keys().await?.try_collect().await?;
    let known: HashSet<String> = rows.iter().map(|r| r.id.to_string()).collect();
    let mut published = 0usize;
    for row in &rows {
        let stored = state.bucket.get(row.id.to_string()).await?;
        let up_to_date = stored.is_some_and(|stored| {
            serde_json::from_slice::<serde_json::Value>(&stored).ok()
                == serde_json::to_value(row.doc()).ok()
        });
        if !up_to_date {
            // Through the lock, from the row as it is by then.
            publish_connector(state, row.id).await?;
            published += 1;
        }
    }
    let mut removed = 0usize;
    for key in keys.iter().filter(|k| !known.contains(*k)) {
        match Uuid::parse_str(key) {
            // Through the lock: the connector may have been created since.
            Ok(id) => publish_connector(state, id).await?,
            Err(_) => state.bucket.delete(key).await?,
        }
        removed += 1;
    }
    tracing::info!(
        connectors = rows.len(),
        published,
        removed,
        "connector bucket reconciled"
    );
    Ok(())
}

/// Retries reconciliation until it succeeds whenever a publication failed.
pub(crate) async fn reconcile_when_needed(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY_INTERVAL) => {}
        }
        if !state.needs_reconcile.swap(false, Ordering::SeqCst) {
            continue;
        }
        if let Err(error) = reconcile(&state).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "reconciling the connector bucket failed; will retry"
            );
            state.needs_reconcile.store(true, Ordering::SeqCst);
        }
    }
}
