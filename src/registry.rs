//! Which live connections are registered under which key.
//!
//! The forward map (key to connections) is sharded, so routing on different keys does
//! not contend on one lock. The reverse map (connection to key) is the key each
//! connection task keeps for itself: a connection holds at most one key, so releasing it
//! on close is one O(1) lookup, and it only ever removes that connection's own entry,
//! never another connection's registration under the same key.

use std::sync::atomic::{AtomicU64, Ordering};
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
}

impl Peer {
    /// A new peer with a fresh id and an empty outbox.
    pub fn new(limits: OutboxLimits) -> Arc<Self> {
        Arc::new(Self {
            id: PeerId::next(),
            outbox: Outbox::new(limits),
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
    /// Each key's live connections, in registration order.
    keys: DashMap<Box<str>, Vec<Arc<Peer>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `peer` under `key`, beside any connections already there.
    pub fn register(&self, key: &str, peer: &Arc<Peer>) {
        // The lookup by &str first spares allocating the key when it is already there.
        if let Some(mut peers) = self.keys.get_mut(key) {
            peers.push(Arc::clone(peer));
            return;
        }
        self.keys
            .entry(key.into())
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Arc::clone(peer));
    }

    /// Removes `peer`'s own entry under `key`; other connections under it stay.
    pub fn deregister(&self, key: &str, peer: PeerId) {
        let now_empty = match self.keys.get_mut(key) {
            Some(mut peers) => {
                peers.retain(|p| p.id != peer);
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

    /// Queues `frame` for every connection under `key`, in registration order.
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
        registry.deregister("k", a.id);
        assert_eq!(registry.connections_under("k"), 1);
        assert_eq!(registry.deliver("k", &"x".into()).delivered, 1);
        assert_eq!(queued(&b), 1);
        registry.deregister("k", b.id);
        assert_eq!(registry.key_count(), 0);
        // Deregistering again, or under a key never held, changes nothing.
        registry.deregister("k", b.id);
        registry.deregister("never", a.id);
        assert_eq!(registry.key_count(), 0);
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
