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
use crate::delivery::engine::stream::{Appended, Removed, Stream, StreamTag, STREAM_OVERHEAD};
use crate::delivery::engine::watchers::Watchers;
use crate::delivery::engine::{
    now, Engine, EngineFuture, EngineStats, Preamble, Start, Unavailable,
};
use crate::message::{Eviction, Outgoing, Position, Published, Since};
use crate::observability::metrics::Metrics;
use crate::peer::registry::{Framed, Framing, Peer, Peers};

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
    /// The stream incarnation it belongs to (a key's stream may be dropped and made anew).
    stream: Arc<StreamTag>,
    /// Its sequence number in that stream.
    seq: u64,
    /// When it was appended.
    at: Instant,
}

/// Every retained message, oldest first, and what they cost together. One lock for the
/// queue and its counts: a publish takes it once, rather than bouncing several counters
/// shared by every worker between the cores.
#[derive(Debug, Default)]
struct Ledger {
    /// One entry per message appended, oldest first; entries of messages that left their
    /// stream otherwise (max, collapse, a dropped stream) wait for their turn or the next
    /// compaction.
    queue: VecDeque<Held>,
    /// Messages retained now.
    messages: usize,
    /// What they count against the memory cap.
    bytes: usize,
}

impl Ledger {
    fn removed(&mut self, removed: Removed) {
        self.messages -= removed.count;
        self.bytes -= removed.bytes;
    }
}

/// The embedded engine. See the module docs.
#[derive(Debug)]
pub struct MemoryEngine {
    /// Every key with subscribers or retained messages. `Arc<str>`: a key made by a
    /// subscription shares the subscriber's own allocation of it (see `subscribe_now`).
    channels: DashMap<Arc<str>, Channel>,
    /// Every retained message and their count and cost.
    ledger: Mutex<Ledger>,
    /// Keys with at least one subscriber, counted as a key's first arrives and last
    /// leaves (so `/metrics` need not walk every key).
    live_keys: AtomicUsize,
    /// What the streams themselves (not their messages) count against the memory cap.
    stream_bytes: AtomicUsize,
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
            ledger: Mutex::new(Ledger::default()),
            live_keys: AtomicUsize::new(0),
            stream_bytes: AtomicUsize::new(0),
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
        self.stream_bytes
            .fetch_add(STREAM_OVERHEAD, Ordering::Relaxed);
        Box::new(Stream::new(key, self.epochs.next()))
    }

    /// Drops `key`'s channel if nothing uses it any more. Checked under the shard's write
    /// lock: a subscriber or a message may have arrived since the caller looked.
    fn drop_if_unused(&self, key: &str) {
        let removed = self
            .channels
            .remove_if(key, |_, channel| channel.is_unused());
        if removed.is_some_and(|(_, channel)| channel.stream.is_some()) {
            self.stream_bytes
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
        let tag = Arc::clone(stream.tag());
        let appended = stream.append(
            message.payload,
            at,
            buffered,
            message.collapse,
            self.config.buffer_max,
        );
        drop(channel);
        self.hold(
            Held {
                stream: tag,
                seq: appended.seq,
                at,
            },
            appended,
        );
        Published {
            delivered: outcome.delivered,
            overflowed: outcome.overflowed,
            position: Some(position),
            buffered,
        }
    }

    fn subscribe_now(
        &self,
        key: &Arc<str>,
        peer: &Arc<Peer>,
        start: Start,
        preamble: Option<Preamble<'_>>,
    ) {
        let mut channel = match self.channels.get_mut(&**key) {
            Some(channel) => channel,
            None => self.channels.entry(Arc::clone(key)).or_default(),
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

    /// Counts an appended message and what it pushed out, adds it to the retention queue
    /// and applies the memory cap.
    fn hold(&self, held: Held, appended: Appended) {
        let mut ledger = self.ledger();
        ledger.messages += 1;
        ledger.bytes += appended.bytes;
        ledger.removed(appended.evicted);
        ledger.removed(appended.collapsed);
        if appended.evicted.count > 0 {
            self.metrics
                .evicted(Eviction::Max, appended.evicted.count as u64);
        }
        if appended.collapsed.count > 0 {
            self.metrics
                .messages_collapsed
                .inc_by(appended.collapsed.count as u64);
        }
        ledger.queue.push_back(held);
        let stream_bytes = self.stream_bytes.load(Ordering::Relaxed);
        while ledger.bytes + stream_bytes > self.config.buffer_memory {
            let Some(oldest) = ledger.queue.pop_front() else {
                break;
            };
            self.evict(&mut ledger, &oldest, Eviction::Memory);
        }
        // Keep the entries of messages gone otherwise in proportion to the live ones. The
        // stream's tag tells most of them apart; only a stream with collapsed entries
        // needs a look at the stream itself.
        if ledger.queue.len() > 2 * ledger.messages + 1024 {
            ledger.queue.retain(|held| {
                held.stream.certainly_retained(held.seq)
                    || (!held.stream.certainly_gone(held.seq) && self.is_retained(held))
            });
        }
    }

    /// Removes `held` (and anything older in its stream) for `reason`. Called with the
    /// ledger locked: the order is always ledger, then channel, never the reverse.
    fn evict(&self, ledger: &mut Ledger, held: &Held, reason: Eviction) {
        if held.stream.certainly_gone(held.seq) {
            return;
        }
        let key = held.stream.key();
        let now_unused = match self.channels.get_mut(key) {
            Some(mut channel) => {
                let removed = match channel.stream.as_mut() {
                    Some(stream) if Arc::ptr_eq(stream.tag(), &held.stream) => {
                        stream.evict_through(held.seq)
                    }
                    _ => Removed::default(),
                };
                ledger.removed(removed);
                if removed.count > 0 {
                    self.metrics.evicted(reason, removed.count as u64);
                }
                channel.is_unused()
            }
            None => false,
        };
        if now_unused {
            self.drop_if_unused(key);
        }
    }

    fn is_retained(&self, held: &Held) -> bool {
        self.channels.get(held.stream.key()).is_some_and(|channel| {
            channel.stream.as_ref().is_some_and(|stream| {
                Arc::ptr_eq(stream.tag(), &held.stream) && stream.retains(held.seq)
            })
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
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
        key: &'a Arc<str>,
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
        let mut ledger = self.ledger();
        while ledger.queue.front().is_some_and(|held| held.at < deadline) {
            if let Some(oldest) = ledger.queue.pop_front() {
                self.evict(&mut ledger, &oldest, Eviction::Ttl);
            }
        }
    }

    fn tick_interval(&self) -> Duration {
        (self.config.buffer_ttl / 4).clamp(Duration::from_millis(10), MAX_TICK)
    }

    fn stats(&self) -> EngineStats {
        let ledger = self.ledger();
        EngineStats {
            keys: self.live_keys.load(Ordering::Relaxed),
            retained_messages: ledger.messages,
            retained_bytes: ledger.bytes + self.stream_bytes.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Payload;

    fn engine(buffer_max: usize, buffer_memory: usize) -> MemoryEngine {
        let config = StreamConfig {
            buffer_max,
            buffer_ttl: Duration::from_secs(120),
            buffer_memory,
        };
        MemoryEngine::new(config, Arc::new(Metrics::new()))
    }

    fn send(engine: &MemoryEngine, key: &str, text: &str, collapse: Option<&str>) {
        let mut message = Outgoing::plain(Payload::text(text.to_owned()));
        message.collapse = collapse.map(Into::into);
        engine.publish_now(key, message);
    }

    fn queued(engine: &MemoryEngine) -> usize {
        engine.ledger().queue.len()
    }

    #[test]
    fn the_retention_queue_stays_in_proportion_to_what_is_retained() {
        let engine = engine(2, usize::MAX);
        for i in 0..20_000 {
            send(&engine, &format!("k{}", i % 10), "m", None);
        }
        assert_eq!(engine.stats().retained_messages, 20);
        // Entries of messages evicted by --buffer-max are dropped by compaction.
        assert!(queued(&engine) <= 2 * 20 + 1024 + 1, "{}", queued(&engine));
    }

    #[test]
    fn compaction_keeps_what_a_collapse_left_and_drops_what_it_superseded() {
        let engine = engine(256, usize::MAX);
        send(&engine, "k", "first", None);
        // Collapse until a compaction has just run, with the newest message's entry
        // among those it looked at.
        let mut before = queued(&engine);
        for _ in 0..5_000 {
            send(&engine, "k", "progress", Some("p"));
            if queued(&engine) < before {
                break;
            }
            before = queued(&engine);
        }
        assert_eq!(engine.stats().retained_messages, 2);
        assert!(queued(&engine) < before, "no compaction ran");
        assert!(queued(&engine) <= 2 * 2 + 1024 + 1, "{}", queued(&engine));
        // Both live messages are still reachable from the queue: the TTL finds them.
        engine.tick(Instant::now() + Duration::from_secs(121));
        assert_eq!(engine.stats().retained_messages, 0);
        assert_eq!(engine.metrics.evicted_count(Eviction::Ttl), 2);
    }

    #[test]
    fn the_memory_cap_evicts_the_oldest_live_message_past_superseded_ones() {
        let mut engine = engine(256, usize::MAX);
        send(&engine, "k", "first", None);
        for _ in 0..3 {
            send(&engine, "k", "progress", Some("p"));
        }
        // One byte short of what a new key's first message brings: one message must go.
        let x_cost = STREAM_OVERHEAD + crate::delivery::engine::stream::ENTRY_OVERHEAD + 1;
        engine.config.buffer_memory = engine.stats().retained_bytes + x_cost - 1;
        send(&engine, "other", "x", None);
        let retained = |key: &str| {
            engine
                .channels
                .get(key)
                .map_or(0, |c| c.stream.as_ref().map_or(0, |s| s.len()))
        };
        assert_eq!((retained("k"), retained("other")), (1, 1));
        assert_eq!(engine.metrics.evicted_count(Eviction::Memory), 1);
    }

    #[test]
    fn a_dropped_stream_leaves_no_retained_messages_counted() {
        let engine = engine(256, usize::MAX);
        for _ in 0..3 {
            send(&engine, "k", "m", None);
        }
        engine.tick(Instant::now() + Duration::from_secs(121));
        let stats = engine.stats();
        assert_eq!((stats.retained_messages, stats.retained_bytes), (0, 0));
        assert_eq!(queued(&engine), 0);
        assert!(engine.channels.is_empty(), "the unused key is dropped");
    }
}
