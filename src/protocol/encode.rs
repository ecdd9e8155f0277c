//! Encoding what the relay sends besides messages themselves: replies, envelopes with
//! cursors, presence pushes, gap signals, and their Server-Sent Events forms.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use super::parse::{Rejection, ReplyId};
use crate::message::{Payload, Position, Published};

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
