//! Names in Redis and the text published on a key's channel.
//!
//! Every name of key K carries one hash tag (`{K}`), so all of K's data and its channel
//! sit in one slot and one script may touch them all, on one server as on a Redis Cluster.

use std::borrow::Cow;
use std::sync::Arc;

use ::redis::{Script, ScriptInvocation};
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::message::{Payload, Position};

/// The prefix of every name the relay uses in Redis.
const PREFIX: &str = "nr:";

/// The marker of a key written in hex in its names (see [`tagged`]).
const HEX_MARK: &str = "x{h";

/// The part of K's names that carries the hash tag: `{K}`, or, for a key Redis would not
/// read as a tag there (empty, or starting with `}`: the tag would be empty and each name
/// would hash on its own), `x{hHEX}` with the key in hex.
fn tagged(key: &str) -> String {
    if key.is_empty() || key.starts_with('}') {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{HEX_MARK}{hex}}}")
    } else {
        format!("{{{key}}}")
    }
}

/// How many names [`data`] gives: the `numkeys` of every script on a key.
pub const DATA_KEYS: usize = 6;

/// The Redis names of one key's data, in the order the scripts take them as KEYS.
pub fn data(key: &str) -> [String; DATA_KEYS] {
    let tagged = tagged(key);
    ["m", "l", "p", "c", "o", "w"].map(|part| format!("{PREFIX}{tagged}:{part}"))
}

/// An invocation of `script` on `key`: its data names as the script's KEYS, in order.
pub fn on_key<'a>(script: &'a Script, key: &str) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    for name in data(key) {
        invocation.key(name);
    }
    invocation
}

/// The pub/sub channel a key's messages are published on.
pub fn channel(key: &str) -> String {
    format!("{PREFIX}{}:ch", tagged(key))
}

/// The key a channel name belongs to; `None` for other channels.
pub fn key_of_channel(channel: &[u8]) -> Option<Cow<'_, str>> {
    let name = std::str::from_utf8(channel).ok()?.strip_prefix(PREFIX)?;
    if let Some(hex) = name.strip_prefix(HEX_MARK) {
        let hex = hex.strip_suffix("}:ch")?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        return String::from_utf8(bytes).ok().map(Cow::Owned);
    }
    name.strip_prefix('{')?
        .strip_suffix("}:ch")
        .map(Cow::Borrowed)
}

/// The hash tag of the roster's names: the relays, their heartbeats, claims and indexes
/// all share one slot, so the roster scripts may touch them together on a cluster.
const ROSTER: &str = "nr:{roster}:";

/// The set of relays in the roster (the ones whose entries someone must drop if they die).
pub fn relays() -> String {
    format!("{ROSTER}relays")
}

/// `relay`'s heartbeat: it exists while the relay is alive (set with an expiry).
pub fn heartbeat(relay: &str) -> String {
    format!("{ROSTER}hb:{relay}")
}

/// The claim on a dead `relay`, held by the relay dropping its entries.
pub fn claim(relay: &str) -> String {
    format!("{ROSTER}claim:{relay}")
}

/// The keys under which `relay` has entries (a connection count or a watch): what its
/// claimant visits.
pub fn index(relay: &str) -> String {
    format!("{ROSTER}keys:{relay}")
}

/// A channel a relay publishes its liveness probes on and expects them back: one per
/// shard (`shard`), with `n` varied until the channel hashes to a slot of that shard.
pub fn probe_channel(relay: &str, shard: usize, n: u32) -> String {
    format!("{PREFIX}probe:{{{relay}.{shard}.{n}}}")
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
pub fn payload(kind: &str, text: impl Into<Utf8Bytes>) -> Payload {
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
///
/// It runs once per message a relay receives from Redis, so it copies nothing: the
/// payload and the origin are slices of `text` (the bytes Redis sent, checked as UTF-8
/// once), and the epoch is `epoch_hint` (the key's current one, which nearly every
/// message shares) when it matches, so only a new epoch allocates.
pub fn decode_live(text: Vec<u8>, epoch_hint: Option<&Arc<str>>) -> Option<(Live, Bytes)> {
    let text = Bytes::from(String::from_utf8(text).ok()?);
    let mut ends = newlines(&text);
    let (epoch_end, seq_end, origin_end) = (ends.next()?, ends.next()?, ends.next()?);
    let part = |from: usize, to: usize| std::str::from_utf8(&text[from..to]).ok();
    let epoch = part(0, epoch_end)?;
    let position = match epoch {
        "" => None,
        epoch => {
            let seq = part(epoch_end + 1, seq_end)?.parse().ok()?;
            let epoch = match epoch_hint {
                Some(hint) if **hint == *epoch => Arc::clone(hint),
                _ => Arc::from(epoch),
            };
            Some(Position::new(epoch, seq))
        }
    };
    let origin = text.slice(seq_end + 1..origin_end);
    let kind_at = origin_end + 1;
    let kind = part(kind_at, (kind_at + 1).min(text.len()))?;
    if kind.is_empty() {
        return None;
    }
    let body = Utf8Bytes::try_from(text.slice(kind_at + 1..)).ok()?;
    Some((
        Live {
            position,
            payload: payload(kind, body),
        },
        origin,
    ))
}

/// The positions of the newlines in `text`, in order.
fn newlines(text: &[u8]) -> impl Iterator<Item = usize> + '_ {
    text.iter()
        .enumerate()
        .filter_map(|(at, byte)| (*byte == b'\n').then_some(at))
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
        assert_eq!(
            key_of_channel(channel("a}b").as_bytes()).as_deref(),
            Some("a}b")
        );
        assert_eq!(key_of_channel(probe_channel("r1", 0, 0).as_bytes()), None);
    }

    #[test]
    fn the_roster_lives_in_one_slot() {
        use super::super::topology::slot;
        let names = [relays(), heartbeat("r1"), claim("r2"), index("r3")];
        assert!(
            names
                .iter()
                .all(|n| slot(n.as_bytes()) == slot(relays().as_bytes())),
            "{names:?}"
        );
        assert_eq!(key_of_channel(relays().as_bytes()), None);
    }

    #[test]
    fn keys_without_a_usable_tag_are_written_in_hex() {
        use super::super::topology::slot;
        for key in ["", "}", "}a{b}", "}é"] {
            let names = data(key);
            let channel = channel(key);
            assert!(
                names
                    .iter()
                    .all(|n| slot(n.as_bytes()) == slot(channel.as_bytes())),
                "{names:?} {channel}"
            );
            assert_eq!(key_of_channel(channel.as_bytes()).as_deref(), Some(key));
        }
        assert_eq!(channel("}"), "nr:x{h7d}:ch");
        // A key that looks like the hex form keeps its own names.
        assert_eq!(
            key_of_channel(channel("x{h7d}").as_bytes()).as_deref(),
            Some("x{h7d}")
        );
    }

    #[test]
    fn channel_messages_round_trip() {
        let decode = |text: &[u8]| decode_live(text.to_vec(), None);
        let (live, origin) = decode(b"e1.0\n7\nr1:5\nshi\nthere").expect("decodes");
        assert_eq!(live.position, Some(Position::new("e1.0".into(), 7)));
        assert_eq!(live.payload, Payload::text("hi\nthere"));
        assert_eq!(&origin[..], b"r1:5");
        let (live, origin) = decode(b"\n\n\nj{\"a\":1}").expect("decodes");
        assert_eq!(live.position, None);
        assert_eq!(live.payload, Payload::json("{\"a\":1}"));
        assert!(origin.is_empty());
        assert_eq!(decode(b"e\nx\n\nsz"), None);
        assert_eq!(decode(b"e\n1\n"), None);
        assert_eq!(decode(b"e\n1\n\n"), None);
        assert_eq!(decode(b"e\n1\n\ns\xff"), None);
        // The key's current epoch is shared, not allocated again.
        let epoch: Arc<str> = Arc::from("e1.0");
        let (live, _) = decode_live(b"e1.0\n8\n\nsx".to_vec(), Some(&epoch)).expect("decodes");
        let position = live.position.expect("a position");
        assert!(Arc::ptr_eq(&position.epoch, &epoch));
        assert_eq!(position.seq, 8);
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
