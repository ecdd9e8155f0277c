//! Keep-alive timing: a Ping every `interval`, and the connection is given up when the
//! Pong has not come back within `timeout` (docs/PROTOCOL.md, "Keep-alive"; as Python `websockets`).
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
//! The wheel holds every open connection, so the drain goes through it too: when the
//! relay shuts down, the timer marks each connection and wakes it
//! ([`KeepAlive::run`]), instead of every connection's task waiting on the shutdown
//! token (a waiter that was 72 bytes of every idle connection's task).
//!
//! Timing is exact to one tick: at most a sixteenth of the shorter of the two settings,
//! and at most a second, so a Ping goes out between `interval` and `interval` plus one
//! tick after the last, and a missing Pong closes the connection between `timeout` and
//! `timeout` plus one tick after its Ping.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::registry::Peer;

/// The longest tick: timing is never coarser than this.
const MAX_TICK: Duration = Duration::from_secs(1);
/// The shortest tick, tokio's timer resolution.
const MIN_TICK: Duration = Duration::from_millis(1);
/// Ticks per the shorter of interval and timeout: the timing's precision.
const TICKS_PER_PERIOD: u32 = 16;
/// Most buckets in the ring; with a long interval and a short timeout the tick grows
/// instead (a bucket is 32 bytes).
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

/// What a connection's keep-alive says, in one byte of its [`Peer`]: whether a Ping is
/// waiting for its Pong, what the connection task must do next, and which deadline its
/// place in the wheel stands for.
#[derive(Debug, Default)]
pub struct Beat(AtomicU8);

/// A Ping went out and its Pong has not come back.
const AWAITING_PONG: u8 = 1;
/// The connection task must send a Ping.
const PING_DUE: u8 = 2;
/// The Pong did not come in time: the connection task must close.
const TIMED_OUT: u8 = 4;
/// The connection has ended: the wheel forgets it at its next visit.
const ENDED: u8 = 8;
/// The connection's place in the wheel is its Pong deadline (else its next Ping).
const AT_PONG_DEADLINE: u8 = 16;
/// The relay is shutting down: the connection task must close.
const SHUTDOWN: u8 = 32;

/// What the connection task must do, taken from its [`Beat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The relay is shutting down: close the connection (1001).
    Shutdown,
    /// Send a Ping.
    Ping,
    /// The last Ping went unanswered for too long: close the connection.
    TimedOut,
}

impl Beat {
    /// Records a Pong from the peer.
    pub fn on_pong(&self) {
        self.0.fetch_and(!AWAITING_PONG, Ordering::AcqRel);
    }

    /// Takes what the connection task must do, if anything. A plain load when there is
    /// nothing, which is every wake-up but a keep-alive's.
    pub fn take_due(&self) -> Option<Due> {
        if self.0.load(Ordering::Acquire) & (PING_DUE | TIMED_OUT | SHUTDOWN) == 0 {
            return None;
        }
        let before = self.0.fetch_and(!(PING_DUE | TIMED_OUT), Ordering::AcqRel);
        if before & SHUTDOWN != 0 {
            Some(Due::Shutdown)
        } else if before & TIMED_OUT != 0 {
            Some(Due::TimedOut)
        } else if before & PING_DUE != 0 {
            Some(Due::Ping)
        } else {
            None
        }
    }

    /// Tells the connection the relay is shutting down (it stays told); false if it
    /// has ended already.
    fn shut_down(&self) -> bool {
        self.0.fetch_or(SHUTDOWN, Ordering::AcqRel) & ENDED == 0
    }

    /// Marks the connection ended, so the wheel lets go of it.
    pub fn end(&self) {
        self.0.fetch_or(ENDED, Ordering::AcqRel);
    }
}

/// What a visit of the wheel does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit {
    /// The connection's new [`Beat`].
    pub beat: u8,
    /// Whether its task must be woken (a Ping to send, or a close).
    pub wake: bool,
    /// In how many ticks the wheel visits it again; `None`: never (ended, timed out).
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
    if beat & ENDED != 0 {
        return Visit {
            beat,
            wake: false,
            again: None,
        };
    }
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
    /// The ring: bucket `t % len` holds the connections due at tick `t`. A connection is
    /// in at most one bucket.
    buckets: Box<[Mutex<Vec<Arc<Peer>>>]>,
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
            buckets: (0..plan.buckets()).map(|_| Mutex::default()).collect(),
        }
    }

    /// Starts `peer`'s keep-alive: its first Ping goes out `interval` from now.
    pub fn add(&self, peer: &Arc<Peer>) {
        // The tick being visited may be the next one; `interval` ticks after it is
        // still a bucket the ticker has not reached.
        let next = self.visited.load(Ordering::Acquire) + 1;
        self.insert(next + self.plan.interval, Arc::clone(peer));
        // After the insert: either the shutdown's sweep finds it, or this sees the flag.
        if self.shutting_down.load(Ordering::SeqCst) && peer.beat.shut_down() {
            peer.outbox.wake_reader();
        }
    }

    fn insert(&self, tick: u64, peer: Arc<Peer>) {
        let bucket = &self.buckets[(tick % self.buckets.len() as u64) as usize];
        bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(peer);
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
        for bucket in &*self.buckets {
            for peer in bucket.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                if peer.beat.shut_down() {
                    peer.outbox.wake_reader();
                }
            }
        }
    }

    /// When `tick` is.
    fn time_of(&self, tick: u64) -> Instant {
        let nanos = self.plan.tick.as_nanos().saturating_mul(u128::from(tick));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Visits every connection due at `tick`.
    fn visit_tick(&self, tick: u64) {
        let bucket = &self.buckets[(tick % self.buckets.len() as u64) as usize];
        let due = std::mem::take(&mut *bucket.lock().unwrap_or_else(PoisonError::into_inner));
        for peer in due {
            let mut outcome = None;
            let _ = peer
                .beat
                .0
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |beat| {
                    let v = visit(beat, self.plan);
                    outcome = Some(v);
                    Some(v.beat)
                });
            let Some(outcome) = outcome else { continue };
            if outcome.wake {
                peer.outbox.wake_reader();
            }
            if let Some(again) = outcome.again {
                self.insert(tick + again, peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_ended_connection_is_forgotten() {
        let v = visit(ENDED | AWAITING_PONG | AT_PONG_DEADLINE, plan(60, 30));
        assert_eq!((v.wake, v.again), (false, None));
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

    #[test]
    fn take_due_reports_a_close_before_a_ping_and_only_once() {
        let beat = Beat::default();
        assert_eq!(beat.take_due(), None);
        beat.0.store(PING_DUE | AWAITING_PONG, Ordering::Relaxed);
        assert_eq!(beat.take_due(), Some(Due::Ping));
        assert_eq!(beat.take_due(), None);
        beat.on_pong();
        assert_eq!(beat.0.load(Ordering::Relaxed), 0);
        beat.0.store(TIMED_OUT, Ordering::Relaxed);
        assert_eq!(beat.take_due(), Some(Due::TimedOut));
        // A shutdown comes first, and stays.
        beat.0.store(PING_DUE, Ordering::Relaxed);
        assert!(beat.shut_down());
        assert_eq!(beat.take_due(), Some(Due::Shutdown));
        assert_eq!(beat.take_due(), Some(Due::Shutdown));
        beat.end();
        assert!(!beat.shut_down());
    }
}
