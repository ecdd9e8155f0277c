//! Which live connections are registered under which key.
//!
//! The forward map (key to connections) is sharded, so routing on different keys does
//! not contend on one lock. The reverse map (connection to key) is the key each
//! connection task keeps for itself, and each connection also knows its slot in that
//! key's list: a connection holds at most one key, so releasing it on close is one
//! lookup and one `swap_remove`, O(1) however many connections share the key, and it
//! only ever removes that connection's own entry, never another connection's
//! registration under the same key.
//!
//! `swap_remove` moves the last connection into the freed slot, so the order in which a
//! key's connections are handed a message is not their registration order. Nothing
//! depends on that order: a message is queued for all of them in one pass, and each
//! connection still receives its messages in the order they were routed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::outbox::{Outbox, OutboxLimits, PushError};

/// A process-unique connection number, for logs and for removing exactly one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(u64);

impl PeerId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PeerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The part of a connection that other tasks can reach: its id and its outbox.
#[derive(Debug)]
pub struct Peer {
    /// Identifies this connection's entry under a key.
    pub id: PeerId,
    /// Frames waiting to be written to this connection.
    pub outbox: Outbox,
    /// Where this connection is in its key's list while registered. Read and written
    /// only under that key's shard lock, which orders the accesses.
    slot: AtomicUsize,
}

impl Peer {
    /// A new peer with a fresh id and an empty outbox.
    pub fn new(limits: OutboxLimits) -> Arc<Self> {
        Arc::new(Self {
            id: PeerId::next(),
            outbox: Outbox::new(limits),
            slot: AtomicUsize::new(0),
        })
    }
}

/// What happened to one delivery.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Connections the frame was queued for.
    pub delivered: usize,
    /// Connections whose queue was full: they are being closed as slow consumers.
    pub overflowed: usize,
}

/// The key-to-connections map. See the module docs.
#[derive(Debug, Default)]
pub struct Registry {
    /// Each key's live connections; each knows its index here (`Peer::slot`).
    keys: DashMap<Box<str>, Vec<Arc<Peer>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `peer` under `key`, beside any connections already there. A connection is
    /// registered under at most one key at a time.
    pub fn register(&self, key: &str, peer: &Arc<Peer>) {
        // The lookup by &str first spares allocating the key when it is already there.
        if let Some(mut peers) = self.keys.get_mut(key) {
            push(&mut peers, peer);
            return;
        }
        let mut peers = self
            .keys
            .entry(key.into())
            .or_insert_with(|| Vec::with_capacity(1));
        push(&mut peers, peer);
    }

    /// Removes `peer`'s own entry under `key`, in O(1); other connections under it
    /// stay. Does nothing if `peer` is not registered under `key`.
    pub fn deregister(&self, key: &str, peer: &Peer) {
        let now_empty = match self.keys.get_mut(key) {
            Some(mut peers) => {
                let slot = peer.slot.load(Ordering::Relaxed);
                if peers.get(slot).is_some_and(|p| p.id == peer.id) {
                    peers.swap_remove(slot);
                    if let Some(moved) = peers.get(slot) {
                        moved.slot.store(slot, Ordering::Relaxed);
                    }
                    // A key that once had many connections gives the room back as they
                    // leave; halving at a quarter keeps this amortised O(1).
                    if peers.capacity() > SHRINK_FROM && peers.len() < peers.capacity() / 4 {
                        let keep = peers.len() * 2;
                        peers.shrink_to(keep);
                    }
                }
                peers.is_empty()
            }
            None => false,
        };
        if now_empty {
            // Re-checked under the shard's write lock: a concurrent register may have
            // added a connection since the guard above was released.
            self.keys.remove_if(key, |_, peers| peers.is_empty());
        }
    }

    /// Queues `frame` for every connection under `key`.
    pub fn deliver(&self, key: &str, frame: &Utf8Bytes) -> Delivery {
        let mut outcome = Delivery::default();
        if let Some(peers) = self.keys.get(key) {
            for peer in peers.iter() {
                match peer.outbox.push(frame.clone()) {
                    Ok(()) => outcome.delivered += 1,
                    Err(PushError::Overflowed) => outcome.overflowed += 1,
                    // Closing connections are no longer live: they are not counted.
                    Err(PushError::Closed) => {}
                }
            }
        }
        outcome
    }

    /// How many keys have at least one connection.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many connections are registered under `key`.
    pub fn connections_under(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, |peers| peers.len())
    }
}

/// Below this many slots a key's list is not worth shrinking.
const SHRINK_FROM: usize = 16;

/// Appends `peer` to a key's list and records its slot.
fn push(peers: &mut Vec<Arc<Peer>>, peer: &Arc<Peer>) {
    peer.slot.store(peers.len(), Ordering::Relaxed);
    peers.push(Arc::clone(peer));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Drained;

    const LIMITS: OutboxLimits = OutboxLimits {
        max_frames: 4,
        max_bytes: 1024,
    };

    fn queued(peer: &Peer) -> usize {
        match peer.outbox.take() {
            Drained::Frames(frames) => frames.len(),
            Drained::Overflowed => usize::MAX,
        }
    }

    #[test]
    fn delivers_to_every_connection_under_a_key() {
        let registry = Registry::new();
        let (a, b, c) = (Peer::new(LIMITS), Peer::new(LIMITS), Peer::new(LIMITS));
        registry.register("k", &a);
        registry.register("k", &b);
        registry.register("other", &c);
        let outcome = registry.deliver("k", &"hi".into());
        assert_eq!(outcome.delivered, 2);
        assert_eq!((queued(&a), queued(&b), queued(&c)), (1, 1, 0));
        assert_eq!(registry.deliver("nobody", &"hi".into()).delivered, 0);
    }

    #[test]
    fn closing_one_connection_never_evicts_another() {
        let registry = Registry::new();
        let (a, b) = (Peer::new(LIMITS), Peer::new(LIMITS));
        registry.register("k", &a);
        registry.register("k", &b);
        registry.deregister("k", &a);
        assert_eq!(registry.connections_under("k"), 1);
        assert_eq!(registry.deliver("k", &"x".into()).delivered, 1);
        assert_eq!(queued(&b), 1);
        registry.deregister("k", &b);
        assert_eq!(registry.key_count(), 0);
        // Deregistering again, or under a key never held, changes nothing.
        registry.deregister("k", &b);
        registry.deregister("never", &a);
        assert_eq!(registry.key_count(), 0);
    }

    #[test]
    fn any_connection_leaves_its_key_and_only_it() {
        let registry = Registry::new();
        let peers: Vec<_> = (0..100).map(|_| Peer::new(LIMITS)).collect();
        for peer in &peers {
            registry.register("k", peer);
        }
        let other = Peer::new(LIMITS);
        registry.register("other", &other);
        // Leave in an order that moves entries around: every third, then the rest from
        // the end, checking after each step who is still reached.
        let mut order: Vec<usize> = (0..100).step_by(3).collect();
        order.extend((0..100).rev().filter(|i| i % 3 != 0));
        let mut left = std::collections::HashSet::new();
        for i in order {
            registry.deregister("k", &peers[i]);
            // A stale call (already gone) or a wrong key changes nothing.
            registry.deregister("k", &peers[i]);
            registry.deregister("other", &peers[i]);
            left.insert(i);
            let outcome = registry.deliver("k", &"x".into());
            assert_eq!(outcome.delivered, 100 - left.len());
            for (j, peer) in peers.iter().enumerate() {
                let expected = usize::from(!left.contains(&j));
                assert_eq!(queued(peer), expected, "peer {j} after {} left", left.len());
            }
        }
        assert_eq!(registry.key_count(), 1);
        assert_eq!(registry.deliver("other", &"x".into()).delivered, 1);
    }

    #[test]
    fn a_key_gives_back_its_room_as_connections_leave() {
        let registry = Registry::new();
        let peers: Vec<_> = (0..1000).map(|_| Peer::new(LIMITS)).collect();
        for peer in &peers {
            registry.register("k", peer);
        }
        for peer in &peers[1..] {
            registry.deregister("k", peer);
        }
        let capacity = registry.keys.get("k").map(|p| p.capacity());
        assert!(capacity.is_some_and(|c| c <= SHRINK_FROM), "{capacity:?}");
        assert_eq!(registry.deliver("k", &"x".into()).delivered, 1);
        assert_eq!(queued(&peers[0]), 1);
    }

    #[test]
    fn overflowed_and_closed_connections_are_not_counted_as_delivered() {
        let registry = Registry::new();
        let (slow, closed, fine) = (Peer::new(LIMITS), Peer::new(LIMITS), Peer::new(LIMITS));
        for peer in [&slow, &closed, &fine] {
            registry.register("k", peer);
        }
        for _ in 0..LIMITS.max_frames {
            slow.outbox.push("fill".into()).expect("room");
        }
        closed.outbox.close();
        let outcome = registry.deliver("k", &"x".into());
        assert_eq!(
            outcome,
            Delivery {
                delivered: 1,
                overflowed: 1
            }
        );
    }
}
