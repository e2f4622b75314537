//! The read API's maintenance of records tables, every
//! `SLUICE_MAINTENANCE_INTERVAL`, each connector by one replica at a time
//! (a session advisory lock per connector; a replica that finds it taken
//! passes on to the next connector):
//!
//! - a table made before partitioning is partitioned, online
//!   (`partitions::migrate_plain_table`);
//! - the partitions of now and of the next span are made ahead, so that
//!   the store finds them and makes one itself only for a late record;
//! - retention: partitions whose upper bound is older than now − retention
//!   are dropped, each in a transaction that subtracts its rows from
//!   `connector_stats.records` under the stats row lock the store takes, so
//!   the counts stay exact and never race with a store's commit. Rejected
//!   records older than now − retention are deleted in batches, their count
//!   subtracted likewise. A lock that does not come within
//!   `partitions::LOCK_TIMEOUT` is given up until the next run, so readers
//!   and writers never queue long behind it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_runtime::partitions::{self, LOCK_TIMEOUT, Layout};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db;
use crate::partitions::PartitionCache;

/// Rejected records deleted per transaction.
const REJECTED_BATCH: i64 = 5_000;

pub(crate) struct Maintenance {
    pub pool: PgPool,
    pub partitions: Arc<PartitionCache>,
    pub interval: Duration,
}

impl Maintenance {
    /// Runs a pass every interval, the first one interval after start
    /// (until then the store makes the partitions it needs), until
    /// `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let first = tokio::time::Instant::now() + self.interval;
        let mut every = tokio::time::interval_at(first, self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.pass() => {
                    if let Err(error) = result {
                        tracing::warn!(error = format!("{error:#}"), "maintenance failed; trying again next time");
                    }
                }
            }
        }
    }

    async fn pass(&self) -> anyhow::Result<()> {
        let connectors = db::connector_retentions(&self.pool).await?;
        let options: PgConnectOptions = (*self.pool.connect_options()).clone();
        // A connection of its own, which holds session advisory locks:
        // dropped after any failure, so that no lock outlives it.
        let mut conn: Option<PgConnection> = None;
        for (connector, retention) in connectors {
            let mut session = match conn.take() {
                Some(session) => session,
                None => options.connect().await?,
            };
            match self.maintain(&mut session, connector, retention).await {
                Ok(()) => conn = Some(session),
                Err(error) => tracing::warn!(
                    %connector,
                    error = format!("{error:#}"),
                    "maintaining a connector's records failed"
                ),
            }
        }
        if let Some(session) = conn {
            let _ = session.close().await;
        }
        Ok(())
    }

    /// One connector's maintenance, if no other replica is at it.
    async fn maintain(
        &self,
        conn: &mut PgConnection,
        connector: Uuid,
        retention: Option<Duration>,
    ) -> anyhow::Result<()> {
        if !partitions::try_lock_maintenance(conn, connector).await? {
            return Ok(());
        }
        self.maintain_locked(conn, connector, retention).await?;
        partitions::unlock_maintenance(conn, connector).await?;
        Ok(())
    }

    async fn maintain_locked(
        &self,
        conn: &mut PgConnection,
        connector: Uuid,
        retention: Option<Duration>,
    ) -> anyhow::Result<()> {
        let span = self.partitions.span;
        match partitions::layout(conn, connector).await? {
            Layout::Missing => return Ok(()),
            Layout::Partitioned => {}
            Layout::Plain => {
                if !partitions::migrate_plain_table(conn, connector, span).await? {
                    tracing::info!(%connector, "partitioning the records table waits for locks; trying again next time");
                    return Ok(());
                }
            }
        }
        let now = Utc::now();
        for at in [now, now + TimeDelta::seconds(span.as_secs() as i64)] {
            let mut tx = conn.begin().await?;
            set_lock_timeout(&mut tx).await?;
            let (list, made) = partitions::ensure(&mut tx, connector, at, span).await?;
            tx.commit().await?;
            if made {
                metrics::counter!("sluice_read_partitions_made_total", "by" => "maintenance")
                    .increment(1);
            }
            self.partitions.set(connector, list);
        }
        if let Some(retention) = retention {
            let cutoff = now - TimeDelta::from_std(retention)?;
            self.drop_expired(conn, connector, cutoff).await?;
            delete_rejected(conn, connector, cutoff).await?;
        }
        Ok(())
    }

    /// Drops the partitions that end at or before `cutoff`, oldest first,
    /// each with its count.
    async fn drop_expired(
        &self,
        conn: &mut PgConnection,
        connector: Uuid,
        cutoff: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let expired: Vec<_> = partitions::list(conn, connector)
            .await?
            .into_iter()
            .filter(|p| p.to.is_some_and(|to| to <= cutoff))
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        for partition in &expired {
            let mut tx = conn.begin().await?;
            set_lock_timeout(&mut tx).await?;
            match drop_counted(&mut tx, connector, &partition.name).await {
                Ok(Some(rows)) => {
                    tx.commit().await?;
                    tracing::info!(%connector, partition = %partition.name, rows, "retention dropped a partition");
                    metrics::counter!("sluice_read_retention_dropped_records_total")
                        .increment(rows as u64);
                }
                Ok(None) => break,
                Err(error) if is_lock_timeout(&error) => {
                    tracing::info!(%connector, partition = %partition.name, "retention waits for locks; trying again next time");
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        // Whatever happened, what PostgreSQL has now is what to know.
        self.partitions
            .set(connector, partitions::list(conn, connector).await?);
        Ok(())
    }
}

/// Drops one partition and takes its rows off the connector's count, in
/// the transaction on `conn`. `None`: the connector is gone.
async fn drop_counted(
    conn: &mut PgConnection,
    connector: Uuid,
    partition: &str,
) -> sqlx::Result<Option<i64>> {
    // The store's lock order: the connector's row, its stats row, then the
    // table. Under the stats row no store of this connector is under way,
    // so the count is the partition's final one.
    if db::lock_for_retention(conn, connector).await?.is_none() {
        return Ok(None);
    }
    let rows = partitions::count_rows(conn, partition).await?;
    partitions::drop_partition(conn, partition).await?;
    db::subtract_counts(conn, connector, rows, 0).await?;
    Ok(Some(rows))
}

/// Deletes the connector's rejected records received before `cutoff`, a
/// batch per transaction.
async fn delete_rejected(
    conn: &mut PgConnection,
    connector: Uuid,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<()> {
    loop {
        let mut tx = conn.begin().await?;
        set_lock_timeout(&mut tx).await?;
        match delete_rejected_batch(&mut tx, connector, cutoff).await {
            Ok(deleted) => {
                tx.commit().await?;
                if deleted > 0 {
                    metrics::counter!("sluice_read_retention_dropped_rejected_total")
                        .increment(deleted as u64);
                }
                if deleted < REJECTED_BATCH {
                    return Ok(());
                }
            }
            Err(error) if is_lock_timeout(&error) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// One batch of [`delete_rejected`], with its count, in the transaction on
/// `conn`; how many it deleted.
async fn delete_rejected_batch(
    conn: &mut PgConnection,
    connector: Uuid,
    cutoff: DateTime<Utc>,
) -> sqlx::Result<i64> {
    if db::lock_for_retention(conn, connector).await?.is_none() {
        return Ok(0);
    }
    let deleted = db::delete_rejected_before(conn, connector, cutoff, REJECTED_BATCH).await?;
    db::subtract_counts(conn, connector, 0, deleted).await?;
    Ok(deleted)
}

async fn set_lock_timeout(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(conn)
        .await
        .map(drop)
}

fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03"))
}
