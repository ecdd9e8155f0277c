//! Rate limits for log lines that clients can trigger at will.
//!
//! A client can send 50,000 one-byte frames in a second, and each bad frame is worth a
//! warn line of about 90 bytes: unthrottled, that is megabytes of log for a few
//! kilobytes of input, and it buries everything else. Each connection therefore gets a
//! small budget of such lines per window, and all connections together a larger one.
//! Lines over budget are counted, not written, and the count is reported in one line:
//! "… and 49,871 more like it in the last 10 s".

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use log::warn;
use tokio::time::{sleep_until, Instant};

/// How long a budget lasts before it is renewed.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines one connection may log per window.
pub const PER_CONNECTION: u32 = 10;
/// Lines all connections together may log per window.
pub const GLOBAL: u32 = 100;

/// A budget of log lines per [`WINDOW`]. Pure bookkeeping: the caller passes the time.
#[derive(Debug)]
pub struct LogLimit {
    /// Lines allowed per window.
    budget: u32,
    /// When the current window started.
    window_start: Instant,
    /// Lines logged in the current window.
    logged: u32,
    /// Lines held back since the last summary.
    suppressed: u64,
    /// When the first of those was held back.
    suppressed_since: Option<Instant>,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it, after the summary of what was held back before it, if any.
    Log(Option<Suppressed>),
    /// Over budget: it has been counted; do not log it.
    Suppress,
}

/// Lines that were held back: how many, and over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// Lines not logged.
    pub count: u64,
    /// From the first of them to now.
    pub over: Duration,
}

impl fmt::Display for Suppressed {
    /// `… and 49,871 more like it in the last 10 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.over.as_secs_f64().ceil().max(1.0) as u64;
        write!(
            f,
            "… and {} more like it in the last {} s",
            thousands(self.count),
            thousands(seconds)
        )
    }
}

impl LogLimit {
    /// A budget of `budget` lines per window, starting at `now`.
    pub fn new(budget: u32, now: Instant) -> Self {
        Self {
            budget,
            window_start: now,
            logged: 0,
            suppressed: 0,
            suppressed_since: None,
        }
    }

    /// Decides about one line at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.logged = 0;
        }
        if self.logged < self.budget {
            self.logged += 1;
            return Admit::Log(self.take_suppressed(now));
        }
        self.suppress(1, now);
        Admit::Suppress
    }

    /// Counts `count` lines held back elsewhere (e.g. a summary that was itself over
    /// budget) as held back here.
    pub fn suppress(&mut self, count: u64, now: Instant) {
        self.suppressed += count;
        self.suppressed_since.get_or_insert(now);
    }

    /// What was held back and not yet reported; resets the count.
    pub fn take_suppressed(&mut self, now: Instant) -> Option<Suppressed> {
        let since = self.suppressed_since.take()?;
        let count = std::mem::take(&mut self.suppressed);
        Some(Suppressed {
            count,
            over: now.duration_since(since),
        })
    }
}

/// The budget all connections share. What it holds back is reported at the end of the
/// window by itself, so a flood from many connections is accounted for even if nothing
/// is logged after it.
#[derive(Debug)]
pub struct SharedLogLimit {
    /// The budget.
    limit: Mutex<LogLimit>,
    /// A report of what was held back is scheduled for the end of the window.
    report_due: AtomicBool,
}

impl SharedLogLimit {
    /// A budget of [`GLOBAL`] lines per window, starting at `now`.
    pub fn new(now: Instant) -> Arc<Self> {
        Arc::new(Self {
            limit: Mutex::new(LogLimit::new(GLOBAL, now)),
            report_due: AtomicBool::new(false),
        })
    }

    /// One line, standing for itself and `also` lines held back before it: `Some`
    /// (with what this budget held back before, to report first) when it may be logged.
    /// When it may not, they are all counted, and the count is logged at the end of the
    /// window. Must be called from within a tokio runtime.
    pub fn admit(self: &Arc<Self>, now: Instant, also: u64) -> Option<Option<Suppressed>> {
        let mut limit = self.lock();
        match limit.admit(now) {
            Admit::Log(held_back) => Some(held_back),
            Admit::Suppress => {
                limit.suppress(also, now);
                let window_end = limit.window_start + WINDOW;
                drop(limit);
                if !self.report_due.swap(true, Ordering::AcqRel) {
                    tokio::spawn(Arc::clone(self).report_at(window_end));
                }
                None
            }
        }
    }

    /// Logs `line` at warn within this budget alone: for lines of clients that have no
    /// budget of their own (plain HTTP requests).
    pub fn warn(self: &Arc<Self>, line: std::fmt::Arguments<'_>) {
        if let Some(held_back) = self.admit(Instant::now(), 0) {
            if let Some(all) = held_back {
                warn!("all connections: {all}");
            }
            warn!("{line}");
        }
    }

    /// Logs what was held back, at `when`.
    async fn report_at(self: Arc<Self>, when: Instant) {
        sleep_until(when).await;
        self.report_due.store(false, Ordering::Release);
        let held_back = self.lock().take_suppressed(Instant::now());
        if let Some(held_back) = held_back {
            warn!("all connections: {held_back}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogLimit> {
        // Bookkeeping only: a panic while it was held cannot leave it unusable.
        self.limit.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `49871` as `49,871`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_budget_then_counts_and_summarises_in_the_next_window() {
        let start = Instant::now();
        let mut limit = LogLimit::new(3, start);
        for _ in 0..3 {
            assert_eq!(limit.admit(start), Admit::Log(None));
        }
        for _ in 0..5 {
            assert_eq!(limit.admit(start + Duration::from_secs(1)), Admit::Suppress);
        }
        let later = start + WINDOW;
        assert_eq!(
            limit.admit(later),
            Admit::Log(Some(Suppressed {
                count: 5,
                over: WINDOW - Duration::from_secs(1)
            }))
        );
        assert_eq!(limit.admit(later), Admit::Log(None));
    }

    #[test]
    fn what_is_held_back_can_be_taken_once() {
        let start = Instant::now();
        let mut limit = LogLimit::new(0, start);
        assert_eq!(limit.take_suppressed(start), None);
        assert_eq!(limit.admit(start), Admit::Suppress);
        limit.suppress(9, start);
        let taken = limit.take_suppressed(start + Duration::from_secs(2));
        assert_eq!(
            taken,
            Some(Suppressed {
                count: 10,
                over: Duration::from_secs(2)
            })
        );
        assert_eq!(limit.take_suppressed(start), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_shared_budget_reports_what_it_held_back_at_the_end_of_the_window() {
        let start = Instant::now();
        let shared = SharedLogLimit::new(start);
        for _ in 0..GLOBAL {
            assert_eq!(shared.admit(start, 0), Some(None));
        }
        assert_eq!(shared.admit(start, 4), None);
        assert_eq!(shared.admit(start, 0), None);
        assert!(shared.report_due.load(Ordering::Acquire));
        // The report runs at the end of the window and takes the count.
        tokio::time::sleep_until(start + WINDOW + Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert!(!shared.report_due.load(Ordering::Acquire));
        assert_eq!(shared.lock().take_suppressed(Instant::now()), None);
        assert_eq!(shared.admit(Instant::now(), 0), Some(None));
    }

    #[test]
    fn summary_wording() {
        let summary = Suppressed {
            count: 49_871,
            over: Duration::from_millis(9_200),
        };
        assert_eq!(
            summary.to_string(),
            "… and 49,871 more like it in the last 10 s"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
