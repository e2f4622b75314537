//! What the gateway shares between requests, shared fairly between
//! connectors: memory (`SLUICE_INGEST_MEMORY_BYTES`) and the slots that
//! validate bodies (one per core).
//!
//! A request reserves before it holds: its body as it arrives (all of it at
//! once when `Content-Length` announces it), then, before it takes a
//! validation slot, what validation and the encoded messages usually hold;
//! they take more only if it is free at once, never waiting with a slot. One connector may hold at most half
//! of the memory, so a connector under load always leaves room for the
//! others; and whoever waits is served in order of how little their
//! connector holds, then of arrival, so a request to a quiet connector goes
//! before the queue of a busy one. A request that cannot get what it needs
//! within [`PATIENCE`] is answered 503 instead of growing the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

/// How long a request waits for memory or a validation slot before it is
/// answered 503. Long enough to outlast the requests ahead of it in the
/// usual case (validating a full body takes well under a second), short
/// enough that a client is not left hanging.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

/// Why a request cannot have what it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Others hold it, and did not let go within [`PATIENCE`].
    #[error("the gateway is busy")]
    Busy,
    /// More than the request may ever hold, whatever the load: its
    /// connector's share, or what was reserved for its validation.
    #[error("the request may hold at most {limit} units")]
    TooLarge { limit: usize },
}

/// A quantity (bytes, slots) shared between connectors; see the module
/// documentation for the order in which waiting requests are served.
#[derive(Clone)]
pub(crate) struct FairShare {
    pool: Arc<Pool>,
}

struct Pool {
    /// The most one connector may hold at once.
    share: usize,
    state: Mutex<PoolState>,
}

struct PoolState {
    free: usize,
    /// Held per connector; connectors holding nothing are left out.
    held: HashMap<Uuid, usize>,
    /// Few at a time: one per request that cannot be served at once.
    waiting: Vec<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    connector: Uuid,
    units: usize,
    granted: oneshot::Sender<()>,
}

impl FairShare {
    /// `capacity` units in all, at most `share` of them for one connector.
    pub(crate) fn new(capacity: usize, share: usize) -> FairShare {
        FairShare {
            pool: Arc::new(Pool {
                share: share.min(capacity),
                state: Mutex::new(PoolState {
                    free: capacity,
                    held: HashMap::new(),
                    waiting: Vec::new(),
                    next_ticket: 0,
                }),
            }),
        }
    }

    /// The most one connector, and so one request, may hold.
    pub(crate) fn share(&self) -> usize {
        self.pool.share
    }

    /// Waits up to [`PATIENCE`] for `units` on behalf of `connector`.
    pub(crate) async fn acquire(&self, connector: Uuid, units: usize) -> Result<Held, Refusal> {
        let mut held = Held {
            pool: Arc::clone(&self.pool),
            connector,
            units: 0,
        };
        held.grow(units).await?;
        Ok(held)
    }
}

/// Units held for one request, given back when dropped.
pub(crate) struct Held {
    pool: Arc<Pool>,
    connector: Uuid,
    units: usize,
}

impl Held {
    pub(crate) fn units(&self) -> usize {
        self.units
    }

    /// Waits up to [`PATIENCE`] for `more` units, queued behind the
    /// requests of connectors that hold less.
    pub(crate) async fn grow(&mut self, more: usize) -> Result<(), Refusal> {
        if more == 0 {
            return Ok(());
        }
        if self.units.saturating_add(more) > self.pool.share {
            return Err(Refusal::TooLarge {
                limit: self.pool.share,
            });
        }
        let (granted, wait) = oneshot::channel();
        let ticket = {
            let mut state = self.pool.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push(Waiter {
                ticket,
                connector: self.connector,
                units: more,
                granted,
            });
            state.dispatch(self.pool.share);
            ticket
        };
        let mut pending = Pending {
            pool: &self.pool,
            ticket,
            connector: self.connector,
            units: more,
            wait,
            settled: false,
        };
        let outcome = tokio::time::timeout(PATIENCE, &mut pending.wait).await;
        pending.settled = true;
        match outcome {
            Ok(Ok(())) => {
                self.units += more;
                Ok(())
            }
            // Gone from the queue unless granted in the meantime, under the
            // same lock as this check.
            _ => {
                let mut state = self.pool.lock();
                if let Some(i) = state.waiting.iter().position(|w| w.ticket == ticket) {
                    state.waiting.swap_remove(i);
                    Err(Refusal::Busy)
                } else {
                    self.units += more;
                    Ok(())
                }
            }
        }
    }

    /// Takes `more` units at once if they are free, never waiting.
    pub(crate) fn try_grow(&mut self, more: usize) -> Result<(), Refusal> {
        if self.units.saturating_add(more) > self.pool.share {
            return Err(Refusal::TooLarge {
                limit: self.pool.share,
            });
        }
        let mut state = self.pool.lock();
        if more > state.free || state.held_by(&self.connector) + more > self.pool.share {
            return Err(Refusal::Busy);
        }
        state.free -= more;
        *state.held.entry(self.connector).or_insert(0) += more;
        self.units += more;
        Ok(())
    }

    /// Gives back what is held beyond `units`.
    pub(crate) fn shrink_to(&mut self, units: usize) {
        if units < self.units {
            self.pool.release(self.connector, self.units - units);
            self.units = units;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// The memory one request holds: reserved ahead from the gateway's budget,
/// and accounted as it is used.
pub(crate) struct RequestMemory {
    held: Held,
    used: usize,
}

impl RequestMemory {
    /// Grows the reservation by at least this much at a time, so that a
    /// body read in small chunks does not queue for each.
    const STEP: usize = 256 * 1024;

    /// Reserves `ahead` bytes (at most the share of one connector) before
    /// the request holds anything.
    pub(crate) async fn reserve(
        budget: &FairShare,
        connector: Uuid,
        ahead: usize,
    ) -> Result<RequestMemory, Refusal> {
        let held = budget.acquire(connector, ahead.min(budget.share())).await?;
        Ok(RequestMemory { held, used: 0 })
    }

    /// Accounts `bytes` more in use, first waiting for them if they are
    /// beyond the reservation.
    pub(crate) async fn hold(&mut self, bytes: usize) -> Result<(), Refusal> {
        let used = self.used.saturating_add(bytes);
        if used > self.held.units() {
            let share = self.held.pool.share;
            let missing = used - self.held.units();
            let step = missing
                .max(self.held.units() / 4)
                .max(Self::STEP)
                .min(share.saturating_sub(self.held.units()));
            self.held.grow(step.max(missing)).await?;
        }
        self.used = used;
        Ok(())
    }

    /// Accounts `bytes` more in use, never waiting: beyond the reservation,
    /// only if the memory is free at once. Validation holds a validation
    /// slot, and waiting with it would keep that slot from others, or wait
    /// on requests that themselves wait for the slot.
    pub(crate) fn hold_now(&mut self, bytes: usize) -> Result<(), Refusal> {
        let used = self.used.saturating_add(bytes);
        if used > self.held.units() {
            let share = self.held.pool.share;
            let missing = used - self.held.units();
            let step = (self.held.units() / 4)
                .max(Self::STEP)
                .min(share.saturating_sub(self.held.units()))
                .max(missing);
            self.held.try_grow(step)?;
        }
        self.used = used;
        Ok(())
    }

    /// Makes sure `total` bytes (at most the share) are reserved, so that
    /// what comes next rarely has to wait part way.
    pub(crate) async fn reserve_ahead(&mut self, total: usize) -> Result<(), Refusal> {
        let total = total.min(self.held.pool.share);
        self.held
            .grow(total.saturating_sub(self.held.units()))
            .await
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.used
    }

    /// `bytes` no longer in use; still reserved for what comes next.
    pub(crate) fn let_go(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Gives back the reservation beyond what is in use.
    pub(crate) fn settle(&mut self, in_use: usize) {
        self.used = in_use;
        self.held.shrink_to(in_use);
    }
}

/// A wait in the queue; dropped before it settled (the request was
/// cancelled), it leaves the queue, or gives back what it was granted.
struct Pending<'a> {
    pool: &'a Pool,
    ticket: u64,
    connector: Uuid,
    units: usize,
    wait: oneshot::Receiver<()>,
    settled: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.pool.lock();
        if let Some(i) = state.waiting.iter().position(|w| w.ticket == self.ticket) {
            state.waiting.swap_remove(i);
            // The head of the queue may have been this one.
            state.dispatch(self.pool.share);
        } else {
            drop(state);
            self.pool.release(self.connector, self.units);
        }
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // No code panics while holding it; a poisoned lock still holds
        // consistent counts.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release(&self, connector: Uuid, units: usize) {
        let mut state = self.lock();
        state.free += units;
        if let Some(held) = state.held.get_mut(&connector) {
            *held = held.saturating_sub(units);
            if *held == 0 {
                state.held.remove(&connector);
            }
        }
        state.dispatch(self.share);
    }
}

impl PoolState {
    fn held_by(&self, connector: &Uuid) -> usize {
        self.held.get(connector).copied().unwrap_or(0)
    }

    /// Grants waiting requests in order of how little their connector holds,
    /// then of arrival. Those whose own connector holds its share wait for
    /// it without holding up the others; otherwise the first in order that
    /// does not fit stops the round, so that a large request is not passed
    /// forever by small ones.
    fn dispatch(&mut self, share: usize) {
        loop {
            let next = self
                .waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| self.held_by(&w.connector) + w.units <= share)
                .min_by_key(|(_, w)| (self.held_by(&w.connector), w.ticket))
                .map(|(i, w)| (i, w.units));
            let Some((i, units)) = next else { return };
            if units > self.free {
                return;
            }
            let waiter = self.waiting.swap_remove(i);
            // A receiver gone means its request was dropped and its
            // `Pending` found it no longer queued: it gives the units back.
            let _ = waiter.granted.send(());
            self.free -= units;
            *self.held.entry(waiter.connector).or_insert(0) += units;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[tokio::test]
    async fn units_come_back_when_dropped() {
        let pool = FairShare::new(10, 10);
        let a = pool.acquire(connector(1), 6).await.unwrap();
        let b = pool.acquire(connector(2), 4).await.unwrap();
        drop(a);
        let mut c = pool.acquire(connector(3), 6).await.unwrap();
        c.shrink_to(1);
        let d = pool.acquire(connector(3), 5).await.unwrap();
        assert_eq!((b.units(), c.units(), d.units()), (4, 1, 5));
    }

    #[tokio::test]
    async fn one_connector_holds_at_most_its_share() {
        let pool = FairShare::new(10, 5);
        let mut a = pool.acquire(connector(1), 5).await.unwrap();
        assert_eq!(a.grow(1).await, Err(Refusal::TooLarge { limit: 5 }));
        // The other half is the others' whatever the first one does.
        let b = pool.acquire(connector(2), 5).await.unwrap();
        assert_eq!(b.units(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_cannot_be_served_in_time_is_busy() {
        let pool = FairShare::new(10, 5);
        let _a = pool.acquire(connector(1), 5).await.unwrap();
        let refused = pool.acquire(connector(1), 1).await;
        assert_eq!(refused.err(), Some(Refusal::Busy));
        // Nothing left queued or held for it.
        let state = pool.pool.lock();
        assert!(state.waiting.is_empty());
        assert_eq!((state.free, state.held_by(&connector(1))), (5, 5));
    }

    #[tokio::test]
    async fn the_quieter_connector_is_served_first() {
        let pool = FairShare::new(4, 3);
        let _busy = pool.acquire(connector(1), 2).await.unwrap();
        let other = pool.acquire(connector(3), 2).await.unwrap();
        // The busy connector queues first, the quiet one after it.
        let again = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(connector(1), 1).await.map(|h| h.units()) }
        });
        tokio::task::yield_now().await;
        let quiet = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(connector(2), 2).await }
        });
        tokio::task::yield_now().await;
        drop(other);
        let quiet = quiet.await.unwrap().unwrap();
        assert_eq!(quiet.units(), 2);
        assert!(!again.is_finished());
        drop(quiet);
        assert_eq!(again.await.unwrap(), Ok(1));
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing_behind() {
        let pool = FairShare::new(4, 4);
        let first = pool.acquire(connector(1), 4).await.unwrap();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(connector(2), 3).await.map(|h| h.units()) }
        });
        tokio::task::yield_now().await;
        waiting.abort();
        let _ = waiting.await;
        drop(first);
        let all = pool.acquire(connector(3), 4).await.unwrap();
        assert_eq!(all.units(), 4);
    }
}
