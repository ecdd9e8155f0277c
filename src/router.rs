//! The one narrow interface through which connections register and messages are routed.
//!
//! Connection code only calls these methods. Today every key lives in this process's
//! [`Registry`]; reaching keys on other relay nodes (e.g. through Redis) is a change to
//! this module alone: `route` would also publish, and a subscriber task would feed
//! remote messages to [`Registry::deliver`].

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::registry::{Delivery, Peer, Registry};

/// Routes messages to the connections registered under a key.
#[derive(Debug, Default)]
pub struct Router {
    /// The connections of this process, by key.
    registry: Registry,
}

impl Router {
    /// A router with no registrations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `peer` reachable under `key`.
    pub fn register(&self, key: &str, peer: &Arc<Peer>) {
        self.registry.register(key, peer);
    }

    /// Makes `peer` unreachable under `key`; other connections under `key` stay.
    pub fn deregister(&self, key: &str, peer: &Peer) {
        self.registry.deregister(key, peer);
    }

    /// Hands `frame` to every live connection under `key`.
    pub fn route(&self, key: &str, frame: Utf8Bytes) -> Delivery {
        self.registry.deliver(key, &frame)
    }

    /// How many keys are reachable.
    pub fn key_count(&self) -> usize {
        self.registry.key_count()
    }
}
