//! HTTP on the relay's port (hyper): WebSocket handshakes on any path, `/healthz`
//! (liveness), `/readyz` (readiness), `/metrics`, a short explanation at `/` for
//! browsers, and 404 for everything else.
//!
//! Every connection reads at most [`MAX_REQUEST_HEAD_BYTES`] of request headers (hyper
//! answers 431 past it) within `--handshake-timeout`. A connection that arrived while
//! the relay was full holds an overflow place (see [`crate::capacity`]): it is served
//! one request without keep-alive, so `/healthz`, `/readyz` and `/metrics` answer at
//! capacity while an upgrade gets 503.

pub mod handshake;

use std::convert::Infallible;
use std::future::{pending, ready, Ready};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::Authority;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, error, warn};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capacity::Admission;
use crate::connection::{self, Socket};
use crate::log_text::escaped;
use crate::metrics::{HandshakeRejection, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::read_ahead::ReadAhead;
use crate::state::RelayState;
use handshake::{BadHandshake, WEBSOCKET_VERSION};

type Body = Full<Bytes>;

/// Largest request header section (request line and headers) read; hyper answers 431
/// past it. Node.js's default, which browsers' WebSocket handshakes (cookies included)
/// live with. A pending handshake holds at most this much, not hyper's default 400 KiB.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// The paths served over plain HTTP (GET and HEAD).
const ROUTES: [&str; 4] = ["/", "/healthz", "/readyz", "/metrics"];
/// The `Allow` header of a 405 on those paths.
const ALLOWED_METHODS: &str = "GET, HEAD";

/// Serves one accepted TCP connection until it closes or is upgraded.
///
/// `admission` is the connection's slot (it may become a WebSocket), or its overflow
/// place when the relay was full (one request, no keep-alive, closed early when a newer
/// connection needs the place).
pub(crate) async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    state: Arc<RelayState>,
    admission: Admission,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let (slot, overflow) = match admission {
        Admission::Slot(slot) => (Some(slot), None),
        Admission::Overflow(place) => (None, Some(place)),
    };
    let routes = Routes {
        remote,
        state: Arc::clone(&state),
        slot: Mutex::new(slot),
        shutdown: shutdown.clone(),
        tracker,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A client must send its request headers in time: idle sockets and slow
        // handshakes do not get to hold a connection slot.
        .header_read_timeout(state.config.handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(overflow.is_none());
    let mut conn = pin!(builder
        .serve_connection(TokioIo::new(tcp), routes)
        .with_upgrades());
    let evicted = async {
        match &overflow {
            Some(place) => place.evicted().await,
            None => pending().await,
        }
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = evicted => {
            state.metrics.overflow_evicted.inc();
            debug!("closing {remote}: it arrived at max-connections and a newer connection needs its place");
            return;
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        if error.is_parse_too_large() {
            state
                .metrics
                .handshake_rejected(HandshakeRejection::HeadersTooLarge);
            debug!("431 to {remote}: request headers over {MAX_REQUEST_HEAD_BYTES} bytes");
        } else {
            debug!("http connection from {remote}: {error}");
        }
    }
}

/// The request handler of one TCP connection.
struct Routes {
    /// The client, for logs.
    remote: SocketAddr,
    /// Shared relay state.
    state: Arc<RelayState>,
    /// The connection slot, moved into the WebSocket task on upgrade; `None` when the
    /// connection arrived at capacity.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Passed to the WebSocket task so it can drain on shutdown.
    shutdown: CancellationToken,
    /// Tracks the WebSocket task so shutdown waits for it.
    tracker: TaskTracker,
}

impl Service<Request<Incoming>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        ready(Ok(self.respond(request)))
    }
}

impl Routes {
    fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        if handshake::wants_websocket(request.headers()) {
            return self.upgrade(request);
        }
        let path = request.uri().path();
        if !ROUTES.contains(&path) {
            return text(StatusCode::NOT_FOUND, NOT_FOUND_TEXT);
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            return response;
        }
        // hyper leaves the body out of HEAD responses and keeps their Content-Length.
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.readiness(),
            "/metrics" => self.metrics(),
            _ => about(request.headers()),
        }
    }

    /// `/readyz`: 200 while a new WebSocket connection would be accepted, else 503 with
    /// one reason per line.
    fn readiness(&self) -> Response<Body> {
        let mut reasons = self.state.readiness.reasons();
        if !self.holds_slot() && !self.state.capacity.has_free_slot() {
            reasons.push(format!(
                "full: {} connections is the --max-connections limit",
                self.state.capacity.limit()
            ));
        }
        if reasons.is_empty() {
            return text(StatusCode::OK, "ready\n");
        }
        let mut body = String::from("not ready\n");
        for reason in reasons {
            body.push_str(&reason);
            body.push('\n');
        }
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }

    fn metrics(&self) -> Response<Body> {
        let metrics = &self.state.metrics;
        metrics.keys.set(self.state.router.key_count() as i64);
        let mut response = Response::new(Body::from(metrics.encode()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        );
        response
    }

    /// Answers a WebSocket handshake (RFC 6455 section 4.2) and starts the connection
    /// task, which takes over the socket once hyper has sent the 101.
    fn upgrade(&self, mut request: Request<Incoming>) -> Response<Body> {
        let accept = match handshake::accept_key(&request) {
            Ok(accept) => accept,
            Err(bad) => return self.refuse_handshake(&request, bad),
        };
        if self.state.readiness.is_draining() {
            self.state.metrics.connections_rejected.inc();
            debug!("refusing {}: draining", self.remote);
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Failed to open a WebSocket connection: the relay is shutting down.\n",
            );
        }
        // A connection that arrived at capacity may still find a slot freed since.
        let Some(slot) = self.take_slot().or_else(|| self.state.capacity.try_slot()) else {
            self.state.metrics.connections_rejected.inc();
            warn!(
                "refusing {}: {} connections is the limit",
                self.remote,
                self.state.capacity.limit()
            );
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Failed to open a WebSocket connection: too many connections.\n",
            );
        };

        let on_upgrade = hyper::upgrade::on(&mut request);
        let state = Arc::clone(&self.state);
        let shutdown = self.shutdown.clone();
        let remote = self.remote;
        let tracker = self.tracker.clone();
        // The handshake's state lives in this short task; the connection gets a task of
        // its own holding only what it needs for its whole life.
        self.tracker.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let config = state.websocket;
                    if let Some(ws) = into_websocket(upgraded, config).await {
                        tracker.spawn(connection::serve(ws, remote, state, shutdown, slot));
                    }
                }
                Err(error) => debug!("upgrade from {remote} failed: {error}"),
            }
        });

        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }

    /// The error response to an invalid handshake, counted and logged.
    fn refuse_handshake(&self, request: &Request<Incoming>, bad: BadHandshake) -> Response<Body> {
        self.state.metrics.handshake_rejected(bad.metric());
        debug!(
            "bad handshake from {} ({} {}): {}",
            self.remote,
            escaped(request.method().as_str()),
            escaped(request.uri().path()),
            bad.reason()
        );
        let body = format!("Failed to open a WebSocket connection: {}.\n", bad.reason());
        let mut response = text(bad.status(), body);
        if bad == BadHandshake::UnsupportedVersion {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(WEBSOCKET_VERSION),
            );
        }
        response
    }

    /// Whether this connection still holds the slot it was accepted with.
    fn holds_slot(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The body of a 404.
const NOT_FOUND_TEXT: &str = "not found: notify-relay answers WebSocket handshakes on any \
path, and plain HTTP at /healthz, /readyz and /metrics (see /)\n";

/// `GET /` from a browser: 426, and a few lines saying what this port is. The WebSocket
/// address is built from the Host header only when it is a valid authority.
fn about(headers: &HeaderMap) -> Response<Body> {
    let address = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<Authority>().ok())
        .map_or_else(
            || "ws://HOST:PORT/".to_owned(),
            |authority| match authority.port_u16() {
                Some(port) => format!("ws://{}:{port}/", authority.host()),
                None => format!("ws://{}/", authority.host()),
            },
        );
    let body = format!(
        "This is notify-relay, a WebSocket notification relay.\n\
         \n\
         A browser cannot open it as a page: WebSocket clients connect to {address}\n\
         (wss:// behind TLS) and register a key to receive its messages.\n\
         \n\
         Plain HTTP endpoints:\n\
         \x20 /healthz  liveness: 200 while the relay is serving\n\
         \x20 /readyz   readiness: 503 while it refuses new WebSocket connections\n\
         \x20 /metrics  Prometheus metrics\n"
    );
    let mut response = text(StatusCode::UPGRADE_REQUIRED, body);
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response
}

/// Recovers the plain `TcpStream` from hyper's upgraded connection, so an idle
/// connection keeps neither hyper's boxed IO nor its read buffer.
async fn into_websocket(
    upgraded: Upgraded,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> Option<WebSocketStream<Socket>> {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let tcp = ReadAhead::new(parts.io.into_inner());
            let ws = if parts.read_buf.is_empty() {
                WebSocketStream::from_raw_socket(tcp, Role::Server, Some(config)).await
            } else {
                // The client pipelined frames behind its handshake.
                let early = parts.read_buf.to_vec();
                WebSocketStream::from_partially_read(tcp, early, Role::Server, Some(config)).await
            };
            Some(ws)
        }
        Err(_) => {
            error!("upgraded connection is not a TCP stream");
            None
        }
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
