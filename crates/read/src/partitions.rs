//! What this process knows of its connectors' partitions, so that the
//! store's hot path asks PostgreSQL nothing when the partition a record
//! goes to is known to exist, which is nearly always: the maintenance task
//! makes them ahead (`maintenance`), and the store makes one itself only on
//! a miss (a late record, a partition not made ahead yet).
//!
//! What is known may be stale: another replica may have dropped a
//! partition by retention. A row sent to it then fails the whole group
//! with "no partition found" (23514); the store forgets what it knew of
//! the connector and the group is stored again, finding out afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_runtime::partitions::{self, Partition};
use sqlx::PgConnection;
use uuid::Uuid;

/// Known partitions per connector, shared by the store and the
/// maintenance task.
pub(crate) struct PartitionCache {
    /// The span of partitions this process makes.
    pub span: Duration,
    known: Mutex<HashMap<Uuid, Vec<Partition>>>,
}

impl PartitionCache {
    pub(crate) fn new(span: Duration) -> PartitionCache {
        PartitionCache {
            span,
            known: Mutex::default(),
        }
    }

    fn covers(&self, connector: Uuid, at: DateTime<Utc>) -> bool {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(&connector)
            .is_some_and(|list| list.iter().any(|p| p.holds(at)))
    }

    /// What PostgreSQL said, in a transaction that committed.
    pub(crate) fn set(&self, connector: Uuid, partitions: Vec<Partition>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(connector, partitions);
    }

    pub(crate) fn forget(&self, connector: Uuid) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.remove(&connector);
    }
}

/// The partitions one store transaction relies on: the cache's, until it
/// has had to ask PostgreSQL (and perhaps make one), from then on what
/// PostgreSQL said, which the cache learns only once the transaction
/// commits.
pub(crate) struct GroupPartitions<'c> {
    cache: &'c PartitionCache,
    connector: Uuid,
    asked: Option<Vec<Partition>>,
}

impl<'c> GroupPartitions<'c> {
    pub(crate) fn new(cache: &'c PartitionCache, connector: Uuid) -> GroupPartitions<'c> {
        GroupPartitions {
            cache,
            connector,
            asked: None,
        }
    }

    /// Whether a row received at `at` can be written without asking.
    pub(crate) fn covers(&self, at: DateTime<Utc>) -> bool {
        match &self.asked {
            Some(list) => list.iter().any(|p| p.holds(at)),
            None => self.cache.covers(self.connector, at),
        }
    }

    /// Makes sure a partition holds `at`, in the transaction on `conn`.
    pub(crate) async fn ensure(
        &mut self,
        conn: &mut PgConnection,
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        if self.covers(at) {
            return Ok(());
        }
        let (list, made) = partitions::ensure(conn, self.connector, at, self.cache.span).await?;
        if made {
            metrics::counter!("sluice_read_partitions_made_total", "by" => "store").increment(1);
        }
        self.asked = Some(list);
        Ok(())
    }

    /// The transaction committed: what it learnt holds.
    pub(crate) fn committed(self) {
        if let Some(list) = self.asked {
            self.cache.set(self.connector, list);
        }
    }
}

/// Whether `error` is PostgreSQL finding no partition for a row (or a row
/// past the bound of a table being partitioned): 23514.
pub(crate) fn is_no_partition(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23514"))
}
