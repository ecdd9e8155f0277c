//! notify-relay: a WebSocket notification relay, a drop-in replacement for the Python
//! "Notification Center". The contract with clients is docs/PROTOCOL.md.
//!
//! Clients connect, register a key (`{"recipient_uuid": KEY, "message": "connected"}`),
//! and receive every message any client addresses to that key.
//!
//! Layout, one responsibility per module:
//! - [`auth`]: access control: registration tokens (HS256 JWT) and publisher tokens.
//! - [`config`]: every setting and limit, with its default (clap).
//! - [`server`]: the listening socket, the accept loop, the drain.
//! - [`capacity`]: the connection limit, and the allowance past it for health checks.
//! - [`http`]: HTTP on the same port (hyper): WebSocket handshakes, `/healthz`,
//!   `/readyz`, `/metrics`.
//! - [`limits`]: rate limits per client IP (trusted proxies' headers) and per connection.
//! - [`readiness`]: why the relay should not get new clients now (`/readyz`).
//! - [`connection`]: one WebSocket: greeting, reads, batched writes, heartbeat, close codes.
//! - [`publish`]: publishing a message, with the metrics and logs every door shares.
//! - [`protocol`]: parsing frames and encoding replies; the only code that reads JSON.
//! - [`engine`]: keys, per-key streams, pending messages and presence, behind one trait
//!   (the embedded in-memory engine; a cluster engine plugs in the same way).
//! - [`registry`]: subscribers: a connection's reachable part and the set under a key.
//! - [`outbox`]: each connection's bounded outgoing queue.
//! - [`fragment`]: large outgoing messages as frames of bounded size.
//! - [`message_timeout`]: the time bound on unfinished messages.
//! - [`read_ahead`]: a socket reader that buffers only while the peer sends in bulk.
//! - [`heartbeat`]: keep-alive with one timer for all connections (Pings, Pongs, drain).
//! - [`log_text`]: client-controlled text escaped for log lines.
//! - [`log_limit`]: rate limits for log lines clients can trigger at will.
//! - [`metrics`]: the Prometheus series.
//! - [`tls`]: native TLS (rustls): the certificate files, handshakes, reload on SIGHUP.
//! - [`state`]: what all tasks share.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod capacity;
pub mod config;
pub mod connection;
pub mod engine;
pub mod fragment;
pub mod heartbeat;
pub mod http;
pub mod limits;
pub mod log_limit;
pub mod log_text;
pub mod message_timeout;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod publish;
pub mod read_ahead;
pub mod readiness;
pub mod registry;
pub mod server;
pub mod state;
pub mod tls;

pub use config::Config;
pub use server::Server;
