//! notify-relay: a WebSocket notification relay, a drop-in replacement for the Python
//! "Notification Center". The contract with clients is docs/PROTOCOL.md.
//!
//! Clients connect, register a key (`{"recipient_uuid": KEY, "message": "connected"}`),
//! and receive every message any client addresses to that key.
//!
//! The tree reads top-down, one layer a folder; a module imports only from its own
//! folder and the layers below it (docs/ARCHITECTURE.md, "Layers"; `tests/layers.rs`
//! keeps it true):
//! - [`serve`]: the port: the accept loop and drain, HTTP and its routes, the TLS
//!   handshake, and one WebSocket's life (greeting, reads, batched writes, close codes).
//! - [`state`]: what all tasks share, built once at start-up.
//! - [`transport`]: sockets and frames: connection slots, TLS certificates, the
//!   read-ahead buffer, the unfinished-message bound, fragments, the keep-alive wheel.
//! - [`delivery`]: the engines (keys, streams, pending messages, presence; in memory or
//!   on Redis) behind one trait, and publishing one message.
//! - [`peer`]: a connection as the engine reaches it: its outbox, keep-alive byte and
//!   subscriber records.
//! - [`config`]: every setting and limit with its default (clap), checked at start.
//! - [`observability`]: metrics, readiness, log escaping and log budgets.
//! - [`protocol`] and [`policy`]: the wire format (the only code that reads JSON), and
//!   access control and rate limits.
//! - [`message`]: the values every layer passes around: a message, its position in a
//!   key's stream, where a resume starts.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod delivery;
pub mod message;
pub mod observability;
pub mod peer;
pub mod policy;
pub mod protocol;
pub mod serve;
pub mod state;
pub mod transport;

pub use config::Config;
pub use serve::server::Server;
