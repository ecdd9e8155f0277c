//! One key's stream: the retained messages of a key, each at a position, and what can be
//! proven about the history before them.
//!
//! Pure data, no locks and no clock of its own: the engine holds it under the key's lock and
//! passes the time in, so every rule here is unit-tested without a server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::{Payload, Position, Since, RETAIN_COPY_MAX};

/// What a retained message costs beyond its text: its 32-byte slot, the slot ring's
/// room to grow and its share of the engine's bookkeeping, as measured
/// (`notify-relay-bench retention`, 100 messages per key: about 150 bytes of RSS per
/// 64-byte message, of which 64 are the text and up to as much again the text ring's
/// spare room). Counted against `--buffer-memory` with the text (twice for a text in
/// the ring: its spare room), so the cap bounds real memory and many tiny messages
/// cannot escape it.
pub const ENTRY_OVERHEAD: usize = 80;

/// What a key's stream costs while it exists, beyond its messages: the map entry, the key,
/// the stream, its epoch and its place in the engine's oldest-first order (measured:
/// 540-633 bytes of RSS per key with one 64-byte message each, the message included;
/// counted: 560 + 80 + 64 = 704).
pub const STREAM_OVERHEAD: usize = 560;

/// A retained message as a replay or a plain registration hands it out.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its place in the stream.
    pub seq: u64,
    /// What recipients get.
    pub payload: Payload,
}

/// One retained message as the stream keeps it: 32 bytes, two to a cache line. A small
/// plain message's text is in the stream's [`TextRing`], so appending to a full stream
/// writes this slot and the ring and reads only the slot it replaces; nothing is
/// allocated or freed, and no reference count on a cache line last touched when the old
/// message was sent is released.
#[derive(Debug)]
struct Slot {
    /// Its place in the stream.
    seq: u64,
    /// When it was appended, in nanoseconds after the stream's `base`.
    at: u64,
    /// Its text's length (in the ring, or in `extra`).
    len: u32,
    /// [`PENDING`] and [`STRING`].
    flags: u8,
    /// What does not fit the ring: a large text, and a collapse name (whose messages
    /// leave from the middle of the stream, so their text is never in the ring).
    extra: Option<Box<Extra>>,
}

/// The message reached no live connection: the next plain registration takes it.
const PENDING: u8 = 1;
/// The message was a JSON string (see [`Payload::is_string`]).
const STRING: u8 = 2;

/// What a message keeps outside the ring.
#[derive(Debug)]
struct Extra {
    /// The text, when it is not in the ring.
    payload: Payload,
    /// A newer message with the same name supersedes it.
    collapse: Option<Box<str>>,
}

impl Slot {
    /// Bytes this message counts against the memory cap: in the ring its text counts
    /// twice, since the ring holds at most twice its live bytes.
    fn cost(&self) -> usize {
        match &self.extra {
            None => ENTRY_OVERHEAD + 2 * self.len as usize,
            Some(extra) => {
                ENTRY_OVERHEAD + self.len as usize + extra.collapse.as_ref().map_or(0, |n| n.len())
            }
        }
    }

    fn in_ring(&self) -> bool {
        self.extra.is_none()
    }

    fn collapse(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.collapse.as_deref())
    }
}

/// The texts of a stream's small plain messages, oldest first, end to end in one ring of
/// bytes. Plain messages leave a stream oldest first (by age, count or the memory cap),
/// so the ring only ever frees at its head; collapsed messages, which leave from the
/// middle, keep their text outside it. The ring holds at most twice its live bytes (or
/// [`TextRing::MIN`]): it grows to one and a half times what it must hold when full,
/// shrinks to that when less than half used, and lets go of everything when empty. The
/// live size must change by a third or more between two resizes, so a stream whose size
/// hovers never copies its ring back and forth.
#[derive(Debug, Default)]
struct TextRing {
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl TextRing {
    /// The smallest ring, and the size below which it is not shrunk.
    const MIN: usize = 64;

    fn push(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        if self.len + text.len() > self.buf.len() {
            self.resize(Self::room_for(self.len + text.len()));
        }
        let cap = self.buf.len();
        let tail = (self.head + self.len) % cap;
        let (first, rest) = text.split_at(text.len().min(cap - tail));
        self.buf[tail..tail + first.len()].copy_from_slice(first);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.len += text.len();
    }

    /// Frees the oldest `n` bytes.
    fn pop(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        self.head = (self.head + n) % self.buf.len();
        self.len -= n;
        if self.len == 0 {
            *self = Self::default();
        } else if self.buf.len() > Self::MIN && self.len < self.buf.len() / 2 {
            self.resize(Self::room_for(self.len));
        }
    }

    /// The size to resize to for `len` live bytes.
    fn room_for(len: usize) -> usize {
        (len + len / 2).max(Self::MIN)
    }

    /// `n` bytes starting `offset` bytes after the head.
    fn copy_out(&self, offset: usize, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let cap = self.buf.len();
        let start = (self.head + offset) % cap;
        let first = n.min(cap - start);
        out.extend_from_slice(&self.buf[start..start + first]);
        out.extend_from_slice(&self.buf[..n - first]);
        out
    }

    /// Moves the live bytes, oldest first, into a buffer of `cap` bytes.
    fn resize(&mut self, cap: usize) {
        let mut buf = self.copy_out(0, self.len);
        buf.resize(cap, 0);
        buf.shrink_to_fit();
        self.buf = buf;
        self.head = 0;
    }
}

/// Entries that left the stream in one operation, for the memory count and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// How many entries.
    pub count: usize,
    /// Their cost (see [`ENTRY_OVERHEAD`]).
    pub bytes: usize,
}

impl Removed {
    fn add(&mut self, slot: &Slot) {
        self.count += 1;
        self.bytes += slot.cost();
    }
}

impl std::ops::Add for Removed {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            count: self.count + other.count,
            bytes: self.bytes + other.bytes,
        }
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

/// The retained messages of one key. See the module docs.
#[derive(Debug)]
pub struct Stream {
    /// This incarnation of the key's history; a new stream (after the old one was dropped,
    /// or after a restart) gets a new epoch, so old cursors cannot be mistaken for new ones.
    /// The engine also tells incarnations apart by it (`Arc::ptr_eq`).
    epoch: Arc<str>,
    /// What the slots' times count from.
    base: Instant,
    /// The last sequence number given out (0: none yet).
    last_seq: u64,
    /// Every seq up to this one has left the stream (0: none yet): continuity is provable
    /// only from there on.
    gone_through: u64,
    /// Retained messages, by increasing `seq` (not contiguous once some were collapsed).
    slots: VecDeque<Slot>,
    /// The texts of the slots in the ring, in the same order.
    ring: TextRing,
    /// Whether the engine's oldest-first order holds this stream (see [`Stream::list`]).
    listed: bool,
}

impl Stream {
    /// An empty stream of a new epoch, made at `base`.
    pub fn new(epoch: Arc<str>, base: Instant) -> Self {
        Self {
            epoch,
            base,
            last_seq: 0,
            gone_through: 0,
            slots: VecDeque::new(),
            ring: TextRing::default(),
            listed: false,
        }
    }

    /// This stream's epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The position of message `seq` of this stream.
    pub fn position(&self, seq: u64) -> Position {
        Position::new(Arc::clone(&self.epoch), seq)
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, stamp: u64) -> Instant {
        self.base + Duration::from_nanos(stamp)
    }

    /// When the oldest retained message was appended.
    pub fn oldest_at(&self) -> Option<Instant> {
        self.slots.front().map(|s| self.instant(s.at))
    }

    /// Marks the stream as held by the engine's oldest-first order, and says whether it
    /// needs to be put there: the first time it retains something, or again after the
    /// order let it go. Keeps one place in the order per stream, whatever its traffic.
    pub fn list(&mut self) -> bool {
        let unlisted = !self.listed && !self.slots.is_empty();
        self.listed |= unlisted;
        unlisted
    }

    /// The engine's order let the stream go (it found it empty).
    pub fn unlist(&mut self) {
        self.listed = false;
    }

    /// How many messages are retained.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends a message, keeping at most `max` entries: the oldest go first (counted as
    /// evicted), and an earlier entry with the same collapse name is dropped (superseded).
    /// A small plain message's text is copied, so the caller can hand `payload` itself to
    /// a recipient.
    pub fn append(
        &mut self,
        payload: &Payload,
        at: Instant,
        collapse: Option<Box<str>>,
        max: usize,
    ) -> Appended {
        self.last_seq += 1;
        let seq = self.last_seq;
        let mut collapsed = Removed::default();
        if let Some(name) = collapse.as_deref() {
            // At most one earlier entry has the name: each append keeps it unique.
            if let Some(i) = self.slots.iter().position(|s| s.collapse() == Some(name)) {
                if let Some(old) = self.slots.remove(i) {
                    collapsed.add(&old);
                }
            }
        }
        // Room first, then the new entry: a full stream's ring of slots then reuses the
        // slot it just freed (and stays at `max` slots).
        let mut evicted = Removed::default();
        while self.slots.len() >= max.max(1) && self.evict_front(&mut evicted) {}
        let len = payload.as_text().len();
        let flags = if payload.is_string() { STRING } else { 0 };
        let extra = if collapse.is_some() || len > RETAIN_COPY_MAX {
            Some(Box::new(Extra {
                payload: payload.clone().retained(),
                collapse,
            }))
        } else {
            self.ring.push(payload.as_text().as_bytes());
            None
        };

        let slot = Slot {
            seq,
            at: self.stamp(at),
            len: u32::try_from(len).unwrap_or(u32::MAX),
            flags,
            extra,
        };
        let bytes = slot.cost();
        self.slots.push_back(slot);
        Appended {
            seq,
            bytes,
            evicted,
            collapsed,
        }
    }

    /// Marks the message just appended, `seq`, as pending: it reached no live connection,
    /// so the next plain registration takes it.
    pub fn set_pending(&mut self, seq: u64) {
        if let Some(slot) = self.slots.back_mut().filter(|s| s.seq == seq) {
            slot.flags |= PENDING;
        }
    }

    /// Removes the entries appended before `deadline` (older than the TTL).
    pub fn expire(&mut self, deadline: Instant) -> Removed {
        let deadline = self.stamp(deadline);
        let mut removed = Removed::default();
        while self.slots.front().is_some_and(|s| s.at < deadline) && self.evict_front(&mut removed)
        {
        }
        removed
    }

    /// Removes the oldest entry (for the memory cap).
    pub fn evict_oldest(&mut self) -> Removed {
        let mut removed = Removed::default();
        self.evict_front(&mut removed);
        removed
    }

    /// Removes the oldest entry, adding it (and what the ring gave back) to `removed`.
    /// `false` if there was none.
    fn evict_front(&mut self, removed: &mut Removed) -> bool {
        let Some(old) = self.slots.pop_front() else {
            return false;
        };
        if old.in_ring() {
            self.ring.pop(old.len as usize);
        }
        removed.add(&old);
        // Every seq up to this one is gone: older ones left before it, in order or
        // collapsed.
        self.gone_through = old.seq;
        true
    }

    /// The retained messages from `from` on (all, with `pending_only` those not handed
    /// to anyone yet), marked as handed over, as entries.
    fn hand_over(&mut self, from: u64, pending_only: bool) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut offset = 0;
        for slot in &mut self.slots {
            let ring_offset = offset;
            if slot.in_ring() {
                offset += slot.len as usize;
            }
            if slot.seq <= from || (pending_only && slot.flags & PENDING == 0) {
                continue;
            }
            slot.flags &= !PENDING;
            let payload = match &slot.extra {
                Some(extra) => extra.payload.clone(),
                None => {
                    let bytes = self.ring.copy_out(ring_offset, slot.len as usize);
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    if slot.flags & STRING != 0 {
                        Payload::text(text)
                    } else {
                        Payload::json(text)
                    }
                }
            };
            entries.push(Entry {
                seq: slot.seq,
                payload,
            });
        }
        entries
    }

    /// Hands over the pending entries (those that reached nobody), oldest first; each is
    /// handed over once.
    pub fn take_pending(&mut self) -> Vec<Entry> {
        self.hand_over(0, true)
    }

    /// What a registration resuming from `since` is handed. Replayed entries are no longer
    /// pending: they reached a connection.
    pub fn replay(&mut self, since: &Since) -> Replay {
        let (from, gap) = match since {
            Since::Latest => (self.last_seq, false),
            Since::Earliest => (0, false),
            Since::After(position) if position.epoch == self.epoch => {
                let seq = position.seq;
                if seq > self.last_seq || seq < self.gone_through {
                    (0, true)
                } else {
                    (seq, false)
                }
            }
            Since::After(_) | Since::Unknown => (0, true),
        };
        let entries = self.hand_over(from, false);
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

    /// Appends as the engine does: the message, then whether it reached anyone.
    fn add(
        s: &mut Stream,
        payload: Payload,
        at: Instant,
        pending: bool,
        collapse: Option<Box<str>>,
        max: usize,
    ) -> Appended {
        let appended = s.append(&payload, at, collapse, max);
        if pending {
            s.set_pending(appended.seq);
        }
        appended
    }

    /// Removes every entry up to `seq`, oldest first, as the memory cap would one by one.
    fn evict_through(s: &mut Stream, seq: u64) -> Removed {
        let mut removed = Removed::default();
        while s.slots.front().is_some_and(|slot| slot.seq <= seq) {
            removed = removed + s.evict_oldest();
        }
        removed
    }

    fn stream() -> Stream {
        Stream::new("e1".into(), Instant::now())
    }

    fn after(stream: &Stream, seq: u64) -> Since {
        Since::After(stream.position(seq))
    }

    #[test]
    fn positions_count_from_one_and_max_evicts_oldest() {
        let mut s = stream();
        let now = Instant::now();
        for i in 1..=5 {
            let a = add(&mut s, text("m"), now, false, None, 3);
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
            add(&mut s, text("m"), now, false, None, 10);
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
            add(&mut s, text("m"), now, false, None, 3);
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
        add(&mut s, text("a"), now, false, None, 10);
        add(&mut s, text("b"), now, false, None, 10);
        let other = Since::After(Position::new("e0".into(), 1));
        let replay = s.replay(&other);
        assert_eq!(replay.gap, Some(0));
        assert_eq!(seqs(&replay.entries), [1, 2]);
        assert_eq!(s.replay(&after(&s, 9)).gap, Some(0));
        assert_eq!(s.replay(&Since::Unknown).gap, Some(0));
        // Nothing retained: the gap is at the stream's end.
        let mut empty = stream();
        add(&mut empty, text("x"), now, false, None, 10);
        evict_through(&mut empty, 1);
        let replay = empty.replay(&other);
        assert_eq!(replay.gap, Some(1));
        assert!(replay.entries.is_empty());
    }

    #[test]
    fn pending_entries_are_handed_over_once_in_order() {
        let mut s = stream();
        let now = Instant::now();
        add(&mut s, text("a"), now, true, None, 10);
        add(&mut s, text("live"), now, false, None, 10);
        add(&mut s, text("b"), now, true, None, 10);
        assert_eq!(seqs(&s.take_pending()), [1, 3]);
        assert!(s.take_pending().is_empty());
        // A resumable registration takes what it replays.
        add(&mut s, text("c"), now, true, None, 10);
        s.replay(&after(&s, 3));
        assert!(s.take_pending().is_empty());
    }

    #[test]
    fn collapse_keeps_the_newest_of_each_name_in_stream_order_without_a_gap() {
        let mut s = stream();
        let now = Instant::now();
        let progress = || Some(Box::<str>::from("progress"));
        add(&mut s, text("plain 1"), now, true, None, 5);
        for i in 0..100 {
            let a = add(&mut s, text(&format!("{i}%")), now, true, progress(), 5);
            assert_eq!(a.collapsed.count, usize::from(i > 0));
            assert_eq!(a.evicted.count, 0, "collapsed ticks never push others out");
        }
        add(&mut s, text("plain 2"), now, true, None, 5);
        add(&mut s, text("eta"), now, true, Some("eta".into()), 5);
        add(&mut s, text("eta 2"), now, true, Some("eta".into()), 5);
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
        add(&mut s, text("old"), start, false, None, 10);
        let later = start + Duration::from_secs(5);
        add(&mut s, text("new"), later, false, None, 10);
        let removed = s.expire(start + Duration::from_secs(1));
        assert_eq!(removed.count, 1);
        assert_eq!(removed.bytes, ENTRY_OVERHEAD + 2 * 3);
        assert_eq!(s.replay(&after(&s, 0)).gap, Some(1));
        assert_eq!(s.replay(&after(&s, 1)).gap, None);
    }

    #[test]
    fn costs_add_up() {
        let mut s = stream();
        let now = Instant::now();
        let a = add(&mut s, text("12345"), now, false, Some("n".into()), 10);
        assert_eq!(a.bytes, ENTRY_OVERHEAD + 6);
        let b = add(&mut s, text("1"), now, false, Some("n".into()), 10);
        assert_eq!(b.collapsed.bytes, a.bytes);
        assert_eq!(evict_through(&mut s, u64::MAX).bytes, b.bytes);
        assert!(s.is_empty());
    }

    #[test]
    fn the_text_ring_wraps_grows_and_shrinks_without_losing_a_byte() {
        let mut ring = TextRing::default();
        let mut model: VecDeque<u8> = VecDeque::new();
        let mut x: u32 = 7;
        for round in 0..5_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // Grow for a while, then drain, then grow again.
            let push = (round / 1000) % 2 == 0 || x % 3 == 0;
            if push {
                let n = (x >> 8) as usize % 700;
                let text: Vec<u8> = (0..n).map(|i| (i as u32 + round) as u8).collect();
                ring.push(&text);
                model.extend(&text);
            } else {
                let n = ((x >> 8) as usize % 900).min(model.len());
                ring.pop(n);
                model.drain(..n);
            }
            assert_eq!(ring.len, model.len());
            assert!(ring.buf.len() <= (2 * model.len()).max(TextRing::MIN));
        }
        assert_eq!(
            ring.copy_out(0, ring.len),
            model.iter().copied().collect::<Vec<_>>()
        );
        ring.pop(ring.len);
        assert_eq!(ring.buf.capacity(), 0, "an empty ring holds nothing");
    }

    #[test]
    fn replays_give_back_every_retained_text_in_and_out_of_the_ring() {
        let mut s = stream();
        let now = Instant::now();
        let mut model: VecDeque<(u64, String, Option<String>)> = VecDeque::new();
        let mut counted = 0usize;
        let mut x: u32 = 99;
        for i in 0..3_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let size = match x % 10 {
                0 => RETAIN_COPY_MAX + 1 + (x >> 8) as usize % 3000,
                1 => 0,
                _ => (x >> 8) as usize % 200,
            };
            let text = format!("{i}:{}", "é".repeat(size / 2));
            let name = (x % 7 == 0).then(|| format!("n{}", (x >> 4) % 3));
            let a = add(
                &mut s,
                Payload::text(text.clone()),
                now,
                false,
                name.clone().map(Into::into),
                50,
            );
            counted += a.bytes;
            counted -= a.evicted.bytes + a.collapsed.bytes;
            if i % 500 == 499 {
                // Now and then the TTL takes a few, as it would.
                let removed = evict_through(&mut s, a.seq.saturating_sub(40));
                counted -= removed.bytes;
                model.retain(|(q, _, _)| *q > a.seq.saturating_sub(40));
            }
            if let Some(name) = &name {
                model.retain(|(_, _, n)| n.as_ref() != Some(name));
            }
            model.push_back((a.seq, text, name));
            while model.len() > 50 {
                model.pop_front();
            }
            if i % 97 == 0 {
                let replay = s.replay(&Since::Earliest);
                let got: Vec<_> = replay
                    .entries
                    .iter()
                    .map(|e| (e.seq, e.payload.as_text().as_str().to_owned()))
                    .collect();
                let want: Vec<_> = model.iter().map(|(q, t, _)| (*q, t.clone())).collect();
                assert_eq!(got, want, "after {i}");
            }
        }
        let in_ring: usize = s
            .slots
            .iter()
            .filter(|slot| slot.in_ring())
            .map(|slot| slot.len as usize)
            .sum();
        assert_eq!(s.ring.len, in_ring);
        // What was counted is every slot's cost, and covers the ring.
        let held: usize = s.slots.iter().map(Slot::cost).sum();
        assert_eq!(counted, held);
        let in_ring_counted: usize = s
            .slots
            .iter()
            .filter(|slot| slot.in_ring())
            .map(|slot| 2 * slot.len as usize)
            .sum();
        assert!(s.ring.buf.len() <= in_ring_counted.max(TextRing::MIN));
        assert_eq!(counted - evict_through(&mut s, u64::MAX).bytes, 0);
        assert_eq!(s.ring.buf.len(), 0);
    }

    #[test]
    fn json_and_string_payloads_keep_their_kind_through_the_ring() {
        let mut s = stream();
        let now = Instant::now();
        add(&mut s, Payload::json(r#"{"a":1}"#), now, false, None, 10);
        add(&mut s, text("plain"), now, false, None, 10);
        let replay = s.replay(&Since::Earliest);
        assert_eq!(replay.entries[0].payload, Payload::json(r#"{"a":1}"#));
        assert_eq!(replay.entries[1].payload, text("plain"));
    }
}
