//! What every task of a running relay shares.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Config;
use crate::fragment::FRAGMENT_SIZE;
use crate::log_limit::SharedLogLimit;
use crate::metrics::Metrics;
use crate::router::Router;

/// The tungstenite write buffer target: frames queued for one connection are coalesced
/// up to this size per write. With frames of at most [`FRAGMENT_SIZE`] the buffer stays
/// under about twice this while writing, and it is given back after each flush (the
/// patched tungstenite, see patches/README.md), so an idle connection keeps
/// none.
const WRITE_BUFFER_SIZE: usize = FRAGMENT_SIZE;

/// State shared by the accept loop, the HTTP routes and every connection.
#[derive(Debug)]
pub struct RelayState {
    /// The configuration the relay was started with.
    pub config: Config,
    /// Registrations and routing.
    pub router: Router,
    /// Counters served at `/metrics`.
    pub metrics: Metrics,
    /// Limits and buffer sizes for every WebSocket, derived once from `config`.
    pub websocket: WebSocketConfig,
    /// The budget of client-triggered log lines all connections share.
    pub log_limit: Arc<SharedLogLimit>,
}

impl RelayState {
    /// Fresh state for `config`.
    pub fn new(config: Config) -> Self {
        let websocket = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_size.max(64))
            .write_buffer_size(WRITE_BUFFER_SIZE)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        Self {
            config,
            router: Router::new(),
            metrics: Metrics::new(),
            websocket,
            log_limit: SharedLogLimit::new(Instant::now()),
        }
    }
}
