//! Readiness: whether the relay should get new clients now, and if not, why
//! (`GET /readyz`).
//!
//! Liveness (`/healthz`) only says the process serves. Readiness says more: a load
//! balancer or orchestrator should send new clients elsewhere while the relay drains
//! after SIGTERM, while it is at `--max-connections` (decided per request, see
//! `http`), or while a part registered with [`Readiness::add_check`] says so (e.g. a
//! cluster engine that lost its backend).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Why the relay refuses new connections while it drains, as `/readyz` says it.
pub const DRAINING: &str = "draining: the relay is shutting down";

/// A part of the relay that can make it not ready.
pub trait ReadinessCheck: Send + Sync + fmt::Debug {
    /// `None` while this part is fine; otherwise a short reason for `/readyz`, e.g.
    /// `"cluster: redis unreachable for 12s"`. Called on every probe: keep it cheap.
    fn not_ready(&self) -> Option<String>;
}

/// The readiness conditions every part of the relay shares.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Set once the drain has begun.
    draining: AtomicBool,
    /// Conditions added by other parts, asked on every probe.
    checks: RwLock<Vec<Arc<dyn ReadinessCheck>>>,
}

impl Readiness {
    /// Marks the relay as draining: from now on it refuses new WebSocket connections.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Adds a condition that `/readyz` asks from now on.
    pub fn add_check(&self, check: Arc<dyn ReadinessCheck>) {
        self.checks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(check);
    }

    /// Every reason the relay is not ready now (draining first); empty when ready.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.is_draining() {
            reasons.push(DRAINING.to_owned());
        }
        let checks = self.checks.read().unwrap_or_else(PoisonError::into_inner);
        reasons.extend(checks.iter().filter_map(|check| check.not_ready()));
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Switch(Mutex<Option<String>>);

    impl ReadinessCheck for Switch {
        fn not_ready(&self) -> Option<String> {
            self.0.lock().expect("lock").clone()
        }
    }

    #[test]
    fn ready_until_a_check_or_the_drain_says_otherwise() {
        let readiness = Readiness::default();
        assert!(readiness.reasons().is_empty());
        let cluster = Arc::new(Switch::default());
        readiness.add_check(Arc::clone(&cluster) as Arc<dyn ReadinessCheck>);
        assert!(readiness.reasons().is_empty());
        *cluster.0.lock().expect("lock") = Some("cluster: backend unreachable".to_owned());
        assert_eq!(readiness.reasons(), ["cluster: backend unreachable"]);
        readiness.set_draining();
        assert!(readiness.is_draining());
        assert_eq!(
            readiness.reasons(),
            [DRAINING, "cluster: backend unreachable"]
        );
        *cluster.0.lock().expect("lock") = None;
        assert_eq!(readiness.reasons(), [DRAINING]);
    }
}
