//! HTTP on the relay's port (hyper): WebSocket handshakes on any path, `/healthz`
//! (liveness), `/readyz` (readiness), `/metrics`, a short explanation at `/` for
//! browsers, the Part 3 doors (`/publish`, `/presence/<KEY>`, `/events/<KEY>`, one file
//! each), and 404 for everything else.
//!
//! Every connection reads at most [`MAX_REQUEST_HEAD_BYTES`] of request headers (hyper
//! answers 431 past it) within `--handshake-timeout`. A connection that arrived while
//! the relay was full holds an overflow place (see [`crate::transport::capacity`]): it is served
//! one request without keep-alive, so `/healthz`, `/readyz` and `/metrics` answer at
//! capacity while an upgrade gets 503.

mod events;
pub mod handshake;
mod presence;
mod publish;

use std::convert::Infallible;
use std::future::{pending, ready, Future};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::Authority;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, error};
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observability::log_text::escaped;
use crate::observability::metrics::{HandshakeRejection, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::policy::auth::{self, Refusal, UNAUTHORIZED};
use crate::policy::limits::IpSlot;
use crate::serve::connection::{self, Socket, Transport};
use crate::state::RelayState;
use crate::transport::capacity::Admission;
use handshake::{BadHandshake, WEBSOCKET_VERSION};

/// A response body: whole (most routes) or streamed (Server-Sent Events).
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What a route's handler returns.
type Responding = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

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
pub(crate) async fn serve_connection<S: Transport>(
    stream: S,
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
    let abort = CancellationToken::new();
    let routes = Routes::<S> {
        remote,
        state: Arc::clone(&state),
        slot: Mutex::new(slot),
        shutdown: shutdown.clone(),
        abort: abort.clone(),
        tracker,
        transport: PhantomData,
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
        .serve_connection(TokioIo::new(stream), routes)
        .with_upgrades());
    let evicted = async {
        match &overflow {
            Some(place) => place.evicted().await,
            None => pending().await,
        }
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // A route gave up on the client (an event stream it does not read): drop it.
        () = abort.cancelled() => Ok(()),
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

/// The request handler of one connection over `S` (TCP, or TLS over TCP).
struct Routes<S> {
    /// The client, for logs.
    remote: SocketAddr,
    /// Shared relay state.
    state: Arc<RelayState>,
    /// The connection slot, moved into the WebSocket task on upgrade; `None` when the
    /// connection arrived at capacity.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Passed to event streams so they end on shutdown (WebSockets hear of it from the
    /// keep-alive timer).
    shutdown: CancellationToken,
    /// Cuts this TCP connection (see [`events`]).
    abort: CancellationToken,
    /// Tracks the WebSocket task so shutdown waits for it.
    tracker: TaskTracker,
    /// The stream an upgrade takes back from hyper.
    transport: PhantomData<fn() -> S>,
}

impl<S: Transport> Service<Request<Incoming>> for Routes<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Responding;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if !handshake::wants_websocket(request.headers()) {
            if let Some(route) = Api::of(request.uri().path()) {
                return self.serve_api(route, request);
            }
        }
        Box::pin(ready(Ok(self.respond(request))))
    }
}

/// The routes whose handlers wait (for a body, the engine, or a stream of events).
enum Api {
    /// `/publish` and `/publish/<KEY>`, with what follows `/publish`.
    Publish(String),
    /// `/presence/<KEY>`, with the encoded key.
    Presence(String),
    /// `/events/<KEY>`, with the encoded key.
    Events(String),
}

impl Api {
    fn of(path: &str) -> Option<Self> {
        if let Some(rest) = path.strip_prefix("/publish") {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(Api::Publish(rest.to_owned()));
            }
        }
        if let Some(key) = path.strip_prefix("/presence/") {
            return Some(Api::Presence(key.to_owned()));
        }
        path.strip_prefix("/events/")
            .map(|key| Api::Events(key.to_owned()))
    }
}

impl<S: Transport> Routes<S> {
    /// Serves a Part 3 route. Pages on other origins may call them (a browser's
    /// EventSource or fetch), as they may open the WebSocket: CORS allows any origin.
    fn serve_api(&self, route: Api, request: Request<Incoming>) -> Responding {
        let allow_origin = self.state.access.cors_origin(request.headers());
        let vary = self.state.access.restricts_origins();
        if request.method() == Method::OPTIONS {
            return Box::pin(ready(Ok(cors(preflight(), allow_origin, vary))));
        }
        let responding = self.route_api(route, request);
        Box::pin(async move { Ok(cors(responding.await?, allow_origin, vary)) })
    }

    fn route_api(&self, route: Api, request: Request<Incoming>) -> Responding {
        let state = Arc::clone(&self.state);
        let remote = self.remote;
        match route {
            Api::Publish(rest) => {
                Box::pin(async move { Ok(publish::serve(&state, remote, request, &rest).await) })
            }
            Api::Presence(key) if events::wants_event_stream(request.headers()) => {
                self.serve_stream(request, key, events::Streamed::Presence)
            }
            Api::Events(key) => self.serve_stream(request, key, events::Streamed::Messages),
            Api::Presence(key) => Box::pin(async move {
                let (parts, _body) = request.into_parts();
                let query = parts.uri.query();
                Ok(presence::serve(&state, &parts.method, &parts.headers, query, &key).await)
            }),
        }
    }

    /// Serves an event stream (`/events/<KEY>`, or `/presence/<KEY>` asked for as
    /// `text/event-stream`): it holds a connection slot, like a WebSocket.
    fn serve_stream(
        &self,
        request: Request<Incoming>,
        key: String,
        streamed: events::Streamed,
    ) -> Responding {
        if let Err(refused) = self.check_origin(request.headers()) {
            return Box::pin(ready(Ok(*refused)));
        }
        let per_ip = match self.admit_ip(request.headers()) {
            Ok(per_ip) => per_ip,
            Err(refused) => return Box::pin(ready(Ok(*refused))),
        };
        let slot = match self.admit() {
            Ok(slot) => slot,
            Err(refused) => return Box::pin(ready(Ok(*refused))),
        };
        let subscriber = events::Subscriber {
            remote: self.remote,
            _slot: slot,
            _per_ip: per_ip,
            shutdown: self.shutdown.clone(),
            abort: self.abort.clone(),
        };
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let (parts, _body) = request.into_parts();
            let query = parts.uri.query();
            let headers = &parts.headers;
            let method = &parts.method;
            Ok(events::serve(state, method, headers, query, &key, subscriber, streamed).await)
        })
    }

    /// A place in the client IP's `--max-connections-per-ip`, or the 429 that says there
    /// is none.
    fn admit_ip(&self, headers: &HeaderMap) -> Result<Option<IpSlot>, Box<Response<Body>>> {
        let per_ip = &self.state.per_ip;
        let ip = per_ip.client(self.remote.ip(), headers);
        per_ip.connect(ip).map_err(|limited| {
            self.state.metrics.rate_limited(limited);
            self.state.log_limit.warn(format_args!(
                "refusing {} (client {ip}): --max-connections-per-ip reached",
                self.remote
            ));
            Box::new(text(
                StatusCode::TOO_MANY_REQUESTS,
                "Failed to open a connection: too many connections from this address.\n",
            ))
        })
    }

    /// Refuses (403, counted) a browser page from an origin not in `--allowed-origins`.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Box<Response<Body>>> {
        if self.state.access.origin_allowed(headers) {
            return Ok(());
        }
        self.state
            .metrics
            .handshake_rejected(HandshakeRejection::Origin);
        let origin = headers
            .get(header::ORIGIN)
            .map(|origin| String::from_utf8_lossy(origin.as_bytes()).into_owned())
            .unwrap_or_default();
        self.state.log_limit.warn(format_args!(
            "refusing {}: origin {} is not in --allowed-origins",
            self.remote,
            escaped(&origin)
        ));
        Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "Failed to open a connection: this origin is not allowed.\n",
        )))
    }

    /// A connection slot for a long-lived connection (WebSocket or event stream), or the
    /// 503 that says why there is none.
    fn admit(&self) -> Result<OwnedSemaphorePermit, Box<Response<Body>>> {
        if self.state.readiness.is_draining() {
            self.state.metrics.connections_rejected.inc();
            debug!("refusing {}: draining", self.remote);
            return Err(Box::new(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Failed to open a WebSocket connection: the relay is shutting down.\n",
            )));
        }
        // A connection that arrived at capacity may still find a slot freed since.
        self.take_slot()
            .or_else(|| self.state.capacity.try_slot())
            .ok_or_else(|| {
                self.state.metrics.connections_rejected.inc();
                // A client can ask again and again: within the shared log budget.
                self.state.log_limit.warn(format_args!(
                    "refusing {}: {} connections is the limit",
                    self.remote,
                    self.state.capacity.limit()
                ));
                Box::new(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Failed to open a WebSocket connection: too many connections.\n",
                ))
            })
    }

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
            _ => about(request.headers(), self.state.tls.is_some()),
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
        let stats = self.state.engine.stats();
        metrics.keys.set(stats.keys as i64);
        metrics
            .retained_messages
            .set(stats.retained_messages as i64);
        metrics.retained_bytes.set(stats.retained_bytes as i64);
        let mut response = Response::new(full(metrics.encode()));
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
        if let Err(refused) = self.check_origin(request.headers()) {
            return *refused;
        }
        let per_ip = match self.admit_ip(request.headers()) {
            Ok(per_ip) => per_ip,
            Err(refused) => return *refused,
        };
        let slot = match self.admit() {
            Ok(slot) => slot,
            Err(refused) => return *refused,
        };

        let access = &self.state.access;
        let may_publish = !access.publish_token_required()
            || access.may_publish(
                auth::request_token(request.headers(), request.uri().query()).as_deref(),
            );
        let on_upgrade = hyper::upgrade::on(&mut request);
        let state = Arc::clone(&self.state);
        let remote = self.remote;
        let tracker = self.tracker.clone();
        // The handshake's state lives in this short task; the connection gets a task of
        // its own holding only what it needs for its whole life.
        self.tracker.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let config = state.websocket;
                    if let Some(ws) = into_websocket::<S>(upgraded, config).await {
                        let admitted = connection::Admitted {
                            slot,
                            per_ip: per_ip.map(Box::new),
                            may_publish,
                        };
                        tracker.spawn(connection::serve(ws, remote, state, admitted));
                    }
                }
                Err(error) => debug!("upgrade from {remote} failed: {error}"),
            }
        });

        let mut response = Response::new(full(Bytes::new()));
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
path, and plain HTTP at /healthz, /readyz, /metrics, /publish, /presence/KEY and \
/events/KEY (see /)\n";

/// `GET /` from a browser: 426, and a few lines saying what this port is. The WebSocket
/// address (`wss://` when the relay serves TLS itself) is built from the Host header only
/// when it is a valid authority.
fn about(headers: &HeaderMap, tls: bool) -> Response<Body> {
    let scheme = if tls { "wss" } else { "ws" };
    let address = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<Authority>().ok())
        .map_or_else(
            || format!("{scheme}://HOST:PORT/"),
            |authority| match authority.port_u16() {
                Some(port) => format!("{scheme}://{}:{port}/", authority.host()),
                None => format!("{scheme}://{}/", authority.host()),
            },
        );
    let body = format!(
        "This is notify-relay, a WebSocket notification relay.\n\
         \n\
         A browser cannot open it as a page: WebSocket clients connect to {address}\n\
         (wss:// behind TLS) and register a key to receive its messages.\n\
         \n\
         Plain HTTP endpoints:\n\
         \x20 /healthz        liveness: 200 while the relay is serving\n\
         \x20 /readyz         readiness: 503 while it refuses new WebSocket connections\n\
         \x20 /metrics        Prometheus metrics\n\
         \x20 /publish/KEY    POST a message to KEY (curl -d 'hello' .../publish/KEY)\n\
         \x20 /presence/KEY   whether anyone is connected under KEY\n\
         \x20 /events/KEY     KEY's messages as Server-Sent Events (EventSource)\n"
    );
    let mut response = text(StatusCode::UPGRADE_REQUIRED, body);
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response
}

/// Recovers the connection's own stream (`TcpStream`, or TLS over it) from hyper's
/// upgraded connection, so an idle connection keeps neither hyper's boxed IO nor its
/// read buffer.
async fn into_websocket<S: Transport>(
    upgraded: Upgraded,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> Option<WebSocketStream<Socket<S>>> {
    match upgraded.downcast::<TokioIo<S>>() {
        Ok(parts) => {
            // `read_buf` holds frames the client pipelined behind its handshake.
            let socket = connection::socket(parts.io.into_inner(), &parts.read_buf);
            Some(WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await)
        }
        Err(_) => {
            error!("upgraded connection is not the stream it was accepted as");
            None
        }
    }
}

/// `response` with its CORS answer: `allow_origin` (`*`, or the allowed origin echoed),
/// and `Vary: Origin` when the answer depends on it.
fn cors(
    mut response: Response<Body>,
    allow_origin: Option<HeaderValue>,
    vary: bool,
) -> Response<Body> {
    let headers = response.headers_mut();
    if let Some(origin) = allow_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    if vary {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// The answer to a CORS preflight on a Part 3 route (its origin is added by [`cors`]).
fn preflight() -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization, last-event-id"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// A whole body.
fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A JSON response.
fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Serialising the relay's own reply types cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The key in a Part 3 route's path (percent-encoded), checked like a `recipient_uuid`;
/// or the 400 answer that says why it is not one.
fn path_key(encoded: &str, max_key_length: usize) -> Result<String, Box<Response<Body>>> {
    let refused = |why: &'static str| {
        let reply = crate::protocol::Reply::Refused(why.into());
        Box::new(json(StatusCode::BAD_REQUEST, &reply.to_frame(None)))
    };
    let key = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| refused("the key is not valid UTF-8"))?;
    crate::protocol::check_key(&key, max_key_length).map_err(|r| refused(r.reason()))?;
    Ok(key.into_owned())
}

/// Checks the registration token of an HTTP request for `key` (Part 5): `Authorization:
/// Bearer`, else `?token=`. The refusal is counted, logged within the shared budget, and
/// answered 401.
fn check_token(
    state: &RelayState,
    headers: &HeaderMap,
    query: Option<&str>,
    key: &str,
) -> Result<(), Box<Response<Body>>> {
    if !state.access.registration_required() {
        return Ok(());
    }
    let token = auth::request_token(headers, query);
    state
        .access
        .check_registration(token.as_deref(), key)
        .map_err(|refusal| {
            state.metrics.auth_refused(refusal);
            state.log_limit.warn(format_args!(
                "http request for {} refused ({} token)",
                escaped(key),
                refusal.as_str()
            ));
            Box::new(unauthorized(Some(refusal)))
        })
}

/// 401 with `WWW-Authenticate: Bearer` (RFC 6750) and the contract's error object.
fn unauthorized(refusal: Option<Refusal>) -> Response<Body> {
    let mut response = json(
        StatusCode::UNAUTHORIZED,
        &crate::protocol::Reply::Refused(UNAUTHORIZED.into()).to_frame(None),
    );
    let challenge = match refusal {
        None | Some(Refusal::Missing) => "Bearer",
        Some(_) => "Bearer error=\"invalid_token\"",
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// 405 with the methods the route takes.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, NOT_FOUND_TEXT)
}

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
