//! Keep-alive timing: a Ping every `interval`, and the connection is given up when the
//! Pong has not come back within `timeout` (docs/PROTOCOL.md, "Keep-alive"; as Python
//! `websockets`).
//!
//! One timer for the whole relay, not one per connection: a timer in every connection's
//! task would be part of every idle connection's memory (a tokio `Sleep` is 112 bytes,
//! and it pushed the task into a larger allocation class). [`KeepAlive`] is a coarse
//! timer wheel: a ring of buckets, one per tick of [`Plan::tick`], each holding the
//! connections whose next keep-alive step falls in that tick. One task ([`KeepAlive::run`])
//! visits the due bucket each tick; a connection is visited only when its Ping or its
//! Pong deadline is due (about twice per interval), and woken only to send a Ping or to
//! close. Each connection's state is one byte in its [`Peer`] ([`Beat`]); what a visit
//! does is the pure function [`visit`], unit-tested without I/O.
//!
//! The wheel holds every open connection and no closed one: its entries hold
//! `Weak<Peer>` (a closed connection's outbox, and through its waker the finished task's
//! cell, are never kept alive by the wheel), and a connection takes its entry out when it
//! ends, through the [`Slot`] it keeps (the private `Wheel` says why a slab). A wheel
//! that let go of closed connections at their bucket's next visit held up to a turn of
//! the ring's worth of them under churn (+354% peak RSS in `notify-relay-bench churn`).
//!
//! The wheel holds every open connection, so the drain goes through it too: when the
//! relay shuts down, the timer marks each connection and wakes it
//! ([`KeepAlive::run`]), instead of every connection's task waiting on the shutdown
//! token (a waiter that was 72 bytes of every idle connection's task).
//!
//! Timing is exact to one tick: a sixteenth of the shorter of the two settings, and at
//! most a second (1 s with the defaults, 60 s and 30 s), so a Ping goes out between
//! `interval` and `interval` plus one tick after the last, and a missing Pong closes the
//! connection between `timeout` and `timeout` plus one tick after its Ping. Only when the
//! longer setting spans more than 4,096 ticks does the tick grow past that (to
//! the longer setting over 4,094), so the ring stays bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::peer::beat::{AT_PONG_DEADLINE, AWAITING_PONG, PING_DUE, TIMED_OUT};
use crate::peer::registry::Peer;

/// The longest tick: timing is never coarser than this.
const MAX_TICK: Duration = Duration::from_secs(1);
/// The shortest tick, tokio's timer resolution.
const MIN_TICK: Duration = Duration::from_millis(1);
/// Ticks per the shorter of interval and timeout: the timing's precision.
const TICKS_PER_PERIOD: u32 = 16;
/// Most buckets in the ring; with a long interval and a short timeout the tick grows
/// instead (an empty bucket is 24 bytes).
const MAX_BUCKETS: u64 = 4096;

/// The keep-alive settings.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// Time between Pings.
    pub interval: Duration,
    /// How long a Ping may go unanswered.
    pub timeout: Duration,
}

/// The settings in ticks of the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// One tick.
    pub tick: Duration,
    /// Ticks between Pings (at least 1).
    pub interval: u64,
    /// Ticks a Ping may go unanswered (at least 1).
    pub timeout: u64,
}

impl Plan {
    /// The ticks for `times`.
    pub fn new(times: Times) -> Self {
        let shorter = times.interval.min(times.timeout);
        let longer = times.interval.max(times.timeout);
        let mut tick = (shorter / TICKS_PER_PERIOD).clamp(MIN_TICK, MAX_TICK);
        // A ring that spans the longer setting in at most MAX_BUCKETS buckets.
        let spanned = longer.div_duration_f64(tick).ceil();
        if spanned >= MAX_BUCKETS as f64 {
            tick = longer.div_f64((MAX_BUCKETS - 2) as f64).max(MIN_TICK);
        }
        let ticks = |d: Duration| (d.div_duration_f64(tick).ceil() as u64).max(1);
        Self {
            tick,
            interval: ticks(times.interval),
            timeout: ticks(times.timeout),
        }
    }

    /// Buckets in the ring: every step is at most this many ticks ahead minus one, so
    /// a bucket only ever holds entries due at its next visit.
    fn buckets(&self) -> usize {
        (self.interval.max(self.timeout) + 1) as usize
    }
}

/// Tells `peer` the relay is shutting down, and wakes its task to close.
fn tell_shutdown(peer: &Peer) {
    peer.beat.shut_down();
    peer.outbox.wake_reader();
}

/// What a visit of the wheel does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit {
    /// The connection's new [`Beat`].
    pub beat: u8,
    /// Whether its task must be woken (a Ping to send, or a close).
    pub wake: bool,
    /// In how many ticks the wheel visits it again; `None`: never (timed out).
    pub again: Option<u64>,
}

/// The visit of a connection whose place in the wheel came due, with keep-alive state
/// `beat`. Pure: the rules of keep-alive in ticks.
pub fn visit(beat: u8, plan: Plan) -> Visit {
    let (interval, timeout) = (plan.interval, plan.timeout);
    let stay = |beat, again| Visit {
        beat,
        wake: false,
        again: Some(again),
    };
    let awaiting = beat & AWAITING_PONG != 0;
    if beat & AT_PONG_DEADLINE != 0 {
        if awaiting {
            return Visit {
                beat: beat | TIMED_OUT,
                wake: true,
                again: None,
            };
        }
        // Answered: the next Ping is due `interval` after the last one, `timeout` ago
        // (now, when the timeout is the longer: a late Pong).
        if interval > timeout {
            return stay(beat & !AT_PONG_DEADLINE, interval - timeout);
        }
    } else if awaiting {
        // A Ping's time, but the last one is still unanswered (the timeout is the
        // longer): its Pong deadline comes first.
        return stay(beat | AT_PONG_DEADLINE, timeout - interval);
    }
    // A Ping now; the next visit is its Pong deadline, or the next Ping if that comes
    // first (the Pong deadline is then checked on the way).
    let beat = beat | AWAITING_PONG | PING_DUE;
    let (beat, again) = if timeout <= interval {
        (beat | AT_PONG_DEADLINE, timeout)
    } else {
        (beat & !AT_PONG_DEADLINE, interval)
    };
    Visit {
        beat,
        wake: true,
        again: Some(again),
    }
}

/// Where a connection's entry is in the wheel: an index into [`KeepAlive`]'s slab, kept
/// by the connection task (4 bytes in its own state, not in the [`Peer`], which must stay
/// in the 160-byte allocation class) so it can take itself out when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u32);

impl Slot {
    /// No entry: what [`KeepAlive::add`] gives when the slab is full (4 billion entries,
    /// far past any connection limit); removing it does nothing.
    pub const NONE: Slot = Slot(u32::MAX);
}

/// The capacity a bucket keeps when entries leave it; past it, a bucket less than a
/// quarter full is shrunk.
const BUCKET_KEPT_CAPACITY: usize = 16;

/// The end of the slab's free list.
const NO_FREE: u32 = u32::MAX;

/// One connection's entry in the slab.
#[derive(Debug)]
struct Entry {
    /// The connection, weakly: the wheel never keeps a closed connection's outbox (and
    /// through its waker, the finished task's whole cell) alive. `Weak::new()` (which
    /// allocates nothing) when the entry is free.
    peer: Weak<Peer>,
    /// The bucket it is in (when in use).
    bucket: u32,
    /// Its index in that bucket (when in use), or the next free entry (when free).
    index: u32,
}

/// The wheel's data, behind one lock.
///
/// Entries live in a slab that never moves them: a connection keeps its [`Slot`] for
/// its whole life, and each entry records where it is in its bucket, so taking a closed
/// connection out is O(1) and immediate (a `swap_remove` from its bucket, the entry put
/// on the free list). Compaction (dropping dead entries once they pass a fraction of the
/// live ones) would need no slot in the connection, but leaves up to that fraction of
/// closed connections (and their 160-byte `Peer`s) behind under churn and costs a sweep
/// of the whole wheel; the slab leaves nothing behind and its memory is bounded by the
/// most connections ever open at once (16 bytes an entry plus 4 in a bucket), reused
/// through the free list rather than grown.
#[derive(Debug)]
struct Wheel {
    /// The slab of entries.
    entries: Vec<Entry>,
    /// The first free entry, or [`NO_FREE`].
    free: u32,
    /// Entries in use.
    live: usize,
    /// The ring: bucket `t % len` holds the slots of the connections due at tick `t`.
    /// A connection is in exactly one bucket.
    buckets: Box<[Vec<u32>]>,
}

impl Wheel {
    fn new(buckets: usize) -> Self {
        Self {
            entries: Vec::new(),
            free: NO_FREE,
            live: 0,
            buckets: (0..buckets).map(|_| Vec::new()).collect(),
        }
    }

    /// The bucket of `tick`.
    fn bucket_of(&self, tick: u64) -> u32 {
        // The ring has at most MAX_BUCKETS buckets, so the remainder fits.
        (tick % self.buckets.len() as u64) as u32
    }

    /// Takes a free entry for `peer`, due at `tick`; [`Slot::NONE`] if the slab is full.
    fn insert(&mut self, tick: u64, peer: Weak<Peer>) -> Slot {
        let slot = if self.free != NO_FREE {
            let slot = self.free;
            let entry = &mut self.entries[slot as usize];
            self.free = entry.index;
            entry.peer = peer;
            slot
        } else {
            let Ok(slot) = u32::try_from(self.entries.len()) else {
                return Slot::NONE;
            };
            if slot == NO_FREE {
                return Slot::NONE;
            }
            self.entries.push(Entry {
                peer,
                bucket: 0,
                index: 0,
            });
            slot
        };
        self.live += 1;
        self.place(slot, tick);
        Slot(slot)
    }

    /// Puts the entry `slot` (in use, in no bucket) in the bucket of `tick`.
    fn place(&mut self, slot: u32, tick: u64) {
        let bucket = self.bucket_of(tick);
        let list = &mut self.buckets[bucket as usize];
        // A bucket never holds more entries than the slab, whose indices fit a u32.
        let index = list.len() as u32;
        list.push(slot);
        let entry = &mut self.entries[slot as usize];
        entry.bucket = bucket;
        entry.index = index;
    }

    /// Frees the entry `slot` (in use, already out of its bucket).
    fn release(&mut self, slot: u32) {
        let entry = &mut self.entries[slot as usize];
        entry.peer = Weak::new();
        entry.index = self.free;
        self.free = slot;
        self.live -= 1;
    }

    /// Takes `peer`'s entry out, if `slot` still holds it (the wheel may have let go of
    /// it at a time-out, and the slot may hold another connection since).
    fn remove(&mut self, slot: Slot, peer: &Arc<Peer>) -> bool {
        let Some(entry) = self.entries.get(slot.0 as usize) else {
            return false;
        };
        // `peer` is alive, so no other `Peer` can be at its address: pointer equality
        // is identity.
        if !std::ptr::eq(entry.peer.as_ptr(), Arc::as_ptr(peer)) {
            return false;
        }
        let (bucket, index) = (entry.bucket as usize, entry.index as usize);
        let list = &mut self.buckets[bucket];
        list.swap_remove(index);
        if let Some(&moved) = list.get(index) {
            self.entries[moved as usize].index = index as u32;
        }
        // Under churn a bucket fills and empties before its visit: give back what it no
        // longer needs (halving at a quarter full: amortized O(1), at most 4x its length).
        if list.capacity() > BUCKET_KEPT_CAPACITY && list.len() < list.capacity() / 4 {
            list.shrink_to(list.len() * 2);
        }
        self.release(slot.0);
        true
    }
}

/// The relay's one keep-alive timer. See the module docs.
#[derive(Debug)]
pub struct KeepAlive {
    plan: Plan,
    /// The last tick visited, counted from `start`.
    visited: AtomicU64,
    /// When tick 0 was.
    start: Instant,
    /// Set when the relay shuts down: a connection added later is told at once.
    shutting_down: AtomicBool,
    /// The entries and the ring. One lock: connections take it once when they open and
    /// once when they end, the timer once per tick.
    wheel: Mutex<Wheel>,
}

impl KeepAlive {
    /// An empty wheel for `times`.
    pub fn new(times: Times) -> Self {
        let plan = Plan::new(times);
        Self {
            plan,
            visited: AtomicU64::new(0),
            start: Instant::now(),
            shutting_down: AtomicBool::new(false),
            wheel: Mutex::new(Wheel::new(plan.buckets())),
        }
    }

    fn wheel(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `peer`'s keep-alive: its first Ping goes out `interval` from now. The
    /// connection keeps the [`Slot`] and gives it to [`KeepAlive::remove`] when it ends.
    pub fn add(&self, peer: &Arc<Peer>) -> Slot {
        // The tick being visited may be the next one; `interval` ticks after it is
        // still a bucket the ticker has not reached.
        let next = self.visited.load(Ordering::Acquire) + 1;
        let slot = self
            .wheel()
            .insert(next + self.plan.interval, Arc::downgrade(peer));
        // After the insert: either the shutdown's sweep finds it, or this sees the flag.
        if self.shutting_down.load(Ordering::SeqCst) {
            tell_shutdown(peer);
        }
        slot
    }

    /// Ends `peer`'s keep-alive at once: its entry is freed for the next connection, so a
    /// closed connection leaves nothing in the wheel. Does nothing if the wheel let go
    /// of it already (it timed out).
    pub fn remove(&self, slot: Slot, peer: &Arc<Peer>) {
        if slot != Slot::NONE {
            self.wheel().remove(slot, peer);
        }
    }

    /// The connections in the wheel: every open WebSocket connection, and none that has
    /// ended.
    pub fn len(&self) -> usize {
        self.wheel().live
    }

    /// Whether no connection is in the wheel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits the due bucket every tick until `cancel`: Pings due are asked of their
    /// connections, Pongs overdue close theirs. Ticks the task was late for are visited
    /// at once, in order. At `cancel` (the relay shuts down) every connection is told
    /// to close.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut next = self.visited.load(Ordering::Acquire) + 1;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return self.shut_down(),
                () = sleep_until(self.time_of(next)) => {}
            }
            let now = Instant::now();
            while self.time_of(next) <= now {
                self.visit_tick(next);
                self.visited.store(next, Ordering::Release);
                next += 1;
            }
        }
    }

    /// Tells every open connection, and any added later, that the relay is shutting
    /// down, and wakes it.
    fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let wheel = self.wheel();
        for peer in wheel
            .entries
            .iter()
            .filter_map(|entry| entry.peer.upgrade())
        {
            tell_shutdown(&peer);
        }
    }

    /// When `tick` is.
    fn time_of(&self, tick: u64) -> Instant {
        let nanos = self.plan.tick.as_nanos().saturating_mul(u128::from(tick));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Visits every connection due at `tick`.
    fn visit_tick(&self, tick: u64) {
        let mut wheel = self.wheel();
        let bucket = wheel.bucket_of(tick) as usize;
        // Taken out, and left empty without its capacity: the connections move on to
        // other buckets (every step is at least one tick and less than a full turn), and
        // a bucket that kept its capacity after every visit would, a turn later, hold the
        // space of all the connections once in every bucket.
        let due = std::mem::take(&mut wheel.buckets[bucket]);
        for slot in due {
            let Some(peer) = wheel.entries[slot as usize].peer.upgrade() else {
                // Its connection is gone without taking itself out (its task was
                // dropped): let go of the entry here.
                wheel.release(slot);
                continue;
            };
            // `visit` is pure: what it made of the state it replaced is made again here.
            let before = peer.beat.update(|beat| visit(beat, self.plan).beat);
            let outcome = visit(before, self.plan);
            if outcome.wake {
                peer.outbox.wake_reader();
            }
            match outcome.again {
                Some(again) => wheel.place(slot, tick + again),
                None => wheel.release(slot),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::beat::Due;
    use crate::peer::outbox::OutboxLimits;

    const SECOND: Duration = Duration::from_secs(1);

    fn plan(interval: u64, timeout: u64) -> Plan {
        Plan {
            tick: SECOND,
            interval,
            timeout,
        }
    }

    /// Follows one connection through visits, answering Pings when `answer` says so;
    /// returns the ticks of its Pings and of its time-out, if any.
    fn follow(
        plan: Plan,
        visits: usize,
        answer: impl Fn(usize) -> bool,
    ) -> (Vec<u64>, Option<u64>) {
        let (mut beat, mut tick, mut pings) = (0u8, plan.interval, Vec::new());
        for _ in 0..visits {
            let v = visit(beat, plan);
            beat = v.beat;
            if beat & TIMED_OUT != 0 {
                return (pings, Some(tick));
            }
            if beat & PING_DUE != 0 {
                beat &= !PING_DUE;
                pings.push(tick);
                if answer(pings.len()) {
                    beat &= !AWAITING_PONG;
                }
            }
            tick += v.again.expect("visited again");
        }
        (pings, None)
    }

    #[test]
    fn pings_every_interval_while_pongs_come_back() {
        for (interval, timeout) in [(60, 30), (30, 30), (10, 30)] {
            let (pings, timed_out) = follow(plan(interval, timeout), 20, |_| true);
            assert_eq!(timed_out, None);
            let expected: Vec<u64> = (1..).map(|n| n * interval).take(pings.len()).collect();
            assert_eq!(pings, expected, "interval {interval}, timeout {timeout}");
            assert!(pings.len() >= 6);
        }
    }

    #[test]
    fn unanswered_ping_times_out_after_timeout() {
        for (interval, timeout) in [(60, 30), (30, 30), (10, 30)] {
            let (pings, timed_out) = follow(plan(interval, timeout), 20, |n| n < 3);
            assert_eq!(pings, [interval, 2 * interval, 3 * interval]);
            assert_eq!(timed_out, Some(3 * interval + timeout));
        }
    }

    #[test]
    fn late_pong_still_counts_before_the_deadline() {
        // Timeout longer than the interval: a Pong that comes after the next Ping's time
        // but before the deadline keeps the connection, and the next Ping follows at once.
        let p = plan(10, 30);
        let v = visit(0, p);
        assert!(v.wake && v.beat & PING_DUE != 0);
        let beat = v.beat & !PING_DUE;
        let v = visit(beat, p); // the next Ping's time: still awaiting
        assert!(!v.wake);
        assert_eq!(v.again, Some(20));
        let v = visit(v.beat & !AWAITING_PONG, p); // Pong came: Ping at the deadline
        assert!(v.wake && v.beat & PING_DUE != 0 && v.beat & TIMED_OUT == 0);
    }

    #[test]
    fn ticks_are_a_sixteenth_of_the_shorter_setting_and_at_most_a_second() {
        let p = Plan::new(Times {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
        });
        assert_eq!(p.tick, Duration::from_micros(6250));
        assert_eq!((p.interval, p.timeout), (16, 48));
        let p = Plan::new(Times {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        });
        assert_eq!((p.tick, p.interval, p.timeout), (SECOND, 60, 30));
        // A long interval and a short timeout: the ring stays bounded.
        let p = Plan::new(Times {
            interval: Duration::from_secs(24 * 3600),
            timeout: Duration::from_millis(100),
        });
        assert!(p.buckets() as u64 <= MAX_BUCKETS);
        assert!(p.interval >= 1 && p.timeout >= 1);
    }

    const LIMITS: OutboxLimits = OutboxLimits {
        max_frames: 4,
        max_bytes: 1024,
    };

    /// A wheel with one-second ticks, a Ping every 64 and a Pong deadline 32 after it.
    fn wheel() -> KeepAlive {
        KeepAlive::new(Times {
            interval: Duration::from_secs(64),
            timeout: Duration::from_secs(32),
        })
    }

    /// The entries of the wheel's buckets, all of them.
    fn in_buckets(keepalive: &KeepAlive) -> usize {
        keepalive.wheel().buckets.iter().map(Vec::len).sum()
    }

    #[test]
    fn a_connection_is_visited_at_its_ping_time_and_woken_for_a_ping() {
        let keepalive = wheel();
        let (interval, timeout) = (keepalive.plan.interval, keepalive.plan.timeout);
        assert_eq!((interval, timeout), (64, 32));
        let peer = Peer::new(LIMITS);
        let slot = keepalive.add(&peer);
        assert_ne!(slot, Slot::NONE);
        assert_eq!((keepalive.len(), in_buckets(&keepalive)), (1, 1));
        // Added when tick 0 was the last visited: its Ping is due at 1 + interval.
        for tick in 1..=interval {
            keepalive.visit_tick(tick);
            assert_eq!(peer.beat.take_due(), None, "tick {tick}");
        }
        keepalive.visit_tick(1 + interval);
        assert_eq!(peer.beat.take_due(), Some(Due::Ping));
        peer.beat.on_pong();
        // Answered: it stays in the wheel for its next Ping.
        for tick in 2 + interval..=1 + 2 * interval {
            keepalive.visit_tick(tick);
        }
        assert_eq!(peer.beat.take_due(), Some(Due::Ping));
        assert_eq!((keepalive.len(), in_buckets(&keepalive)), (1, 1));
        // Unanswered: it times out `timeout` later, and the wheel lets go of it.
        for tick in 2 + 2 * interval..=1 + 2 * interval + timeout {
            keepalive.visit_tick(tick);
        }
        assert_eq!(peer.beat.take_due(), Some(Due::TimedOut));
        assert_eq!((keepalive.len(), in_buckets(&keepalive)), (0, 0));
        // The connection then ends: its slot no longer holds it, so nothing happens.
        keepalive.remove(slot, &peer);
        assert_eq!(keepalive.len(), 0);
    }

    #[test]
    fn a_closed_connection_leaves_the_wheel_at_once_and_is_not_kept_alive() {
        let keepalive = wheel();
        let peers: Vec<_> = (0..10).map(|_| Peer::new(LIMITS)).collect();
        let slots: Vec<_> = peers.iter().map(|peer| keepalive.add(peer)).collect();
        assert_eq!((keepalive.len(), in_buckets(&keepalive)), (10, 10));
        // Out of the middle of the bucket, then the rest: the moved entries stay found.
        for i in [4, 0, 9, 1, 2, 3, 5, 6, 7, 8] {
            keepalive.remove(slots[i], &peers[i]);
            // Only the test's Arc is left: the wheel holds no strong reference.
            assert_eq!(Arc::strong_count(&peers[i]), 1);
            // A second removal (or one with another connection) does nothing.
            keepalive.remove(slots[i], &peers[i]);
        }
        assert_eq!((keepalive.len(), in_buckets(&keepalive)), (0, 0));
        // The Weak is gone too: the Peer's allocation is freed with its last Arc.
        assert!(peers.iter().all(|peer| Arc::weak_count(peer) == 0));
    }

    #[test]
    fn a_slot_reused_by_another_connection_is_not_removed_by_the_first() {
        let keepalive = wheel();
        let (first, second) = (Peer::new(LIMITS), Peer::new(LIMITS));
        let slot = keepalive.add(&first);
        keepalive.remove(slot, &first);
        assert_eq!(keepalive.add(&second), slot);
        keepalive.remove(slot, &first);
        assert_eq!(keepalive.len(), 1);
        keepalive.remove(slot, &second);
        assert_eq!(keepalive.len(), 0);
    }

    #[test]
    fn a_connection_dropped_without_removal_is_let_go_at_its_visit() {
        let keepalive = wheel();
        let peer = Peer::new(LIMITS);
        keepalive.add(&peer);
        drop(peer);
        keepalive.visit_tick(1 + keepalive.plan.interval);
        assert_eq!((keepalive.len(), in_buckets(&keepalive)), (0, 0));
    }

    #[test]
    fn repeated_adds_and_removes_do_not_grow_the_wheel() {
        let keepalive = wheel();
        let peers: Vec<_> = (0..100).map(|_| Peer::new(LIMITS)).collect();
        let turn = keepalive.wheel().buckets.len() as u64;
        for round in 0..3 * turn {
            let slots: Vec<_> = peers.iter().map(|peer| keepalive.add(peer)).collect();
            // Half in the order they came, half the other way round.
            for (slot, peer) in slots.iter().zip(&peers).skip(50) {
                keepalive.remove(*slot, peer);
            }
            for (slot, peer) in slots.iter().zip(&peers).take(50).rev() {
                keepalive.remove(*slot, peer);
            }
            assert_eq!((keepalive.len(), in_buckets(&keepalive)), (0, 0));
            // Ticks go by, so every bucket of the ring takes its turn.
            keepalive.visit_tick(round + 1);
            keepalive.visited.store(round + 1, Ordering::Release);
            let (entries, capacity) = wheel_sizes(&keepalive);
            assert_eq!(entries, 100, "round {round}: the slab reuses its entries");
            // Emptied buckets give their space back.
            assert!(
                capacity <= turn as usize * BUCKET_KEPT_CAPACITY,
                "round {round}: buckets hold {capacity} entries' space"
            );
        }
    }

    /// The slab's length and the total capacity of the buckets.
    fn wheel_sizes(keepalive: &KeepAlive) -> (usize, usize) {
        let wheel = keepalive.wheel();
        (
            wheel.entries.len(),
            wheel.buckets.iter().map(Vec::capacity).sum(),
        )
    }

    #[test]
    fn at_shutdown_every_connection_and_every_later_one_is_told() {
        let keepalive = wheel();
        let before = Peer::new(LIMITS);
        keepalive.add(&before);
        keepalive.shut_down();
        assert_eq!(before.beat.take_due(), Some(Due::Shutdown));
        let after = Peer::new(LIMITS);
        keepalive.add(&after);
        assert_eq!(after.beat.take_due(), Some(Due::Shutdown));
    }
}
