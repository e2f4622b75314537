//! Live replicas of one kind (gateways, read APIs), counted through
//! heartbeats in the `{namespace}_replicas` bucket, so that each replica
//! takes its share of every rate limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::bus::{self, Namespace};

/// How often a replica renews its heartbeat and counts the others.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a heartbeat lives: a replica that stopped without saying so
/// (killed) stops counting after this, and the others' shares grow back.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(15);

/// Opens the replicas bucket, creating it if missing, with `replicas`
/// copies. Held in memory: a heartbeat is worth nothing after a restart of
/// NATS, and comes back within [`HEARTBEAT_INTERVAL`].
pub(super) async fn replicas_bucket(
    js: &jetstream::Context,
    ns: &Namespace,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    bus::open_bucket(
        js,
        kv::Config {
            bucket: ns.replicas_bucket(),
            history: 1,
            max_age: HEARTBEAT_TTL,
            storage: stream::StorageType::Memory,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
}

/// One replica's entry in the replicas bucket.
pub(super) struct Heartbeat {
    pub(super) bucket: kv::Store,
    pub(super) key: String,
    pub(super) prefix: String,
    pub(super) role: &'static str,
    pub(super) replicas: Arc<AtomicU32>,
}

impl Heartbeat {
    /// Renews this replica's entry, then counts the live ones.
    pub(super) async fn beat(&self) -> anyhow::Result<()> {
        self.bucket
            .put(&self.key, bytes::Bytes::from_static(b"1"))
            .await?;
        self.count().await
    }

    /// Every later heartbeat of this role's replicas, and their removals.
    pub(super) async fn watch(&self) -> anyhow::Result<kv::Watch> {
        Ok(self.bucket.watch(format!("{}>", self.prefix)).await?)
    }

    async fn count(&self) -> anyhow::Result<()> {
        let mut keys = self.bucket.keys().await?;
        let mut live = 0u32;
        while let Some(key) = keys.next().await {
            if key?.starts_with(&self.prefix) {
                live += 1;
            }
        }
        // This replica has just written its own entry: at least one.
        let live = live.max(1);
        if self.replicas.swap(live, Ordering::Relaxed) != live {
            tracing::info!(
                role = self.role,
                replicas = live,
                "replicas sharing the rate limits"
            );
        }
        metrics::gauge!("sluice_rate_limit_replicas", "role" => self.role).set(f64::from(live));
        Ok(())
    }

    /// Beats every [`HEARTBEAT_INTERVAL`], and counts again whenever
    /// another replica joins or leaves, until `shutdown`; then removes its
    /// entry, so the others' shares grow at once.
    pub(super) async fn run(self, mut watch: Option<kv::Watch>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(error) = self.beat().await {
                        tracing::warn!(error = format!("{error:#}"), "renewing the replica heartbeat failed");
                    }
                    if watch.is_none() {
                        watch = self.watch().await.ok();
                    }
                }
                alive = next_change(&mut watch) => {
                    if !alive {
                        watch = None;
                    } else if let Err(error) = self.count().await {
                        tracing::warn!(error = format!("{error:#}"), "counting replicas failed");
                    }
                }
            }
        }
        let _ = self.bucket.delete(&self.key).await;
    }
}

/// Whether the watch brought a change; `false` once it has ended. Never
/// resolves without a watch.
async fn next_change(watch: &mut Option<kv::Watch>) -> bool {
    match watch.as_mut() {
        Some(watch) => watch.next().await.is_some(),
        None => std::future::pending().await,
    }
}
