//! Names in Redis and the text published on a key's channel.
//!
//! Every name of key K carries the hash tag `{K}`, so all of K's data sits in one slot
//! and one script may touch it all.

use std::sync::Arc;

use crate::engine::{Payload, Position};

/// The prefix of every name the relay uses in Redis.
const PREFIX: &str = "nr:";

/// The Redis names of one key's data, in the order the scripts take them as KEYS.
pub fn data(key: &str) -> [String; 6] {
    ["m", "l", "p", "c", "o", "w"].map(|part| format!("{PREFIX}{{{key}}}:{part}"))
}

/// The pub/sub channel a key's messages are published on.
pub fn channel(key: &str) -> String {
    format!("{PREFIX}{{{key}}}:ch")
}

/// The key a channel name belongs to; `None` for other channels.
pub fn key_of_channel(channel: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(channel).ok()?;
    name.strip_prefix(PREFIX)?
        .strip_prefix('{')?
        .strip_suffix("}:ch")
}

/// The channel a relay publishes its liveness probes on and expects them back.
pub fn probe_channel(relay: &str) -> String {
    format!("{PREFIX}probe:{relay}")
}

/// The kind marker of a string payload in Redis (`j` for other JSON).
pub const STRING_KIND: &str = "s";
/// The kind marker of a non-string JSON payload.
pub const JSON_KIND: &str = "j";

/// The kind marker of `payload`.
pub fn kind(payload: &Payload) -> &'static str {
    if payload.is_string() {
        STRING_KIND
    } else {
        JSON_KIND
    }
}

/// A payload read back from Redis: its kind marker and its text.
pub fn payload(kind: &str, text: String) -> Payload {
    if kind == JSON_KIND {
        Payload::json(text)
    } else {
        Payload::text(text)
    }
}

/// The kind marker of a presence event (a key's count changed, for its watchers).
const PRESENCE_KIND: &str = "p";

/// A presence event on a key's channel: the key's count on every relay, and when it was
/// read (Redis's clock in ms: a later read supersedes an earlier one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceEvent {
    /// When the count was read, in Redis's clock (ms).
    pub version: i64,
    /// Connections under the key on every live relay.
    pub connections: usize,
}

/// Reads a presence event, `\n\n\npVERSION COUNT` as `lib.lua` writes it; `None` for
/// anything else (a message).
pub fn decode_presence(text: &[u8]) -> Option<PresenceEvent> {
    let rest = text.strip_prefix(b"\n\n\n")?;
    let rest = std::str::from_utf8(rest)
        .ok()?
        .strip_prefix(PRESENCE_KIND)?;
    let (version, connections) = rest.split_once(' ')?;
    Some(PresenceEvent {
        version: version.parse().ok()?,
        connections: connections.parse().ok()?,
    })
}

/// A message as it arrives on a key's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Where it was retained; `None` for ephemeral messages and with streams off.
    pub position: Option<Position>,
    /// What recipients get.
    pub payload: Payload,
}

/// Reads a channel message: `EPOCH\nSEQ\nORIGIN\nKIND PAYLOAD` (epoch and seq empty when
/// the message has no position, origin empty unless its relay waits for it), as
/// `publish.lua` writes it. Returns the message and its origin.
pub fn decode_live(text: &[u8]) -> Option<(Live, &str)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut parts = text.splitn(4, '\n');
    let (epoch, seq, origin, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let position = match epoch {
        "" => None,
        epoch => Some(Position::new(Arc::from(epoch), seq.parse().ok()?)),
    };
    let (kind, body) = rest.split_at_checked(1)?;
    let live = Live {
        position,
        payload: payload(kind, body.to_owned()),
    };
    Some((live, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_key_hash_tag() {
        let [meta, log, ..] = data("job-7");
        assert_eq!(meta, "nr:{job-7}:m");
        assert_eq!(log, "nr:{job-7}:l");
        assert_eq!(channel("a\tb"), "nr:{a\tb}:ch");
        assert_eq!(key_of_channel(channel("a}b").as_bytes()), Some("a}b"));
        assert_eq!(key_of_channel(probe_channel("r1").as_bytes()), None);
    }

    #[test]
    fn channel_messages_round_trip() {
        let (live, origin) = decode_live(b"e1.0\n7\nr1:5\nshi\nthere").expect("decodes");
        assert_eq!(live.position, Some(Position::new("e1.0".into(), 7)));
        assert_eq!(live.payload, Payload::text("hi\nthere"));
        assert_eq!(origin, "r1:5");
        let (live, origin) = decode_live(b"\n\n\nj{\"a\":1}").expect("decodes");
        assert_eq!(live.position, None);
        assert_eq!(live.payload, Payload::json("{\"a\":1}"));
        assert_eq!(origin, "");
        assert_eq!(decode_live(b"e\nx\n\nsz"), None);
        assert_eq!(decode_live(b"e\n1\n"), None);
        assert_eq!(
            decode_presence(b"\n\n\np1700000000123 4"),
            Some(PresenceEvent {
                version: 1_700_000_000_123,
                connections: 4
            })
        );
        assert_eq!(decode_presence(b"\n\n\nsp1 2"), None);
        assert_eq!(decode_presence(b"e\n1\n\np1 2"), None);
    }
}
