//! One key's local subscribers under the Redis engine, and how each live message from
//! Redis reaches them with none duplicated and none skipped.
//!
//! A registration runs in two steps around Redis: it waits (live messages of the key are
//! buffered for it), its script runs in Redis (presence, pending or replay, the stream's
//! end), then it completes: the reply, what it is owed, and the buffered messages that
//! are newer than what it was handed. Until a live message newer than its replay
//! arrives, it is *catching up*: live messages it already got in the replay are skipped.
//! Redis orders a key's publishes and scripts, and its channel delivers them in that
//! order, so the seq alone decides what is new.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::keys::Live;
use crate::delivery::engine::Preamble;
use crate::message::{Payload, Position};
use crate::peer::outbox::PushError;
use crate::peer::registry::{Delivery, Framed, Framing, Peer, PeerId};

/// What Redis handed a registration: the stream's incarnation and end when the script
/// ran, where continuity was lost, and the retained messages owed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handed {
    /// The stream's epoch; `None` when the key has no stream (or streams are off).
    pub epoch: Option<Arc<str>>,
    /// The last seq of the stream when the script ran.
    pub end: u64,
    /// History before this seq is lost: a gap signal goes first.
    pub gap: Option<u64>,
    /// Retained messages owed, oldest first.
    pub entries: Vec<(u64, Payload)>,
}

impl Handed {
    fn position(&self, seq: u64) -> Option<Position> {
        self.epoch
            .as_ref()
            .map(|epoch| Position::new(Arc::clone(epoch), seq))
    }

    /// Whether the live message at `position` was already part of this hand-over.
    fn covers(&self, position: Option<&Position>) -> bool {
        match (position, &self.epoch) {
            (Some(p), Some(epoch)) => p.epoch == *epoch && p.seq <= self.end,
            _ => false,
        }
    }
}

/// A registration whose script has not answered yet.
#[derive(Debug)]
struct Waiting {
    peer: Arc<Peer>,
    /// Live messages that arrived meanwhile, oldest first (at most `limit`).
    buffered: Vec<Live>,
    /// More arrived than the subscriber may have queued: it is a slow consumer.
    overflowed: bool,
}

/// A subscriber handed everything through `epoch:end`, waiting for the first live
/// message past it.
#[derive(Debug)]
struct Catching {
    peer: Arc<Peer>,
    epoch: Arc<str>,
    end: u64,
}

impl Catching {
    fn has(&self, position: Option<&Position>) -> bool {
        position.is_some_and(|p| p.epoch == self.epoch && p.seq <= self.end)
    }
}

/// One key's local subscribers. See the module docs.
#[derive(Debug, Default)]
pub struct Channel {
    /// Subscribers that get every live message, in subscription order.
    peers: Vec<Arc<Peer>>,
    /// Subscribers that skip live messages their replay already held.
    catching: Vec<Catching>,
    /// Registrations in flight.
    waiting: Vec<Waiting>,
    /// The position of the last live message seen: where a catch-up after a lost
    /// subscription starts.
    pub last: Option<Position>,
    /// When the last subscriber left (the channel is unsubscribed a little later).
    pub idle_since: Option<std::time::Instant>,
}

impl Channel {
    /// Subscribers, caught up or not, and registrations in flight.
    pub fn len(&self) -> usize {
        self.peers.len() + self.catching.len() + self.waiting.len()
    }

    /// Whether nobody is subscribed or on the way.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands a live message to every subscriber that does not have it yet, and buffers
    /// it for registrations in flight (at most `limit` each).
    pub fn deliver(&mut self, live: &Live, limit: usize) -> Delivery {
        let position = live.position.as_ref();
        let mut framed = Framed::new(&live.payload, position);
        let mut outcome = Delivery::default();
        for peer in &self.peers {
            push(peer, &mut framed, &mut outcome);
        }
        let mut caught_up = Vec::new();
        self.catching.retain(|c| {
            if c.has(position) {
                return true;
            }
            push(&c.peer, &mut framed, &mut outcome);
            // A positioned message past the replay: from here on it gets everything.
            if position.is_some() {
                caught_up.push(Arc::clone(&c.peer));
                return false;
            }
            true
        });
        self.peers.extend(caught_up);
        for waiting in &mut self.waiting {
            if waiting.buffered.len() >= limit {
                waiting.overflowed = true;
            } else if !waiting.overflowed {
                waiting.buffered.push(live.clone());
            }
        }
        if let Some(position) = position {
            self.last = Some(position.clone());
        }
        outcome
    }

    /// A registration begins: live messages are buffered for it from now on.
    pub fn wait(&mut self, peer: &Arc<Peer>) {
        self.idle_since = None;
        self.waiting.push(Waiting {
            peer: Arc::clone(peer),
            buffered: Vec::new(),
            overflowed: false,
        });
    }

    /// A registration failed: it leaves without having been handed anything.
    pub fn abandon(&mut self, peer: PeerId) {
        self.waiting.retain(|w| w.peer.id != peer);
    }

    /// A registration's script answered: queues the reply (`preamble`), a gap signal
    /// for a resumable subscriber, the owed messages, then the buffered live ones it
    /// did not get, and makes it a subscriber. Returns how many retained messages it was
    /// handed; `None` when it is no longer waiting (it left meanwhile).
    pub fn complete(
        &mut self,
        peer: PeerId,
        handed: &Handed,
        preamble: Option<Preamble<'_>>,
    ) -> Option<usize> {
        let i = self.waiting.iter().position(|w| w.peer.id == peer)?;
        let waiting = self.waiting.swap_remove(i);
        let peer = waiting.peer;
        if let Some(preamble) = preamble {
            peer.outbox.push_owed(preamble(handed.entries.len()));
        }
        if let (Some(gap), true) = (
            handed.gap.and_then(|g| handed.position(g)),
            resumable(&peer),
        ) {
            peer.outbox.push_owed(peer.gap_frame(&gap));
        }
        for (seq, payload) in &handed.entries {
            peer.outbox
                .push_owed(peer.frame(payload, handed.position(*seq).as_ref()));
        }
        if waiting.overflowed {
            peer.outbox.mark_overflowed();
            return Some(handed.entries.len());
        }
        let mut caught_up = handed.epoch.is_none();
        for live in &waiting.buffered {
            if handed.covers(live.position.as_ref()) {
                continue;
            }
            let mut framed = Framed::new(&live.payload, live.position.as_ref());
            push(&peer, &mut framed, &mut Delivery::default());
            caught_up |= live.position.is_some();
        }
        if self.last.is_none() {
            self.last = handed.position(handed.end);
        }
        match (&handed.epoch, caught_up) {
            (Some(epoch), false) => self.catching.push(Catching {
                peer,
                epoch: Arc::clone(epoch),
                end: handed.end,
            }),
            _ => self.peers.push(peer),
        }
        Some(handed.entries.len())
    }

    /// After the subscription was lost and made anew: hands every subscriber what was
    /// published meanwhile (`handed`, replayed from [`Channel::last`]), or a gap signal
    /// to the resumable ones when continuity cannot be proven, and has them skip live
    /// messages through the stream's end.
    pub fn caught_up_after_reconnect(&mut self, handed: &Handed) {
        let mut everyone: Vec<(Arc<Peer>, Option<Position>)> = Vec::new();
        let last = self.last.clone();
        for peer in self.peers.drain(..) {
            everyone.push((peer, last.clone()));
        }
        for c in self.catching.drain(..) {
            let has = Position::new(c.epoch, c.end);
            everyone.push((c.peer, Some(has)));
        }
        let gap = handed.gap.and_then(|g| handed.position(g));
        for (peer, has) in everyone {
            if let (Some(gap), true) = (&gap, resumable(&peer)) {
                peer.outbox.push_owed(peer.gap_frame(gap));
            }
            for (seq, payload) in &handed.entries {
                let position = handed.position(*seq);
                let already = match (&position, &has) {
                    (Some(p), Some(h)) => p.epoch == h.epoch && p.seq <= h.seq,
                    _ => false,
                };
                if !already {
                    peer.outbox
                        .push_owed(peer.frame(payload, position.as_ref()));
                }
            }
            match &handed.epoch {
                Some(epoch) => self.catching.push(Catching {
                    peer,
                    epoch: Arc::clone(epoch),
                    end: handed.end,
                }),
                None => self.peers.push(peer),
            }
        }
        if let Some(position) = handed.position(handed.end) {
            self.last = Some(position);
        }
    }

    /// Removes `peer`'s own subscription; the others stay.
    pub fn remove(&mut self, peer: PeerId) {
        self.peers.retain(|p| p.id != peer);
        self.catching.retain(|c| c.peer.id != peer);
        self.waiting.retain(|w| w.peer.id != peer);
    }

    /// Hands a message that could not go through Redis to the subscribers here, with
    /// no position (the relay keeps serving its own connections while Redis is away).
    pub fn deliver_here(&self, payload: &Payload) -> Delivery {
        let mut framed = Framed::new(payload, None);
        let mut outcome = Delivery::default();
        for peer in self
            .peers
            .iter()
            .chain(self.catching.iter().map(|c| &c.peer))
        {
            push(peer, &mut framed, &mut outcome);
        }
        outcome
    }
}

/// Whether `peer` understands gap signals (envelopes and events).
fn resumable(peer: &Peer) -> bool {
    peer.framing() != Framing::Plain
}

/// Queues a live message for `peer` and counts the outcome.
fn push(peer: &Peer, framed: &mut Framed<'_>, outcome: &mut Delivery) {
    let frame: Utf8Bytes = framed.frame(peer.framing());
    match peer.outbox.push(frame) {
        Ok(()) => outcome.delivered += 1,
        Err(PushError::Overflowed) => outcome.overflowed += 1,
        // Closing connections are no longer live: they are not counted.
        Err(PushError::Closed) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::outbox::{Drained, OutboxLimits};

    const LIMITS: OutboxLimits = OutboxLimits {
        max_frames: 64,
        max_bytes: 1 << 16,
    };

    fn queued(peer: &Peer) -> Vec<String> {
        match peer.outbox.take() {
            Drained::Frames(frames) => frames.iter().map(|f| f.as_str().to_owned()).collect(),
            Drained::Overflowed => vec!["<overflowed>".into()],
        }
    }

    fn live(seq: u64) -> Live {
        Live {
            position: Some(Position::new("e".into(), seq)),
            payload: Payload::text(format!("m{seq}")),
        }
    }

    fn handed(end: u64, entries: &[u64]) -> Handed {
        Handed {
            epoch: Some("e".into()),
            end,
            gap: None,
            entries: entries
                .iter()
                .map(|s| (*s, Payload::text(format!("m{s}"))))
                .collect(),
        }
    }

    #[test]
    fn a_registration_gets_its_replay_then_only_newer_live_messages() {
        let mut channel = Channel::default();
        let peer = Peer::new(LIMITS);
        channel.wait(&peer);
        // Live messages while the script runs: 2 is also in the replay, 3 is not.
        channel.deliver(&live(2), 16);
        channel.deliver(&live(3), 16);
        let preamble: Preamble<'_> = Box::new(|n| format!("reply {n}").into());
        let replayed = channel.complete(peer.id, &handed(2, &[1, 2]), Some(preamble));
        assert_eq!(replayed, Some(2));
        assert_eq!(queued(&peer), ["reply 2", "m1", "m2", "m3"]);
        channel.deliver(&live(4), 16);
        assert_eq!(queued(&peer), ["m4"]);
    }

    #[test]
    fn a_caught_up_registration_skips_live_messages_already_replayed() {
        let mut channel = Channel::default();
        let peer = Peer::new(LIMITS);
        channel.wait(&peer);
        // The script saw the stream through 5, but 4 and 5 arrive live only afterwards.
        channel.complete(peer.id, &handed(5, &[4, 5]), None);
        assert_eq!(queued(&peer), ["m4", "m5"]);
        for seq in [4, 5, 6] {
            channel.deliver(&live(seq), 16);
        }
        assert_eq!(queued(&peer), ["m6"]);
        assert_eq!(channel.last, Some(Position::new("e".into(), 6)));
    }

    #[test]
    fn a_registration_that_falls_behind_while_waiting_is_a_slow_consumer() {
        let mut channel = Channel::default();
        let peer = Peer::new(LIMITS);
        channel.wait(&peer);
        for seq in 1..=3 {
            channel.deliver(&live(seq), 2);
        }
        channel.complete(peer.id, &handed(0, &[]), None);
        assert!(peer.outbox.is_overflowed());
    }

    #[test]
    fn after_a_lost_subscription_everyone_gets_what_they_missed_or_a_gap() {
        let mut channel = Channel::default();
        let (plain, resumable) = (Peer::new(LIMITS), Peer::new(LIMITS));
        resumable.set_framing(Framing::Envelope);
        for peer in [&plain, &resumable] {
            channel.wait(peer);
            channel.complete(peer.id, &handed(1, &[]), None);
        }
        channel.deliver(&live(2), 16);
        let _ = (queued(&plain), queued(&resumable));
        // Missed 3 while the subscription was down; the stream still has it.
        channel.caught_up_after_reconnect(&handed(3, &[3]));
        assert_eq!(queued(&plain), ["m3"]);
        assert_eq!(queued(&resumable), [r#"{"cursor":"e:3","message":"m3"}"#]);
        channel.deliver(&live(3), 16);
        channel.deliver(&live(4), 16);
        assert_eq!(queued(&plain), ["m4"]);
        assert_eq!(queued(&resumable), [r#"{"cursor":"e:4","message":"m4"}"#]);
        // Redis lost everything: a new epoch. The resumable peer is told.
        let lost = Handed {
            epoch: Some("f".into()),
            end: 0,
            gap: Some(0),
            entries: Vec::new(),
        };
        channel.caught_up_after_reconnect(&lost);
        assert!(queued(&plain).is_empty());
        assert_eq!(queued(&resumable), [r#"{"gap":true,"cursor":"f:0"}"#]);
    }
}
