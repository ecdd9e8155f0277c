//! The embedded engine: every key, stream and subscriber in this process.
//!
//! Each key is one [`Channel`] in a sharded map: its subscribers and, once something was
//! sent to it with streams on, its [`Stream`]. Publishing (deliver to the subscribers, then
//! append) and subscribing (queue what the subscriber is owed, then join the subscribers)
//! both run under the key's shard lock, so a message is either in a new subscriber's replay
//! or delivered to it live, never both and never neither: the replay/live race is closed by
//! construction, not by timing.
//!
//! Retention is global as well as per key: every retained message also has a place in one
//! queue in append order, which is oldest-first for both the TTL and the memory cap.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::StreamConfig;
use crate::engine::stream::{Removed, Stream, STREAM_OVERHEAD};
use crate::engine::watchers::Watchers;
use crate::engine::{
    now, Engine, EngineFuture, EngineStats, Eviction, Outgoing, Position, Preamble, Published,
    Since, Start, Unavailable,
};
use crate::metrics::Metrics;
use crate::registry::{Framed, Framing, Peer, Peers};

/// Longest pause between two TTL sweeps.
const MAX_TICK: Duration = Duration::from_secs(1);

/// One key: its subscribers and its stream.
#[derive(Debug, Default)]
struct Channel {
    /// Live subscribers, in subscription order.
    peers: Peers,
    /// Retained messages; `None` until something is retained for the key.
    stream: Option<Box<Stream>>,
    /// Who watches the key's presence; `None` while nobody does (the only cost a
    /// connect or disconnect of an unwatched key pays for watches is this check).
    watchers: Option<Box<Watchers>>,
}

impl Channel {
    fn is_unused(&self) -> bool {
        self.peers.is_empty()
            && self.stream.as_ref().is_none_or(|s| s.is_empty())
            && self.watchers.is_none()
    }

    /// Tells the watchers, if any, the key's count after a change.
    fn presence_changed(&self, metrics: &Metrics) {
        if let Some(watchers) = &self.watchers {
            watchers.changed(self.peers.len(), metrics);
        }
    }
}

/// A retained message's place in the global retention queue.
#[derive(Debug)]
struct Held {
    /// The key it was retained under.
    key: Arc<str>,
    /// The stream incarnation it belongs to (a key's stream may be dropped and made anew).
    epoch: Arc<str>,
    /// Its sequence number in that stream.
    seq: u64,
    /// When it was appended.
    at: Instant,
}

/// The embedded engine. See the module docs.
#[derive(Debug)]
pub struct MemoryEngine {
    /// Every key with subscribers or retained messages.
    channels: DashMap<Box<str>, Channel>,
    /// Every retained message, oldest first (entries of evicted messages are skipped).
    held: Mutex<VecDeque<Held>>,
    /// Messages retained now.
    retained_messages: AtomicUsize,
    /// Keys with at least one subscriber, counted as a key's first arrives and last
    /// leaves (so `/metrics` need not walk every key).
    live_keys: AtomicUsize,
    /// Bytes they count against the memory cap.
    retained_bytes: AtomicUsize,
    /// Retention settings.
    config: StreamConfig,
    /// Names stream incarnations: unique to this process, and a new one for each stream.
    epochs: EpochSource,
    /// Where evictions and replays are counted.
    metrics: Arc<Metrics>,
}

impl MemoryEngine {
    /// An engine with no keys.
    pub fn new(config: StreamConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            channels: DashMap::new(),
            held: Mutex::new(VecDeque::new()),
            retained_messages: AtomicUsize::new(0),
            live_keys: AtomicUsize::new(0),
            retained_bytes: AtomicUsize::new(0),
            config,
            epochs: EpochSource::new(),
            metrics,
        }
    }

    fn streams_on(&self) -> bool {
        !self.config.buffer_ttl.is_zero()
    }

    /// A new stream, counted against the memory cap until its channel is dropped.
    fn new_stream(&self, key: &str) -> Box<Stream> {
        self.retained_bytes
            .fetch_add(STREAM_OVERHEAD, Ordering::Relaxed);
        Box::new(Stream::new(key.into(), self.epochs.next()))
    }

    /// Drops `key`'s channel if nothing uses it any more. Checked under the shard's write
    /// lock: a subscriber or a message may have arrived since the caller looked.
    fn drop_if_unused(&self, key: &str) {
        let removed = self
            .channels
            .remove_if(key, |_, channel| channel.is_unused());
        if removed.is_some_and(|(_, channel)| channel.stream.is_some()) {
            self.retained_bytes
                .fetch_sub(STREAM_OVERHEAD, Ordering::Relaxed);
        }
    }

    fn publish_now(&self, key: &str, message: Outgoing) -> Published {
        let retain = self.streams_on() && !message.ephemeral;
        let at = Instant::now();
        let mut channel = match self.channels.get_mut(key) {
            Some(channel) => channel,
            None if retain => self.channels.entry(key.into()).or_default(),
            None => return Published::nobody(),
        };
        let position = if retain {
            let stream = channel.stream.get_or_insert_with(|| self.new_stream(key));
            Some(Position::new(Arc::clone(stream.epoch()), stream.end() + 1))
        } else {
            None
        };
        let mut framed = Framed::new(&message.payload, position.as_ref());
        let outcome = channel.peers.deliver(&mut framed);
        let Some(position) = position else {
            return Published {
                delivered: outcome.delivered,
                overflowed: outcome.overflowed,
                position: None,
                buffered: false,
            };
        };
        let buffered = outcome.delivered == 0;
        let stream = channel.stream.get_or_insert_with(|| self.new_stream(key));
        let (held_key, epoch) = (Arc::clone(stream.key()), Arc::clone(stream.epoch()));
        let appended = stream.append(
            message.payload,
            at,
            buffered,
            message.collapse,
            self.config.buffer_max,
        );
        drop(channel);
        self.account_append(appended.bytes, appended.evicted, appended.collapsed);
        self.hold(Held {
            key: held_key,
            epoch,
            seq: appended.seq,
            at,
        });
        Published {
            delivered: outcome.delivered,
            overflowed: outcome.overflowed,
            position: Some(position),
            buffered,
        }
    }

    fn subscribe_now(
        &self,
        key: &str,
        peer: &Arc<Peer>,
        start: Start,
        preamble: Option<Preamble<'_>>,
    ) {
        let mut channel = match self.channels.get_mut(key) {
            Some(channel) => channel,
            None => self.channels.entry(key.into()).or_default(),
        };
        let streams_on = self.streams_on();
        // With streams off the relay behaves exactly as in Parts 1-2: plain frames.
        let (framing, since) = match start {
            Start::Resume(since) if streams_on => (Framing::Envelope, Some(since)),
            Start::Events(since) => (Framing::Events, since.filter(|_| streams_on)),
            _ => (Framing::Plain, None),
        };
        peer.set_framing(framing);
        let mut owed = Vec::new();
        let mut replayed = 0;
        match since {
            None if streams_on => {
                if let Some(stream) = channel.stream.as_mut() {
                    for entry in stream.take_pending() {
                        let position = stream.position(entry.seq);
                        owed.push(peer.frame(&entry.payload, Some(&position)));
                        replayed += 1;
                    }
                }
            }
            None => {}
            Some(since) => {
                if matches!(since, Since::After(_) | Since::Unknown) && channel.stream.is_none() {
                    // A cursor for a key with no history here: it is lost, say so.
                    channel.stream = Some(self.new_stream(key));
                }
                if let Some(stream) = channel.stream.as_mut() {
                    let replay = stream.replay(&since);
                    if let Some(gap) = replay.gap {
                        owed.push(peer.gap_frame(&stream.position(gap)));
                    }
                    for entry in replay.entries {
                        let position = stream.position(entry.seq);
                        owed.push(peer.frame(&entry.payload, Some(&position)));
                        replayed += 1;
                    }
                }
            }
        }
        if let Some(preamble) = preamble {
            peer.outbox.push_owed(preamble(replayed));
        }
        for frame in owed {
            peer.outbox.push_owed(frame);
        }
        if channel.peers.is_empty() {
            self.live_keys.fetch_add(1, Ordering::Relaxed);
        }
        channel.peers.add(peer);
        channel.presence_changed(&self.metrics);
        drop(channel);
        self.metrics.messages_replayed.inc_by(replayed as u64);
    }

    fn unsubscribe_now(&self, key: &str, peer: &Peer) {
        let now_unused = match self.channels.get_mut(key) {
            Some(mut channel) => {
                let had = channel.peers.len();
                channel.peers.remove(peer);
                if had > 0 && channel.peers.is_empty() {
                    self.live_keys.fetch_sub(1, Ordering::Relaxed);
                }
                if channel.peers.len() != had {
                    channel.presence_changed(&self.metrics);
                }
                channel.is_unused()
            }
            None => false,
        };
        if now_unused {
            self.drop_if_unused(key);
        }
    }

    fn watch_now(&self, key: &str, peer: &Arc<Peer>, initial: Option<Preamble<'_>>) {
        let mut channel = match self.channels.get_mut(key) {
            Some(channel) => channel,
            None => self.channels.entry(key.into()).or_default(),
        };
        // Queued under the key's lock: no change can be pushed ahead of it.
        if let Some(initial) = initial {
            peer.outbox.push_owed(initial(channel.peers.len()));
        }
        let watchers = channel
            .watchers
            .get_or_insert_with(|| Box::new(Watchers::new(key)));
        if watchers.add(peer) {
            self.metrics.presence_watches.inc();
        }
    }

    fn unwatch_now(&self, key: &str, peer: &Peer) {
        let now_unused = match self.channels.get_mut(key) {
            Some(mut channel) => {
                let Some(watchers) = channel.watchers.as_mut() else {
                    return;
                };
                if watchers.remove(peer) {
                    self.metrics.presence_watches.dec();
                }
                if watchers.is_empty() {
                    channel.watchers = None;
                }
                channel.is_unused()
            }
            None => false,
        };
        if now_unused {
            self.drop_if_unused(key);
        }
    }

    fn account_append(&self, added: usize, evicted: Removed, collapsed: Removed) {
        self.retained_messages.fetch_add(1, Ordering::Relaxed);
        self.retained_bytes.fetch_add(added, Ordering::Relaxed);
        self.account_removed(evicted, Some(Eviction::Max));
        self.account_removed(collapsed, None);
        self.metrics
            .messages_collapsed
            .inc_by(collapsed.count as u64);
    }

    fn account_removed(&self, removed: Removed, reason: Option<Eviction>) {
        if removed.count == 0 {
            return;
        }
        self.retained_messages
            .fetch_sub(removed.count, Ordering::Relaxed);
        self.retained_bytes
            .fetch_sub(removed.bytes, Ordering::Relaxed);
        if let Some(reason) = reason {
            self.metrics.evicted(reason, removed.count as u64);
        }
    }

    /// Adds a retained message to the global queue and applies the memory cap.
    fn hold(&self, held: Held) {
        let mut queue = self.queue();
        queue.push_back(held);
        while self.retained_bytes.load(Ordering::Relaxed) > self.config.buffer_memory {
            let Some(oldest) = queue.pop_front() else {
                break;
            };
            self.evict(&oldest, Eviction::Memory);
        }
        // Entries of messages that left their stream otherwise (max, collapse) wait for
        // their turn at the front; keep their number in proportion to the live ones.
        let live = self.retained_messages.load(Ordering::Relaxed);
        if queue.len() > 2 * live + 1024 {
            queue.retain(|held| self.is_retained(held));
        }
    }

    /// Removes `held` (and anything older in its stream) for `reason`. Called with the
    /// queue locked: the order is always queue, then channel, never the reverse.
    fn evict(&self, held: &Held, reason: Eviction) {
        let now_unused = match self.channels.get_mut(&*held.key) {
            Some(mut channel) => {
                let removed = match channel.stream.as_mut() {
                    Some(stream) if Arc::ptr_eq(stream.epoch(), &held.epoch) => {
                        stream.evict_through(held.seq)
                    }
                    _ => Removed::default(),
                };
                self.account_removed(removed, Some(reason));
                channel.is_unused()
            }
            None => false,
        };
        if now_unused {
            self.drop_if_unused(&held.key);
        }
    }

    fn is_retained(&self, held: &Held) -> bool {
        self.channels.get(&*held.key).is_some_and(|channel| {
            channel.stream.as_ref().is_some_and(|stream| {
                Arc::ptr_eq(stream.epoch(), &held.epoch) && stream.retains(held.seq)
            })
        })
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Engine for MemoryEngine {
    fn publish<'a>(
        &'a self,
        key: &'a str,
        message: Outgoing,
    ) -> EngineFuture<'a, Result<Published, Unavailable>> {
        now(Ok(self.publish_now(key, message)))
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a str,
        peer: &'a Arc<Peer>,
        start: Start,
        preamble: Option<Preamble<'a>>,
    ) -> EngineFuture<'a, Result<(), Unavailable>> {
        self.subscribe_now(key, peer, start, preamble);
        now(Ok(()))
    }

    fn unsubscribe(&self, key: &str, peer: &Peer) {
        self.unsubscribe_now(key, peer);
    }

    fn watch<'a>(
        &'a self,
        key: &'a str,
        peer: &'a Arc<Peer>,
        initial: Option<Preamble<'a>>,
    ) -> EngineFuture<'a, Result<(), Unavailable>> {
        self.watch_now(key, peer, initial);
        now(Ok(()))
    }

    fn unwatch(&self, key: &str, peer: &Peer) {
        self.unwatch_now(key, peer);
    }

    fn presence<'a>(&'a self, key: &'a str) -> EngineFuture<'a, Result<usize, Unavailable>> {
        now(Ok(self.channels.get(key).map_or(0, |c| c.peers.len())))
    }

    fn tick(&self, now: Instant) {
        if !self.streams_on() {
            return;
        }
        let Some(deadline) = now.checked_sub(self.config.buffer_ttl) else {
            return;
        };
        let mut queue = self.queue();
        while queue.front().is_some_and(|held| held.at < deadline) {
            if let Some(oldest) = queue.pop_front() {
                self.evict(&oldest, Eviction::Ttl);
            }
        }
    }

    fn tick_interval(&self) -> Duration {
        (self.config.buffer_ttl / 4).clamp(Duration::from_millis(10), MAX_TICK)
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self.live_keys.load(Ordering::Relaxed),
            retained_messages: self.retained_messages.load(Ordering::Relaxed),
            retained_bytes: self.retained_bytes.load(Ordering::Relaxed),
        }
    }

    fn streams_enabled(&self) -> bool {
        self.streams_on()
    }
}

impl Published {
    /// Nobody was there and nothing was kept.
    pub fn nobody() -> Self {
        Self {
            delivered: 0,
            overflowed: 0,
            position: None,
            buffered: false,
        }
    }
}

/// Gives each new stream an epoch no earlier stream of this process (or, with
/// overwhelming likelihood, of an earlier run) had: a random run id and a counter.
#[derive(Debug)]
pub(crate) struct EpochSource {
    /// Random per process run.
    run: String,
    /// Streams made so far.
    made: AtomicU64,
}

impl EpochSource {
    pub(crate) fn new() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self {
            run: random[..12].to_owned(),
            made: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> Arc<str> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n:x}", self.run).into()
    }
}
