//! Parsing one inbound text frame into what it asks for, borrowing from the frame.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{MAX_COLLAPSE_LENGTH, REGISTER_MESSAGE};
use crate::message::{Outgoing, Payload, Position, Since};

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
pub struct ReplyId<'a>(pub(super) &'a RawValue);

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
