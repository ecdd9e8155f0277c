//! The bounded queue of frames waiting to be written to one connection.
//!
//! Producers push from any task; the connection task drains it and writes the whole
//! batch with one flush. An idle outbox owns no heap memory (an empty `VecDeque` does
//! not allocate), which matters at tens of thousands of idle connections. When a
//! recipient stops reading, the queue fills; the push that finds it full marks the
//! outbox overflowed and wakes the connection task, which closes the connection (1008).
//!
//! Presence pushes (watches) are coalesced here: while a push for a key is still queued,
//! a newer state of that key with the same online/offline value replaces it in place, so
//! a watcher holds at most one queued frame per key and flip, however fast the key
//! changes, and still sees every online/offline flip and the latest count.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::Config;

/// How much one outbox may hold before its connection counts as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most frames queued at once.
    pub max_frames: usize,
    /// Most payload bytes queued at once.
    pub max_bytes: usize,
}

impl OutboxLimits {
    /// The limits `--max-queued-frames` and `--max-queued-bytes` set (at least one of
    /// each, so a connection can always receive).
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_frames: config.max_queued_frames.max(1),
            max_bytes: config.max_queued_bytes.max(1),
        }
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over its limits: the recipient is not reading fast enough.
    Overflowed,
    /// The connection is closing and takes no more frames.
    Closed,
}

/// What became of a presence push that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued as a frame of its own.
    Queued,
    /// It replaced a queued push of the same key with the same online value.
    Coalesced,
}

/// A presence push still in the queue: where it is and which online value it says.
#[derive(Debug, Clone, Copy)]
struct QueuedPresence {
    /// Its index in `Queue::frames`.
    index: usize,
    /// Whether it says online.
    online: bool,
}

/// The outcome of [`Outbox::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Frames to write, oldest first (possibly none after a spurious wake-up).
    Frames(VecDeque<Utf8Bytes>),
    /// The queue overflowed: close the connection as a slow consumer.
    Overflowed,
}

#[derive(Debug, Default)]
struct Queue {
    /// Frames not yet handed to the socket, oldest first.
    frames: VecDeque<Utf8Bytes>,
    /// Payload bytes in `frames`, kept so the byte limit is O(1) to check.
    bytes: usize,
    /// Frames in `frames` that were owed (replies, replays): they do not count against
    /// the limits, which are about live traffic a reader does not keep up with. A `u32`
    /// keeps the `Peer` in a smaller allocation class; billions of queued replies would
    /// exhaust memory long before.
    owed: u32,
    /// Set by the push that found the queue full; the connection is then closed.
    overflowed: bool,
    /// Set when the connection is closing so late producers stop counting it.
    closed: bool,
    /// The last queued presence push of each watched key, while it is queued; made on a
    /// connection's first presence push (only watchers have one). Boxed: a map inline
    /// would add its 48 bytes to every connection's outbox.
    #[allow(clippy::box_collection)]
    presence: Option<Box<HashMap<Arc<str>, QueuedPresence>>>,
}

/// A connection's outgoing queue. See the module docs.
#[derive(Debug)]
pub struct Outbox {
    /// The frames and their accounting; held only for O(1) pushes and one swap per batch.
    queue: Mutex<Queue>,
    /// Wakes the connection task when frames arrive or the queue overflows.
    ready: Signal,
    /// Wakes a write stalled on a client that stopped reading, when the queue overflows.
    /// One task waits at a time; the flag is `Queue::overflowed`.
    overflow: AtomicWaker,
    /// The limits this outbox enforces, as `u32`s (saturated): two `usize`s would push
    /// every `Peer` into the next allocation class.
    max_frames: u32,
    max_bytes: u32,
}

/// A wake-up for the one task that drains an outbox: a flag and that task's waker.
///
/// Not a `Notify`: waiting on one takes an 80-byte `Notified` in the waiting future,
/// which would be part of every idle connection's task, and each wake takes its lock.
/// Here the waiting future is a reference, and a wake is an atomic store and, when the
/// task is parked, one wake of its waker. Like `Notify::notify_one`, a signal given while
/// nobody waits is kept for the next wait.
#[derive(Debug, Default)]
struct Signal {
    /// Set by a signal, cleared by the wait that sees it.
    set: AtomicBool,
    /// The waiting task.
    waker: AtomicWaker,
}

impl Signal {
    fn notify(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A signal between the check and the registration would otherwise be missed.
        if self.set.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Outbox {
    /// An empty outbox with `limits`.
    pub fn new(limits: OutboxLimits) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Signal::default(),
            overflow: AtomicWaker::new(),
            max_frames: u32::try_from(limits.max_frames).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(limits.max_bytes).unwrap_or(u32::MAX),
        }
    }

    /// Queues `frame` for writing, or says why it was refused.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        let mut queue = self.lock();
        let pushed = self.push_live(&mut queue, frame);
        drop(queue);
        self.wake(pushed)
    }

    /// Appends a live frame under the lock; says whether it is the queue's first (the
    /// writer must be woken) or why it was refused.
    fn push_live(&self, queue: &mut Queue, frame: Utf8Bytes) -> Result<bool, PushError> {
        if queue.closed {
            return Err(PushError::Closed);
        }
        if queue.overflowed {
            return Err(PushError::Overflowed);
        }
        let bytes = queue.bytes + frame.len();
        let live_frames = queue.frames.len() - queue.owed as usize;
        if live_frames >= self.max_frames as usize || bytes > self.max_bytes as usize {
            queue.overflowed = true;
            return Err(PushError::Overflowed);
        }
        queue.frames.push_back(frame);
        queue.bytes = bytes;
        Ok(queue.frames.len() == 1)
    }

    /// Wakes whoever must hear of a push, after the lock was released.
    fn wake(&self, pushed: Result<bool, PushError>) -> Result<(), PushError> {
        match pushed {
            // Only the push into an empty queue needs to wake the writer: it drains
            // everything queued at once, so later pushes ride along in the same batch.
            Ok(first) => {
                if first {
                    self.ready.notify();
                }
                Ok(())
            }
            Err(PushError::Overflowed) => {
                self.ready.notify();
                self.overflow.wake();
                Err(PushError::Overflowed)
            }
            Err(PushError::Closed) => Err(PushError::Closed),
        }
    }

    /// Queues a frame the connection is owed whatever its queue holds: a reply, or a
    /// replayed message (already retained, so its text costs nothing more). Owed frames
    /// do not count against the limits: a replay of a full stream must not make the
    /// next live message look like a slow consumer.
    pub fn push_owed(&self, frame: Utf8Bytes) {
        let mut queue = self.lock();
        if queue.closed || queue.overflowed {
            return;
        }
        queue.owed = queue.owed.saturating_add(1);
        queue.frames.push_back(frame);
        let first = queue.frames.len() == 1;
        drop(queue);
        if first {
            self.ready.notify();
        }
    }

    /// Queues a presence push of `key` (its frame, and whether it says online), or
    /// coalesces it with the key's push still queued when that says the same online
    /// value. A new frame counts against the limits like live traffic.
    pub fn push_presence(
        &self,
        key: &Arc<str>,
        frame: Utf8Bytes,
        online: bool,
    ) -> Result<Pushed, PushError> {
        let mut queue = self.lock();
        if !queue.closed && !queue.overflowed {
            let queued = queue.presence.as_ref().and_then(|m| m.get(key).copied());
            if let Some(queued) = queued.filter(|q| q.online == online) {
                if let Some(slot) = queue.frames.get_mut(queued.index) {
                    let old = std::mem::replace(slot, frame);
                    let new_len = slot.len();
                    queue.bytes = queue.bytes - old.len() + new_len;
                    return Ok(Pushed::Coalesced);
                }
            }
        }
        let index = queue.frames.len();
        let pushed = self.push_live(&mut queue, frame);
        if pushed.is_ok() {
            queue
                .presence
                .get_or_insert_with(Default::default)
                .insert(Arc::clone(key), QueuedPresence { index, online });
        }
        drop(queue);
        self.wake(pushed).map(|()| Pushed::Queued)
    }

    /// Wakes the task that waits in [`Outbox::ready`] without queuing anything: the
    /// keep-alive timer has something for it.
    pub fn wake_reader(&self) {
        self.ready.notify();
    }

    /// Waits until frames were queued or the queue overflowed. Cancel-safe. One task
    /// waits at a time (the connection's, or an event stream's).
    pub fn ready(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(|cx| self.poll_ready(cx))
    }

    /// [`Outbox::ready`] as a poll, for a task that waits on it beside other things.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.ready.poll(cx)
    }

    /// Waits for a push to find the queue full (returns at once if it already did).
    /// Cancel-safe. One task waits at a time.
    pub fn overflow(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(|cx| {
            self.overflow.register(cx.waker());
            if self.is_overflowed() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Takes everything queued, in order.
    pub fn take(&self) -> Drained {
        let mut queue = self.lock();
        if queue.overflowed {
            return Drained::Overflowed;
        }
        queue.bytes = 0;
        queue.owed = 0;
        if let Some(presence) = queue.presence.as_mut() {
            presence.clear();
        }
        Drained::Frames(std::mem::take(&mut queue.frames))
    }

    /// Whether a push found the queue full.
    pub fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Marks the queue overflowed, as a push that did not fit would: the connection is
    /// closed as a slow consumer. For a subscriber that fell behind before its messages
    /// could even be queued (a cluster engine buffering for a registration in flight).
    pub fn mark_overflowed(&self) {
        let mut queue = self.lock();
        if queue.closed || queue.overflowed {
            return;
        }
        queue.overflowed = true;
        drop(queue);
        self.ready.notify();
        self.overflow.wake();
    }

    /// Refuses all further pushes and frees what is queued.
    pub fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.bytes = 0;
        queue.owed = 0;
        queue.frames = VecDeque::new();
        queue.presence = None;
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated in a
        // way that matters more than losing the connection, so poisoning is ignored.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_frames,
            max_bytes,
        })
    }

    fn frames(drained: Drained) -> Vec<String> {
        match drained {
            Drained::Frames(frames) => frames.iter().map(|f| f.as_str().to_owned()).collect(),
            Drained::Overflowed => panic!("overflowed"),
        }
    }

    #[test]
    fn keeps_order_and_drains_all() {
        let o = outbox(10, 1000);
        for i in 0..5 {
            o.push(i.to_string().into()).expect("push");
        }
        assert_eq!(frames(o.take()), ["0", "1", "2", "3", "4"]);
        assert!(frames(o.take()).is_empty());
    }

    #[test]
    fn frame_limit_overflows_and_stays_overflowed() {
        let o = outbox(2, 1000);
        o.push("a".into()).expect("push");
        o.push("b".into()).expect("push");
        assert_eq!(o.push("c".into()), Err(PushError::Overflowed));
        assert!(o.is_overflowed());
        assert_eq!(o.take(), Drained::Overflowed);
        assert_eq!(o.push("d".into()), Err(PushError::Overflowed));
    }

    #[test]
    fn byte_limit_counts_queued_bytes_only() {
        let o = outbox(100, 10);
        o.push("12345".into()).expect("push");
        o.push("12345".into()).expect("push");
        assert_eq!(frames(o.take()).len(), 2);
        o.push("1234567890".into()).expect("push after drain");
        assert_eq!(o.push("1".into()), Err(PushError::Overflowed));
    }

    #[test]
    fn owed_frames_do_not_count_against_the_limits() {
        let o = outbox(1, 4);
        for _ in 0..10 {
            o.push_owed("replayed".into());
        }
        o.push("live".into()).expect("room for live traffic");
        assert_eq!(o.push("more".into()), Err(PushError::Overflowed));
        let o = outbox(10, 1000);
        o.push_owed("a".into());
        o.push("b".into()).expect("push");
        assert_eq!(frames(o.take()), ["a", "b"]);
    }

    #[test]
    fn closed_refuses_pushes() {
        let o = outbox(10, 1000);
        o.push("a".into()).expect("push");
        o.close();
        assert_eq!(o.push("b".into()), Err(PushError::Closed));
        assert!(frames(o.take()).is_empty());
    }

    #[test]
    fn presence_pushes_coalesce_per_key_but_keep_every_flip() {
        let o = outbox(5, 1000);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        assert_eq!(o.push_presence(&a, "a1".into(), true), Ok(Pushed::Queued));
        o.push("msg".into()).expect("push");
        for n in 2..1000 {
            let frame = format!("a{n}");
            assert_eq!(
                o.push_presence(&a, frame.into(), true),
                Ok(Pushed::Coalesced)
            );
        }
        assert_eq!(o.push_presence(&b, "b1".into(), true), Ok(Pushed::Queued));
        // A flip is a frame of its own, and so is the flip back.
        assert_eq!(o.push_presence(&a, "a0".into(), false), Ok(Pushed::Queued));
        assert_eq!(o.push_presence(&a, "a1'".into(), true), Ok(Pushed::Queued));
        assert_eq!(
            o.push_presence(&a, "a2'".into(), true),
            Ok(Pushed::Coalesced)
        );
        assert_eq!(
            o.push_presence(&c, "c1".into(), true),
            Err(PushError::Overflowed),
            "past the limits a watcher is a slow consumer like any other"
        );
        let o = outbox(4, 1000);
        o.push_presence(&a, "a1".into(), true).expect("push");
        o.push_presence(&a, "a0".into(), false).expect("push");
        o.push_presence(&a, "a0'".into(), false).expect("push");
        assert_eq!(frames(o.take()), ["a1", "a0'"]);
        // After a drain nothing is coalesced with what was written.
        assert_eq!(
            o.push_presence(&a, "a0''".into(), false),
            Ok(Pushed::Queued)
        );
        assert_eq!(frames(o.take()), ["a0''"]);
    }

    #[tokio::test]
    async fn a_wake_given_while_nobody_waits_is_kept_for_the_next_wait() {
        let o = outbox(10, 1000);
        o.push("x".into()).expect("push");
        tokio::time::timeout(std::time::Duration::from_secs(5), o.ready())
            .await
            .expect("the push's wake was kept");
        assert_eq!(frames(o.take()), ["x"]);
    }

    #[tokio::test]
    async fn push_into_empty_queue_wakes_the_writer() {
        let o = std::sync::Arc::new(outbox(10, 1000));
        let writer = {
            let o = o.clone();
            tokio::spawn(async move {
                o.ready().await;
                frames(o.take())
            })
        };
        o.push("x".into()).expect("push");
        assert_eq!(writer.await.expect("join"), ["x"]);
    }
}
