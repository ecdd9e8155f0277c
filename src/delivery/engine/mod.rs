//! The engine: where keys, their streams, pending messages and presence live.
//!
//! Connection and HTTP code publish, subscribe and ask for presence through the
//! [`Engine`] trait and never know which engine serves them. The embedded [`MemoryEngine`]
//! keeps everything in this process; the [`RedisEngine`] makes every relay on one Redis one
//! key space.
//! An engine call returns an [`EngineFuture`]: ready at once for the memory engine (no
//! allocation on the hot path), a boxed future for an engine that must ask the network.

pub mod memory;
pub mod redis;
pub mod stream;
pub mod watchers;

use std::fmt;
use std::future::Ready;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{BoxFuture, Either};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::message::{Outgoing, Published, Since};
use crate::peer::registry::Peer;

pub use self::redis::RedisEngine;
pub use memory::MemoryEngine;

/// What an engine call returns: ready now, or later.
pub type EngineFuture<'a, T> = Either<Ready<T>, BoxFuture<'a, T>>;

/// Makes the reply to a registration, given how many retained messages it is handed
/// (pending or replayed); the engine queues it ahead of them.
pub type Preamble<'a> = Box<dyn FnOnce(usize) -> Utf8Bytes + Send + 'a>;

/// An engine result that is ready now.
pub fn now<'a, T>(value: T) -> EngineFuture<'a, T> {
    Either::Left(std::future::ready(value))
}

/// Keys, streams and presence. See the module docs.
pub trait Engine: Send + Sync + fmt::Debug {
    /// Hands `message` to every live subscriber of `key` and, when streams are on and the
    /// message is not ephemeral, appends it to the key's stream.
    fn publish<'a>(
        &'a self,
        key: &'a str,
        message: Outgoing,
    ) -> EngineFuture<'a, Result<Published, Unavailable>>;

    /// Makes `peer` a subscriber of `key`. The frames it is owed are queued in its outbox
    /// in this order, with no live message in between: `preamble` (the reply to the
    /// registration, told how many retained messages follow), then what `start` calls for
    /// (pending messages, or a resume's gap and replay), then live messages.
    ///
    /// The key is the subscriber's own `Arc<str>`, which it keeps to unsubscribe: an
    /// engine that makes a new entry for the key shares that allocation instead of
    /// copying the key (one allocation per idle connection, not two).
    fn subscribe<'a>(
        &'a self,
        key: &'a Arc<str>,
        peer: &'a Arc<Peer>,
        start: Start,
        preamble: Option<Preamble<'a>>,
    ) -> EngineFuture<'a, Result<(), Unavailable>>;

    /// Removes `peer`'s own subscription under `key`; other subscribers stay.
    fn unsubscribe(&self, key: &str, peer: &Peer);

    /// Makes `peer` a watcher of `key`'s presence: `initial` (told the key's count now)
    /// is queued first, then a push for every change of the count, on this relay and,
    /// for a cluster engine, on every relay. Watching again is answered again, once
    /// watched. A watcher is not a subscriber: it does not count in presence.
    fn watch<'a>(
        &'a self,
        key: &'a str,
        peer: &'a Arc<Peer>,
        initial: Option<Preamble<'a>>,
    ) -> EngineFuture<'a, Result<(), Unavailable>>;

    /// Stops `peer` watching `key`; nothing if it did not.
    fn unwatch(&self, key: &str, peer: &Peer);

    /// How many connections are subscribed to `key`.
    fn presence<'a>(&'a self, key: &'a str) -> EngineFuture<'a, Result<usize, Unavailable>>;

    /// Housekeeping that cannot wait for traffic (expiring retained messages); the server
    /// calls it every [`Engine::tick_interval`].
    fn tick(&self, now: Instant);

    /// How often [`Engine::tick`] should run.
    fn tick_interval(&self) -> std::time::Duration;

    /// Figures for `/metrics` and the periodic log line.
    fn stats(&self) -> EngineStats;

    /// Whether messages are retained (`--buffer-ttl` above zero).
    fn streams_enabled(&self) -> bool;

    /// Called once the relay has drained, before it exits: an engine that shares state
    /// with other relays withdraws this relay's presence now rather than when the others
    /// find it dead. Bounded in time.
    fn settle(&self) -> EngineFuture<'_, ()> {
        now(())
    }
}

/// The engine cannot complete the call (a cluster engine lost its backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cluster unavailable")
    }
}

/// How a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A Part 1 registration: the key's pending messages, then live ones, as plain frames.
    Plain,
    /// A resumable registration: envelopes with cursors, from `since` on.
    Resume(Since),
    /// A Server-Sent Events subscriber: events with ids, from `since` on, or with no
    /// `since` the key's pending messages (as a plain registration gets them).
    Events(Option<Since>),
}

/// Figures an engine reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Keys with at least one subscriber.
    pub keys: usize,
    /// Messages retained in streams.
    pub retained_messages: usize,
    /// Bytes those messages count against `--buffer-memory`.
    pub retained_bytes: usize,
}
