//! What every task of a running relay shares.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Config;
use crate::delivery::engine::{Engine, MemoryEngine, RedisEngine};
use crate::observability::log_limit::SharedLogLimit;
use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;
use crate::policy::auth::Access;
use crate::policy::limits::PerIp;
use crate::transport::capacity::Capacity;
use crate::transport::fragment::FRAGMENT_SIZE;
use crate::transport::heartbeat::{KeepAlive, Times};
use crate::transport::tls::Tls;

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
    /// Keys, streams and presence: the embedded engine, or a cluster engine.
    pub engine: Arc<dyn Engine>,
    /// Counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Limits and buffer sizes for every WebSocket, derived once from `config`.
    pub websocket: WebSocketConfig,
    /// The `--max-connections` slots and the allowance past them for health checks.
    pub capacity: Capacity,
    /// What `/readyz` reports: draining, and conditions other parts add.
    pub readiness: Readiness,
    /// The budget of client-triggered log lines all connections share.
    pub log_limit: Arc<SharedLogLimit>,
    /// Who may register, listen and publish (Part 5), derived once from `config.auth`.
    pub access: Access,
    /// Connection counts and publish rates per client IP (Part 5 rate limits).
    pub per_ip: PerIp,
    /// The certificate new TLS handshakes use, with `--tls-cert`; `None`: plain TCP.
    pub tls: Option<Tls>,
    /// Every WebSocket connection's Ping and Pong deadlines: one timer for the relay.
    pub keepalive: KeepAlive,
}

impl RelayState {
    /// Fresh state for `config`: the embedded engine, or with `--redis` the Redis engine
    /// (which connects in the background; `/readyz` says when it cannot). Must run inside
    /// a tokio runtime. Fails when the TLS files cannot be used (the error says which and
    /// why).
    pub fn new(config: Config) -> std::io::Result<Self> {
        let tls = Tls::from_config(&config.tls)?;
        let websocket = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_size.max(64))
            .write_buffer_size(WRITE_BUFFER_SIZE)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        let metrics = Arc::new(Metrics::new());
        let readiness = Readiness::default();
        let engine: Arc<dyn Engine> = match &config.cluster.redis {
            Some(url) => {
                let engine = RedisEngine::start(
                    url,
                    config.streams,
                    config.max_queued_frames,
                    Arc::clone(&metrics),
                )
                .map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}"))
                })?;
                readiness.add_check(engine.health());
                Arc::new(engine)
            }
            None => Arc::new(MemoryEngine::new(config.streams, Arc::clone(&metrics))),
        };
        let keepalive = KeepAlive::new(Times {
            interval: config.ping_interval,
            timeout: config.ping_timeout,
        });
        Ok(Self {
            access: Access::new(&config.auth),
            per_ip: PerIp::new(&config.limits),
            capacity: Capacity::new(config.max_connections),
            config,
            engine,
            metrics,
            websocket,
            readiness,
            log_limit: SharedLogLimit::new(tokio::time::Instant::now()),
            tls,
            keepalive,
        })
    }
}
