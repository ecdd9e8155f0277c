//! The embedded engine: every key, stream and subscriber in this process.
//!
//! Each key is one [`Channel`] in a sharded map: its subscribers and, once something was
//! sent to it with streams on, its [`Stream`]. Publishing (deliver to the subscribers, then
//! append) and subscribing (queue what the subscriber is owed, then join the subscribers)
//! both run under the key's shard lock, so a message is either in a new subscriber's replay
//! or delivered to it live, never both and never neither: the replay/live race is closed by
//! construction, not by timing.
//!
//! Retention is global as well as per key: the TTL and the memory cap take the oldest
//! message of all first. Every stream that retains something has one place in an
//! oldest-first order (a heap by its oldest message's time), taken only when a stream
//! starts retaining, by the TTL sweep and by the memory cap; so retaining one more message
//! in a stream that already retains costs the append to that stream and nothing shared.

use std::cmp;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::StreamConfig;
use crate::delivery::engine::stream::{Removed, Stream, STREAM_OVERHEAD};
use crate::delivery::engine::watchers::Watchers;
use crate::delivery::engine::{
    now, Engine, EngineFuture, EngineStats, Preamble, Start, Unavailable,
};
use crate::message::{Eviction, Outgoing, Published, Since};
use crate::observability::metrics::Metrics;
use crate::peer::registry::{Framed, Framing, Peer, Peers};

/// Longest pause between two TTL sweeps.
const MAX_TICK: Duration = Duration::from_secs(1);

/// One key: its subscribers, and its stream and watchers if it has them. 24 bytes, so
/// that with its key an entry of the key map is 40: the map's tables are most of what a
/// registered key costs beyond its connection.
#[derive(Debug, Default)]
struct Channel {
    /// Live subscribers, in subscription order.
    peers: Peers,
    /// The stream and the watchers, in one allocation made when either is first needed;
    /// `None` for a key with neither (most keys: a page waiting for its messages).
    more: Option<Box<More>>,
}

/// What a key has beyond its subscribers.
#[derive(Debug, Default)]
struct More {
    /// Retained messages; `None` until something is retained for the key.
    stream: Option<Stream>,
    /// Who watches the key's presence; `None` while nobody does (the only cost a
    /// connect or disconnect of an unwatched key pays for watches is this check).
    watchers: Option<Watchers>,
}

impl Channel {
    fn is_unused(&self) -> bool {
        self.peers.is_empty()
            && self.stream().is_none_or(Stream::is_empty)
            && self.watchers().is_none()
    }

    fn stream(&self) -> Option<&Stream> {
        self.more.as_ref()?.stream.as_ref()
    }

    fn stream_mut(&mut self) -> Option<&mut Stream> {
        self.more.as_mut()?.stream.as_mut()
    }

    fn watchers(&self) -> Option<&Watchers> {
        self.more.as_ref()?.watchers.as_ref()
    }

    /// The key's stream and watchers, made room for.
    fn more(&mut self) -> &mut More {
        self.parts().1
    }

    /// The subscribers, and the stream and watchers made room for, borrowed apart: a
    /// publish appends to the one and delivers to the other.
    fn parts(&mut self) -> (&Peers, &mut More) {
        (&self.peers, self.more.get_or_insert_with(Box::default))
    }

    /// Tells the watchers, if any, the key's count after a change.
    fn presence_changed(&self, metrics: &Metrics) {
        if let Some(watchers) = self.watchers() {
            watchers.changed(self.peers.len(), metrics);
        }
    }
}

/// A stream's place in the oldest-first order: when its oldest message was appended, at
/// the latest. Collapses and `--buffer-max` remove a stream's oldest messages without
/// telling the order, so a stream may be found here earlier than its oldest message is
/// due; whoever takes it out looks again and puts it back if so.
#[derive(Debug)]
struct Due {
    /// No later than the stream's oldest message was appended.
    at: Instant,
    /// Where to find the stream (the key map's own allocation of it).
    key: Arc<str>,
    /// Which incarnation of the key's stream (see [`Stream::epoch`]).
    epoch: Arc<str>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// Reversed, so that [`BinaryHeap`] (a max-heap) yields the earliest first.
    fn cmp(&self, other: &Self) -> cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

/// What the retained messages count against `--buffer-memory`, kept in atomics that a
/// publish touches only when they change: a full stream appending a message the size of
/// the one it pushed out changes neither.
#[derive(Debug, Default)]
struct Retained {
    /// Messages retained now.
    messages: AtomicUsize,
    /// What they count against the memory cap.
    bytes: AtomicUsize,
}

impl Retained {
    fn changed(&self, added: Removed, removed: Removed) {
        shift(&self.messages, added.count, removed.count);
        shift(&self.bytes, added.bytes, removed.bytes);
    }
}

/// Adds `plus - minus` to `counter`, touching it only if that is not zero.
fn shift(counter: &AtomicUsize, plus: usize, minus: usize) {
    match plus.cmp(&minus) {
        cmp::Ordering::Greater => counter.fetch_add(plus - minus, Ordering::Relaxed),
        cmp::Ordering::Less => counter.fetch_sub(minus - plus, Ordering::Relaxed),
        cmp::Ordering::Equal => return,
    };
}

/// The embedded engine. See the module docs.
#[derive(Debug)]
pub struct MemoryEngine {
    /// Every key with subscribers or retained messages. `Arc<str>`: a key made by a
    /// subscription shares the subscriber's own allocation of it (see `subscribe_now`).
    channels: DashMap<Arc<str>, Channel>,
    /// Every stream with retained messages, by its oldest message: where the TTL sweep and
    /// the memory cap find the oldest message of all. One place per stream, not one per
    /// message, so a publish to a key that already retains something never takes its lock.
    oldest: Mutex<BinaryHeap<Due>>,
    /// The retained messages' count and cost.
    retained: Retained,
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
            oldest: Mutex::new(BinaryHeap::new()),
            retained: Retained::default(),
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
    fn new_stream(&self, base: Instant) -> Stream {
        self.stream_bytes
            .fetch_add(STREAM_OVERHEAD, Ordering::Relaxed);
        Stream::new(self.epochs.next(), base)
    }

    /// Drops `key`'s channel if nothing uses it any more. Checked under the shard's write
    /// lock: a subscriber or a message may have arrived since the caller looked.
    fn drop_if_unused(&self, key: &str) {
        let removed = self
            .channels
            .remove_if(key, |_, channel| channel.is_unused());
        if removed.is_some_and(|(_, channel)| channel.stream().is_some()) {
            self.stream_bytes
                .fetch_sub(STREAM_OVERHEAD, Ordering::Relaxed);
        }
    }

    fn publish_now(&self, key: &str, message: Outgoing) -> Published {
        let retain = self.streams_on() && !message.ephemeral;
        let mut guard = match self.channels.get_mut(key) {
            Some(channel) => channel,
            None if retain => self.channels.entry(key.into()).or_default(),
            None => return Published::nobody(),
        };
        let channel = &mut *guard;
        if !retain {
            let outcome = channel
                .peers
                .deliver(&mut Framed::owned(message.payload, None));
            return Published {
                delivered: outcome.delivered,
                overflowed: outcome.overflowed,
                position: None,
                buffered: false,
            };
        }
        let at = Instant::now();
        let (peers, more) = channel.parts();
        let stream = more.stream.get_or_insert_with(|| self.new_stream(at));
        // Kept before it is delivered: the stream copies a small text, so delivery can then
        // hand the message itself to its last recipient.
        let appended = stream.append(
            &message.payload,
            at,
            message.collapse,
            self.config.buffer_max,
        );
        let position = stream.position(appended.seq);
        // Counted under the key's lock, so that an eviction (which takes the same lock)
        // never subtracts what was not added yet.
        let added = Removed {
            count: 1,
            bytes: appended.bytes,
        };
        let removed = appended.evicted + appended.collapsed;
        self.retained.changed(added, removed);
        let listed_epoch = stream.list().then(|| Arc::clone(stream.epoch()));
        let outcome = peers.deliver(&mut Framed::owned(message.payload, Some(&position)));
        let buffered = outcome.delivered == 0;
        if buffered {
            stream.set_pending(appended.seq);
        }
        let listing = listed_epoch.map(|epoch| Due {
            at,
            key: Arc::clone(guard.key()),
            epoch,
        });
        drop(guard);
        if appended.evicted.count > 0 {
            self.metrics
                .evicted(Eviction::Max, appended.evicted.count as u64);
        }
        if appended.collapsed.count > 0 {
            self.metrics
                .messages_collapsed
                .inc_by(appended.collapsed.count as u64);
        }
        if listing.is_some() || added.bytes > removed.bytes {
            self.make_room(listing);
        }
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
                if let Some(stream) = channel.stream_mut() {
                    for entry in stream.take_pending() {
                        let position = stream.position(entry.seq);
                        owed.push(peer.frame(&entry.payload, Some(&position)));
                        replayed += 1;
                    }
                }
            }
            None => {}
            Some(since) => {
                if matches!(since, Since::After(_) | Since::Unknown) && channel.stream().is_none() {
                    // A cursor for a key with no history here: it is lost, say so.
                    channel.more().stream = Some(self.new_stream(Instant::now()));
                }
                if let Some(stream) = channel.stream_mut() {
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
            .more()
            .watchers
            .get_or_insert_with(|| Watchers::new(key));
        if watchers.add(peer) {
            self.metrics.presence_watches.inc();
        }
    }

    fn unwatch_now(&self, key: &str, peer: &Peer) {
        let now_unused = match self.channels.get_mut(key) {
            Some(mut channel) => {
                let Some(more) = channel.more.as_mut() else {
                    return;
                };
                let Some(watchers) = more.watchers.as_mut() else {
                    return;
                };
                if watchers.remove(peer) {
                    self.metrics.presence_watches.dec();
                }
                if watchers.is_empty() {
                    more.watchers = None;
                    if more.stream.is_none() {
                        channel.more = None;
                    }
                }
                channel.is_unused()
            }
            None => false,
        };
        if now_unused {
            self.drop_if_unused(key);
        }
    }

    /// Puts a stream that just started retaining into the oldest-first order, and applies
    /// the memory cap, oldest message first.
    fn make_room(&self, listing: Option<Due>) {
        let over = || {
            self.retained.bytes.load(Ordering::Relaxed) + self.stream_bytes.load(Ordering::Relaxed)
                > self.config.buffer_memory
        };
        if listing.is_none() && !over() {
            return;
        }
        let mut oldest = self.oldest();
        if let Some(due) = listing {
            oldest.push(due);
        }
        while over() {
            let Some(due) = oldest.pop() else {
                break;
            };
            self.evict(&mut oldest, due, Eviction::Memory);
        }
    }

    /// Takes `due`'s stream's oldest message out for `reason` (the memory cap: one; the
    /// TTL: every one appended before `due.at`, which the caller chose), and puts the
    /// stream back in the order if it still retains something. Called with the order
    /// locked: the lock order is always the order, then a key, never the reverse.
    fn evict(&self, oldest: &mut BinaryHeap<Due>, mut due: Due, reason: Eviction) {
        let (next, now_unused) = match self.channels.get_mut(&*due.key) {
            Some(mut channel) => {
                let Some(stream) = channel
                    .stream_mut()
                    .filter(|s| Arc::ptr_eq(s.epoch(), &due.epoch))
                else {
                    return; // That incarnation is gone, and its messages with it.
                };
                let removed = match (reason, stream.oldest_at()) {
                    // The oldest message left early: look again at the one after it.
                    (_, Some(at)) if at > due.at => Removed::default(),
                    (Eviction::Ttl, Some(_)) => stream.expire(due.at),
                    (_, Some(_)) => stream.evict_oldest(),
                    (_, None) => Removed::default(),
                };
                self.retained.changed(Removed::default(), removed);
                if removed.count > 0 {
                    self.metrics.evicted(reason, removed.count as u64);
                }
                let next = stream.oldest_at();
                if next.is_none() {
                    stream.unlist();
                }
                (next, channel.is_unused())
            }
            None => return,
        };
        match next {
            Some(at) => {
                due.at = at;
                oldest.push(due);
            }
            None if now_unused => self.drop_if_unused(&due.key),
            None => {}
        }
    }

    fn oldest(&self) -> MutexGuard<'_, BinaryHeap<Due>> {
        self.oldest.lock().unwrap_or_else(PoisonError::into_inner)
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
        let mut oldest = self.oldest();
        while oldest.peek().is_some_and(|due| due.at < deadline) {
            if let Some(mut due) = oldest.pop() {
                // Everything appended before the deadline goes, not only what was due.
                due.at = deadline;
                self.evict(&mut oldest, due, Eviction::Ttl);
            }
        }
    }

    fn tick_interval(&self) -> Duration {
        (self.config.buffer_ttl / 4).clamp(Duration::from_millis(10), MAX_TICK)
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self.live_keys.load(Ordering::Relaxed),
            retained_messages: self.retained.messages.load(Ordering::Relaxed),
            retained_bytes: self.retained.bytes.load(Ordering::Relaxed)
                + self.stream_bytes.load(Ordering::Relaxed),
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

    fn listed(engine: &MemoryEngine) -> usize {
        engine.oldest().len()
    }

    #[test]
    fn each_retaining_stream_has_one_place_in_the_order_whatever_its_traffic() {
        let engine = engine(2, usize::MAX);
        for i in 0..20_000 {
            send(&engine, &format!("k{}", i % 10), "m", None);
        }
        assert_eq!(engine.stats().retained_messages, 20);
        assert_eq!(listed(&engine), 10);
    }

    #[test]
    fn the_ttl_finds_what_a_collapse_left_behind_the_oldest() {
        let engine = engine(256, usize::MAX);
        send(&engine, "k", "first", None);
        for _ in 0..5_000 {
            send(&engine, "k", "progress", Some("p"));
        }
        assert_eq!(engine.stats().retained_messages, 2);
        assert_eq!(listed(&engine), 1);
        // Not yet due: nothing goes, and the stream keeps its place.
        engine.tick(Instant::now() + Duration::from_secs(60));
        assert_eq!(engine.stats().retained_messages, 2);
        assert_eq!(listed(&engine), 1);
        engine.tick(Instant::now() + Duration::from_secs(121));
        assert_eq!(engine.stats().retained_messages, 0);
        assert_eq!(engine.metrics.evicted_count(Eviction::Ttl), 2);
        assert_eq!(listed(&engine), 0);
    }

    #[test]
    fn the_memory_cap_takes_the_oldest_message_of_all_first() {
        let mut engine = engine(256, usize::MAX);
        send(&engine, "a", "a1", None);
        send(&engine, "b", "b1", None);
        send(&engine, "a", "a2", None);
        send(&engine, "b", "b2", None);
        // Room for exactly what is there: each message of the same size pushes out the
        // oldest of all, whichever key it was sent to.
        engine.config.buffer_memory = engine.stats().retained_bytes;
        send(&engine, "b", "b3", None);
        let texts = |key: &str| -> Vec<String> {
            engine.channels.get_mut(key).map_or_else(Vec::new, |mut c| {
                c.stream_mut().map_or_else(Vec::new, |s| {
                    s.replay(&Since::Earliest)
                        .entries
                        .iter()
                        .map(|e| e.payload.as_text().as_str().to_owned())
                        .collect()
                })
            })
        };
        assert_eq!(texts("a"), ["a2"]);
        assert_eq!(texts("b"), ["b1", "b2", "b3"]);
        assert_eq!(engine.metrics.evicted_count(Eviction::Memory), 1);
        send(&engine, "a", "a3", None);
        assert_eq!(texts("a"), ["a2", "a3"]);
        assert_eq!(texts("b"), ["b2", "b3"]);
        assert_eq!(engine.metrics.evicted_count(Eviction::Memory), 2);
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
                .map_or(0, |c| c.stream().map_or(0, Stream::len))
        };
        assert_eq!((retained("k"), retained("other")), (1, 1));
        assert_eq!(engine.metrics.evicted_count(Eviction::Memory), 1);
    }

    #[test]
    fn a_key_map_entry_is_40_bytes() {
        // Key, subscribers and one pointer for the rest: the key map's tables hold
        // one per registered key, in powers of two.
        assert_eq!(std::mem::size_of::<(Arc<str>, Channel)>(), 40);
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
        assert_eq!(listed(&engine), 0);
        assert!(engine.channels.is_empty(), "the unused key is dropped");
    }
}
