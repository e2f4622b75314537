//! Reading from a PostgreSQL streaming replica (`DATABASE_READ_URL`): the
//! GET routes read there, everything else (the store loop, deletions,
//! replays, maintenance) writes the primary.
//!
//! A page read on a replica keeps SPEC 8's promise for the reason it holds
//! on the primary (see `records`): one connector's writers commit one after
//! the other in `_id` order, each taking the stats row lock only once the
//! one before has written its commit record. So their commit records lie
//! in the WAL in `_id` order, and a replica, which replays the WAL in order
//! and makes a transaction visible when it replays its commit, shows every
//! `_id` up to the bound it shows, whatever it lags.
//!
//! What a replica changes is when a commit shows. A long-poll must not sit
//! until its deadline because it looked before its replica caught up with
//! the commit that woke it. A stored notice goes out after its commit, so
//! when a reader on a replica is woken (or has just subscribed, for a
//! commit whose notice went out before), it reads the primary's WAL
//! position and waits for its replica to replay that far before it looks
//! again ([`catch_up`]). The cost is the reader's, paid only on a replica;
//! the store loop does nothing more for it.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a reader asks its replica how far it has replayed while it
/// waits: replicas on the same network lag by milliseconds.
const REPLAY_POLL: Duration = Duration::from_millis(5);

/// Waits until `replica` has replayed every commit that `primary` had made
/// when it was called, `deadline` passes or `shutdown` comes.
pub(crate) async fn catch_up(
    primary: &PgPool,
    replica: &PgPool,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> sqlx::Result<()> {
    let position = primary_position(primary).await?;
    wait_for_replay(replica, position, deadline, shutdown).await
}

/// The primary's WAL position now, in bytes: every commit that has
/// returned lies at or before it.
async fn primary_position(primary: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
        .fetch_one(primary)
        .await
}

/// Waits until `replica` has replayed the primary's WAL up to `position`,
/// `deadline` passes or `shutdown` comes. A server that replays nothing
/// (`DATABASE_READ_URL` naming a primary) has everything already.
async fn wait_for_replay(
    replica: &PgPool,
    position: i64,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> sqlx::Result<()> {
    loop {
        let replayed: Option<i64> =
            sqlx::query_scalar("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(replica)
                .await?;
        if replayed.is_none_or(|replayed| replayed >= position) {
            return Ok(());
        }
        let next = Instant::now() + REPLAY_POLL;
        if next >= deadline || shutdown.is_cancelled() {
            return Ok(());
        }
        tokio::time::sleep_until(next).await;
    }
}
