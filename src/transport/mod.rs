//! Transport: the sockets and WebSocket frames every connection goes through, knowing
//! nothing of keys or of the relay's shared state. The connection slots, native TLS,
//! the read buffer lent to busy senders, the bound on unfinished messages, outgoing
//! fragments, and the keep-alive timer wheel.

pub mod capacity;
pub mod fragment;
pub mod heartbeat;
pub mod message_timeout;
pub mod read_ahead;
pub mod tls;
