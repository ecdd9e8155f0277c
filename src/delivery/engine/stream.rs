//! One key's stream: the retained messages of a key, each at a position, and what can be
//! proven about the history before them.
//!
//! Pure data, no locks and no clock of its own: the engine holds it under the key's lock and
//! passes the time in, so every rule here is unit-tested without a server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::message::{Payload, Position, Since};

/// What a retained message costs beyond its text: the entry, the text's allocation and its
/// place in the engine's retention queue, as measured (`notify-relay-bench retention`:
/// about 300 bytes of RSS per 64-byte message). Counted against `--buffer-memory`, so the
/// cap bounds real memory and many tiny messages cannot escape it.
pub const ENTRY_OVERHEAD: usize = 232;

/// What a key's stream costs while it exists, beyond its messages: the map entry, the key,
/// the stream and its epoch (measured: about 470 bytes with one message per key).
pub const STREAM_OVERHEAD: usize = 480;

/// One retained message.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its place in the stream.
    pub seq: u64,
    /// What recipients get.
    pub payload: Payload,
    /// When it was appended, for `--buffer-ttl`.
    pub at: Instant,
    /// It reached no live connection: the next plain registration takes it.
    pub pending: bool,
    /// A newer message with the same name supersedes it.
    pub collapse: Option<Box<str>>,
}

impl Entry {
    /// Bytes this entry counts against the memory cap.
    pub fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + self.payload.as_text().len()
            + self.collapse.as_ref().map_or(0, |n| n.len())
    }
}

/// Entries that left the stream in one operation, for the memory count and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// How many entries.
    pub count: usize,
    /// Their cost (see [`Entry::cost`]).
    pub bytes: usize,
}

impl Removed {
    fn add(&mut self, entry: &Entry) {
        self.count += 1;
        self.bytes += entry.cost();
    }
}

/// What appending a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The new message's sequence number.
    pub seq: u64,
    /// The new entry's cost.
    pub bytes: usize,
    /// Earlier entries evicted by `--buffer-max`.
    pub evicted: Removed,
    /// Earlier entries with the same collapse name, superseded.
    pub collapsed: Removed,
}

/// What a resumable registration is handed before live messages.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Continuity from the requested position cannot be proven: history before this
    /// position (the one just before the first replayed entry, or the stream's end) is
    /// lost. Resuming from it loses nothing more.
    pub gap: Option<u64>,
    /// The retained entries to hand over, oldest first.
    pub entries: Vec<Entry>,
}

/// What outlives a stream's lock: its key, its epoch and how much of it is gone, shared
/// with the engine's retention queue. The queue holds one entry per retained message, and
/// entries of messages that left their stream early (`--buffer-max`, a stream dropped)
/// are told apart here with one load instead of a look-up of the key.
#[derive(Debug)]
pub struct StreamTag {
    /// The key the stream belongs to.
    key: Box<str>,
    /// This incarnation of the key's history; a new stream (after the old one was dropped,
    /// or after a restart) gets a new epoch, so old cursors cannot be mistaken for new ones.
    epoch: Arc<str>,
    /// Every seq up to this one has left the stream (`u64::MAX` once it is dropped).
    gone_through: AtomicU64,
    /// Some entry left out of order (collapsed): entries above `gone_through` may be gone.
    holes: AtomicBool,
}

impl StreamTag {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether message `seq` is certainly no longer in the stream. `false` means it may
    /// be: after a collapse only the stream itself can tell.
    pub fn certainly_gone(&self, seq: u64) -> bool {
        seq <= self.gone_through.load(Ordering::Relaxed)
    }

    /// Whether message `seq` is certainly still in the stream, without asking it.
    pub fn certainly_retained(&self, seq: u64) -> bool {
        !self.certainly_gone(seq) && !self.holes.load(Ordering::Relaxed)
    }
}

/// The retained messages of one key. See the module docs.
#[derive(Debug)]
pub struct Stream {
    /// Key, epoch and eviction mark, shared with the retention queue.
    tag: Arc<StreamTag>,
    /// The last sequence number given out (0: none yet).
    last_seq: u64,
    /// Retained entries, by increasing `seq` (not contiguous once some were collapsed).
    /// The highest seq lost to eviction is the tag's `gone_through`: continuity is
    /// provable only from there on.
    entries: VecDeque<Entry>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.tag.gone_through.store(u64::MAX, Ordering::Relaxed);
    }
}

impl Stream {
    /// An empty stream of `key`, of a new epoch.
    pub fn new(key: &str, epoch: Arc<str>) -> Self {
        Self {
            tag: Arc::new(StreamTag {
                key: key.into(),
                epoch,
                gone_through: AtomicU64::new(0),
                holes: AtomicBool::new(false),
            }),
            last_seq: 0,
            entries: VecDeque::new(),
        }
    }

    /// The key, epoch and eviction mark, as the retention queue holds them.
    pub fn tag(&self) -> &Arc<StreamTag> {
        &self.tag
    }

    /// This stream's epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.tag.epoch
    }

    /// The highest seq lost to eviction (0: none).
    fn evicted_through(&self) -> u64 {
        self.tag.gone_through.load(Ordering::Relaxed)
    }

    /// The position of message `seq` of this stream.
    pub fn position(&self, seq: u64) -> Position {
        Position::new(Arc::clone(&self.tag.epoch), seq)
    }

    /// The stream's end: the position of the last message appended.
    pub fn end(&self) -> u64 {
        self.last_seq
    }

    /// How many messages are retained.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether message `seq` is still retained.
    pub fn retains(&self, seq: u64) -> bool {
        self.entries.binary_search_by_key(&seq, |e| e.seq).is_ok()
    }

    /// Appends a message, keeping at most `max` entries: the oldest go first (counted as
    /// evicted), and an earlier entry with the same collapse name is dropped (superseded).
    pub fn append(
        &mut self,
        payload: Payload,
        at: Instant,
        pending: bool,
        collapse: Option<Box<str>>,
        max: usize,
    ) -> Appended {
        self.last_seq += 1;
        let seq = self.last_seq;
        let mut collapsed = Removed::default();
        if let Some(name) = collapse.as_deref() {
            // At most one earlier entry has the name: each append keeps it unique.
            if let Some(i) = self
                .entries
                .iter()
                .position(|e| e.collapse.as_deref() == Some(name))
            {
                if let Some(old) = self.entries.remove(i) {
                    collapsed.add(&old);
                    self.tag.holes.store(true, Ordering::Relaxed);
                }
            }
        }
        let entry = Entry {
            seq,
            payload,
            at,
            pending,
            collapse,
        };
        let bytes = entry.cost();
        // Room first, then the new entry: a full stream's ring then reuses the slot it just
        // freed (and stays at `max` slots) instead of growing to twice that and writing
        // each entry into a slot last touched `max` appends ago.
        let mut evicted = Removed::default();
        while self.entries.len() >= max.max(1) {
            if let Some(old) = self.evict_front() {
                evicted.add(&old);
            }
        }
        self.entries.push_back(entry);
        Appended {
            seq,
            bytes,
            evicted,
            collapsed,
        }
    }

    /// Removes entry `seq` if it is still retained (for the memory cap); entries older
    /// than it are lost with it.
    pub fn evict_through(&mut self, seq: u64) -> Removed {
        let mut removed = Removed::default();
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(old) = self.evict_front() {
                removed.add(&old);
            }
        }
        removed
    }

    /// Removes the entries appended before `deadline` (older than the TTL).
    pub fn expire(&mut self, deadline: Instant) -> Removed {
        let mut removed = Removed::default();
        while self.entries.front().is_some_and(|e| e.at < deadline) {
            if let Some(old) = self.evict_front() {
                removed.add(&old);
            }
        }
        removed
    }

    fn evict_front(&mut self) -> Option<Entry> {
        let old = self.entries.pop_front()?;
        // Every seq up to this one is gone: older ones left before it, in order or
        // collapsed.
        self.tag.gone_through.store(old.seq, Ordering::Relaxed);
        Some(old)
    }

    /// Hands over the pending entries (those that reached nobody), oldest first; each is
    /// handed over once.
    pub fn take_pending(&mut self) -> Vec<Entry> {
        let mut taken = Vec::new();
        for entry in self.entries.iter_mut().filter(|e| e.pending) {
            entry.pending = false;
            taken.push(entry.clone());
        }
        taken
    }

    /// What a registration resuming from `since` is handed. Replayed entries are no longer
    /// pending: they reached a connection.
    pub fn replay(&mut self, since: &Since) -> Replay {
        let (from, gap) = match since {
            Since::Latest => (self.last_seq, false),
            Since::Earliest => (0, false),
            Since::After(position) if position.epoch == self.tag.epoch => {
                let seq = position.seq;
                if seq > self.last_seq || seq < self.evicted_through() {
                    (0, true)
                } else {
                    (seq, false)
                }
            }
            Since::After(_) | Since::Unknown => (0, true),
        };
        let mut entries = Vec::new();
        for entry in self.entries.iter_mut().filter(|e| e.seq > from) {
            entry.pending = false;
            entries.push(entry.clone());
        }
        let gap = gap.then(|| entries.first().map_or(self.last_seq, |e| e.seq - 1));
        Replay { gap, entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(s: &str) -> Payload {
        Payload::text(s)
    }

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn stream() -> Stream {
        Stream::new("k", "e1".into())
    }

    fn after(stream: &Stream, seq: u64) -> Since {
        Since::After(stream.position(seq))
    }

    #[test]
    fn positions_count_from_one_and_max_evicts_oldest() {
        let mut s = stream();
        let now = Instant::now();
        for i in 1..=5 {
            let a = s.append(text("m"), now, false, None, 3);
            assert_eq!(a.seq, i);
            assert_eq!(a.evicted.count, usize::from(i > 3));
        }
        assert_eq!(s.len(), 3);
        let replay = s.replay(&Since::Earliest);
        assert_eq!(seqs(&replay.entries), [3, 4, 5]);
        assert_eq!(replay.gap, None);
    }

    #[test]
    fn resume_within_retained_history_has_no_gap() {
        let mut s = stream();
        let now = Instant::now();
        for _ in 0..5 {
            s.append(text("m"), now, false, None, 10);
        }
        let replay = s.replay(&after(&s, 2));
        assert_eq!(seqs(&replay.entries), [3, 4, 5]);
        assert_eq!(replay.gap, None);
        let replay = s.replay(&after(&s, 5));
        assert!(replay.entries.is_empty());
        assert_eq!(replay.gap, None);
        assert!(s.replay(&Since::Latest).entries.is_empty());
    }

    #[test]
    fn resume_across_evicted_history_is_a_gap_before_the_oldest_retained() {
        let mut s = stream();
        let now = Instant::now();
        for _ in 0..6 {
            s.append(text("m"), now, false, None, 3);
        }
        // 1..=3 evicted; resuming after 3 loses nothing, after 2 lost 3.
        assert_eq!(s.replay(&after(&s, 3)).gap, None);
        let replay = s.replay(&after(&s, 2));
        assert_eq!(replay.gap, Some(3));
        assert_eq!(seqs(&replay.entries), [4, 5, 6]);
    }

    #[test]
    fn another_epoch_or_a_future_position_is_a_gap() {
        let mut s = stream();
        let now = Instant::now();
        s.append(text("a"), now, false, None, 10);
        s.append(text("b"), now, false, None, 10);
        let other = Since::After(Position::new("e0".into(), 1));
        let replay = s.replay(&other);
        assert_eq!(replay.gap, Some(0));
        assert_eq!(seqs(&replay.entries), [1, 2]);
        assert_eq!(s.replay(&after(&s, 9)).gap, Some(0));
        assert_eq!(s.replay(&Since::Unknown).gap, Some(0));
        // Nothing retained: the gap is at the stream's end.
        let mut empty = stream();
        empty.append(text("x"), now, false, None, 10);
        empty.evict_through(1);
        let replay = empty.replay(&other);
        assert_eq!(replay.gap, Some(1));
        assert!(replay.entries.is_empty());
    }

    #[test]
    fn pending_entries_are_handed_over_once_in_order() {
        let mut s = stream();
        let now = Instant::now();
        s.append(text("a"), now, true, None, 10);
        s.append(text("live"), now, false, None, 10);
        s.append(text("b"), now, true, None, 10);
        assert_eq!(seqs(&s.take_pending()), [1, 3]);
        assert!(s.take_pending().is_empty());
        // A resumable registration takes what it replays.
        s.append(text("c"), now, true, None, 10);
        s.replay(&after(&s, 3));
        assert!(s.take_pending().is_empty());
    }

    #[test]
    fn collapse_keeps_the_newest_of_each_name_in_stream_order_without_a_gap() {
        let mut s = stream();
        let now = Instant::now();
        let progress = || Some(Box::<str>::from("progress"));
        s.append(text("plain 1"), now, true, None, 5);
        for i in 0..100 {
            let a = s.append(text(&format!("{i}%")), now, true, progress(), 5);
            assert_eq!(a.collapsed.count, usize::from(i > 0));
            assert_eq!(a.evicted.count, 0, "collapsed ticks never push others out");
        }
        s.append(text("plain 2"), now, true, None, 5);
        s.append(text("eta"), now, true, Some("eta".into()), 5);
        s.append(text("eta 2"), now, true, Some("eta".into()), 5);
        let texts: Vec<_> = s
            .take_pending()
            .iter()
            .map(|e| e.payload.as_text().as_str().to_owned())
            .collect();
        assert_eq!(texts, ["plain 1", "99%", "plain 2", "eta 2"]);
        // Resuming from before the collapsed ticks: superseded, not lost.
        let replay = s.replay(&after(&s, 1));
        assert_eq!(replay.gap, None);
        assert_eq!(seqs(&replay.entries), [101, 102, 104]);
    }

    #[test]
    fn ttl_expiry_removes_the_old_and_is_a_gap_for_who_missed_them() {
        let mut s = stream();
        let start = Instant::now();
        s.append(text("old"), start, false, None, 10);
        let later = start + Duration::from_secs(5);
        s.append(text("new"), later, false, None, 10);
        let removed = s.expire(start + Duration::from_secs(1));
        assert_eq!(removed.count, 1);
        assert_eq!(removed.bytes, ENTRY_OVERHEAD + 3);
        assert_eq!(s.replay(&after(&s, 0)).gap, Some(1));
        assert_eq!(s.replay(&after(&s, 1)).gap, None);
    }

    #[test]
    fn costs_add_up() {
        let mut s = stream();
        let now = Instant::now();
        let a = s.append(text("12345"), now, false, Some("n".into()), 10);
        assert_eq!(a.bytes, ENTRY_OVERHEAD + 6);
        let b = s.append(text("1"), now, false, Some("n".into()), 10);
        assert_eq!(b.collapsed.bytes, a.bytes);
        assert_eq!(s.evict_through(u64::MAX).bytes, b.bytes);
        assert!(s.is_empty());
    }
}
