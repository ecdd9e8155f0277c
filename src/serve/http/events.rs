//! `GET /events/<KEY>`: a key's messages as Server-Sent Events, for `EventSource`; and
//! `GET /presence/<KEY>` asked for as `text/event-stream`: a watch of the key's presence,
//! its state now and then every change, as `event: presence` events.
//!
//! An SSE subscriber is a connection like a WebSocket one: it holds a connection slot, is a
//! peer under the key (presence, `delivered`), has the same bounded outbox (past it, the
//! stream is cut as a slow consumer) and ends on drain. Each message is an event whose
//! `id:` is its cursor, so the browser's own reconnect (`Last-Event-ID`) resumes it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use log::{info, warn};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{interval_at, Instant, Interval};
use tokio_util::sync::CancellationToken;

use super::{check_token, json, method_not_allowed, path_key, Body};
use crate::delivery::engine::{Preamble, Start};
use crate::message::{Position, Since};
use crate::observability::log_text::escaped;
use crate::observability::metrics::CloseReason;
use crate::peer::outbox::{Drained, OutboxLimits};
use crate::peer::registry::{Framing, Peer};
use crate::protocol::{encode_presence_event, Reply};
use crate::state::RelayState;

/// The comment line that keeps an idle stream (and the proxies on its way) alive.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// Sent first: how long a browser waits before reconnecting, and the headers' flush.
const PREAMBLE: &[u8] = b"retry: 2000\n: connected\n\n";

/// What the handler needs besides the request.
pub(super) struct Subscriber {
    /// The client, for logs.
    pub remote: SocketAddr,
    /// The connection's share of `--max-connections`, held while the stream is open.
    pub _slot: OwnedSemaphorePermit,
    /// Its place in its client IP's `--max-connections-per-ip`, when that is set.
    pub _per_ip: Option<crate::policy::limits::IpSlot>,
    /// Cancelled when the relay drains.
    pub shutdown: CancellationToken,
    /// Cancelled to cut the HTTP connection (a slow consumer), since a stalled write
    /// never polls the body again.
    pub abort: CancellationToken,
}

/// What an event stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Streamed {
    /// The key's messages (`/events/<KEY>`): the stream is a subscriber under the key.
    Messages,
    /// The key's presence (`/presence/<KEY>`): the stream watches the key.
    Presence,
}

/// Whether a request asks for a Server-Sent Events stream.
pub(super) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Serves `GET /events/<KEY>`, or a presence stream (`encoded` is the percent-encoded
/// key).
pub(super) async fn serve(
    state: Arc<RelayState>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    encoded: &str,
    subscriber: Subscriber,
    streamed: Streamed,
) -> Response<Body> {
    if *method != Method::GET {
        return method_not_allowed("GET");
    }
    // Shared with the engine's entry for the key, as a WebSocket subscriber's is.
    let key: Arc<str> = match path_key(encoded, state.config.max_key_length) {
        Ok(key) => key.into(),
        Err(refused) => return *refused,
    };
    if let Err(refusal) = check_token(&state, headers, query, &key) {
        return *refusal;
    }
    let peer = Peer::new(OutboxLimits::from_config(&state.config));
    let started = match streamed {
        Streamed::Messages => {
            let since = starting_point(headers, query);
            let start = Start::Events(since);
            state.engine.subscribe(&key, &peer, start, None).await
        }
        Streamed::Presence => {
            peer.set_framing(Framing::Events);
            let first: Preamble<'_> =
                Box::new(|connections| encode_presence_event(&key, connections).into());
            state.engine.watch(&key, &peer, Some(first)).await
        }
    };
    if started.is_err() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Reply::Unavailable.to_frame(None),
        );
    }
    if streamed == Streamed::Messages {
        state.metrics.event_streams.inc();
    }
    // A client that stops reading stalls hyper's write, and the body is not polled again:
    // this watcher cuts the connection when the outbox overflows meanwhile.
    let done = CancellationToken::new();
    tokio::spawn(cut_when_overflowed(
        Arc::clone(&peer),
        subscriber.abort.clone(),
        done.clone(),
    ));
    let what = match streamed {
        Streamed::Messages => "subscribed to",
        Streamed::Presence => "watching presence of",
    };
    info!(
        "events {} from {} {} {}",
        peer.id,
        subscriber.remote,
        what,
        escaped(&key)
    );
    let every = state.config.ping_interval;
    let stream = EventStream {
        key,
        streamed,
        peer,
        state,
        keep_alive: interval_at(Instant::now() + every, every),
        queued: Default::default(),
        started: false,
        subscriber,
        done,
    };
    let body = StreamBody::new(stream::unfold(stream, EventStream::next_chunk));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Where a subscription starts: `Last-Event-ID` (the browser's reconnect, the newer
/// position) wins over `?since=`; with neither, the key's pending messages, as for a
/// plain registration.
fn starting_point(headers: &HeaderMap, query: Option<&str>) -> Option<Since> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let since_param = || {
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(name, _)| name == "since")
            .map(|(_, value)| value.into_owned())
    };
    let since = match last_event_id {
        Some(id) => id.to_owned(),
        None => since_param()?,
    };
    Some(match since.as_str() {
        "earliest" => Since::Earliest,
        "latest" => Since::Latest,
        cursor => Position::parse(cursor).map_or(Since::Unknown, Since::After),
    })
}

/// One open event stream: the subscriber's outbox, read into the response body.
struct EventStream {
    key: Arc<str>,
    /// Messages or presence.
    streamed: Streamed,
    peer: Arc<Peer>,
    state: Arc<RelayState>,
    keep_alive: Interval,
    /// Events taken from the outbox, not yet handed to hyper.
    queued: std::collections::VecDeque<tokio_tungstenite::tungstenite::Utf8Bytes>,
    /// Whether the preamble went out.
    started: bool,
    subscriber: Subscriber,
    /// Ends the overflow watcher.
    done: CancellationToken,
}

/// Cancels `abort` if `peer`'s outbox overflows before `done`.
async fn cut_when_overflowed(peer: Arc<Peer>, abort: CancellationToken, done: CancellationToken) {
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = peer.outbox.overflow() => {
                if peer.outbox.is_overflowed() {
                    warn!("events {}: closed by the relay (slow_consumer)", peer.id);
                    abort.cancel();
                    return;
                }
            }
        }
    }
}

type Chunk = Result<Frame<Bytes>, Infallible>;

impl EventStream {
    /// The next piece of the body; `None` ends the stream (drain, slow consumer).
    async fn next_chunk(mut self) -> Option<(Chunk, Self)> {
        if !self.started {
            self.started = true;
            return Some((Ok(Frame::data(Bytes::from_static(PREAMBLE))), self));
        }
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some((Ok(Frame::data(Bytes::from(event))), self));
            }
            tokio::select! {
                () = self.subscriber.shutdown.cancelled() => return None,
                _ = self.keep_alive.tick() => {
                    return Some((Ok(Frame::data(Bytes::from_static(KEEP_ALIVE))), self));
                }
                () = self.peer.outbox.ready() => match self.peer.outbox.take() {
                    Drained::Frames(frames) => self.queued = frames,
                    Drained::Overflowed => return None,
                },
            }
        }
    }
}

impl Drop for EventStream {
    /// Leaves the key however the stream ended: drained, cut, or the client went away.
    fn drop(&mut self) {
        self.done.cancel();
        let overflowed = self.peer.outbox.is_overflowed();
        self.peer.outbox.close();
        match self.streamed {
            Streamed::Messages => {
                self.state.engine.unsubscribe(&self.key, &self.peer);
                self.state.metrics.event_streams.dec();
            }
            Streamed::Presence => self.state.engine.unwatch(&self.key, &self.peer),
        }
        if overflowed {
            self.subscriber.abort.cancel();
            self.state.metrics.closed(CloseReason::SlowConsumer);
        }
        info!("events {} closed", self.peer.id);
    }
}
