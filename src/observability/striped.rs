//! A counter that several worker threads add to at once without sharing a cache line.
//!
//! A plain `AtomicU64` counted on every message moves its cache line between the cores
//! of the workers that publish, once per message per counter. Here each thread adds to a
//! slot of its own (slots are 128 bytes apart: a line and its adjacent-line prefetch
//! pair), and a reader, `/metrics` a few times a minute, sums them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Atomic;

/// Slots per counter: enough that the workers of a machine with this many cores rarely
/// share one; more threads than that share slots, still correctly.
const SLOTS: usize = 8;

/// One slot, alone in its 128 bytes.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A `u64` counter striped over [`SLOTS`] slots. See the module docs.
#[derive(Debug, Default)]
pub struct Striped {
    slots: [Slot; SLOTS],
}

/// Hands each thread its slot, in turn.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's slot index.
fn slot() -> usize {
    SLOT.with(|slot| {
        let mut index = slot.get();
        if index == usize::MAX {
            index = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
            slot.set(index);
        }
        index
    })
}

impl Atomic<u64> for Striped {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns this thread's slot's previous value, not the counter's (nothing here
    /// reads it).
    fn inc_by(&self, v: u64) -> u64 {
        self.slots[slot()].0.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_sum_up() {
        let counter = Arc::new(Striped::default());
        let threads: Vec<_> = (0..3 * SLOTS)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                    counter.inc_by(5);
                })
            })
            .collect();
        for thread in threads {
            thread
                .join()
                .unwrap_or_else(|_| panic!("a counting thread panicked"));
        }
        assert_eq!(counter.get(), 3 * SLOTS as u64 * 1005);
    }

    #[test]
    fn a_slot_has_its_cache_lines_to_itself() {
        assert_eq!(std::mem::align_of::<Slot>(), 128);
        assert_eq!(std::mem::size_of::<Striped>(), SLOTS * 128);
    }
}
