//! HTTP on the relay's port (hyper): WebSocket upgrades on any path, `GET /healthz`,
//! `GET /metrics`, and 404 for everything else.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, error};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, Socket};
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::state::RelayState;

type Body = Full<Bytes>;

/// Serves one accepted TCP connection until it closes or is upgraded.
///
/// `slot` is the connection's share of `max_connections`; `None` means the relay is
/// full, and every request on this connection gets 503.
pub(crate) async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    state: Arc<RelayState>,
    slot: Option<OwnedSemaphorePermit>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let at_capacity = slot.is_none();
    // A client must send its request headers in time: idle sockets and slow
    // handshakes do not get to hold a connection slot.
    let header_timeout = state.config.handshake_timeout;
    let routes = Routes {
        remote,
        state,
        at_capacity,
        slot: Mutex::new(slot),
        shutdown: shutdown.clone(),
        tracker,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(!at_capacity);
    let mut conn = pin!(builder
        .serve_connection(TokioIo::new(tcp), routes)
        .with_upgrades());
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!("http connection from {remote}: {error}");
    }
}

/// The request handler of one TCP connection.
struct Routes {
    /// The client, for logs.
    remote: SocketAddr,
    /// Shared relay state.
    state: Arc<RelayState>,
    /// Whether the relay was full when this connection arrived: every request gets 503.
    at_capacity: bool,
    /// The connection slot; moved into the WebSocket task on upgrade.
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
        if self.at_capacity {
            return text(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
        }
        if wants_websocket(request.headers()) {
            return self.upgrade(request);
        }
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/metrics") => {
                let metrics = &self.state.metrics;
                metrics.keys.set(self.state.router.key_count() as i64);
                let mut response = Response::new(Body::from(metrics.encode()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(METRICS_CONTENT_TYPE),
                );
                response
            }
            (_, "/healthz" | "/metrics") => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
                response
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Answers a WebSocket handshake (RFC 6455 section 4.2) and starts the connection
    /// task, which takes over the socket once hyper has sent the 101.
    fn upgrade(&self, mut request: Request<Incoming>) -> Response<Body> {
        let headers = request.headers();
        if request.method() != Method::GET {
            return text(
                StatusCode::BAD_REQUEST,
                "WebSocket handshake must use GET\n",
            );
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return text(StatusCode::BAD_REQUEST, "missing Connection: upgrade\n");
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            let mut response = text(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported WebSocket version\n",
            );
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return response;
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        };
        let accept = derive_accept_key(key.as_bytes());

        let slot = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let on_upgrade = hyper::upgrade::on(&mut request);
        let state = Arc::clone(&self.state);
        let shutdown = self.shutdown.clone();
        let remote = self.remote;
        let Some(slot) = slot else {
            // A keep-alive connection asking to upgrade a second time: impossible after
            // a successful upgrade, since hyper hands the socket over.
            return text(StatusCode::BAD_REQUEST, "already upgraded\n");
        };
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
}

/// Recovers the plain `TcpStream` from hyper's upgraded connection, so an idle
/// connection keeps neither hyper's boxed IO nor its read buffer.
async fn into_websocket(
    upgraded: Upgraded,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> Option<WebSocketStream<Socket>> {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            // `read_buf` holds frames the client pipelined behind its handshake.
            let socket = connection::socket(parts.io.into_inner(), &parts.read_buf);
            Some(WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await)
        }
        Err(_) => {
            error!("upgraded connection is not a TCP stream");
            None
        }
    }
}

/// Whether the request asks to switch to WebSocket.
fn wants_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(wants_websocket(&headers));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!wants_websocket(&headers));
        assert!(!has_token(&HeaderMap::new(), header::CONNECTION, "upgrade"));
    }
}
