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
use sluice_runtime::bus::{ConnectorDoc, OperatorTokensDoc};
use sluice_runtime::startup::Bus;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::tokens::db as tokens_db;
use crate::{AppState, db};

/// How often a failed publication is retried in the background.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Writes connector `id`'s committed definition to the bucket, or deletes
/// its key if the connector is gone.
///
/// Reading the row and writing the bucket happen under a per-connector lock,
/// so two replicas publishing edits of one connector at once cannot leave
/// the older one in the bucket.
#[tracing::instrument(skip(pool, bus))]
pub(crate) async fn publish_connector(pool: &PgPool, bus: &Bus, id: Uuid) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    db::lock_for_publishing(&mut tx, id).await?;
    let key = ConnectorDoc::key(id);
    match db::fetch_connector(&mut *tx, id).await? {
        Some(row) => {
            let tokens = tokens_db::live_connector_token_docs(&mut *tx, id).await?;
            let doc = row.doc(tokens);
            let revision = bus.bucket.put(key, doc.encode()?).await?;
            // A token just made or rotated is known to the auth check at
            // once, not only when the watch brings it back.
            bus.catalog.remember(id, revision, Arc::new(doc));
        }
        None => bus.bucket.delete(key).await?,
    }
    tx.commit().await?;
    Ok(())
}

/// Publishes after a commit. A failure does not undo the commit (the change
/// is made, and a token just created must still reach its user): it is
/// logged, and the background reconciler publishes once NATS answers.
pub(crate) async fn publish_after_commit(state: &AppState, bus: &Bus, id: Uuid) {
    if let Err(error) = publish_connector(&state.pool, bus, id).await {
        tracing::error!(connector = %id, error = format!("{error:#}"), "publishing the connector definition failed; will retry");
        state.needs_reconcile.store(true, Ordering::SeqCst);
    }
}

/// The operator tokens' document as the database holds it now.
async fn operators_doc(conn: &mut sqlx::PgConnection) -> anyhow::Result<OperatorTokensDoc> {
    Ok(OperatorTokensDoc {
        tokens: tokens_db::live_operator_token_docs(conn).await?,
    })
}

/// Writes the operator tokens' committed document to their bucket, under
/// a lock as [`publish_connector`] does.
#[tracing::instrument(skip_all)]
pub(crate) async fn publish_operators(pool: &PgPool, bus: &Bus) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    tokens_db::lock_operators_for_publishing(&mut tx).await?;
    let doc = operators_doc(&mut tx).await?;
    let revision = bus
        .operators
        .put(OperatorTokensDoc::KEY, doc.encode()?)
        .await?;
    bus.catalog.remember_operators(revision, &doc);
    tx.commit().await?;
    Ok(())
}

/// [`publish_operators`] after a commit, as [`publish_after_commit`].
pub(crate) async fn publish_operators_after_commit(state: &AppState, bus: &Bus) {
    if let Err(error) = publish_operators(&state.pool, bus).await {
        tracing::error!(
            error = format!("{error:#}"),
            "publishing the operator tokens failed; will retry"
        );
        state.needs_reconcile.store(true, Ordering::SeqCst);
    }
}

/// Makes the bucket hold exactly the database's connectors: every
/// definition written as it is stored, every other key deleted.
#[tracing::instrument(skip_all)]
pub(crate) async fn reconcile(pool: &PgPool, bus: &Bus) -> anyhow::Result<()> {
    let stored = bus.operators.get(OperatorTokensDoc::KEY).await?;
    let current = operators_doc(&mut *pool.acquire().await?).await?;
    if !stored.is_some_and(|stored| current.is_stored_as(&stored)) {
        publish_operators(pool, bus).await?;
    }
    let rows = db::all_connectors(pool).await?;
    let mut tokens = tokens_db::all_live_connector_token_docs(pool).await?;
    let keys: Vec<String> = bus.bucket.keys().await?.try_collect().await?;
    let known: HashSet<String> = rows.iter().map(|r| ConnectorDoc::key(r.id)).collect();
    let mut published = 0usize;
    for row in &rows {
        let stored = bus.bucket.get(ConnectorDoc::key(row.id)).await?;
        let doc = row.doc(tokens.remove(&row.id).unwrap_or_default());
        if !stored.is_some_and(|stored| doc.is_stored_as(&stored)) {
            // Through the lock, from the row as it is by then.
            publish_connector(pool, bus, row.id).await?;
            published += 1;
        }
    }
    let mut removed = 0usize;
    for key in keys.iter().filter(|k| !known.contains(*k)) {
        match ConnectorDoc::id_of_key(key) {
            // Through the lock: the connector may have been created since.
            Some(id) => publish_connector(pool, bus, id).await?,
            None => bus.bucket.delete(key).await?,
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
        // Publications fail only once the bus is set up: mutations wait
        // for it (see `api::connected_bus`).
        let Some(bus) = state.bus.get() else {
            continue;
        };
        if !state.needs_reconcile.swap(false, Ordering::SeqCst) {
            continue;
        }
        if let Err(error) = reconcile(&state.pool, bus).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "reconciling the connector bucket failed; will retry"
            );
            state.needs_reconcile.store(true, Ordering::SeqCst);
        }
    }
}
