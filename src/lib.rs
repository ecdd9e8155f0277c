//! notify-relay: a WebSocket notification relay, a drop-in replacement for the Python
//! "Notification Center" (the contract is PROTOCOL.md).
//!
//! Clients connect, register a key (`{"recipient_uuid": KEY, "message": "connected"}`),
//! and receive every message any client addresses to that key.
//!
//! Layout, one responsibility per module:
//! - [`config`]: every setting and limit, with its default (clap).
//! - [`server`]: the listening socket, the accept loop, the connection limit, the drain.
//! - [`http`]: HTTP on the same port (hyper): WebSocket upgrades, `/healthz`, `/metrics`.
//! - [`connection`]: one WebSocket: greeting, reads, batched writes, heartbeat, close codes.
//! - [`protocol`]: parsing frames and encoding replies; the only code that reads JSON.
//! - [`router`]: the narrow interface connections register and route through.
//! - [`registry`]: keys to live connections, sharded; cleanup in O(1).
//! - [`outbox`]: each connection's bounded outgoing queue.
//! - [`fragment`]: large outgoing messages as frames of bounded size.
//! - [`read_ahead`]: a socket reader that buffers only while the peer sends in bulk.
//! - [`message_timeout`]: the time bound on unfinished messages.
//! - [`heartbeat`]: Ping/Pong timing rules.
//! - [`log_text`]: client-controlled text escaped for log lines.
//! - [`log_limit`]: rate limits for log lines clients can trigger at will.
//! - [`metrics`]: the Prometheus series.
//! - [`state`]: what all tasks share.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod fragment;
pub mod heartbeat;
pub mod http;
pub mod log_limit;
pub mod log_text;
pub mod message_timeout;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod read_ahead;
pub mod registry;
pub mod router;
pub mod server;
pub mod state;

pub use config::Config;
pub use server::Server;
