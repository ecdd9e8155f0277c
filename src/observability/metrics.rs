//! Counters and gauges served at `GET /metrics` in the Prometheus text format.
//!
//! Every labelled series is created up front and kept as a handle, so the hot path is
//! one atomic add and never looks a label set up.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::message::Eviction;
use crate::observability::striped::Striped;
use crate::policy::auth::Refusal;
use crate::protocol::{Ignored, Rejection};

/// Why a frame or message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A text frame that is not a JSON object (docs/PROTOCOL.md, "Ignored input").
    Ignored(Ignored),
    /// A JSON object the relay cannot act on.
    Rejected(Rejection),
    /// A binary frame.
    Binary,
    /// Nobody is registered under the recipient key.
    NoRecipient,
    /// A recipient's outgoing queue was full.
    SlowConsumer,
    /// The engine could not take the message (a cluster engine lost its backend).
    Unavailable,
    /// A delivery from a WebSocket connection whose handshake had no publisher token.
    Unauthorized,
    /// A frame over the connection's `--frame-rate`.
    RateLimited,
}

impl DropReason {
    const ALL: [DropReason; 18] = [
        DropReason::Ignored(Ignored::NotJson),
        DropReason::Ignored(Ignored::BadJson),
        DropReason::Rejected(Rejection::MissingRecipient),
        DropReason::Rejected(Rejection::RecipientNotString),
        DropReason::Rejected(Rejection::EmptyKey),
        DropReason::Rejected(Rejection::KeyTooLong),
        DropReason::Rejected(Rejection::MissingMessage),
        DropReason::Rejected(Rejection::InvalidId),
        DropReason::Rejected(Rejection::LoneSurrogate),
        DropReason::Rejected(Rejection::InvalidSince),
        DropReason::Rejected(Rejection::InvalidEphemeral),
        DropReason::Rejected(Rejection::InvalidCollapse),
        DropReason::Binary,
        DropReason::NoRecipient,
        DropReason::SlowConsumer,
        DropReason::Unavailable,
        DropReason::Unauthorized,
        DropReason::RateLimited,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Ignored(why) => why.as_str(),
            DropReason::Rejected(why) => why.as_str(),
            DropReason::Binary => "binary",
            DropReason::NoRecipient => "no_recipient",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::Unavailable => "cluster_unavailable",
            DropReason::Unauthorized => "unauthorized",
            DropReason::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Why a WebSocket connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it with a Close frame.
    ClientClose,
    /// The client went away without a Close frame (reset, EOF, mid-frame).
    Reset,
    /// The server is shutting down (Close 1001).
    Shutdown,
    /// A Ping went unanswered (Close 1011).
    PingTimeout,
    /// The client did not read fast enough (Close 1008).
    SlowConsumer,
    /// A frame or message over the size limit (Close 1009).
    Oversize,
    /// A text frame that is not UTF-8 (Close 1007).
    InvalidUtf8,
    /// Any other WebSocket protocol violation (Close 1002).
    ProtocolError,
    /// A message stayed unfinished longer than `--message-timeout` (Close 1008).
    MessageTimeout,
    /// A registration without a valid token (Close 1008 "unauthorized").
    Unauthorized,
    /// Kept sending frames over `--frame-rate` (Close 1008 "rate limited").
    RateLimited,
}

impl CloseReason {
    const ALL: [CloseReason; 11] = [
        CloseReason::ClientClose,
        CloseReason::Reset,
        CloseReason::Shutdown,
        CloseReason::PingTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Oversize,
        CloseReason::InvalidUtf8,
        CloseReason::ProtocolError,
        CloseReason::MessageTimeout,
        CloseReason::Unauthorized,
        CloseReason::RateLimited,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::Reset => "reset",
            CloseReason::Shutdown => "shutdown",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Oversize => "oversize",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::MessageTimeout => "message_timeout",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Why a WebSocket handshake (or, for `HeadersTooLarge`, any request) was refused with
/// an HTTP error before it reached a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRejection {
    /// Not a GET (400).
    Method,
    /// HTTP/1.0 (505).
    HttpVersion,
    /// No Host header, or more than one (400).
    Host,
    /// No `Connection: upgrade` (400).
    Connection,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes (400).
    Key,
    /// `Sec-WebSocket-Version` missing or repeated (400), or not 13 (426).
    Version,
    /// A request header section over the limit (431, answered by hyper).
    HeadersTooLarge,
    /// An `Origin` not in `--allowed-origins` (403; WebSocket handshakes and event streams).
    Origin,
}

impl HandshakeRejection {
    const ALL: [HandshakeRejection; 8] = [
        HandshakeRejection::Method,
        HandshakeRejection::HttpVersion,
        HandshakeRejection::Host,
        HandshakeRejection::Connection,
        HandshakeRejection::Key,
        HandshakeRejection::Version,
        HandshakeRejection::HeadersTooLarge,
        HandshakeRejection::Origin,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeRejection::Method => "method",
            HandshakeRejection::HttpVersion => "http_version",
            HandshakeRejection::Host => "host",
            HandshakeRejection::Connection => "connection",
            HandshakeRejection::Key => "key",
            HandshakeRejection::Version => "version",
            HandshakeRejection::HeadersTooLarge => "headers_too_large",
            HandshakeRejection::Origin => "origin",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not finished within `--handshake-timeout`.
    Timeout,
    /// The client closed or reset the connection during the handshake.
    Closed,
    /// A TLS error: not TLS at all (e.g. plain HTTP), no common protocol version, cipher
    /// or ALPN protocol, or the client refused the certificate.
    Protocol,
}

impl TlsFailure {
    const ALL: [TlsFailure; 3] = [
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::Protocol,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::Protocol => "protocol",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// A counter added to on every message, by every worker: striped, so that the workers do
/// not pass its cache line between them (see [`Striped`]).
pub type HotCounter = Counter<u64, Striped>;

/// The relay's metrics. Cloned handles share the same series.
#[derive(Debug)]
pub struct Metrics {
    /// Owns the series and their help texts, for encoding.
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Open Server-Sent Events subscriptions (`GET /events/<KEY>`).
    pub event_streams: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_opened: Counter,
    /// WebSocket upgrades refused with 503: at `max_connections`, or draining.
    pub connections_rejected: Counter,
    /// Connections past `max_connections` closed to make room for a newer one.
    pub overflow_evicted: Counter,
    /// Failed accepts (e.g. out of file descriptors); the accept loop backs off.
    pub accept_errors: Counter,
    /// Keys with at least one connection; set from the registry at scrape time.
    pub keys: Gauge,
    /// Data frames (text and binary) received.
    pub frames_received: HotCounter,
    /// Registrations processed.
    pub registrations: Counter,
    /// Delivery requests processed (one per frame addressed to a key).
    pub messages_routed: HotCounter,
    /// Messages handed to a connection (one per recipient connection).
    pub messages_delivered: HotCounter,
    /// Messages kept as pending: they reached nobody and wait for the next registration.
    pub messages_buffered: HotCounter,
    /// Retained messages handed to a registration (pending or resumed), not live.
    pub messages_replayed: Counter,
    /// Retained messages superseded by a newer one with the same collapse name.
    pub messages_collapsed: HotCounter,
    /// Ephemeral messages handed to a live connection (one per recipient).
    pub ephemeral_delivered: HotCounter,
    /// Ephemeral messages that reached no live connection (they are never kept).
    pub ephemeral_dropped: HotCounter,
    /// Messages retained in streams; set from the engine at scrape time.
    pub retained_messages: Gauge,
    /// Bytes they count against `--buffer-memory`; set from the engine at scrape time.
    pub retained_bytes: Gauge,
    /// 1 while the cluster engine's Redis answers (0 while it does not; 1 without one).
    pub cluster_ready: Gauge,
    /// Times the cluster engine lost its Redis subscription and made it anew.
    pub cluster_reconnects: Counter,
    /// Presence watches held now (WebSocket `watch` and SSE `/presence/<KEY>` streams).
    pub presence_watches: Gauge,
    /// Presence pushes queued to a watcher (one per watcher and frame).
    pub presence_events: Counter,
    /// Presence changes folded into a push still queued to a watcher (coalescing).
    pub presence_events_coalesced: Counter,
    /// Per-reason handles of `messages_evicted`, indexed like [`Eviction::ALL`].
    evicted: Vec<HotCounter>,
    /// Per-reason handles of `messages_dropped`, indexed by [`DropReason::index`].
    dropped: Vec<HotCounter>,
    /// Per-reason handles of `connections_closed`, indexed by [`CloseReason::index`].
    closed: Vec<Counter>,
    /// Per-reason handles of `handshakes_rejected`, indexed by
    /// [`HandshakeRejection::index`].
    handshakes_rejected: Vec<Counter>,
    /// Per-reason handles of `auth_refused`, indexed like [`Refusal::ALL`].
    auth_refused: Vec<Counter>,
    /// HTTP publishes refused with 401 (no or a wrong publisher token).
    pub publish_unauthorized: Counter,
    /// Requests refused with 429 by a per-IP limit, by limit.
    rate_limited: Vec<Counter>,
    /// Per-reason handles of `tls_handshakes_failed`, indexed by [`TlsFailure::index`].
    tls_handshakes_failed: Vec<Counter>,
    /// `tls_reloads` for `result="ok"` and `result="failed"`.
    tls_reloads: [Counter; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("notify_relay");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "event_streams",
            "Open Server-Sent Events subscriptions (GET /events/KEY)",
            event_streams.clone(),
        );
        let connections_opened = Counter::default();
        registry.register(
            "connections_opened",
            "WebSocket connections accepted",
            connections_opened.clone(),
        );
        let connections_rejected = Counter::default();
        registry.register(
            "connections_rejected",
            "WebSocket upgrades refused with 503: the relay was at max-connections or draining",
            connections_rejected.clone(),
        );
        let overflow_evicted = Counter::default();
        registry.register(
            "overflow_evicted",
            "Connections past max-connections (served /healthz, /readyz, /metrics only) \
             closed to make room for a newer one",
            overflow_evicted.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Failed accepts, e.g. out of file descriptors (the relay backs off and retries)",
            accept_errors.clone(),
        );
        let keys = Gauge::default();
        registry.register(
            "keys",
            "Keys with at least one registered connection",
            keys.clone(),
        );
        let frames_received = HotCounter::default();
        registry.register(
            "frames_received",
            "Text and binary frames received from clients",
            frames_received.clone(),
        );
        let registrations = Counter::default();
        registry.register(
            "registrations",
            "Registrations processed",
            registrations.clone(),
        );
        let messages_routed = HotCounter::default();
        registry.register(
            "messages_routed",
            "Frames addressed to a key (delivery requests)",
            messages_routed.clone(),
        );
        let messages_delivered = HotCounter::default();
        registry.register(
            "messages_delivered",
            "Messages queued to a recipient connection",
            messages_delivered.clone(),
        );
        let messages_buffered = HotCounter::default();
        registry.register(
            "messages_buffered",
            "Messages that reached no connection and were kept as pending",
            messages_buffered.clone(),
        );
        let messages_replayed = Counter::default();
        registry.register(
            "messages_replayed",
            "Retained messages handed to a registration (pending or resumed)",
            messages_replayed.clone(),
        );
        let messages_collapsed = HotCounter::default();
        registry.register(
            "messages_collapsed",
            "Retained messages superseded by a newer one with the same collapse name",
            messages_collapsed.clone(),
        );
        let ephemeral_delivered = HotCounter::default();
        registry.register(
            "ephemeral_delivered",
            "Ephemeral messages handed to a live connection (one per recipient)",
            ephemeral_delivered.clone(),
        );
        let ephemeral_dropped = HotCounter::default();
        registry.register(
            "ephemeral_dropped",
            "Ephemeral messages that reached no live connection (never kept)",
            ephemeral_dropped.clone(),
        );
        let retained_messages = Gauge::default();
        registry.register(
            "retained_messages",
            "Messages retained in per-key streams",
            retained_messages.clone(),
        );
        let retained_bytes = Gauge::default();
        registry.register(
            "retained_bytes",
            "Bytes retained messages count against --buffer-memory",
            retained_bytes.clone(),
        );
        let cluster_ready = Gauge::default();
        cluster_ready.set(1);
        registry.register(
            "cluster_ready",
            "1 while the cluster engine's Redis answers, 0 while it does not (1 without --redis)",
            cluster_ready.clone(),
        );
        let cluster_reconnects = Counter::default();
        registry.register(
            "cluster_reconnects",
            "Times the Redis subscription was lost and made anew (each key caught up)",
            cluster_reconnects.clone(),
        );
        let evicted_family = Family::<Labels, HotCounter>::default();
        registry.register(
            "messages_evicted",
            "Retained messages evicted, by reason (ttl, max, memory)",
            evicted_family.clone(),
        );
        let evicted = Eviction::ALL
            .iter()
            .map(|r| {
                evicted_family
                    .get_or_create(&vec![("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let dropped_family = Family::<Labels, HotCounter>::default();
        registry.register(
            "messages_dropped",
            "Frames or messages not delivered, by reason",
            dropped_family.clone(),
        );
        let dropped = DropReason::ALL
            .iter()
            .map(|r| {
                dropped_family
                    .get_or_create(&vec![("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let closed_family = Family::<Labels, Counter>::default();
        registry.register(
            "connections_closed",
            "WebSocket connections ended, by reason",
            closed_family.clone(),
        );
        let closed = CloseReason::ALL
            .iter()
            .map(|r| {
                closed_family
                    .get_or_create(&vec![("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let rejected_family = Family::<Labels, Counter>::default();
        registry.register(
            "handshakes_rejected",
            "WebSocket handshakes refused with an HTTP error, by reason \
             (headers_too_large: any request)",
            rejected_family.clone(),
        );
        let handshakes_rejected = HandshakeRejection::ALL
            .iter()
            .map(|r| {
                rejected_family
                    .get_or_create(&vec![("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let auth_family = Family::<Labels, Counter>::default();
        registry.register(
            "auth_refused",
            "Registrations, event streams and presence requests refused for their token, \
             by reason (missing, invalid, expired, wrong_key)",
            auth_family.clone(),
        );
        let auth_refused = Refusal::ALL
            .iter()
            .map(|r| {
                auth_family
                    .get_or_create(&vec![("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let publish_unauthorized = Counter::default();
        registry.register(
            "publish_unauthorized",
            "HTTP publishes refused with 401: no or a wrong publisher token \
             (WebSocket deliveries: messages_dropped reason unauthorized)",
            publish_unauthorized.clone(),
        );
        let presence_watches = Gauge::default();
        registry.register(
            "presence_watches",
            "Presence watches held now (WebSocket watch and SSE /presence/KEY streams)",
            presence_watches.clone(),
        );
        let presence_events = Counter::default();
        registry.register(
            "presence_events",
            "Presence pushes queued to a watcher (one per watcher and frame)",
            presence_events.clone(),
        );
        let presence_events_coalesced = Counter::default();
        registry.register(
            "presence_events_coalesced",
            "Presence changes folded into a push still queued to a watcher",
            presence_events_coalesced.clone(),
        );
        let limited_family = Family::<Labels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a per-IP limit, by limit \
             (connections_per_ip, publish_rate_per_ip)",
            limited_family.clone(),
        );
        let rate_limited = ["connections_per_ip", "publish_rate_per_ip"]
            .iter()
            .map(|limit| {
                limited_family
                    .get_or_create(&vec![("limit", *limit)])
                    .clone()
            })
            .collect();
        let tls_failed_family = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshakes_failed",
            "TLS handshakes that did not complete, by reason (timeout, closed, protocol: \
             not TLS, nothing in common, or the certificate refused)",
            tls_failed_family.clone(),
        );
        let tls_handshakes_failed = TlsFailure::ALL
            .iter()
            .map(|r| {
                tls_failed_family
                    .get_or_create(&vec![("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let reloads_family = Family::<Labels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate reloads on SIGHUP, by result (ok; failed: the previous \
             certificate stays in use)",
            reloads_family.clone(),
        );
        let tls_reloads = ["ok", "failed"].map(|result| {
            reloads_family
                .get_or_create(&vec![("result", result)])
                .clone()
        });
        Self {
            registry,
            tls_handshakes_failed,
            tls_reloads,
            rate_limited,
            auth_refused,
            publish_unauthorized,
            connections,
            event_streams,
            connections_opened,
            connections_rejected,
            overflow_evicted,
            accept_errors,
            keys,
            frames_received,
            registrations,
            messages_routed,
            messages_delivered,
            messages_buffered,
            messages_replayed,
            messages_collapsed,
            ephemeral_delivered,
            ephemeral_dropped,
            retained_messages,
            retained_bytes,
            cluster_ready,
            cluster_reconnects,
            presence_watches,
            presence_events,
            presence_events_coalesced,
            evicted,
            dropped,
            closed,
            handshakes_rejected,
        }
    }

    /// Counts `n` messages dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if let Some(counter) = self.dropped.get(reason.index()) {
            counter.inc_by(n);
        }
    }

    /// Counts `n` retained messages evicted for `reason`.
    pub fn evicted(&self, reason: Eviction, n: u64) {
        if let Some(i) = Eviction::ALL.iter().position(|r| *r == reason) {
            self.evicted[i].inc_by(n);
        }
    }

    /// The current value of the eviction counter for `reason`.
    pub fn evicted_count(&self, reason: Eviction) -> u64 {
        Eviction::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.evicted[i].get())
    }

    /// Counts one connection ended for `reason`.
    pub fn closed(&self, reason: CloseReason) {
        if let Some(counter) = self.closed.get(reason.index()) {
            counter.inc();
        }
    }

    /// Counts one handshake refused for `reason`.
    pub fn handshake_rejected(&self, reason: HandshakeRejection) {
        if let Some(counter) = self.handshakes_rejected.get(reason.index()) {
            counter.inc();
        }
    }

    /// The current value of the handshake rejection counter for `reason`.
    pub fn handshake_rejected_count(&self, reason: HandshakeRejection) -> u64 {
        self.handshakes_rejected
            .get(reason.index())
            .map_or(0, Counter::get)
    }

    /// Counts one request refused with 429 by `limit`.
    pub fn rate_limited(&self, limit: crate::policy::limits::Limited) {
        let index = match limit {
            crate::policy::limits::Limited::Connections => 0,
            crate::policy::limits::Limited::PublishRate(_) => 1,
        };
        if let Some(counter) = self.rate_limited.get(index) {
            counter.inc();
        }
    }

    /// Counts one TLS handshake that failed for `reason`.
    pub fn tls_handshake_failed(&self, reason: TlsFailure) {
        if let Some(counter) = self.tls_handshakes_failed.get(reason.index()) {
            counter.inc();
        }
    }

    /// The `tls_reloads` counter of successful (`ok`) or failed reloads.
    pub fn tls_reloads(&self, ok: bool) -> &Counter {
        &self.tls_reloads[usize::from(!ok)]
    }

    /// Counts one token refused for `reason`.
    pub fn auth_refused(&self, reason: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == reason) {
            self.auth_refused[i].inc();
        }
    }

    /// The current value of the drop counter for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.index()).map_or(0, Counter::get)
    }

    /// The current value of the close counter for `reason`.
    pub fn closed_count(&self, reason: CloseReason) -> u64 {
        self.closed.get(reason.index()).map_or(0, Counter::get)
    }

    /// Messages dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(Counter::get).sum()
    }

    /// Renders every series in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_series() {
        let metrics = Metrics::new();
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            metrics.dropped(*reason, i as u64 + 1);
        }
        for reason in CloseReason::ALL {
            metrics.closed(reason);
        }
        for reason in HandshakeRejection::ALL {
            metrics.handshake_rejected(reason);
        }
        let text = metrics.encode();
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            let line = format!(
                "notify_relay_messages_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                i + 1
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        for reason in CloseReason::ALL {
            let line = format!(
                "notify_relay_connections_closed_total{{reason=\"{}\"}} 1",
                reason.as_str()
            );
            assert!(text.contains(&line), "missing {line}");
        }
        for reason in HandshakeRejection::ALL {
            let line = format!(
                "notify_relay_handshakes_rejected_total{{reason=\"{}\"}} 1",
                reason.as_str()
            );
            assert!(text.contains(&line), "missing {line}");
        }
        assert!(text.contains("notify_relay_connections 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
