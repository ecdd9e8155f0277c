//! Configuration: every limit and timing of the relay, with its default.
//!
//! Each setting is a command-line flag with an environment variable, so the same binary
//! runs unchanged under systemd, supervisord or by hand. `notify-relay 9000` still works
//! like the original `python server.py 9000`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub mod redis_url;

use crate::policy::auth::AuthConfig;
use crate::policy::limits::LimitsConfig;
use crate::protocol::GREETING;
use redis_url::RedisTarget;

/// The port of the original Notification Center.
pub const DEFAULT_PORT: u16 = 8765;
/// Ping cadence of the original (Python `websockets` default).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(60);
/// Pong deadline of the original.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(30);
/// The original's message size limit (Python `websockets` default, 1 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Keys are UUIDs in practice (36 bytes); this leaves room for longer ids.
pub const DEFAULT_MAX_KEY_LENGTH: usize = 256;
/// Default for `--max-watches`.
pub const DEFAULT_MAX_WATCHES: usize = 1024;
/// Frames one connection may have waiting before it is closed as a slow consumer.
pub const DEFAULT_MAX_QUEUED_FRAMES: usize = 1024;
/// Bytes one connection may have waiting before it is closed as a slow consumer.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 << 20;
/// Concurrent connections (WebSocket and pending HTTP); past it, upgrades get 503.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// How long a message may stay unfinished (fragments still to come). The same as the
/// Pong deadline: a client that cannot finish a message in the time it is given to
/// answer a Ping is not making progress. At the 1 MiB message limit it asks for about
/// 35 KB/s, which any link that can carry such messages has.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new connection may take to send its HTTP request (handshake) headers.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the totals are logged at info.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(60);
/// How long a graceful shutdown waits for connections to close.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer per connection: small, because idle connections dominate. A 1 MiB
/// message still fits (the buffer grows for it), and a peer sending in bulk reads
/// through a larger buffer lent for the burst (see `read_ahead`).
pub const DEFAULT_READ_BUFFER_SIZE: usize = 512;

/// Messages a key's stream keeps (Part 3 of docs/PROTOCOL.md).
pub const DEFAULT_BUFFER_MAX: usize = 256;
/// How long a retained message is kept.
pub const DEFAULT_BUFFER_TTL: Duration = Duration::from_secs(120);
/// Memory all streams together may use before the oldest messages are evicted.
pub const DEFAULT_BUFFER_MEMORY: usize = 64 << 20;

/// How the relay is run. See `notify-relay --help`.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "notify-relay",
    version,
    about = "WebSocket notification relay: a drop-in replacement for the Python Notification Center",
    long_about = None,
    after_help = "Logging is set with RUST_LOG (default: info), e.g. RUST_LOG=notify_relay=debug."
)]
pub struct Config {
    /// Port to listen on, as in `python server.py PORT` (overrides --port).
    #[arg(value_name = "PORT")]
    pub port_arg: Option<u16>,

    /// Address to listen on [default: all interfaces, IPv6 and IPv4].
    #[arg(long, env = "NOTIFY_RELAY_HOST")]
    pub host: Option<IpAddr>,

    /// Port to listen on.
    #[arg(long, env = "NOTIFY_RELAY_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Time between keep-alive Pings (e.g. 60s, 500ms).
    #[arg(long, env = "NOTIFY_RELAY_PING_INTERVAL", default_value = "60s", value_parser = positive_duration)]
    pub ping_interval: Duration,

    /// How long a Ping may go unanswered before the connection is closed (1011).
    #[arg(long, env = "NOTIFY_RELAY_PING_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub ping_timeout: Duration,

    /// Largest frame or message accepted, in bytes; larger ones close with 1009.
    #[arg(long, env = "NOTIFY_RELAY_MAX_MESSAGE_SIZE", default_value_t = DEFAULT_MAX_MESSAGE_SIZE, value_parser = byte_size)]
    pub max_message_size: usize,

    /// How long a message may take from its first frame to the end of its last
    /// (e.g. a fragmented one); past it the connection is closed (1008).
    #[arg(long, env = "NOTIFY_RELAY_MESSAGE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub message_timeout: Duration,

    /// Longest recipient_uuid accepted, in bytes.
    #[arg(long, env = "NOTIFY_RELAY_MAX_KEY_LENGTH", default_value_t = DEFAULT_MAX_KEY_LENGTH)]
    pub max_key_length: usize,

    /// Keys one connection may watch the presence of at once; past it a watch gets the
    /// error `too many watches`.
    #[arg(long, env = "NOTIFY_RELAY_MAX_WATCHES", default_value_t = DEFAULT_MAX_WATCHES)]
    pub max_watches: usize,

    /// Frames waiting for one connection before it is closed as a slow consumer (1008).
    #[arg(long, env = "NOTIFY_RELAY_MAX_QUEUED_FRAMES", default_value_t = DEFAULT_MAX_QUEUED_FRAMES)]
    pub max_queued_frames: usize,

    /// Bytes waiting for one connection before it is closed as a slow consumer (1008).
    #[arg(long, env = "NOTIFY_RELAY_MAX_QUEUED_BYTES", default_value_t = DEFAULT_MAX_QUEUED_BYTES, value_parser = byte_size)]
    pub max_queued_bytes: usize,

    /// Concurrent connections; past it, WebSocket upgrades get HTTP 503 (/healthz,
    /// /readyz and /metrics still answer).
    #[arg(long, env = "NOTIFY_RELAY_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// How long a new connection may take to send its request headers (idle sockets and
    /// slow handshakes are closed after it). With --tls-cert, the TLS handshake before
    /// them gets the same time.
    #[arg(long, env = "NOTIFY_RELAY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub handshake_timeout: Duration,

    /// On SIGTERM/SIGINT, how long to wait for connections to close after Close 1001.
    #[arg(long, env = "NOTIFY_RELAY_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How often to log the totals (connections, keys, messages) at info; 0s: never.
    #[arg(long, env = "NOTIFY_RELAY_STATS_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,

    /// The text frame sent right after the handshake.
    #[arg(long, env = "NOTIFY_RELAY_GREETING", default_value = GREETING)]
    pub greeting: String,

    /// Set SO_REUSEPORT, so a new relay can take over the port from an old one with no
    /// gap. Without --redis each relay process keeps its own registrations: do not leave
    /// several running; with --redis several relays may share the port.
    #[arg(long, env = "NOTIFY_RELAY_REUSE_PORT")]
    pub reuse_port: bool,

    /// Read buffer per connection while it reads, in bytes (an idle connection holds none;
    /// larger means fewer reads for a busy one).
    #[arg(long, env = "NOTIFY_RELAY_READ_BUFFER_SIZE", default_value_t = DEFAULT_READ_BUFFER_SIZE, value_parser = byte_size)]
    pub read_buffer_size: usize,

    /// Retention of messages in per-key streams.
    #[command(flatten)]
    pub streams: StreamConfig,

    /// Several relays sharing one key space.
    #[command(flatten)]
    pub cluster: ClusterConfig,

    /// Access control (Part 5): registration and publisher tokens.
    #[command(flatten)]
    pub auth: AuthConfig,

    /// Rate limits (Part 5): per client IP and per connection.
    #[command(flatten)]
    pub limits: LimitsConfig,

    /// Native TLS: certificate and key files.
    #[command(flatten)]
    pub tls: TlsConfig,
}

/// Several relay processes as one key space (Part 4 of docs/PROTOCOL.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClusterConfig {
    /// Redis or Valkey shared by every relay of one key space (e.g.
    /// redis://10.0.0.5:6379/0), or a Redis Cluster (redis+cluster://10.0.0.5:7000,10.0.0.6:7000
    /// or several comma-separated redis:// URLs of its nodes); without it this relay is a
    /// key space of its own.
    #[arg(long = "redis", env = "NOTIFY_RELAY_REDIS", value_name = "URL", value_parser = redis_url)]
    pub redis: Option<String>,
}

/// Accepts a Redis URL the client can use, or a Redis Cluster's nodes.
fn redis_url(url: &str) -> Result<String, String> {
    RedisTarget::parse(url).map(|_| url.to_owned())
}

/// A duration that must not be zero: a zero keep-alive, Pong, handshake or message time
/// would close every connection at once instead of turning anything off.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}: write a duration with its unit, e.g. 30s, 500ms or 2m"))?;
    if duration.is_zero() {
        return Err("must be more than 0 (there is no off switch for this timing)".to_owned());
    }
    Ok(duration)
}

/// A size in bytes, bare (`1048576`) or with a unit (`64MiB`, `512KiB`, `1GB`; binary
/// units are powers of 1024, decimal ones of 1000), as operators write them elsewhere.
pub fn byte_size(text: &str) -> Result<usize, String> {
    let wanted = "a size in bytes (1048576) or with a unit (64MiB, 512KiB, 1GB)";
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write {wanted}"))?;
    usize::try_from(size.as_u64())
        .map_err(|_| format!("`{text}` is larger than this machine can address"))
}

/// The TLS settings: both files, or neither (plain `ws://` and `http://`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsConfig {
    /// PEM file with the certificate chain (leaf first, e.g. certbot's fullchain.pem):
    /// with it the port serves only TLS (wss://, https://). Reloaded on SIGHUP.
    #[arg(
        long,
        env = "NOTIFY_RELAY_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1, e.g.
    /// certbot's privkey.pem). Reloaded on SIGHUP.
    #[arg(
        long,
        env = "NOTIFY_RELAY_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// Per-key streams: how many messages each key keeps, for how long, and the memory all of
/// them may use. A zero TTL turns streams off (the relay then behaves as in Parts 1-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct StreamConfig {
    /// Messages a key's stream keeps for replay; older ones are evicted.
    #[arg(long, env = "NOTIFY_RELAY_BUFFER_MAX", default_value_t = DEFAULT_BUFFER_MAX)]
    pub buffer_max: usize,

    /// How long a message is kept for replay (e.g. 120s, 10m); 0s turns streams off.
    #[arg(long, env = "NOTIFY_RELAY_BUFFER_TTL", default_value = "120s", value_parser = humantime::parse_duration)]
    pub buffer_ttl: Duration,

    /// Bytes all retained messages may use together; past it the oldest are evicted.
    #[arg(long, env = "NOTIFY_RELAY_BUFFER_MEMORY", default_value_t = DEFAULT_BUFFER_MEMORY, value_parser = byte_size)]
    pub buffer_memory: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            buffer_max: DEFAULT_BUFFER_MAX,
            buffer_ttl: DEFAULT_BUFFER_TTL,
            buffer_memory: DEFAULT_BUFFER_MEMORY,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port_arg: None,
            host: None,
            port: DEFAULT_PORT,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            max_key_length: DEFAULT_MAX_KEY_LENGTH,
            max_watches: DEFAULT_MAX_WATCHES,
            max_queued_frames: DEFAULT_MAX_QUEUED_FRAMES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            stats_interval: DEFAULT_STATS_INTERVAL,
            greeting: GREETING.to_owned(),
            reuse_port: false,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            streams: StreamConfig::default(),
            cluster: ClusterConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Config {
    /// The port to bind: the positional PORT wins over --port.
    pub fn effective_port(&self) -> u16 {
        self.port_arg.unwrap_or(self.port)
    }

    /// Whether relays started with this configuration share one key space, so that
    /// several of them may serve one port: they do through Redis (`--redis`); otherwise
    /// every relay process is a key space of its own.
    pub fn shares_key_space(&self) -> bool {
        self.cluster.redis.is_some()
    }

    /// A configuration for tests and embedding: loopback, an OS-chosen port.
    pub fn loopback_ephemeral() -> Self {
        Self {
            host: Some(IpAddr::from([127, 0, 0, 1])),
            port: 0,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults_match_default() {
        let parsed = Config::try_parse_from(["notify-relay"]).expect("parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn positional_port_like_the_original() {
        let c = Config::try_parse_from(["notify-relay", "9001"]).expect("parses");
        assert_eq!(c.effective_port(), 9001);
        let c = Config::try_parse_from(["notify-relay", "--port", "9002"]).expect("parses");
        assert_eq!(c.effective_port(), 9002);
        let c = Config::try_parse_from(["notify-relay", "--port", "9002", "9003"]).expect("parses");
        assert_eq!(c.effective_port(), 9003);
    }

    #[test]
    fn human_durations() {
        let c =
            Config::try_parse_from(["notify-relay", "--ping-interval", "250ms"]).expect("parses");
        assert_eq!(c.ping_interval, Duration::from_millis(250));
        assert!(Config::try_parse_from(["notify-relay", "--ping-timeout", "soon"]).is_err());
    }

    #[test]
    fn redis_makes_relays_one_key_space() {
        let c = Config::try_parse_from(["notify-relay"]).expect("parses");
        assert!(!c.shares_key_space());
        let c = Config::try_parse_from(["notify-relay", "--redis", "redis://127.0.0.1:6379/0"])
            .expect("parses");
        assert!(c.shares_key_space());
        assert!(Config::try_parse_from(["notify-relay", "--redis", "http://x"]).is_err());
        for cluster in ["redis+cluster://h:1,h:2", "redis://h:1,redis://h:2"] {
            let c = Config::try_parse_from(["notify-relay", "--redis", cluster]).expect("parses");
            assert!(c.shares_key_space());
        }
        assert!(Config::try_parse_from(["notify-relay", "--redis", "redis+cluster://"]).is_err());
    }

    #[test]
    fn stream_settings() {
        let c = Config::try_parse_from([
            "notify-relay",
            "--buffer-ttl",
            "0",
            "--buffer-max",
            "5",
            "--buffer-memory",
            "100000",
        ])
        .expect("parses");
        assert!(c.streams.buffer_ttl.is_zero());
        assert_eq!(
            (c.streams.buffer_max, c.streams.buffer_memory),
            (5, 100_000)
        );
    }

    #[test]
    fn sizes_take_units() {
        let c =
            Config::try_parse_from(["notify-relay", "--buffer-memory", "64MiB"]).expect("parses");
        assert_eq!(c.streams.buffer_memory, 64 << 20);
        let c =
            Config::try_parse_from(["notify-relay", "--max-message-size", "2 MB"]).expect("parses");
        assert_eq!(c.max_message_size, 2_000_000);
        assert!(Config::try_parse_from(["notify-relay", "--buffer-memory", "64XB"]).is_err());
    }
}
