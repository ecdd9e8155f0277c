//! The values every layer passes around: a message as recipients get it, what a
//! publish asks for and what became of it, and positions in a key's stream (the
//! cursors clients resume from). A leaf: it imports nothing of the crate, so the wire
//! protocol, the engines and the subscriber records can all speak in its terms.

use std::fmt;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A message as the engines keep and hand it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The text a plain recipient gets: a string message verbatim, other JSON compact.
    text: Utf8Bytes,
    /// Whether the message was a JSON string (an envelope then quotes it again).
    is_string: bool,
}

impl Payload {
    /// A string message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self {
            text: text.into(),
            is_string: true,
        }
    }

    /// A non-string JSON message, given as its compact text.
    pub fn json(compact: impl Into<Utf8Bytes>) -> Self {
        Self {
            text: compact.into(),
            is_string: false,
        }
    }

    /// The text a plain recipient gets.
    pub fn as_text(&self) -> &Utf8Bytes {
        &self.text
    }

    /// Whether the message was a JSON string.
    pub fn is_string(&self) -> bool {
        self.is_string
    }

    /// Takes the text out, leaving this payload empty: for its last recipient.
    pub fn take_text(&mut self) -> Utf8Bytes {
        std::mem::take(&mut self.text)
    }

    /// The payload as a stream keeps it: a small text in an allocation of its own, so
    /// that the frames sent with it share nothing with what is kept. Evicting it later
    /// is then a plain free, instead of a release of a reference count on a cache line
    /// last touched when the message was sent, which stalls every append of a full
    /// stream. Copying is cheap at these sizes; a larger text is shared as it is.
    pub fn retained(self) -> Self {
        if self.text.len() > RETAIN_COPY_MAX {
            return self;
        }
        Self {
            text: Utf8Bytes::from(String::from(self.text.as_str())),
            is_string: self.is_string,
        }
    }
}

/// Texts up to this size are copied when retained (see [`Payload::retained`]).
pub const RETAIN_COPY_MAX: usize = 1024;

/// A position in a key's stream: the epoch of its incarnation and the sequence number.
/// Clients get it as an opaque cursor, `EPOCH:SEQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream's incarnation.
    pub epoch: Arc<str>,
    /// 1, 2, 3, ... within the epoch (0: before the first message).
    pub seq: u64,
}

impl Position {
    /// The position `seq` of `epoch`.
    pub fn new(epoch: Arc<str>, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// Reads a cursor this relay gave out; `None` for anything else.
    pub fn parse(cursor: &str) -> Option<Self> {
        let (epoch, seq) = cursor.rsplit_once(':')?;
        if epoch.is_empty()
            || !epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return None;
        }
        let seq = seq.parse().ok()?;
        Some(Self::new(epoch.into(), seq))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// What recipients get.
    pub payload: Payload,
    /// Live connections only: never retained, no position.
    pub ephemeral: bool,
    /// Retaining this message drops the key's earlier retained message with this name.
    pub collapse: Option<Box<str>>,
}

impl Outgoing {
    /// A plain message: retained when streams are on, nothing collapsed.
    pub fn plain(payload: Payload) -> Self {
        Self {
            payload,
            ephemeral: false,
            collapse: None,
        }
    }
}

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Live connections the message was queued for.
    pub delivered: usize,
    /// Live connections whose queue was full (they are being closed as slow consumers).
    pub overflowed: usize,
    /// Where the message was retained; `None` when streams are off or it was ephemeral.
    pub position: Option<Position>,
    /// Kept as pending: it reached nobody and is retained for the next registration.
    pub buffered: bool,
}

/// Where a resumable registration starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// Everything retained.
    Earliest,
    /// Nothing old: live messages only.
    Latest,
    /// After this position (a cursor the client was given).
    After(Position),
    /// A cursor this relay cannot read: continuity cannot be proven.
    Unknown,
}

/// Why retained messages left a stream. Collapsed messages are superseded, not lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Older than `--buffer-ttl`.
    Ttl,
    /// Past `--buffer-max` messages for the key.
    Max,
    /// The global `--buffer-memory` cap, oldest first.
    Memory,
}

impl Eviction {
    /// Every reason, for metrics.
    pub const ALL: [Eviction; 3] = [Eviction::Ttl, Eviction::Max, Eviction::Memory];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Ttl => "ttl",
            Eviction::Max => "max",
            Eviction::Memory => "memory",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let p = Position::new("k3x9.1f".into(), 42);
        assert_eq!(p.to_string(), "k3x9.1f:42");
        assert_eq!(Position::parse("k3x9.1f:42"), Some(p));
        for bad in [
            "", ":", "abc", "e:", ":5", "e:-1", "e:x", "e f:1", "e\n:1", "e:1:2",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }
}
