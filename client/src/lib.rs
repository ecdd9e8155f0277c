//! A client for notify-relay (and any server of its protocol, docs/PROTOCOL.md).
//!
//! Producers [`Client::send`] to a key and learn how many connections received the
//! message, or that the relay kept it for the next registration; consumers
//! [`Client::register`] and read [`Client::next_message`], or [`Client::resume`] from a
//! cursor and read [`Client::next_event`], losing nothing across reconnects.
//!
//! ```no_run
//! # async fn demo() -> Result<(), notify_relay_client::Error> {
//! use notify_relay_client::{Client, Event, Payload};
//! let mut client = Client::connect("ws://127.0.0.1:8765/").await?;
//! let sent = client.send("3f2a…", Payload::Text("50% done".into())).await?;
//! println!("handed to {} connection(s), kept: {}", sent.delivered, sent.buffered);
//!
//! let mut tab = Client::connect("ws://127.0.0.1:8765/").await?;
//! tab.resume("3f2a…", "earliest").await?;
//! while let Event::Message { text, cursor } = tab.next_event().await? {
//!     println!("{text} (resume after {cursor:?})");
//! }
//! # Ok(()) }
//! ```
//!
//! `wss://` relays are checked against the system's trusted CAs; a relay with a
//! certificate from a private CA (or self-signed) is reached with
//! [`ClientOptions::ca_cert`] and [`Client::connect_with`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod tls;
mod token;

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{client_async, WebSocketStream};
use tokio_util::either::Either;

pub use backoff::Backoff;
pub use token::{registration_token, sign as sign_token};

/// The relay address used when none is given (the original's port, this machine).
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8765/";

/// How long [`Client::close`] waits for the relay's half of the close handshake.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What to send.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Delivered verbatim as a text frame.
    Text(String),
    /// A JSON value, delivered as its compact text with key order and numbers as given.
    Json(Box<RawValue>),
}

impl Payload {
    /// A JSON payload from its text; fails when `text` is not JSON.
    pub fn json(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(Payload::Json)
    }

    /// A JSON payload from a value.
    pub fn from_value(value: &Value) -> Self {
        // A Value always serialises to valid JSON.
        match RawValue::from_string(value.to_string()) {
            Ok(raw) => Payload::Json(raw),
            Err(_) => Payload::Text(value.to_string()),
        }
    }

    fn to_raw(&self) -> Result<Box<RawValue>, Error> {
        match self {
            Payload::Json(raw) => Ok(raw.clone()),
            Payload::Text(text) => serde_json::to_string(text)
                .and_then(RawValue::from_string)
                .map_err(|e| Error::Protocol(e.to_string())),
        }
    }
}

/// A request frame: a delivery or a registration, with the id that asks for a reply.
#[derive(Serialize)]
struct Request<'a> {
    id: u64,
    recipient_uuid: &'a str,
    message: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ephemeral: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    collapse: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

/// How a message is kept (see [`Client::send_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// For live connections only: never kept for a later registration (typing
    /// indicators). Its [`Sent`] has no cursor.
    pub ephemeral: bool,
    /// Keep only the newest message of this name for replay (progress ticks): retaining
    /// it drops the key's earlier retained message with the same name. At most 64 bytes.
    pub collapse: Option<String>,
}

/// The optional members of a request frame.
#[derive(Default)]
struct Extra<'a> {
    since: Option<&'a str>,
    ephemeral: bool,
    collapse: Option<&'a str>,
    token: Option<&'a str>,
}

/// What became of a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Live connections it was handed to.
    pub delivered: u64,
    /// Nobody was connected: the relay kept it as pending for the next registration.
    pub buffered: bool,
    /// Where the relay retained it (`None` when the relay keeps no streams).
    pub cursor: Option<String>,
}

/// What a resumable registration receives (see [`Client::resume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message: its text (a string message as is, other JSON as its compact text) and
    /// its cursor (`None` for an ephemeral message, which has no position).
    Message {
        /// The message text.
        text: String,
        /// Where to resume after it.
        cursor: Option<String>,
    },
    /// History before `cursor` was lost (evicted, or the relay restarted): resume from
    /// `cursor` to lose nothing more.
    Gap {
        /// Where continuity holds from.
        cursor: String,
    },
}

/// A key's presence, as a watch answers and pushes it (see [`Client::watch`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Presence {
    /// The key.
    #[serde(rename = "presence")]
    pub key: String,
    /// Whether any connection is registered under it.
    pub online: bool,
    /// How many connections are registered under it (on every relay).
    pub connections: u64,
}

/// The envelope frame of a resumable registration.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    message: Option<Box<RawValue>>,
    #[serde(default)]
    gap: bool,
}

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The relay's address is not a `ws://` or `wss://` URL.
    Url(String),
    /// The relay could not be reached, or the TLS or WebSocket handshake failed.
    Connect(String),
    /// The relay's TLS certificate was refused: not issued by a trusted CA, not valid
    /// for the URL's host, expired... (rustls' reason is in the text).
    Certificate(String),
    /// TLS could not be set up: the CA certificate file cannot be read or holds no
    /// certificate, or there is no trusted CA at all.
    Tls(String),
    /// The connection ended.
    Closed(String),
    /// The relay refused the frame (`{"ok": false}`), with its reason.
    Rejected(String),
    /// The relay answered something this client does not understand.
    Protocol(String),
    /// The relay did not answer in time.
    Timeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Url(why) => write!(f, "bad relay URL: {why}"),
            Error::Connect(why) => write!(f, "cannot reach the relay: {why}"),
            Error::Certificate(why) => write!(f, "cannot reach the relay securely: {why}"),
            Error::Tls(why) => write!(f, "cannot set up TLS: {why}"),
            Error::Closed(why) => write!(f, "connection closed: {why}"),
            Error::Rejected(why) => write!(f, "the relay rejected the frame: {why}"),
            Error::Protocol(why) => write!(f, "unexpected answer from the relay: {why}"),
            Error::Timeout => f.write_str("the relay did not answer in time"),
        }
    }
}

impl std::error::Error for Error {}

/// Checks that `url` is a relay address this client can connect to:
/// `ws://HOST[:PORT]/PATH`, or `wss://` for a relay that serves TLS.
pub fn check_url(url: &str) -> Result<(), Error> {
    parse_url(url).map(drop)
}

/// Checks that `since` is a start [`Client::resume`] can give the relay: `"earliest"`,
/// `"latest"`, or a cursor of the form the relay issues (`EPOCH:SEQ`, the epoch letters,
/// digits and dots, as the relay's `Position::parse` reads it). The relay takes any other
/// text as a cursor it cannot read and answers with a gap and a full replay, so a typo
/// is better caught here; the error says what is valid.
pub fn check_since(since: &str) -> Result<(), String> {
    if matches!(since, "earliest" | "latest") {
        return Ok(());
    }
    let cursor = since.rsplit_once(':').filter(|(epoch, seq)| {
        !epoch.is_empty()
            && epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
            && seq.parse::<u64>().is_ok()
    });
    match cursor {
        Some(_) => Ok(()),
        None => Err(
            "expected `earliest`, `latest` or a cursor the relay gave (EPOCH:SEQ, e.g. \
             k3x9f2a01b7c.0:5)"
                .to_owned(),
        ),
    }
}

/// Where a relay is: its URL, as checked by [`check_url`].
struct Address {
    url: String,
    /// The host without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    secure: bool,
}

fn parse_url(url: &str) -> Result<Address, Error> {
    const EXAMPLE: &str = "expected ws://HOST:PORT/ or wss://HOST:PORT/, e.g. ws://127.0.0.1:8765/";
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::Url(format!("{url:?} is not a URL; {EXAMPLE}")))?;
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        Some(other) => {
            return Err(Error::Url(format!(
                "{url}: the scheme is {other}://; {EXAMPLE}"
            )))
        }
        None => return Err(Error::Url(format!("{url:?} is not a ws:// URL; {EXAMPLE}"))),
    };
    let host = match uri.host() {
        Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
        _ => return Err(Error::Url(format!("{url}: no host; {EXAMPLE}"))),
    };
    let port = uri
        .port_u16()
        .unwrap_or(if secure { WSS_PORT } else { WS_PORT });
    Ok(Address {
        url: url.to_owned(),
        host: host.to_owned(),
        port,
        secure,
    })
}

/// The port of a `ws://` URL without one.
const WS_PORT: u16 = 80;
/// The port of a `wss://` URL without one.
const WSS_PORT: u16 = 443;

/// How [`Client::connect_with`] connects.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientOptions {
    /// A PEM file of CA certificates trusted for `wss://` besides the system's.
    pub ca_cert: Option<PathBuf>,
}

impl ClientOptions {
    /// Trusts the CA certificates in the PEM file `path` too (for `wss://`), e.g. the
    /// private CA or the self-signed certificate of a relay started with `--tls-cert`.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }
}

/// A relay address with what it takes to reach it (for `wss://`, the TLS configuration
/// with its trusted CAs), prepared once for many connections: a listener that
/// reconnects neither reads the CA files again nor learns of a bad one only then.
pub struct Connector {
    address: Address,
    /// For `wss://`: the TLS client and the name the certificate must be valid for.
    tls: Option<(tls::TlsClient, ServerName<'static>)>,
}

impl Connector {
    /// Checks `url` (see [`check_url`]) and, for `wss://`, loads the trusted CAs: the
    /// system's and [`ClientOptions::ca_cert`]. A CA file that cannot be used is
    /// [`Error::Tls`]; `options` are not used for `ws://`.
    pub fn new(url: &str, options: &ClientOptions) -> Result<Self, Error> {
        let address = parse_url(url)?;
        let tls = if address.secure {
            let ca_cert = options.ca_cert.clone();
            let config = tls::client_config(ca_cert.as_deref())?;
            let name = tls::server_name(&address.host)?;
            Some((tls::TlsClient { config, ca_cert }, name))
        } else {
            None
        };
        Ok(Connector { address, tls })
    }

    /// Opens a connection and reads the relay's greeting.
    pub async fn connect(&self) -> Result<Client, Error> {
        let Address {
            url, host, port, ..
        } = &self.address;
        let tcp = TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| Error::Connect(format!("{host}:{port}: {e}")))?;
        // Frames are small and each waits for its reply: no Nagle delay.
        tcp.set_nodelay(true)
            .map_err(|e| Error::Connect(e.to_string()))?;
        let stream = match &self.tls {
            None => Either::Left(tcp),
            Some((tls, name)) => Either::Right(tls.handshake(name.clone(), tcp).await?),
        };
        let (ws, _) = client_async(url.as_str(), stream)
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        Client::greeted(ws).await
    }
}

/// How long a request waits for its reply by default.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's transport: plain TCP (`ws://`) or TLS over it (`wss://`).
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// One connection to a relay.
pub struct Client {
    ws: WebSocketStream<Stream>,
    /// Messages that arrived while a reply was awaited, oldest first.
    pending: VecDeque<String>,
    /// The id of the next request.
    next_id: u64,
    /// How long a request waits for its reply.
    reply_timeout: Duration,
    /// The registration token sent with registrations (access control), if any.
    token: Option<String>,
}

impl Client {
    /// Connects to `url` (see [`check_url`]) and reads the relay's greeting. A
    /// `wss://` relay must have a certificate from a CA the system trusts.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, &ClientOptions::default()).await
    }

    /// Like [`Client::connect`], as `options` say (e.g. trusting a private CA). To
    /// connect more than once, prepare a [`Connector`] instead.
    pub async fn connect_with(url: &str, options: &ClientOptions) -> Result<Self, Error> {
        Connector::new(url, options)?.connect().await
    }

    /// A client on the fresh connection `ws`, once the relay's greeting arrived.
    async fn greeted(ws: WebSocketStream<Stream>) -> Result<Self, Error> {
        let mut client = Client {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            token: None,
        };
        let greeting = tokio::time::timeout(client.reply_timeout, client.next_text())
            .await
            .map_err(|_| Error::Timeout)??;
        if greeting.starts_with('{') {
            return Err(Error::Protocol(format!(
                "expected a greeting, got {greeting}"
            )));
        }
        Ok(client)
    }

    /// Sets the registration token [`Client::register`] and [`Client::resume`] send: a
    /// JWT for the key, needed by a relay started with `--auth-secret` (see
    /// [`registration_token`]). A refused token is [`Error::Rejected`] `"unauthorized"`.
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// Sets how long [`Client::send`] and [`Client::register`] wait for their reply.
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout;
    }

    /// Sends `payload` to every connection registered under `key`; says how many
    /// received it and whether the relay kept it for a later registration.
    pub async fn send(&mut self, key: &str, payload: Payload) -> Result<Sent, Error> {
        self.send_with(key, payload, &SendOptions::default()).await
    }

    /// Like [`Client::send`], ephemeral or collapsible as `options` say.
    pub async fn send_with(
        &mut self,
        key: &str,
        payload: Payload,
        options: &SendOptions,
    ) -> Result<Sent, Error> {
        let message = payload.to_raw()?;
        let extra = Extra {
            ephemeral: options.ephemeral,
            collapse: options.collapse.as_deref(),
            ..Extra::default()
        };
        let reply = self.request(key, &message, extra).await?;
        let delivered = reply["delivered"]
            .as_u64()
            .ok_or_else(|| Error::Protocol(format!("no delivered count in {reply}")))?;
        Ok(Sent {
            delivered,
            buffered: reply["buffered"] == true,
            cursor: reply["cursor"].as_str().map(str::to_owned),
        })
    }

    /// Registers this connection under `key` (moving it from any previous key). Messages
    /// that reached nobody before arrive first, then live ones ([`Client::next_message`]).
    pub async fn register(&mut self, key: &str) -> Result<(), Error> {
        let connected = Payload::Text("connected".into()).to_raw()?;
        let token = self.token.clone();
        let extra = Extra {
            token: token.as_deref(),
            ..Extra::default()
        };
        self.request(key, &connected, extra).await.map(drop)
    }

    /// Registers under `key`, resuming from `since`: a cursor from an earlier
    /// [`Event::Message`] or [`Event::Gap`], `"earliest"` (everything the relay retains)
    /// or `"latest"` (nothing old); [`check_since`] tells a typo from these. Read what
    /// arrives with [`Client::next_event`].
    pub async fn resume(&mut self, key: &str, since: &str) -> Result<(), Error> {
        let connected = Payload::Text("connected".into()).to_raw()?;
        let token = self.token.clone();
        let extra = Extra {
            since: Some(since),
            token: token.as_deref(),
            ..Extra::default()
        };
        self.request(key, &connected, extra).await.map(drop)
    }

    /// The next message or gap of a resumable registration.
    pub async fn next_event(&mut self) -> Result<Event, Error> {
        let text = self.next_message().await?;
        let envelope: Envelope = serde_json::from_str(&text)
            .map_err(|e| Error::Protocol(format!("{e}: expected an envelope, got {text}")))?;
        if envelope.gap {
            let cursor = envelope
                .cursor
                .ok_or_else(|| Error::Protocol(format!("a gap without a cursor: {text}")))?;
            return Ok(Event::Gap { cursor });
        }
        let message = envelope
            .message
            .ok_or_else(|| Error::Protocol(format!("an envelope without a message: {text}")))?;
        let raw = message.get();
        let text = match serde_json::from_str::<String>(raw) {
            Ok(string) => string,
            Err(_) => raw.to_owned(),
        };
        Ok(Event::Message {
            text,
            cursor: envelope.cursor,
        })
    }

    /// The next message addressed to this connection's key.
    pub async fn next_message(&mut self) -> Result<String, Error> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(message);
        }
        self.next_text().await
    }

    /// Closes the connection with a Close handshake (1000), waiting at most
    /// [`CLOSE_TIMEOUT`] for the relay's answer, so the relay counts a clean close
    /// rather than a reset. Every exit of a program should go through here.
    pub async fn close(mut self) -> Result<(), Error> {
        let handshake = async {
            self.ws
                .close(None)
                .await
                .map_err(|e| Error::Closed(e.to_string()))?;
            // The relay answers with its Close frame; the stream ends after it.
            while let Some(Ok(_)) = self.ws.next().await {}
            Ok(())
        };
        tokio::time::timeout(CLOSE_TIMEOUT, handshake)
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Watches `key`'s presence: returns its state now; [`Client::next_presence`] then
    /// reads every change. Sends the token set by [`Client::set_token`] (which must be
    /// for `key` on a relay with `--auth-secret`).
    pub async fn watch(&mut self, key: &str) -> Result<Presence, Error> {
        let token = self.token.clone();
        self.watch_with(key, token.as_deref()).await
    }

    /// Like [`Client::watch`], with `token` for this key.
    pub async fn watch_with(&mut self, key: &str, token: Option<&str>) -> Result<Presence, Error> {
        let mut frame = json!({ "watch": key });
        if let Some(token) = token {
            frame["token"] = json!(token);
        }
        let reply = self.request_frame(frame).await?;
        Ok(Presence {
            key: key.to_owned(),
            online: reply["online"] == true,
            connections: reply["connections"]
                .as_u64()
                .ok_or_else(|| Error::Protocol(format!("no connections count in {reply}")))?,
        })
    }

    /// The next presence push of a watched key.
    pub async fn next_presence(&mut self) -> Result<Presence, Error> {
        let text = self.next_message().await?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Protocol(format!("{e}: expected a presence push, got {text}")))
    }

    /// Sends `frame` (a JSON object) with a fresh id; returns the `{"ok": true}` reply.
    async fn request_frame(&mut self, mut frame: Value) -> Result<Value, Error> {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| Error::Closed(e.to_string()))?;
        let timeout = self.reply_timeout;
        tokio::time::timeout(timeout, self.reply_to(id))
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Sends a frame to `key` with a fresh id; returns the matching `{"ok": true}` reply.
    async fn request(
        &mut self,
        key: &str,
        message: &RawValue,
        extra: Extra<'_>,
    ) -> Result<Value, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = serde_json::to_string(&Request {
            id,
            recipient_uuid: key,
            message,
            since: extra.since,
            ephemeral: extra.ephemeral,
            collapse: extra.collapse,
            token: extra.token,
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        self.ws
            .send(Message::text(frame))
            .await
            .map_err(|e| Error::Closed(e.to_string()))?;
        let timeout = self.reply_timeout;
        tokio::time::timeout(timeout, self.reply_to(id))
            .await
            .map_err(|_| Error::Timeout)?
    }

    async fn reply_to(&mut self, id: u64) -> Result<Value, Error> {
        loop {
            let text = self.next_text().await?;
            // A reply is a JSON object with our id and "ok"; anything else is a message.
            let reply = serde_json::from_str::<Value>(&text)
                .ok()
                .filter(|v| v.get("id") == Some(&json!(id)) && v.get("ok").is_some());
            match reply {
                Some(reply) if reply["ok"] == true => return Ok(reply),
                Some(reply) => {
                    let why = reply["error"].as_str().unwrap_or("no reason given");
                    return Err(Error::Rejected(why.to_owned()));
                }
                None => self.pending.push_back(text),
            }
        }
    }

    async fn next_text(&mut self) -> Result<String, Error> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or_else(
                        || "no close code".to_owned(),
                        |f| format!("{} {}", u16::from(f.code), f.reason),
                    );
                    return Err(Error::Closed(why));
                }
                Some(Ok(_)) => continue,
                Some(Err(tungstenite::Error::ConnectionClosed)) | None => {
                    return Err(Error::Closed("end of stream".into()))
                }
                Some(Err(e)) => return Err(Error::Closed(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_since;

    #[test]
    fn since_is_earliest_latest_or_a_relay_cursor() {
        for good in [
            "earliest",
            "latest",
            "k3x9f2a01b7c.0:5",
            "e:0",
            "A1.b2:18446744073709551615",
        ] {
            assert_eq!(check_since(good), Ok(()), "{good:?}");
        }
        for bad in [
            "", "lastest", "Earliest", ":", "e:", ":5", "e:-1", "e:x", "e f:1", "e:1:2", "-",
        ] {
            assert!(check_since(bad).is_err(), "{bad:?}");
        }
    }
}
