//! The connections watching one key's presence, and the push each of them gets when the
//! key's connection count changes.
//!
//! An engine keeps a [`Watchers`] beside a key only while someone watches it, so a key
//! nobody watches pays one `Option` check per connect and disconnect. A push goes through
//! the watcher's bounded outbox, where pushes of one key coalesce (see [`crate::peer::outbox`]):
//! a storm of changes costs a watcher at most one queued frame per key and flip.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::observability::metrics::Metrics;
use crate::peer::outbox::Pushed;
use crate::peer::registry::{Framing, Peer, PeerId};
use crate::protocol;

/// The watchers of one key. See the module docs.
#[derive(Debug)]
pub struct Watchers {
    /// The key, shared with each watcher's coalescing slot.
    key: Arc<str>,
    /// Every watcher, by connection.
    peers: HashMap<PeerId, Arc<Peer>>,
}

impl Watchers {
    /// No watchers of `key` yet.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.into(),
            peers: HashMap::new(),
        }
    }

    /// Adds `peer`; `false` if it already watched the key.
    pub fn add(&mut self, peer: &Arc<Peer>) -> bool {
        self.peers.insert(peer.id, Arc::clone(peer)).is_none()
    }

    /// Removes `peer`; `false` if it did not watch the key.
    pub fn remove(&mut self, peer: &Peer) -> bool {
        self.peers.remove(&peer.id).is_some()
    }

    /// Whether nobody watches the key any more.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Pushes `connections`, the key's new count, to every watcher, each framed as it
    /// wants it (a WebSocket object or a Server-Sent Event), each framing made once.
    pub fn changed(&self, connections: usize, metrics: &Metrics) {
        let (mut json, mut event): (Option<Utf8Bytes>, Option<Utf8Bytes>) = (None, None);
        let online = connections > 0;
        for peer in self.peers.values() {
            let frame = match peer.framing() {
                Framing::Events => event
                    .get_or_insert_with(|| {
                        protocol::encode_presence_event(&self.key, connections).into()
                    })
                    .clone(),
                Framing::Plain | Framing::Envelope => json
                    .get_or_insert_with(|| protocol::encode_presence(&self.key, connections).into())
                    .clone(),
            };
            match peer.outbox.push_presence(&self.key, frame, online) {
                Ok(Pushed::Queued) => {
                    metrics.presence_events.inc();
                }
                Ok(Pushed::Coalesced) => {
                    metrics.presence_events_coalesced.inc();
                }
                // A watcher that cannot keep up is closed as a slow consumer, like any
                // other; a closing one no longer counts.
                Err(_) => {}
            }
        }
    }
}
