//! The connection limit: `--max-connections` slots, and a small allowance of connections
//! past it that can still reach `/healthz`, `/readyz` and `/metrics`.
//!
//! A full relay is a healthy relay: a liveness probe or a Prometheus scrape that arrives
//! while every slot is taken must still get its answer, or the orchestrator restarts a
//! working relay and drops every client. Such connections get an *overflow place* instead
//! of a slot. They cannot become WebSockets (an upgrade gets 503 unless a slot has freed
//! up meanwhile), they serve one request without keep-alive, and at most
//! [`OVERFLOW_ALLOWANCE`] exist at once. When the allowance is full, a new connection
//! takes the place of the oldest one, which is closed: silent sockets opened to lock the
//! probes out are pushed out by the next arrival, and a probe is refused only if the
//! allowance turns over completely while its own request is on the way.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Connections past `--max-connections` served at once (one request each). Probes and
/// scrapes are a handful; a refused WebSocket client holds its place for one request.
pub const OVERFLOW_ALLOWANCE: usize = 64;

/// The relay's connection slots and its overflow allowance.
#[derive(Debug)]
pub struct Capacity {
    /// One permit per connection that may become a WebSocket.
    slots: Arc<Semaphore>,
    /// `--max-connections`, for messages.
    limit: usize,
    /// The open overflow places, oldest first.
    overflow: Arc<Mutex<OverflowQueue>>,
}

/// What an accepted connection got.
#[derive(Debug)]
pub enum Admission {
    /// A connection slot: the connection may become a WebSocket.
    Slot(OwnedSemaphorePermit),
    /// The relay was full: plain HTTP only, and a newer arrival may evict it.
    Overflow(OverflowPlace),
}

/// A connection's place in the overflow allowance; given back when dropped.
#[derive(Debug)]
pub struct OverflowPlace {
    /// Identifies this place in the queue.
    id: u64,
    /// Cancelled when a newer connection takes this place.
    evicted: CancellationToken,
    /// The queue to leave on drop.
    queue: Arc<Mutex<OverflowQueue>>,
}

#[derive(Debug, Default)]
struct OverflowQueue {
    /// The id of the next place.
    next_id: u64,
    /// Open places, oldest first.
    open: VecDeque<(u64, CancellationToken)>,
}

impl Capacity {
    /// `limit` slots (`--max-connections`) and an empty overflow allowance.
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            overflow: Arc::default(),
        }
    }

    /// `--max-connections`.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot if one is free, else an overflow place (evicting the oldest when the
    /// allowance is full).
    pub fn admit(&self) -> Admission {
        match self.try_slot() {
            Some(slot) => Admission::Slot(slot),
            None => Admission::Overflow(self.overflow_place()),
        }
    }

    /// A slot, if one is free now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Whether a new connection would get a slot now.
    pub fn has_free_slot(&self) -> bool {
        self.slots.available_permits() > 0
    }

    /// Overflow places in use.
    pub fn overflow_len(&self) -> usize {
        lock(&self.overflow).open.len()
    }

    fn overflow_place(&self) -> OverflowPlace {
        let mut queue = lock(&self.overflow);
        while queue.open.len() >= OVERFLOW_ALLOWANCE {
            if let Some((_, oldest)) = queue.open.pop_front() {
                oldest.cancel();
            }
        }
        let id = queue.next_id;
        queue.next_id += 1;
        let evicted = CancellationToken::new();
        queue.open.push_back((id, evicted.clone()));
        OverflowPlace {
            id,
            evicted,
            queue: Arc::clone(&self.overflow),
        }
    }
}

impl OverflowPlace {
    /// Completes when a newer connection has taken this place.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.evicted.clone().cancelled_owned()
    }

    /// Whether a newer connection has taken this place.
    pub fn is_evicted(&self) -> bool {
        self.evicted.is_cancelled()
    }
}

impl Drop for OverflowPlace {
    fn drop(&mut self) {
        let mut queue = lock(&self.queue);
        // At most OVERFLOW_ALLOWANCE entries.
        if let Some(index) = queue.open.iter().position(|(id, _)| *id == self.id) {
            queue.open.remove(index);
        }
    }
}

/// The queue's invariants hold between statements, so a panic elsewhere cannot leave
/// it half-updated: a poisoned lock is still usable.
fn lock(queue: &Mutex<OverflowQueue>) -> std::sync::MutexGuard<'_, OverflowQueue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overflow(admission: Admission) -> OverflowPlace {
        match admission {
            Admission::Overflow(place) => place,
            Admission::Slot(_) => panic!("expected an overflow place"),
        }
    }

    #[test]
    fn slots_first_then_overflow_places() {
        let capacity = Capacity::new(2);
        let first = capacity.admit();
        let _second = capacity.admit();
        assert!(matches!(first, Admission::Slot(_)));
        assert!(!capacity.has_free_slot());
        let place = overflow(capacity.admit());
        assert!(!place.is_evicted());
        assert_eq!(capacity.overflow_len(), 1);
        drop(first);
        assert!(capacity.has_free_slot());
        assert!(capacity.try_slot().is_some());
        drop(place);
        assert_eq!(capacity.overflow_len(), 0);
    }

    #[test]
    fn a_full_allowance_evicts_its_oldest_place() {
        let capacity = Capacity::new(0);
        let places: Vec<_> = (0..OVERFLOW_ALLOWANCE)
            .map(|_| overflow(capacity.admit()))
            .collect();
        assert!(places.iter().all(|p| !p.is_evicted()));
        let newest = overflow(capacity.admit());
        assert!(places[0].is_evicted());
        assert!(places[1..].iter().all(|p| !p.is_evicted()));
        assert!(!newest.is_evicted());
        assert_eq!(capacity.overflow_len(), OVERFLOW_ALLOWANCE);
        // The evicted place is already out of the queue; dropping it removes nothing else.
        let mut places = places.into_iter();
        drop(places.next());
        assert_eq!(capacity.overflow_len(), OVERFLOW_ALLOWANCE);
        drop(places);
        assert_eq!(capacity.overflow_len(), 1);
    }
}
