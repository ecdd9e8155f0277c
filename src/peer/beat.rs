//! A connection's keep-alive state: one byte in its [`Peer`](super::registry::Peer),
//! written by the keep-alive wheel (`transport::heartbeat`) and read by the connection
//! task, so neither needs the other: the wheel says a Ping is due or time is up, the
//! task takes it at its next wake-up.

use std::sync::atomic::{AtomicU8, Ordering};

/// What a connection's keep-alive says, in one byte of its [`Peer`]: whether a Ping is
/// waiting for its Pong, what the connection task must do next, and which deadline its
/// place in the wheel stands for.
#[derive(Debug, Default)]
pub struct Beat(AtomicU8);

/// A Ping went out and its Pong has not come back.
pub(crate) const AWAITING_PONG: u8 = 1;
/// The connection task must send a Ping.
pub(crate) const PING_DUE: u8 = 2;
/// The Pong did not come in time: the connection task must close.
pub(crate) const TIMED_OUT: u8 = 4;
/// The connection's place in the wheel is its Pong deadline (else its next Ping).
pub(crate) const AT_PONG_DEADLINE: u8 = 16;
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

    /// Replaces the state with what `next` makes of it; returns the state it replaced.
    /// The keep-alive wheel's one write: `next` must be pure (it may run more than once).
    pub(crate) fn update(&self, mut next: impl FnMut(u8) -> u8) -> u8 {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |beat| Some(next(beat)))
            .unwrap_or_else(|beat| beat)
    }

    /// Tells the connection the relay is shutting down (it stays told).
    pub(crate) fn shut_down(&self) {
        self.0.fetch_or(SHUTDOWN, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        beat.shut_down();
        assert_eq!(beat.take_due(), Some(Due::Shutdown));
        assert_eq!(beat.take_due(), Some(Due::Shutdown));
    }
}
