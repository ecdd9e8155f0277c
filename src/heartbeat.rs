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

/// Ping/Pong bookkeeping for one connection.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Time between Pings.
    interval: Duration,
    /// How long a Ping may go unanswered.
    timeout: Duration,
    /// When the last Ping went out (or the connection opened).
    last_ping: Instant,
    /// Whether the last Ping is still waiting for its Pong.
    awaiting_pong: bool,
}

impl Heartbeat {
    /// A heartbeat whose first Ping is due `interval` after `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Self {
        Self {
            interval,
            timeout,
            last_ping: now,
            awaiting_pong: false,
        }
    }

    /// When [`Heartbeat::on_deadline`] must next be called.
    pub fn deadline(&self) -> Instant {
        if self.awaiting_pong {
            self.last_ping + self.timeout
        } else {
            self.last_ping + self.interval
        }
    }

    /// Decides what to do at `now`, which should be at or after [`Heartbeat::deadline`].
    pub fn on_deadline(&mut self, now: Instant) -> Beat {
        if now < self.deadline() {
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

    #[test]
    fn pings_every_interval_while_pongs_come_back() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(INTERVAL, TIMEOUT, start);
        assert_eq!(hb.deadline(), start + INTERVAL);
        assert_eq!(hb.on_deadline(start + INTERVAL / 2), Beat::Wait);
        assert_eq!(hb.on_deadline(start + INTERVAL), Beat::Ping);
        assert_eq!(hb.deadline(), start + INTERVAL + TIMEOUT);
        hb.on_pong();
        assert_eq!(hb.deadline(), start + 2 * INTERVAL);
        assert_eq!(hb.on_deadline(start + 2 * INTERVAL), Beat::Ping);
    }

    #[test]
    fn unanswered_ping_times_out_after_timeout() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(INTERVAL, TIMEOUT, start);
        assert_eq!(hb.on_deadline(start + INTERVAL), Beat::Ping);
        assert_eq!(hb.on_deadline(start + INTERVAL + TIMEOUT / 2), Beat::Wait);
        assert_eq!(hb.on_deadline(start + INTERVAL + TIMEOUT), Beat::TimedOut);
    }

    #[test]
    fn late_pong_still_counts_before_the_deadline() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(INTERVAL, TIMEOUT, start);
        assert_eq!(hb.on_deadline(start + INTERVAL), Beat::Ping);
        hb.on_pong();
        assert_eq!(hb.on_deadline(start + INTERVAL + TIMEOUT), Beat::Wait);
    }
}
