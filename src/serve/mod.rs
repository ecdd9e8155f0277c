//! Serving the port: the accept loop and the drain ([`server`]), HTTP on the port and
//! its routes ([`http`]), the TLS handshake before them ([`tls_handshake`]), and the
//! life of one WebSocket ([`connection`]). The top layer: it uses every other.

pub mod connection;
pub mod http;
pub mod server;
pub mod tls_handshake;
