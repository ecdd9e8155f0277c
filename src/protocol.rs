//! The wire protocol of PROTOCOL.md: parsing inbound text frames and encoding replies.
//!
//! This is the only module that looks inside JSON. It borrows from the frame wherever it
//! can, because it runs once for every frame the relay receives.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The text frame sent to every connection right after the handshake.
pub const GREETING: &str = "..:: Hello from the Notification Center ::..";

/// The `message` value that turns a frame into a registration.
pub const REGISTER_MESSAGE: &str = "connected";

/// What a text frame asks the relay to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Register the connection under `key`, replacing its previous key.
    Register {
        /// The key to register under.
        key: Cow<'a, str>,
    },
    /// Hand `payload` to every connection registered under `to`.
    Deliver {
        /// The recipient key.
        to: Cow<'a, str>,
        /// The exact text frame the recipients receive.
        payload: String,
    },
}

/// A JSON object frame: an optional reply id and what it asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The opt-in `"id"`: when present the frame gets exactly one reply.
    pub id: Option<ReplyId<'a>>,
    /// The command, or why the frame cannot be acted on.
    pub command: Result<Command<'a>, Rejection>,
}

/// The result of parsing one text frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A JSON object; it gets a reply when it carries an id.
    Request(Request<'a>),
    /// Not a JSON object: logged and ignored, never answered (there is no id to answer).
    Ignored(Ignored),
}

/// Why a frame that is not a JSON object was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The frame does not start with `{`.
    NotJson,
    /// It starts with `{` but is not valid JSON.
    BadJson,
}

impl Ignored {
    /// A short, stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::NotJson => "not_json",
            Ignored::BadJson => "bad_json",
        }
    }
}

/// Why a JSON object frame cannot be acted on. Reported in the error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `recipient_uuid` (or it is null).
    MissingRecipient,
    /// `recipient_uuid` is not a string.
    RecipientNotString,
    /// `recipient_uuid` is the empty string.
    EmptyKey,
    /// `recipient_uuid` is longer than the configured maximum.
    KeyTooLong,
    /// A delivery without a `message`.
    MissingMessage,
    /// `id` is neither a string nor a number.
    InvalidId,
    /// The key or a string message holds a lone UTF-16 surrogate escape (`"\ud800"`
    /// without its pair): it cannot be turned into text.
    LoneSurrogate,
}

impl Rejection {
    /// A short, stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MissingRecipient => "missing_recipient",
            Rejection::RecipientNotString => "recipient_not_string",
            Rejection::EmptyKey => "empty_key",
            Rejection::KeyTooLong => "key_too_long",
            Rejection::MissingMessage => "missing_message",
            Rejection::InvalidId => "invalid_id",
            Rejection::LoneSurrogate => "lone_surrogate",
        }
    }

    /// The human-readable reason sent in `{"ok": false, "error": ...}`.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::MissingRecipient => "missing recipient_uuid",
            Rejection::RecipientNotString => "recipient_uuid must be a string",
            Rejection::EmptyKey => "recipient_uuid must not be empty",
            Rejection::KeyTooLong => "recipient_uuid is too long",
            Rejection::MissingMessage => "missing message",
            Rejection::InvalidId => "id must be a string or a number",
            Rejection::LoneSurrogate => "invalid unicode: lone surrogate",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The client's `"id"`, kept as its exact JSON text so the reply echoes it unchanged.
#[derive(Debug, Clone, Copy)]
pub struct ReplyId<'a>(&'a RawValue);

impl<'a> ReplyId<'a> {
    /// The id as JSON text, e.g. `"abc"` or `7`.
    pub fn as_json(&self) -> &'a str {
        self.0.get()
    }
}

impl PartialEq for ReplyId<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}
impl Eq for ReplyId<'_> {}

/// The fields the relay reads; every other field is ignored, as the original did. A
/// field given twice takes its last value, as the original's `json.loads` does (a
/// derived `Deserialize` would reject the frame instead). `null` counts as absent.
#[derive(Default)]
struct Envelope<'a> {
    recipient_uuid: Option<&'a RawValue>,
    message: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
}

/// The members of a frame, by name (escapes in names decoded, as JSON requires).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Member {
    RecipientUuid,
    Message,
    Id,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Envelope<'de>, A::Error> {
        let mut envelope = Envelope::default();
        while let Some(member) = members.next_key::<Member>()? {
            let slot = match member {
                Member::RecipientUuid => &mut envelope.recipient_uuid,
                Member::Message => &mut envelope.message,
                Member::Id => &mut envelope.id,
                Member::Other => {
                    members.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = members.next_value::<Option<&'de RawValue>>()?;
        }
        Ok(envelope)
    }
}

/// Parses one inbound text frame. `max_key_len` bounds `recipient_uuid` in bytes.
pub fn parse(text: &str, max_key_len: usize) -> Frame<'_> {
    if !text.starts_with('{') {
        return Frame::Ignored(Ignored::NotJson);
    }
    let envelope: Envelope<'_> = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(_) => return Frame::Ignored(Ignored::BadJson),
    };
    let (id, id_ok) = match envelope.id {
        None => (None, true),
        Some(raw) if is_string_or_number(raw) => (Some(ReplyId(raw)), true),
        Some(_) => (None, false),
    };
    let command = if id_ok {
        command(&envelope, max_key_len)
    } else {
        Err(Rejection::InvalidId)
    };
    Frame::Request(Request { id, command })
}

fn is_string_or_number(raw: &RawValue) -> bool {
    matches!(
        raw.get().as_bytes().first(),
        Some(b'"' | b'-' | b'0'..=b'9')
    )
}

fn command<'a>(envelope: &Envelope<'a>, max_key_len: usize) -> Result<Command<'a>, Rejection> {
    let raw_key = envelope.recipient_uuid.ok_or(Rejection::MissingRecipient)?;
    let key = json_string(raw_key)?.ok_or(Rejection::RecipientNotString)?;
    if key.is_empty() {
        return Err(Rejection::EmptyKey);
    }
    if key.len() > max_key_len {
        return Err(Rejection::KeyTooLong);
    }
    let raw_message = envelope.message.ok_or(Rejection::MissingMessage)?;
    match json_string(raw_message)? {
        Some(text) if text == REGISTER_MESSAGE => Ok(Command::Register { key }),
        Some(text) => Ok(Command::Deliver {
            to: key,
            payload: text.into_owned(),
        }),
        None => Ok(Command::Deliver {
            to: key,
            payload: compact_json(raw_message),
        }),
    }
}

/// Decodes a JSON string, borrowing when it has no escapes. `None` when not a string.
///
/// The value was validated as JSON when the frame was parsed, so a string that still
/// cannot be decoded holds a lone surrogate escape: JSON allows it, text cannot hold it.
fn json_string(raw: &RawValue) -> Result<Option<Cow<'_, str>>, Rejection> {
    let text = raw.get();
    if !text.starts_with('"') {
        return Ok(None);
    }
    if let Ok(borrowed) = serde_json::from_str::<&str>(text) {
        return Ok(Some(Cow::Borrowed(borrowed)));
    }
    match serde_json::from_str::<String>(text) {
        Ok(owned) => Ok(Some(Cow::Owned(owned))),
        Err(_) => Err(Rejection::LoneSurrogate),
    }
}

/// A non-string JSON value as compact text: insignificant whitespace removed, and
/// nothing else changed (key order, number spelling and big integers stay as sent,
/// which a round trip through `serde_json::Value` would not keep).
fn compact_json(raw: &RawValue) -> String {
    let text = raw.get();
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            // The text was validated by the parser: outside strings only these four
            // characters are whitespace.
            out.push(c);
        }
    }
    out
}

#[derive(Serialize)]
struct ReplyFrame<'a> {
    id: &'a RawValue,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The reply to a frame that carried an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The connection is now registered.
    Registered,
    /// The message was handed to this many live connections.
    Delivered(usize),
    /// The frame was rejected.
    Error(Rejection),
}

/// Encodes `{"id": ID, "ok": ...}` for `reply`.
pub fn encode_reply(id: ReplyId<'_>, reply: Reply) -> String {
    let frame = match reply {
        Reply::Registered => ReplyFrame {
            id: id.0,
            ok: true,
            delivered: None,
            error: None,
        },
        Reply::Delivered(n) => ReplyFrame {
            id: id.0,
            ok: true,
            delivered: Some(n),
            error: None,
        },
        Reply::Error(rejection) => ReplyFrame {
            id: id.0,
            ok: false,
            delivered: None,
            error: Some(rejection.reason()),
        },
    };
    // Serialising a struct of a raw value, a bool, a number and a str cannot fail.
    serde_json::to_string(&frame).unwrap_or_default()
}

/// Encodes a rejection for a frame whose id was itself invalid: the reply's id is null.
pub fn encode_invalid_id_reply() -> String {
    format!(
        r#"{{"id":null,"ok":false,"error":{}}}"#,
        serde_json::Value::from(Rejection::InvalidId.reason())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    fn request(text: &str) -> Request<'_> {
        match parse(text, MAX) {
            Frame::Request(request) => request,
            Frame::Ignored(why) => panic!("{text} was ignored: {why:?}"),
        }
    }

    #[test]
    fn registration() {
        let r = request(r#"{"recipient_uuid": "receiver-uuid", "message": "connected"}"#);
        assert_eq!(r.id, None);
        assert_eq!(
            r.command,
            Ok(Command::Register {
                key: "receiver-uuid".into()
            })
        );
    }

    #[test]
    fn string_message_is_delivered_verbatim_and_unescaped() {
        let r = request(r#"{"recipient_uuid":"k","message":"line\n\"quoted\" ü"}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                payload: "line\n\"quoted\" ü".into()
            })
        );
    }

    #[test]
    fn non_string_message_is_compact_json() {
        let r = request(r#"{"recipient_uuid":"k","message": { "a" : [1, 2, {"b": true}] }}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                payload: r#"{"a":[1,2,{"b":true}]}"#.into()
            })
        );
        for (message, expected) in [
            ("42", "42"),
            ("true", "true"),
            ("[ ]", "[]"),
            ("1e3", "1e3"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            (r#"{"z": 1, "a": 2}"#, r#"{"z":1,"a":2}"#),
            (
                r#"[ "a b", "c\" d", "e\\" , "\\\" f" ]"#,
                r#"["a b","c\" d","e\\","\\\" f"]"#,
            ),
        ] {
            let text = format!(r#"{{"recipient_uuid":"k","message":{message}}}"#);
            match request(&text).command {
                Ok(Command::Deliver { payload, .. }) => assert_eq!(payload, expected),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn escaped_key_is_decoded() {
        let r = request(r#"{"recipient_uuid":"a\u0062c","message":"connected"}"#);
        assert_eq!(r.command, Ok(Command::Register { key: "abc".into() }));
    }

    #[test]
    fn not_json_and_bad_json_are_ignored() {
        assert_eq!(parse("hello", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("[1]", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("\"x\"", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("42", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("", MAX), Frame::Ignored(Ignored::NotJson));
        assert_eq!(parse("{", MAX), Frame::Ignored(Ignored::BadJson));
        assert_eq!(parse("{} trailing", MAX), Frame::Ignored(Ignored::BadJson));
        assert_eq!(parse(r#"{"a":1,}"#, MAX), Frame::Ignored(Ignored::BadJson));
    }

    #[test]
    fn rejections() {
        let cases = [
            (r#"{}"#, Rejection::MissingRecipient),
            (r#"{"message":"x"}"#, Rejection::MissingRecipient),
            (
                r#"{"recipient_uuid":null,"message":"x"}"#,
                Rejection::MissingRecipient,
            ),
            (
                r#"{"recipient_uuid":5,"message":"x"}"#,
                Rejection::RecipientNotString,
            ),
            (
                r#"{"recipient_uuid":"","message":"x"}"#,
                Rejection::EmptyKey,
            ),
            (r#"{"recipient_uuid":"k"}"#, Rejection::MissingMessage),
            (
                r#"{"recipient_uuid":"k","message":null}"#,
                Rejection::MissingMessage,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(request(text).command, Err(expected), "{text}");
        }
        let long = format!(
            r#"{{"recipient_uuid":"{}","message":"x"}}"#,
            "k".repeat(MAX + 1)
        );
        assert_eq!(request(&long).command, Err(Rejection::KeyTooLong));
        let exact = format!(
            r#"{{"recipient_uuid":"{}","message":"x"}}"#,
            "k".repeat(MAX)
        );
        assert!(request(&exact).command.is_ok());
    }

    #[test]
    fn a_member_given_twice_takes_its_last_value_like_json_loads() {
        let r = request(
            r#"{"id":1,"recipient_uuid":"a","message":"x","recipient_uuid":"b","message":"y","id":2}"#,
        );
        assert_eq!(r.id.map(|id| id.as_json()), Some("2"));
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "b".into(),
                payload: "y".into()
            })
        );
        // The last value wins even when it is null (absent) or of another type.
        let r = request(r#"{"id":7,"recipient_uuid":"k","message":"x","message":null}"#);
        assert_eq!(r.command, Err(Rejection::MissingMessage));
        let r = request(r#"{"id":"a","id":null,"recipient_uuid":"k","message":"x"}"#);
        assert_eq!(r.id, None);
        let r = request(r#"{"recipient_uuid":5,"recipient_uuid":"k","message":"connected"}"#);
        assert_eq!(r.command, Ok(Command::Register { key: "k".into() }));
        // Escaped member names are the same members.
        let r = request(r#"{"recipient\u005fuuid":"k","mess\u0061ge":"connected"}"#);
        assert_eq!(r.command, Ok(Command::Register { key: "k".into() }));
    }

    #[test]
    fn lone_surrogates_are_rejected_the_same_in_keys_and_string_messages() {
        for text in [
            r#"{"id":1,"recipient_uuid":"k\ud800","message":"x"}"#,
            r#"{"id":1,"recipient_uuid":"\udc00","message":"connected"}"#,
            r#"{"id":1,"recipient_uuid":"k","message":"a\ud800b"}"#,
            r#"{"id":1,"recipient_uuid":"k","message":"\ud800\ud800"}"#,
        ] {
            let r = request(text);
            assert_eq!(r.command, Err(Rejection::LoneSurrogate), "{text}");
            assert_eq!(
                encode_reply(r.id.expect("id"), Reply::Error(Rejection::LoneSurrogate)),
                r#"{"id":1,"ok":false,"error":"invalid unicode: lone surrogate"}"#
            );
        }
        // A proper pair is one character.
        let r = request(r#"{"recipient_uuid":"k","message":"\ud83d\ude00"}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                payload: "😀".into()
            })
        );
        // Inside a JSON message the escape is passed on as JSON text, which is valid.
        let r = request(r#"{"recipient_uuid":"k","message":{"a":"\ud800"}}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                payload: r#"{"a":"\ud800"}"#.into()
            })
        );
    }

    #[test]
    fn ids_are_echoed_exactly() {
        let r = request(r#"{"id": 7, "recipient_uuid":"k","message":"connected"}"#);
        let id = r.id.expect("id");
        assert_eq!(encode_reply(id, Reply::Registered), r#"{"id":7,"ok":true}"#);
        let r = request(r#"{"id":"a\"b","recipient_uuid":"k","message":"m"}"#);
        let id = r.id.expect("id");
        assert_eq!(
            encode_reply(id, Reply::Delivered(2)),
            r#"{"id":"a\"b","ok":true,"delivered":2}"#
        );
        assert_eq!(
            encode_reply(id, Reply::Error(Rejection::MissingMessage)),
            r#"{"id":"a\"b","ok":false,"error":"missing message"}"#
        );
        let r = request(r#"{"id":-1.5e3,"message":"m"}"#);
        assert_eq!(r.id.map(|id| id.as_json()), Some("-1.5e3"));
        assert_eq!(r.command, Err(Rejection::MissingRecipient));
    }

    #[test]
    fn null_id_means_no_reply_and_other_ids_are_rejected() {
        let r = request(r#"{"id":null,"recipient_uuid":"k","message":"m"}"#);
        assert_eq!(r.id, None);
        assert!(r.command.is_ok());
        for id in ["true", "[1]", r#"{"a":1}"#] {
            let text = format!(r#"{{"id":{id},"recipient_uuid":"k","message":"m"}}"#);
            let r = request(&text);
            assert_eq!(r.id, None);
            assert_eq!(r.command, Err(Rejection::InvalidId));
        }
        let reply: serde_json::Value =
            serde_json::from_str(&encode_invalid_id_reply()).expect("valid JSON");
        assert_eq!(reply["id"], serde_json::Value::Null);
        assert_eq!(reply["ok"], false);
    }
}
