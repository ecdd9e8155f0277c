//! Counters and gauges served at `GET /metrics` in the Prometheus text format.
//!
//! Every labelled series is created up front and kept as a handle, so the hot path is
//! one atomic add and never looks a label set up.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::protocol::{Ignored, Rejection};

/// Why a frame or message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A text frame that is not a JSON object (PROTOCOL.md rules 5 and 6).
    Ignored(Ignored),
    /// A JSON object the relay cannot act on.
    Rejected(Rejection),
    /// A binary frame.
    Binary,
    /// Nobody is registered under the recipient key.
    NoRecipient,
    /// A recipient's outgoing queue was full.
    SlowConsumer,
}

impl DropReason {
    const ALL: [DropReason; 12] = [
        DropReason::Ignored(Ignored::NotJson),
        DropReason::Ignored(Ignored::BadJson),
        DropReason::Rejected(Rejection::MissingRecipient),
        DropReason::Rejected(Rejection::RecipientNotString),
        DropReason::Rejected(Rejection::EmptyKey),
        DropReason::Rejected(Rejection::KeyTooLong),
        DropReason::Rejected(Rejection::MissingMessage),
        DropReason::Rejected(Rejection::InvalidId),
        DropReason::Rejected(Rejection::LoneSurrogate),
        DropReason::Binary,
        DropReason::NoRecipient,
        DropReason::SlowConsumer,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Ignored(why) => why.as_str(),
            DropReason::Rejected(why) => why.as_str(),
            DropReason::Binary => "binary",
            DropReason::NoRecipient => "no_recipient",
            DropReason::SlowConsumer => "slow_consumer",
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
}

impl CloseReason {
    const ALL: [CloseReason; 9] = [
        CloseReason::ClientClose,
        CloseReason::Reset,
        CloseReason::Shutdown,
        CloseReason::PingTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Oversize,
        CloseReason::InvalidUtf8,
        CloseReason::ProtocolError,
        CloseReason::MessageTimeout,
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
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// The relay's metrics. Cloned handles share the same series.
#[derive(Debug)]
pub struct Metrics {
    /// Owns the series and their help texts, for encoding.
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_opened: Counter,
    /// TCP connections refused because `max_connections` was reached.
    pub connections_rejected: Counter,
    /// Failed accepts (e.g. out of file descriptors); the accept loop backs off.
    pub accept_errors: Counter,
    /// Keys with at least one connection; set from the registry at scrape time.
    pub keys: Gauge,
    /// Data frames (text and binary) received.
    pub frames_received: Counter,
    /// Registrations processed.
    pub registrations: Counter,
    /// Delivery requests processed (one per frame addressed to a key).
    pub messages_routed: Counter,
    /// Messages handed to a connection (one per recipient connection).
    pub messages_delivered: Counter,
    /// Per-reason handles of `messages_dropped`, indexed by [`DropReason::index`].
    dropped: Vec<Counter>,
    /// Per-reason handles of `connections_closed`, indexed by [`CloseReason::index`].
    closed: Vec<Counter>,
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
        let connections_opened = Counter::default();
        registry.register(
            "connections_opened",
            "WebSocket connections accepted",
            connections_opened.clone(),
        );
        let connections_rejected = Counter::default();
        registry.register(
            "connections_rejected",
            "TCP connections refused with 503 because max-connections was reached",
            connections_rejected.clone(),
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
        let frames_received = Counter::default();
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
        let messages_routed = Counter::default();
        registry.register(
            "messages_routed",
            "Frames addressed to a key (delivery requests)",
            messages_routed.clone(),
        );
        let messages_delivered = Counter::default();
        registry.register(
            "messages_delivered",
            "Messages queued to a recipient connection",
            messages_delivered.clone(),
        );
        let dropped_family = Family::<Labels, Counter>::default();
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
        Self {
            registry,
            connections,
            connections_opened,
            connections_rejected,
            accept_errors,
            keys,
            frames_received,
            registrations,
            messages_routed,
            messages_delivered,
            dropped,
            closed,
        }
    }

    /// Counts `n` messages dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if let Some(counter) = self.dropped.get(reason.index()) {
            counter.inc_by(n);
        }
    }

    /// Counts one connection ended for `reason`.
    pub fn closed(&self, reason: CloseReason) {
        if let Some(counter) = self.closed.get(reason.index()) {
            counter.inc();
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
        assert!(text.contains("notify_relay_connections 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
