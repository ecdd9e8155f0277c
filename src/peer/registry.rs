//! Subscribers: the part of a connection other tasks reach ([`Peer`]), the set of them under
//! one key ([`Peers`]), and the frame each kind of subscriber gets for a message
//! ([`Framed`]).
//!
//! The reverse map (connection to key) is the key each connection task keeps for itself,
//! and each connection also knows its slot in that key's list: a connection holds at most
//! one key, so releasing it on close is one lookup and one `swap_remove`, O(1) however many
//! connections share the key, and it only ever removes that connection's own entry, never
//! another connection's registration under the same key.
//!
//! `swap_remove` moves the last connection into the freed slot, so the order in which a
//! key's connections are handed a message is not their registration order. Nothing
//! depends on that order: a message is queued for all of them in one pass, and each
//! connection still receives its messages in the order they were routed.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::message::{Payload, Position};
use crate::peer::beat::Beat;
use crate::peer::outbox::{Outbox, OutboxLimits, PushError};
use crate::protocol;

/// A process-unique connection number, for logs and for removing exactly one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(u64);

impl PeerId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PeerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How a subscriber wants its messages written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Framing {
    /// Part 1: the message text itself.
    Plain = 0,
    /// A resumable registration: `{"cursor": ..., "message": ...}`.
    Envelope = 1,
    /// Server-Sent Events: `id:` and `data:` lines.
    Events = 2,
}

impl Framing {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Framing::Envelope,
            2 => Framing::Events,
            _ => Framing::Plain,
        }
    }
}

/// The part of a connection that other tasks can reach: its id, its outbox and how it
/// wants messages framed.
#[derive(Debug)]
pub struct Peer {
    /// Identifies this connection's entry under a key.
    pub id: PeerId,
    /// Frames waiting to be written to this connection.
    pub outbox: Outbox,
    /// A [`Framing`]; set when the connection subscribes, under the key's lock.
    framing: AtomicU8,
    /// Where this connection is in its key's list while subscribed. Read and written
    /// only under that key's lock, which orders the accesses. A `u32` (a key has fewer
    /// subscribers than the relay has file descriptors) keeps the `Peer` in a smaller
    /// allocation class.
    slot: AtomicU32,
    /// Its keep-alive state, read and written by the relay's keep-alive timer and the
    /// connection task (one byte: it fits beside `framing` in the `Peer`'s padding).
    pub beat: Beat,
}

impl Peer {
    /// A new peer with a fresh id, an empty outbox and plain framing.
    pub fn new(limits: OutboxLimits) -> Arc<Self> {
        Arc::new(Self {
            id: PeerId::next(),
            outbox: Outbox::new(limits),
            framing: AtomicU8::new(Framing::Plain as u8),
            slot: AtomicU32::new(0),
            beat: Beat::default(),
        })
    }

    /// How this subscriber wants its messages written.
    pub fn framing(&self) -> Framing {
        Framing::from_u8(self.framing.load(Ordering::Relaxed))
    }

    /// Sets how this subscriber wants its messages written.
    pub fn set_framing(&self, framing: Framing) {
        self.framing.store(framing as u8, Ordering::Relaxed);
    }

    /// A message framed for this subscriber.
    pub fn frame(&self, payload: &Payload, position: Option<&Position>) -> Utf8Bytes {
        Framed::new(payload, position).frame(self.framing())
    }

    /// The signal that history before `position` is lost, framed for this subscriber.
    pub fn gap_frame(&self, position: &Position) -> Utf8Bytes {
        match self.framing() {
            Framing::Events => protocol::encode_gap_event(position).into(),
            Framing::Plain | Framing::Envelope => protocol::encode_gap(position).into(),
        }
    }
}

/// One message, framed for each kind of subscriber at most once per delivery.
#[derive(Debug)]
pub struct Framed<'a> {
    /// The message: borrowed, or owned so that its last recipient can take it.
    payload: Cow<'a, Payload>,
    /// Its position; `None` when it has none (ephemeral, or streams off).
    position: Option<&'a Position>,
    /// The envelope, once a resumable subscriber needed it.
    envelope: Option<Utf8Bytes>,
    /// The SSE event, once an SSE subscriber needed it.
    event: Option<Utf8Bytes>,
}

impl<'a> Framed<'a> {
    /// `payload` at `position`, not framed yet.
    pub fn new(payload: &'a Payload, position: Option<&'a Position>) -> Self {
        Self {
            payload: Cow::Borrowed(payload),
            position,
            envelope: None,
            event: None,
        }
    }

    /// `payload`, handed over: the last plain recipient gets its text itself.
    pub fn owned(payload: Payload, position: Option<&'a Position>) -> Self {
        Self {
            payload: Cow::Owned(payload),
            position,
            envelope: None,
            event: None,
        }
    }

    /// The frame the last subscriber with `framing` gets: an owned message's own text
    /// when plain. A message to one plain recipient (a page, a device: the common case)
    /// then goes to it without its text ever being shared, so nothing counts references
    /// to it (a count whose cache line the sender's and the recipient's workers would pass
    /// between them) and no count is allocated.
    pub fn last_frame(&mut self, framing: Framing) -> Utf8Bytes {
        match (framing, &mut self.payload) {
            (Framing::Plain, Cow::Owned(payload)) => payload.take_text(),
            _ => self.frame(framing),
        }
    }

    /// The frame a subscriber with `framing` gets.
    pub fn frame(&mut self, framing: Framing) -> Utf8Bytes {
        let (payload, position) = (&*self.payload, self.position);
        match framing {
            Framing::Plain => payload.as_text().clone(),
            Framing::Envelope => self
                .envelope
                .get_or_insert_with(|| protocol::encode_envelope(payload, position).into())
                .clone(),
            Framing::Events => self
                .event
                .get_or_insert_with(|| protocol::encode_event(payload, position).into())
                .clone(),
        }
    }
}

/// What happened to one delivery.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Connections the frame was queued for.
    pub delivered: usize,
    /// Connections whose queue was full: they are being closed as slow consumers.
    pub overflowed: usize,
}

impl Delivery {
    /// Counts one push.
    fn count(&mut self, pushed: Result<(), PushError>) {
        match pushed {
            Ok(()) => self.delivered += 1,
            Err(PushError::Overflowed) => self.overflowed += 1,
            // Closing connections are no longer live: they are not counted.
            Err(PushError::Closed) => {}
        }
    }
}

/// A list index as stored in `Peer::slot`. An index past `u32::MAX` (never reached: each
/// subscriber is a connection) is stored as `u32::MAX`, which `Peers::remove` then does
/// not find, rather than wrapping onto another subscriber's slot.
fn slot_of(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// Below this many slots a key's list is not worth shrinking.
const SHRINK_FROM: usize = 16;

/// The subscribers of one key. See the module docs.
///
/// Most keys have one subscriber (a page, a device), so one is held inline: a key with
/// one subscriber allocates no list (a `Vec`'s smallest allocation of `Arc`s is 32 bytes
/// of every idle registered connection). Two or more are a boxed `Vec`, so both forms
/// take 16 bytes of the key's entry in the engine's map, and delivery walks a slice
/// either way.
#[derive(Debug, Default)]
pub struct Peers {
    /// Live subscribers; each knows its index here (`Peer::slot`).
    peers: List,
}

/// A key's subscribers, inline or in a list.
#[derive(Debug)]
enum List {
    /// No subscriber, or one, inline (its slot is 0).
    One(Option<Arc<Peer>>),
    /// Two or more. Back to `One` when one is left. Boxed on purpose: one allocation more
    /// for a shared key is what keeps every key's entry a word smaller.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Arc<Peer>>>),
}

impl Default for List {
    fn default() -> Self {
        List::One(None)
    }
}

/// The room a key's list is made with when its second subscriber arrives (a `Vec` of
/// `Arc`s would round two up to four anyway).
const FIRST_LIST: usize = 4;

impl Peers {
    /// The subscribers, in their slots' order.
    fn as_slice(&self) -> &[Arc<Peer>] {
        match &self.peers {
            List::One(peer) => peer.as_slice(),
            List::Many(peers) => peers,
        }
    }

    /// Adds `peer` beside the subscribers already there. A connection subscribes to at
    /// most one key at a time.
    pub fn add(&mut self, peer: &Arc<Peer>) {
        peer.slot.store(slot_of(self.len()), Ordering::Relaxed);
        let peer = Arc::clone(peer);
        match &mut self.peers {
            List::One(slot @ None) => *slot = Some(peer),
            List::One(Some(first)) => {
                let mut peers = Vec::with_capacity(FIRST_LIST);
                peers.push(Arc::clone(first));
                peers.push(peer);
                self.peers = List::Many(Box::new(peers));
            }
            List::Many(peers) => peers.push(peer),
        }
    }

    /// Removes `peer`'s own entry in O(1); the others stay. Does nothing if `peer` is not
    /// here.
    pub fn remove(&mut self, peer: &Peer) {
        let slot = peer.slot.load(Ordering::Relaxed) as usize;
        if !self.as_slice().get(slot).is_some_and(|p| p.id == peer.id) {
            return;
        }
        let peers = match &mut self.peers {
            // Slot 0, checked above.
            List::One(only) => {
                *only = None;
                return;
            }
            List::Many(peers) => peers,
        };
        peers.swap_remove(slot);
        if let Some(moved) = peers.get(slot) {
            moved.slot.store(slot_of(slot), Ordering::Relaxed);
        }
        if peers.len() == 1 {
            // The one left is in slot 0 (it was moved there, or already was): inline again,
            // and the list is freed.
            self.peers = List::One(peers.pop());
            return;
        }
        // A key that once had many subscribers gives the room back as they leave;
        // halving at a quarter keeps this amortised O(1).
        if peers.capacity() > SHRINK_FROM && peers.len() < peers.capacity() / 4 {
            let keep = peers.len() * 2;
            peers.shrink_to(keep);
        }
    }

    /// How many subscribers.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Queues `message` for every subscriber, framed as each wants it; the last one
    /// takes an owned message's text (see [`Framed::last_frame`]).
    pub fn deliver(&self, message: &mut Framed<'_>) -> Delivery {
        let mut outcome = Delivery::default();
        let Some((last, others)) = self.as_slice().split_last() else {
            return outcome;
        };
        for peer in others {
            outcome.count(peer.outbox.push(message.frame(peer.framing())));
        }
        outcome.count(last.outbox.push(message.last_frame(last.framing())));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::outbox::Drained;

    #[test]
    fn a_peer_with_its_arc_fits_the_160_byte_allocation_class() {
        // Every connection holds one: past 160 bytes (with the Arc's two counters)
        // jemalloc rounds it up to 192, 32 bytes more per idle connection.
        assert!(
            std::mem::size_of::<Peer>() + 16 <= 160,
            "Peer is {} bytes",
            std::mem::size_of::<Peer>()
        );
    }

    const LIMITS: OutboxLimits = OutboxLimits {
        max_frames: 4,
        max_bytes: 1024,
    };

    fn queued(peer: &Peer) -> Vec<String> {
        match peer.outbox.take() {
            Drained::Frames(frames) => frames.iter().map(|f| f.as_str().to_owned()).collect(),
            Drained::Overflowed => vec!["<overflowed>".into()],
        }
    }

    fn deliver(peers: &Peers, text: &str) -> Delivery {
        peers.deliver(&mut Framed::new(&Payload::text(text), None))
    }

    #[test]
    fn delivers_to_every_subscriber_and_removes_only_one() {
        let mut peers = Peers::default();
        let (a, b) = (Peer::new(LIMITS), Peer::new(LIMITS));
        peers.add(&a);
        peers.add(&b);
        assert_eq!(deliver(&peers, "hi").delivered, 2);
        assert_eq!(
            (queued(&a), queued(&b)),
            (vec!["hi".into()], vec!["hi".into()])
        );
        peers.remove(&a);
        assert_eq!(peers.len(), 1);
        assert_eq!(deliver(&peers, "x").delivered, 1);
        assert!(queued(&a).is_empty());
        peers.remove(&a);
        peers.remove(&b);
        assert!(peers.is_empty());
    }

    #[test]
    fn any_subscriber_leaves_and_only_it() {
        let mut key = Peers::default();
        let peers: Vec<_> = (0..100).map(|_| Peer::new(LIMITS)).collect();
        for peer in &peers {
            key.add(peer);
        }
        let mut other = Peers::default();
        let elsewhere = Peer::new(LIMITS);
        other.add(&elsewhere);
        // Leave in an order that moves entries around: every third, then the rest from
        // the end, checking after each step who is still reached.
        let mut order: Vec<usize> = (0..100).step_by(3).collect();
        order.extend((0..100).rev().filter(|i| i % 3 != 0));
        let mut left = std::collections::HashSet::new();
        for i in order {
            key.remove(&peers[i]);
            // A stale call (already gone) or a wrong key changes nothing.
            key.remove(&peers[i]);
            other.remove(&peers[i]);
            left.insert(i);
            assert_eq!(deliver(&key, "x").delivered, 100 - left.len());
            for (j, peer) in peers.iter().enumerate() {
                let expected = usize::from(!left.contains(&j));
                assert_eq!(
                    queued(peer).len(),
                    expected,
                    "peer {j} after {} left",
                    left.len()
                );
            }
        }
        assert!(key.is_empty());
        assert_eq!(deliver(&other, "x").delivered, 1);
    }

    #[test]
    fn a_key_gives_back_its_room_as_subscribers_leave() {
        let mut key = Peers::default();
        let peers: Vec<_> = (0..1000).map(|_| Peer::new(LIMITS)).collect();
        for peer in &peers {
            key.add(peer);
        }
        for peer in &peers[1..] {
            key.remove(peer);
        }
        // One left: inline again, no list at all.
        assert!(matches!(key.peers, List::One(Some(_))), "{key:?}");
        assert_eq!(deliver(&key, "x").delivered, 1);
        assert_eq!(queued(&peers[0]), ["x"]);
        // Halfway down, the list has shrunk with them.
        for peer in &peers[1..] {
            key.add(peer);
        }
        for peer in &peers[100..] {
            key.remove(peer);
        }
        match &key.peers {
            List::Many(list) => assert!(list.capacity() <= 4 * 100, "{}", list.capacity()),
            List::One(_) => panic!("100 subscribers are a list"),
        }
    }

    #[test]
    fn one_subscriber_is_held_inline_and_the_list_is_no_larger() {
        // A key's subscribers are part of its entry in the engine's map: inline or not,
        // they take two words.
        assert_eq!(std::mem::size_of::<Peers>(), 16);
        let mut key = Peers::default();
        let (a, b, c) = (Peer::new(LIMITS), Peer::new(LIMITS), Peer::new(LIMITS));
        key.add(&a);
        assert!(matches!(key.peers, List::One(Some(_))));
        key.add(&b);
        key.add(&c);
        assert!(matches!(&key.peers, List::Many(list) if list.len() == 3));
        // The first leaves: the last moves into its slot, then the list goes inline
        // with whoever is left, reached in slot 0.
        key.remove(&a);
        key.remove(&c);
        assert!(matches!(key.peers, List::One(Some(ref only)) if only.id == b.id));
        key.remove(&a);
        assert_eq!(deliver(&key, "x").delivered, 1);
        assert_eq!(queued(&b), ["x"]);
        key.remove(&b);
        assert!(key.is_empty());
        // Stale removals of an empty key change nothing.
        key.remove(&b);
        assert!(matches!(key.peers, List::One(None)));
        key.add(&c);
        assert_eq!(deliver(&key, "y").delivered, 1);
        assert_eq!(queued(&c), ["y"]);
    }

    #[test]
    fn each_subscriber_gets_its_framing() {
        let mut peers = Peers::default();
        let (plain, envelope, events) = (Peer::new(LIMITS), Peer::new(LIMITS), Peer::new(LIMITS));
        envelope.set_framing(Framing::Envelope);
        events.set_framing(Framing::Events);
        for peer in [&plain, &envelope, &events] {
            peers.add(peer);
        }
        let position = Position::new("e".into(), 3);
        let payload = Payload::text("a\nb");
        peers.deliver(&mut Framed::new(&payload, Some(&position)));
        assert_eq!(queued(&plain), ["a\nb"]);
        assert_eq!(queued(&envelope), [r#"{"cursor":"e:3","message":"a\nb"}"#]);
        assert_eq!(queued(&events), ["id: e:3\ndata: a\ndata: b\n\n"]);
    }

    #[test]
    fn an_owned_message_goes_whole_to_its_last_plain_subscriber_and_framed_to_the_rest() {
        // Every order of plain and enveloped subscribers: the last one takes the text
        // itself only when plain, and everyone before it still gets the whole message.
        for framings in [
            [Framing::Plain, Framing::Plain, Framing::Plain],
            [Framing::Plain, Framing::Envelope, Framing::Plain],
            [Framing::Plain, Framing::Plain, Framing::Envelope],
            [Framing::Envelope, Framing::Plain, Framing::Events],
        ] {
            let mut peers = Peers::default();
            let subscribers: Vec<_> = framings
                .iter()
                .map(|framing| {
                    let peer = Peer::new(LIMITS);
                    peer.set_framing(*framing);
                    peers.add(&peer);
                    peer
                })
                .collect();
            let position = Position::new("e".into(), 3);
            let outcome = peers.deliver(&mut Framed::owned(Payload::text("a"), Some(&position)));
            assert_eq!(outcome.delivered, 3);
            for (peer, framing) in subscribers.iter().zip(framings) {
                let want = match framing {
                    Framing::Plain => "a",
                    Framing::Envelope => r#"{"cursor":"e:3","message":"a"}"#,
                    Framing::Events => "id: e:3\ndata: a\n\n",
                };
                assert_eq!(queued(peer), [want], "{framings:?}");
            }
        }
    }

    #[test]
    fn overflowed_and_closed_subscribers_are_not_counted_as_delivered() {
        let mut peers = Peers::default();
        let (slow, closed, fine) = (Peer::new(LIMITS), Peer::new(LIMITS), Peer::new(LIMITS));
        for peer in [&slow, &closed, &fine] {
            peers.add(peer);
        }
        for _ in 0..LIMITS.max_frames {
            slow.outbox.push("fill".into()).expect("room");
        }
        closed.outbox.close();
        assert_eq!(
            deliver(&peers, "x"),
            Delivery {
                delivered: 1,
                overflowed: 1
            }
        );
    }
}
