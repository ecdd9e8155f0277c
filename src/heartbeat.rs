//! Keep-alive timing: a Ping every `interval`, and the connection is given up when the
//! Pong has not come back within `timeout` (docs/PROTOCOL.md, "Keep-alive"; as Python `websockets`).
//!
//! Pure state with no I/O, so the rules are unit-tested; the connection task owns one
//! timer and re-arms it at [`Heartbeat::deadline`].

use std::time::Duration;

use tokio::time::Instant;

/// What the connection must do when the heartbeat deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a Ping now.
    Ping,
    /// The last Ping went unanswered for too long: close the connection.
    TimedOut,
    /// Nothing to do yet (the deadline moved); re-arm the timer.
    Wait,
}

/// The keep-alive settings: the same for every connection, so each connection's
/// [`Heartbeat`] is given them rather than keeping a copy (it is part of every idle
/// connection's task).
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// Time between Pings.
    pub interval: Duration,
    /// How long a Ping may go unanswered.
    pub timeout: Duration,
}

/// Ping/Pong bookkeeping for one connection.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// When the last Ping went out (or the connection opened).
    last_ping: Instant,
    /// Whether the last Ping is still waiting for its Pong.
    awaiting_pong: bool,
}

impl Heartbeat {
    /// A heartbeat whose first Ping is due `interval` after `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            last_ping: now,
            awaiting_pong: false,
        }
    }

    /// When [`Heartbeat::on_deadline`] must next be called.
    pub fn deadline(&self, times: Times) -> Instant {
        if self.awaiting_pong {
            self.last_ping + times.timeout
        } else {
            self.last_ping + times.interval
        }
    }

    /// Decides what to do at `now`, which should be at or after [`Heartbeat::deadline`].
    pub fn on_deadline(&mut self, now: Instant, times: Times) -> Beat {
        if now < self.deadline(times) {
            return Beat::Wait;
        }
        if self.awaiting_pong {
            return Beat::TimedOut;
        }
        self.last_ping = now;
        self.awaiting_pong = true;
        Beat::Ping
    }

    /// Records a Pong from the peer.
    pub fn on_pong(&mut self) {
        self.awaiting_pong = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(60);
    const TIMEOUT: Duration = Duration::from_secs(30);
    const TIMES: Times = Times {
        interval: INTERVAL,
        timeout: TIMEOUT,
    };

    #[test]
    fn pings_every_interval_while_pongs_come_back() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(start);
        assert_eq!(hb.deadline(TIMES), start + INTERVAL);
        assert_eq!(hb.on_deadline(start + INTERVAL / 2, TIMES), Beat::Wait);
        assert_eq!(hb.on_deadline(start + INTERVAL, TIMES), Beat::Ping);
        assert_eq!(hb.deadline(TIMES), start + INTERVAL + TIMEOUT);
        hb.on_pong();
        assert_eq!(hb.deadline(TIMES), start + 2 * INTERVAL);
        assert_eq!(hb.on_deadline(start + 2 * INTERVAL, TIMES), Beat::Ping);
    }

    #[test]
    fn unanswered_ping_times_out_after_timeout() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(start);
        assert_eq!(hb.on_deadline(start + INTERVAL, TIMES), Beat::Ping);
        assert_eq!(
            hb.on_deadline(start + INTERVAL + TIMEOUT / 2, TIMES),
            Beat::Wait
        );
        assert_eq!(
            hb.on_deadline(start + INTERVAL + TIMEOUT, TIMES),
            Beat::TimedOut
        );
    }

    #[test]
    fn late_pong_still_counts_before_the_deadline() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(start);
        assert_eq!(hb.on_deadline(start + INTERVAL, TIMES), Beat::Ping);
        hb.on_pong();
        assert_eq!(
            hb.on_deadline(start + INTERVAL + TIMEOUT, TIMES),
            Beat::Wait
        );
    }
}
