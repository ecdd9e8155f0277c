//! The wire protocol of PROTOCOL.md: parsing inbound text frames and encoding replies.
//!
//! This is the only module that looks inside JSON. It borrows from the frame wherever it
//! can, because it runs once for every frame the relay receives.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::message::{Outgoing, Payload, Position, Published, Since};

/// The text frame sent to every connection right after the handshake.
pub const GREETING: &str = "..:: Hello from the Notification Center ::..";

/// The `message` value that turns a frame into a registration.
pub const REGISTER_MESSAGE: &str = "connected";

/// Longest `collapse` name, in bytes.
pub const MAX_COLLAPSE_LENGTH: usize = 64;

/// What a text frame asks the relay to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Register the connection under `key`, replacing its previous key.
    Register {
        /// The key to register under.
        key: Cow<'a, str>,
        /// A resumable registration's starting point; `None` for a Part 1 registration.
        since: Option<Since>,
    },
    /// Hand `message` to every connection registered under `to`.
    Deliver {
        /// The recipient key.
        to: Cow<'a, str>,
        /// The message and how it is retained.
        message: Outgoing,
    },
    /// Answer how many connections are registered under `key`.
    Presence {
        /// The key asked about.
        key: Cow<'a, str>,
    },
    /// Answer like [`Command::Presence`], then push every change of `key`'s presence.
    Watch {
        /// The key watched.
        key: Cow<'a, str>,
    },
    /// Stop pushing `key`'s presence changes.
    Unwatch {
        /// The key no longer watched.
        key: Cow<'a, str>,
    },
}

/// A JSON object frame: an optional reply id and what it asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The opt-in `"id"`: when present the frame gets exactly one reply.
    pub id: Option<ReplyId<'a>>,
    /// The command, or why the frame cannot be acted on.
    pub command: Result<Command<'a>, Rejection>,
    /// The `"token"` member (Part 5: a registration token), when it is a string. A token
    /// that is not a string is an empty one, which no check accepts.
    pub token: Option<Cow<'a, str>>,
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
    /// `since` is not a string.
    InvalidSince,
    /// `ephemeral` is not a boolean.
    InvalidEphemeral,
    /// `collapse` is not a string of at most [`MAX_COLLAPSE_LENGTH`] bytes.
    InvalidCollapse,
}

impl Rejection {
    /// Every rejection, for metrics.
    pub const ALL: [Rejection; 10] = [
        Rejection::MissingRecipient,
        Rejection::RecipientNotString,
        Rejection::EmptyKey,
        Rejection::KeyTooLong,
        Rejection::MissingMessage,
        Rejection::InvalidId,
        Rejection::LoneSurrogate,
        Rejection::InvalidSince,
        Rejection::InvalidEphemeral,
        Rejection::InvalidCollapse,
    ];
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
            Rejection::InvalidSince => "invalid_since",
            Rejection::InvalidEphemeral => "invalid_ephemeral",
            Rejection::InvalidCollapse => "invalid_collapse",
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
            Rejection::InvalidSince => "since must be a string",
            Rejection::InvalidEphemeral => "ephemeral must be true or false",
            Rejection::InvalidCollapse => "collapse must be a string of at most 64 bytes",
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
    since: Option<&'a RawValue>,
    ephemeral: Option<&'a RawValue>,
    collapse: Option<&'a RawValue>,
    presence: Option<&'a RawValue>,
    watch: Option<&'a RawValue>,
    unwatch: Option<&'a RawValue>,
    token: Option<&'a RawValue>,
}

/// The members of a frame, by name (escapes in names decoded, as JSON requires).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Member {
    RecipientUuid,
    Message,
    Id,
    Since,
    Ephemeral,
    Collapse,
    Presence,
    Watch,
    Unwatch,
    Token,
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
                Member::Since => &mut envelope.since,
                Member::Ephemeral => &mut envelope.ephemeral,
                Member::Collapse => &mut envelope.collapse,
                Member::Presence => &mut envelope.presence,
                Member::Watch => &mut envelope.watch,
                Member::Unwatch => &mut envelope.unwatch,
                Member::Token => &mut envelope.token,
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
    let token = envelope
        .token
        .map(|raw| json_string(raw).ok().flatten().unwrap_or_default());
    Frame::Request(Request { id, command, token })
}

fn is_string_or_number(raw: &RawValue) -> bool {
    matches!(
        raw.get().as_bytes().first(),
        Some(b'"' | b'-' | b'0'..=b'9')
    )
}

fn command<'a>(envelope: &Envelope<'a>, max_key_len: usize) -> Result<Command<'a>, Rejection> {
    if envelope.recipient_uuid.is_none() {
        if let Some(raw_key) = envelope.presence {
            let key = valid_key(raw_key, max_key_len)?;
            return Ok(Command::Presence { key });
        }
        if let Some(raw_key) = envelope.watch {
            let key = valid_key(raw_key, max_key_len)?;
            return Ok(Command::Watch { key });
        }
        if let Some(raw_key) = envelope.unwatch {
            let key = valid_key(raw_key, max_key_len)?;
            return Ok(Command::Unwatch { key });
        }
    }
    let raw_key = envelope.recipient_uuid.ok_or(Rejection::MissingRecipient)?;
    let key = valid_key(raw_key, max_key_len)?;
    let raw_message = envelope.message.ok_or(Rejection::MissingMessage)?;
    let payload = match json_string(raw_message)? {
        Some(text) if text == REGISTER_MESSAGE => {
            let since = match envelope.since {
                None => None,
                Some(raw) => Some(since(raw)?.ok_or(Rejection::InvalidSince)?),
            };
            return Ok(Command::Register { key, since });
        }
        Some(text) => Payload::text(text.into_owned()),
        None => Payload::json(compact_json(raw_message)),
    };
    let ephemeral = match envelope.ephemeral.map(RawValue::get) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Rejection::InvalidEphemeral),
    };
    let collapse = match envelope.collapse {
        None => None,
        Some(raw) => match json_string(raw)? {
            Some(name) if name.len() <= MAX_COLLAPSE_LENGTH => Some(name.into()),
            _ => return Err(Rejection::InvalidCollapse),
        },
    };
    Ok(Command::Deliver {
        to: key,
        message: Outgoing {
            payload,
            ephemeral,
            collapse,
        },
    })
}

/// A key as the protocol allows it: a non-empty string of at most `max_key_len` bytes.
fn valid_key(raw: &RawValue, max_key_len: usize) -> Result<Cow<'_, str>, Rejection> {
    let key = json_string(raw)?.ok_or(Rejection::RecipientNotString)?;
    check_key(&key, max_key_len)?;
    Ok(key)
}

/// Checks a key given outside JSON (an HTTP path): non-empty, at most `max_key_len` bytes.
pub fn check_key(key: &str, max_key_len: usize) -> Result<(), Rejection> {
    if key.is_empty() {
        return Err(Rejection::EmptyKey);
    }
    if key.len() > max_key_len {
        return Err(Rejection::KeyTooLong);
    }
    Ok(())
}

/// A message given as a JSON document (an HTTP body sent as `application/json`): a JSON
/// string is a string message, any other value is delivered as its compact text. `None`
/// when `text` is not JSON, or is a string holding a lone surrogate.
pub fn json_payload(text: &str) -> Option<Payload> {
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    Some(match json_string(raw).ok()? {
        Some(string) => Payload::text(string.into_owned()),
        None => Payload::json(compact_json(raw)),
    })
}

/// A registration's `since`: `"earliest"`, `"latest"` or a cursor. `None` if not a string.
fn since(raw: &RawValue) -> Result<Option<Since>, Rejection> {
    let Some(text) = json_string(raw)? else {
        return Ok(None);
    };
    Ok(Some(match &*text {
        "earliest" => Since::Earliest,
        "latest" => Since::Latest,
        cursor => Position::parse(cursor).map_or(Since::Unknown, Since::After),
    }))
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

/// The reply to a frame (over WebSocket with its `id`; over HTTP as the response body).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplyFrame<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buffered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// What a reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The connection is now registered; with streams on, `replayed` retained messages
    /// (pending ones, or a resume's replay) follow this reply.
    Registered {
        /// How many retained messages follow; `None` with streams off.
        replayed: Option<usize>,
    },
    /// What became of a message. With streams on it says whether the message was kept as
    /// pending and where it was retained; with streams off only the count.
    Delivered {
        /// The publish outcome.
        outcome: Published,
        /// Whether streams are on (and so `buffered` is part of the reply).
        streams: bool,
    },
    /// How many connections are registered under the key asked about.
    Presence(usize),
    /// Done, nothing to report (an unwatch).
    Done,
    /// The frame was rejected.
    Error(Rejection),
    /// The engine could not complete the request.
    Unavailable,
    /// A request refused for a reason outside the WebSocket rejections (an HTTP body
    /// that is not JSON, a registration sent to the publish endpoint).
    Refused(Cow<'static, str>),
}

/// The error text of [`Reply::Unavailable`].
pub const UNAVAILABLE: &str = "cluster unavailable";

impl Reply {
    /// The reply as a frame, with `id` when it answers a WebSocket frame.
    pub fn to_frame<'a>(&'a self, id: Option<ReplyId<'a>>) -> ReplyFrame<'a> {
        let mut frame = ReplyFrame {
            id: id.map(|id| id.0),
            ok: true,
            ..ReplyFrame::default()
        };
        match self {
            Reply::Registered { replayed } => frame.replayed = *replayed,
            Reply::Done => {}
            Reply::Delivered { outcome, streams } => {
                frame.delivered = Some(outcome.delivered);
                if *streams {
                    frame.buffered = Some(outcome.buffered);
                    frame.cursor = outcome.position.as_ref().map(ToString::to_string);
                }
            }
            Reply::Presence(connections) => {
                frame.online = Some(*connections > 0);
                frame.connections = Some(*connections);
            }
            Reply::Error(rejection) => {
                frame.ok = false;
                frame.error = Some(rejection.reason());
            }
            Reply::Unavailable => {
                frame.ok = false;
                frame.error = Some(UNAVAILABLE);
            }
            Reply::Refused(why) => {
                frame.ok = false;
                frame.error = Some(why);
            }
        }
        frame
    }

    /// The reply as JSON text, with `id` when it answers a WebSocket frame.
    pub fn encode(&self, id: Option<ReplyId<'_>>) -> String {
        // Serialising raw values, bools, numbers and strings cannot fail.
        serde_json::to_string(&self.to_frame(id)).unwrap_or_default()
    }
}

/// Encodes `{"id": ID, "ok": ...}` for `reply`.
pub fn encode_reply(id: ReplyId<'_>, reply: &Reply) -> String {
    reply.encode(Some(id))
}

/// Encodes a rejection for a frame whose id was itself invalid: the reply's id is null.
pub fn encode_invalid_id_reply() -> String {
    format!(
        r#"{{"id":null,"ok":false,"error":{}}}"#,
        serde_json::Value::from(Rejection::InvalidId.reason())
    )
}

/// A message as a JSON value: a string message quoted, other JSON as its compact text.
fn payload_json(payload: &Payload) -> Cow<'_, str> {
    let text = payload.as_text().as_str();
    if payload.is_string() {
        Cow::Owned(serde_json::Value::from(text).to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// The frame a resumable registration gets for a message:
/// `{"cursor": "<cursor>", "message": <payload>}`, or for a message without a position
/// (ephemeral) `{"ephemeral": true, "message": <payload>}`.
pub fn encode_envelope(payload: &Payload, position: Option<&Position>) -> String {
    let message = payload_json(payload);
    match position {
        Some(position) => format!(r#"{{"cursor":"{position}","message":{message}}}"#),
        None => format!(r#"{{"ephemeral":true,"message":{message}}}"#),
    }
}

/// A push of a watched key's presence: `{"presence": K, "online": bool, "connections": N}`.
pub fn encode_presence(key: &str, connections: usize) -> String {
    #[derive(Serialize)]
    struct Push<'a> {
        presence: &'a str,
        online: bool,
        connections: usize,
    }
    let push = Push {
        presence: key,
        online: connections > 0,
        connections,
    };
    // Serialising a string, a bool and a number cannot fail.
    serde_json::to_string(&push).unwrap_or_default()
}

/// A presence push as a Server-Sent Event: `event: presence` and the push as its data.
pub fn encode_presence_event(key: &str, connections: usize) -> String {
    format!(
        "event: presence\ndata: {}\n\n",
        encode_presence(key, connections)
    )
}

/// The signal that history before `position` is lost: `{"gap": true, "cursor": ...}`.
pub fn encode_gap(position: &Position) -> String {
    format!(r#"{{"gap":true,"cursor":"{position}"}}"#)
}

/// A message as a Server-Sent Event: `id: <cursor>` (none for a message without a
/// position) and the text as `data:` lines, one per line of the text, as SSE requires.
pub fn encode_event(payload: &Payload, position: Option<&Position>) -> String {
    let text = payload.as_text().as_str();
    let mut event = String::with_capacity(text.len() + 48);
    if let Some(position) = position {
        event.push_str("id: ");
        event.push_str(&position.to_string());
        event.push('\n');
    }
    push_data_lines(&mut event, text);
    event
}

/// The gap signal as a Server-Sent Event: `event: gap`, the cursor as its id and data.
pub fn encode_gap_event(position: &Position) -> String {
    format!(
        "event: gap\nid: {position}\ndata: {}\n\n",
        encode_gap(position)
    )
}

/// Appends `text` as `data:` lines (CR, LF and CRLF all end a line in SSE) and the blank
/// line that ends the event.
fn push_data_lines(event: &mut String, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        event.push_str("data: ");
        event.push_str(&rest[..end]);
        event.push('\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    event.push('\n');
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
                key: "receiver-uuid".into(),
                since: None
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
                message: Outgoing::plain(Payload::text("line\n\"quoted\" ü"))
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
                message: Outgoing::plain(Payload::json(r#"{"a":[1,2,{"b":true}]}"#))
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
                Ok(Command::Deliver { message, .. }) => {
                    assert_eq!(message.payload.as_text().as_str(), expected)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn escaped_key_is_decoded() {
        let r = request(r#"{"recipient_uuid":"a\u0062c","message":"connected"}"#);
        assert_eq!(
            r.command,
            Ok(Command::Register {
                key: "abc".into(),
                since: None
            })
        );
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
    fn ids_are_echoed_exactly() {
        let r = request(r#"{"id": 7, "recipient_uuid":"k","message":"connected"}"#);
        let id = r.id.expect("id");
        assert_eq!(
            encode_reply(id, &Reply::Registered { replayed: None }),
            r#"{"id":7,"ok":true}"#
        );
        let r = request(r#"{"id":"a\"b","recipient_uuid":"k","message":"m"}"#);
        let id = r.id.expect("id");
        assert_eq!(
            encode_reply(
                id,
                &Reply::Delivered {
                    outcome: Published {
                        delivered: 2,
                        overflowed: 0,
                        position: None,
                        buffered: false
                    },
                    streams: false
                }
            ),
            r#"{"id":"a\"b","ok":true,"delivered":2}"#
        );
        assert_eq!(
            encode_reply(id, &Reply::Error(Rejection::MissingMessage)),
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
                message: Outgoing::plain(Payload::text("y"))
            })
        );
        // The last value wins even when it is null (absent) or of another type.
        let r = request(r#"{"id":7,"recipient_uuid":"k","message":"x","message":null}"#);
        assert_eq!(r.command, Err(Rejection::MissingMessage));
        let r = request(r#"{"id":"a","id":null,"recipient_uuid":"k","message":"x"}"#);
        assert_eq!(r.id, None);
        let r = request(r#"{"recipient_uuid":5,"recipient_uuid":"k","message":"connected"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register { since: None, .. })
        ));
        // Escaped member names are the same members.
        let r = request(r#"{"recipient\u005fuuid":"k","mess\u0061ge":"connected"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register { since: None, .. })
        ));
    }

    #[test]
    fn lone_surrogates_are_rejected_the_same_in_keys_and_string_messages() {
        for text in [
            r#"{"id":1,"recipient_uuid":"k\ud800","message":"x"}"#,
            r#"{"id":1,"recipient_uuid":"\udc00","message":"connected"}"#,
            r#"{"id":1,"recipient_uuid":"k","message":"a\ud800b"}"#,
            r#"{"id":1,"recipient_uuid":"k","message":"\ud800\ud800"}"#,
            r#"{"id":1,"presence":"\ud800"}"#,
        ] {
            let r = request(text);
            assert_eq!(r.command, Err(Rejection::LoneSurrogate), "{text}");
            assert_eq!(
                encode_reply(r.id.expect("id"), &Reply::Error(Rejection::LoneSurrogate)),
                r#"{"id":1,"ok":false,"error":"invalid unicode: lone surrogate"}"#
            );
        }
        // A proper pair is one character.
        let r = request(r#"{"recipient_uuid":"k","message":"\ud83d\ude00"}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                message: Outgoing::plain(Payload::text("😀"))
            })
        );
        // Inside a JSON message the escape is passed on as JSON text, which is valid.
        let r = request(r#"{"recipient_uuid":"k","message":{"a":"\ud800"}}"#);
        assert_eq!(
            r.command,
            Ok(Command::Deliver {
                to: "k".into(),
                message: Outgoing::plain(Payload::json(r#"{"a":"\ud800"}"#))
            })
        );
    }

    #[test]
    fn part_3_fields() {
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":"earliest"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register {
                since: Some(Since::Earliest),
                ..
            })
        ));
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":"e1:4"}"#);
        let Ok(Command::Register {
            since: Some(Since::After(p)),
            ..
        }) = r.command
        else {
            panic!("{r:?}")
        };
        assert_eq!(p.to_string(), "e1:4");
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":"bogus"}"#);
        assert!(matches!(
            r.command,
            Ok(Command::Register {
                since: Some(Since::Unknown),
                ..
            })
        ));
        let r = request(r#"{"recipient_uuid":"k","message":"connected","since":5}"#);
        assert_eq!(r.command, Err(Rejection::InvalidSince));

        let r = request(r#"{"recipient_uuid":"k","message":"5%","ephemeral":true,"collapse":"p"}"#);
        let Ok(Command::Deliver { message, .. }) = r.command else {
            panic!("{r:?}")
        };
        assert!(message.ephemeral);
        assert_eq!(message.collapse.as_deref(), Some("p"));
        for (field, rejection) in [
            (r#""ephemeral":"yes""#, Rejection::InvalidEphemeral),
            (r#""ephemeral":1"#, Rejection::InvalidEphemeral),
            (r#""collapse":7"#, Rejection::InvalidCollapse),
        ] {
            let text = format!(r#"{{"recipient_uuid":"k","message":"m",{field}}}"#);
            assert_eq!(request(&text).command, Err(rejection), "{text}");
        }
        let long = format!(
            r#"{{"recipient_uuid":"k","message":"m","collapse":"{}"}}"#,
            "c".repeat(MAX_COLLAPSE_LENGTH + 1)
        );
        assert_eq!(request(&long).command, Err(Rejection::InvalidCollapse));

        let r = request(r#"{"id":1,"presence":"k"}"#);
        assert_eq!(r.command, Ok(Command::Presence { key: "k".into() }));
        let w = request(r#"{"id":2,"watch":"k\u00e9","token":"t"}"#);
        assert_eq!(
            w.command,
            Ok(Command::Watch {
                key: "k\u{e9}".into()
            })
        );
        assert_eq!(w.token.as_deref(), Some("t"));
        let u = request(r#"{"id":3,"unwatch":"k"}"#);
        assert_eq!(u.command, Ok(Command::Unwatch { key: "k".into() }));
        assert_eq!(Reply::Done.encode(u.id), r#"{"id":3,"ok":true}"#);
        assert_eq!(
            request(r#"{"id":4,"watch":""}"#).command,
            Err(Rejection::EmptyKey)
        );
        assert_eq!(
            encode_presence("a\"b", 2),
            r#"{"presence":"a\"b","online":true,"connections":2}"#
        );
        assert_eq!(
            encode_presence_event("k", 0),
            "event: presence\ndata: {\"presence\":\"k\",\"online\":false,\"connections\":0}\n\n"
        );
        assert_eq!(
            Reply::Presence(2).encode(r.id),
            r#"{"id":1,"ok":true,"online":true,"connections":2}"#
        );
        let outcome = Published {
            delivered: 0,
            overflowed: 0,
            position: Some(Position::new("e1".into(), 3)),
            buffered: true,
        };
        assert_eq!(
            Reply::Delivered {
                outcome,
                streams: true
            }
            .encode(None),
            r#"{"ok":true,"delivered":0,"buffered":true,"cursor":"e1:3"}"#
        );
        assert_eq!(
            Reply::Unavailable.encode(None),
            r#"{"ok":false,"error":"cluster unavailable"}"#
        );
    }

    #[test]
    fn http_keys_and_json_bodies() {
        assert_eq!(check_key("k", 4), Ok(()));
        assert_eq!(check_key("", 4), Err(Rejection::EmptyKey));
        assert_eq!(check_key("12345", 4), Err(Rejection::KeyTooLong));
        assert_eq!(json_payload(" \"a\\nb\" "), Some(Payload::text("a\nb")));
        assert_eq!(
            json_payload("{ \"z\": 1.50 }"),
            Some(Payload::json("{\"z\":1.50}"))
        );
        assert_eq!(json_payload("{nope"), None);
    }

    #[test]
    fn envelopes_gaps_and_events() {
        let at = Position::new("e1".into(), 7);
        let text = Payload::text("say \"hi\"");
        let json = Payload::json(r#"{"p":1}"#);
        assert_eq!(
            encode_envelope(&text, Some(&at)),
            r#"{"cursor":"e1:7","message":"say \"hi\""}"#
        );
        assert_eq!(
            encode_envelope(&json, None),
            r#"{"ephemeral":true,"message":{"p":1}}"#
        );
        assert_eq!(encode_gap(&at), r#"{"gap":true,"cursor":"e1:7"}"#);
        assert_eq!(
            encode_event(&json, Some(&at)),
            "id: e1:7\ndata: {\"p\":1}\n\n"
        );
        assert_eq!(
            encode_event(&Payload::text("a\r\nb\rc\nd"), None),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encode_event(&Payload::text(""), None), "data: \n\n");
        assert!(encode_gap_event(&at).starts_with("event: gap\nid: e1:7\ndata: {"));
    }
}
