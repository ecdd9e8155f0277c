//! Presence watches under the Redis engine: a change on any relay reaches the watchers
//! on every relay.
//!
//! - A relay with watchers of K has an entry in K's watchers hash in Redis (`watch.lua`).
//!   While that hash exists, the scripts that change a relay's count under K publish the
//!   new cluster-wide count on K's channel as a presence event (`lib.lua`); for a key
//!   nobody watches they pay one `EXISTS`.
//! - The relay subscribes K's channel for its watchers as for its subscribers (the
//!   listener's per-key interest covers both), and hands each event to K's local
//!   [`Watchers`] when its count differs from the last one pushed. Each event carries
//!   Redis's clock as its version, so an event older than a count already read is ignored.
//! - A relay that dies is dropped by the relay that notices (see `roster.rs`), through the
//!   same scripts, so its watchers elsewhere get the event then (within about 15 s of
//!   a kill -9). After a lost subscription every watched key is read again, so no watcher
//!   is left with a stale state.

use std::sync::Arc;

use dashmap::DashMap;

use super::keys::{self, PresenceEvent};
use super::{request, roster, Shared};
use crate::delivery::engine::watchers::Watchers;
use crate::delivery::engine::{Preamble, Unavailable};
use crate::observability::metrics::Metrics;
use crate::peer::registry::Peer;

/// The keys watched on this relay. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Watches {
    keys: DashMap<Box<str>, Watched>,
}

/// One watched key.
#[derive(Debug)]
struct Watched {
    watchers: Watchers,
    /// Watches in flight (their script has not answered).
    joining: usize,
    /// The count last pushed (or answered).
    connections: usize,
    /// When that count was read, in Redis's clock (ms).
    version: i64,
}

impl Watched {
    fn new(key: &str) -> Self {
        Self {
            watchers: Watchers::new(key),
            joining: 0,
            connections: 0,
            version: i64::MIN,
        }
    }

    /// A count read at `version`: pushed if it is news.
    fn apply(&mut self, version: i64, connections: usize, metrics: &Metrics) {
        if version < self.version {
            return;
        }
        self.version = version;
        if connections != self.connections {
            self.connections = connections;
            self.watchers.changed(connections, metrics);
        }
    }

    fn is_unused(&self) -> bool {
        self.joining == 0 && self.watchers.is_empty()
    }
}

impl Watches {
    /// Whether the key's channel must stay subscribed for watchers here.
    pub(super) fn is_watched(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Whether no key is watched here.
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every key watched here.
    pub(super) fn keys(&self) -> Vec<Box<str>> {
        self.keys.iter().map(|entry| entry.key().clone()).collect()
    }

    /// A presence event arrived on `key`'s channel.
    pub(super) fn on_event(&self, key: &str, event: PresenceEvent, metrics: &Metrics) {
        if let Some(mut watched) = self.keys.get_mut(key) {
            watched.apply(event.version, event.connections, metrics);
        }
    }
}

/// Takes a watch in flight off its key if its future is dropped before the end.
struct Joining<'a> {
    shared: &'a Shared,
    key: &'a str,
    armed: bool,
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(mut watched) = self.shared.watches.keys.get_mut(self.key) {
                watched.joining -= 1;
            }
            forget_if_unused(self.shared, self.key);
        }
    }
}

/// Makes `peer` a watcher of `key`: subscribes the key's channel, joins its watchers in
/// Redis and reads its presence, then queues `initial` with the count and adds `peer`.
pub(super) async fn watch(
    shared: &Shared,
    key: &str,
    peer: &Arc<Peer>,
    initial: Option<Preamble<'_>>,
) -> Result<(), Unavailable> {
    if !shared.health.available() {
        return Err(Unavailable);
    }
    shared
        .watches
        .keys
        .entry(key.into())
        .or_insert_with(|| Watched::new(key))
        .joining += 1;
    let mut joining = Joining {
        shared,
        key,
        armed: true,
    };
    let read = async {
        shared.listen(key).await?;
        read(shared, key, true).await
    }
    .await;
    joining.armed = false;
    let Some(mut watched) = shared.watches.keys.get_mut(key) else {
        return Err(Unavailable);
    };
    watched.joining -= 1;
    let Ok((connections, version)) = read else {
        drop(watched);
        forget_if_unused(shared, key);
        return Err(Unavailable);
    };
    watched.apply(version, connections, &shared.metrics);
    // Queued under the key's entry: no event can be pushed ahead of it.
    if let Some(initial) = initial {
        peer.outbox.push_owed(initial(watched.connections));
    }
    if watched.watchers.add(peer) {
        shared.metrics.presence_watches.inc();
    }
    Ok(())
}

/// Stops `peer` watching `key`. The last watcher here takes the relay out of the key's
/// watchers in Redis.
pub(super) fn unwatch(shared: &Arc<Shared>, key: &str, peer: &Peer) {
    let Some(mut watched) = shared.watches.keys.get_mut(key) else {
        return;
    };
    if watched.watchers.remove(peer) {
        shared.metrics.presence_watches.dec();
    }
    let unused = watched.is_unused();
    drop(watched);
    if unused && forget_if_unused(shared, key) && shared.health.available() {
        let (shared, key) = (Arc::clone(shared), key.to_owned());
        tokio::spawn(async move {
            // Best effort: a leftover entry only makes count changes of the key publish an
            // event nobody here reads. A watch of the key that began meanwhile writes its
            // own entry after this (it first subscribes).
            if !shared.watches.is_watched(&key) {
                let _ = read(&shared, &key, false).await;
            }
        });
    }
}

/// Drops `key`'s entry if nobody watches it or is on the way, and lets the listener
/// unsubscribe its channel unless subscribers need it. Whether it was dropped.
fn forget_if_unused(shared: &Shared, key: &str) -> bool {
    let removed = shared
        .watches
        .keys
        .remove_if(key, |_, watched| watched.is_unused())
        .is_some();
    if removed && shared.channels.get(key).is_none_or(|c| c.is_empty()) {
        Shared::lock(&shared.idle).insert(key.into(), std::time::Instant::now());
    }
    removed
}

/// Runs `watch.lua` for `key`: this relay among its watchers (added, or with `watching`
/// false removed) and the key's count with when it was read. The roster's index of this
/// relay's keys follows (see [`roster::write_entry`]).
async fn read(shared: &Shared, key: &str, watching: bool) -> Result<(usize, i64), Unavailable> {
    let mut redis = shared.requests.connection()?;
    let mut invocation = keys::on_key(&shared.scripts.watch, key);
    invocation
        .arg(&shared.relay)
        .arg(if watching { "1" } else { "0" });
    let call = invocation.invoke_async::<(u64, i64)>(&mut redis);
    let stays = watching || shared.channels.get(key).is_some_and(|c| !c.is_empty());
    let (connections, version) = roster::write_entry(shared, key, stays, request(call)).await?;
    Ok((connections as usize, version))
}

/// Reads every watched key again after a lost subscription and pushes what changed; the
/// reads win over any event seen before.
pub(super) async fn refresh_all(shared: &Shared) -> Result<(), Unavailable> {
    for key in shared.watches.keys() {
        let (connections, version) = read(shared, &key, true).await?;
        if let Some(mut watched) = shared.watches.keys.get_mut(&key) {
            watched.version = i64::MIN;
            watched.apply(version, connections, &shared.metrics);
        }
    }
    Ok(())
}
