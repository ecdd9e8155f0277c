//! Rate limits (Part 5 of docs/PROTOCOL.md), all off by default: connections at once per
//! client IP, HTTP publishes per second per client IP, and frames per second per
//! connection (token buckets).
//!
//! The client IP is the peer's address, or, when the peer is a trusted proxy
//! (`--trusted-proxies`), the address it forwarded (`X-Forwarded-For`, else `X-Real-IP`).
//! Headers from anyone else are ignored, so a client cannot pick its own IP.
//!
//! Every table is bounded: the connection counts hold only IPs with a connection open
//! (at most `--max-connections` entries), and the publish buckets at most
//! [`MAX_TRACKED_PUBLISHERS`] IPs (idle ones are dropped first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use hyper::header::HeaderMap;
use ipnet::IpNet;
use tokio::time::Instant;

/// Most client IPs whose publish rate is tracked at once. Past it, buckets that have
/// refilled (idle IPs) are dropped; if none has, a new IP is refused until one does.
pub const MAX_TRACKED_PUBLISHERS: usize = 65_536;
/// Excess frames in a row (none accepted in between) after which a connection is closed
/// (1008): it is flooding, not bursting.
pub const FLOOD_FRAMES: u32 = 100;

/// The rate-limit settings (all off by default).
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args)]
pub struct LimitsConfig {
    /// WebSocket connections and event streams at once per client IP; past it, 429.
    #[arg(long, env = "NOTIFY_RELAY_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// HTTP publishes per second per client IP (bursts of as many); past it, 429 with
    /// Retry-After.
    #[arg(long, env = "NOTIFY_RELAY_PUBLISH_RATE_PER_IP")]
    pub publish_rate_per_ip: Option<u32>,

    /// Frames per second per WebSocket connection; excess frames get the error
    /// rate_limited and are dropped, a connection that keeps flooding is closed (1008).
    #[arg(long, env = "NOTIFY_RELAY_FRAME_RATE")]
    pub frame_rate: Option<u32>,

    /// Frames a connection may send at once above --frame-rate [default: the rate].
    #[arg(long, env = "NOTIFY_RELAY_FRAME_BURST", requires = "frame_rate")]
    pub frame_burst: Option<u32>,

    /// Proxies (addresses or CIDRs, comma-separated, e.g. 127.0.0.1,10.0.0.0/8) whose
    /// X-Forwarded-For / X-Real-IP name the client; from others those headers are ignored.
    #[arg(long, env = "NOTIFY_RELAY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<IpNet>,
}

/// One `--trusted-proxies` entry: a CIDR, or a bare address meaning that host alone (/32,
/// /128), as nginx's `set_real_ip_from` and most proxies write it. A bad entry is named
/// by what is wrong with it: the address or the prefix length.
fn trusted_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address.parse().map_err(|_| {
        format!("`{address}` is not an IP address (e.g. 127.0.0.1, ::1 or 10.0.0.0/8)")
    })?;
    let most = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => most,
        Some(prefix) => prefix
            .parse::<u8>()
            .ok()
            .filter(|prefix| *prefix <= most)
            .ok_or_else(|| {
                format!("`/{prefix}` is not a prefix length for {address}: it must be 0 to {most}")
            })?,
    };
    IpNet::new(address, prefix).map_err(|e| format!("`{text}`: {e}"))
}

/// The client a request comes from: `peer`, or the address a trusted proxy forwarded.
///
/// `X-Forwarded-For` is read from the right: each proxy appends the address it got the
/// request from, so the rightmost entry that is not itself a trusted proxy is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map_while(|item| item.trim().parse().ok())
        .collect();
    if let Some(client) = forwarded.iter().rev().find(|ip| !is_trusted(ip)) {
        return canonical(*client);
    }
    if let Some(first) = forwarded.first() {
        return canonical(*first);
    }
    headers
        .get("x-real-ip")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .map_or(peer, canonical)
}

/// IPv4 seen through a dual-stack socket (`::ffff:a.b.c.d`) counts as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            last: now,
            rate: f64::from(rate.max(1)),
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// Whether the bucket has refilled completely (its owner has been idle).
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Why a request was refused by a per-IP limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// `--max-connections-per-ip` connections are open from this IP.
    Connections,
    /// Over `--publish-rate-per-ip`; try again after this long.
    PublishRate(Duration),
}

/// The per-IP tables of a running relay.
#[derive(Debug)]
pub struct PerIp {
    max_connections: Option<usize>,
    publish_rate: Option<u32>,
    trusted_proxies: Vec<IpNet>,
    /// Open connections per IP; an IP leaves when its last connection closes.
    connections: Arc<DashMap<IpAddr, usize>>,
    /// Publish buckets per IP.
    publishers: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl PerIp {
    /// The tables `config` asks for.
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            max_connections: config.max_connections_per_ip,
            publish_rate: config.publish_rate_per_ip,
            trusted_proxies: config.trusted_proxies.clone(),
            connections: Arc::default(),
            publishers: Mutex::default(),
        }
    }

    /// The client IP of a request from `peer` (see [`client_ip`]).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(canonical(peer), headers, &self.trusted_proxies)
    }

    /// Counts a long-lived connection (WebSocket or event stream) from `ip`; the slot
    /// gives it back when dropped. `None` (no limit) costs nothing per connection.
    pub fn connect(&self, ip: IpAddr) -> Result<Option<IpSlot>, Limited> {
        let Some(max) = self.max_connections else {
            return Ok(None);
        };
        if max == 0 {
            return Err(Limited::Connections);
        }
        let mut count = self.connections.entry(ip).or_insert(0);
        if *count >= max {
            return Err(Limited::Connections);
        }
        *count += 1;
        Ok(Some(IpSlot {
            ip,
            table: Arc::clone(&self.connections),
        }))
    }

    /// Takes one publish from `ip`'s allowance.
    pub fn publish(&self, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        let Some(rate) = self.publish_rate else {
            return Ok(());
        };
        let mut publishers = self
            .publishers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !publishers.contains_key(&ip) && publishers.len() >= MAX_TRACKED_PUBLISHERS {
            publishers.retain(|_, bucket| !bucket.is_full(now));
            if publishers.len() >= MAX_TRACKED_PUBLISHERS {
                return Err(Limited::PublishRate(Duration::from_secs(1)));
            }
        }
        publishers
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, rate, now))
            .take(now)
            .map_err(Limited::PublishRate)
    }

    /// IPs with a connection open (for tests and metrics).
    pub fn tracked_connections(&self) -> usize {
        self.connections.len()
    }
}

/// One connection's place in its IP's count; released when dropped.
#[derive(Debug)]
pub struct IpSlot {
    ip: IpAddr,
    table: Arc<DashMap<IpAddr, usize>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.table.remove_if_mut(&self.ip, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

/// Frames per second of one connection: a token bucket and the count of excess frames
/// in a row.
#[derive(Debug)]
pub struct FrameLimit {
    bucket: TokenBucket,
    excess_in_a_row: u32,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    /// Within the rate: handle it.
    Accept,
    /// Over the rate: drop it (error `rate_limited`).
    Drop,
    /// Over the rate for [`FLOOD_FRAMES`] frames in a row: close the connection.
    Close,
}

impl FrameLimit {
    /// The limit `config` sets, if any.
    pub fn new(config: &LimitsConfig, now: Instant) -> Option<Box<Self>> {
        let rate = config.frame_rate?;
        let burst = config.frame_burst.unwrap_or(rate);
        Some(Box::new(Self {
            bucket: TokenBucket::new(rate, burst, now),
            excess_in_a_row: 0,
        }))
    }

    /// Accounts one frame received at `now`.
    pub fn frame(&mut self, now: Instant) -> FrameVerdict {
        match self.bucket.take(now) {
            Ok(()) => {
                self.excess_in_a_row = 0;
                FrameVerdict::Accept
            }
            Err(_) => {
                self.excess_in_a_row += 1;
                if self.excess_in_a_row >= FLOOD_FRAMES {
                    FrameVerdict::Close
                } else {
                    FrameVerdict::Drop
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().expect("ip");
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().expect("net")];
        let forged = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let stranger: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(client_ip(stranger, &forged, &trusted), stranger);
        assert_eq!(client_ip(proxy, &forged, &[]), proxy);
        assert_eq!(
            client_ip(proxy, &forged, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        // The client prepends a forged entry: the proxy appended the real one.
        let prepended = headers(&[("x-forwarded-for", "10.9.9.9, 203.0.113.9")]);
        assert_eq!(
            client_ip(proxy, &prepended, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        let real_ip = headers(&[("x-real-ip", "203.0.113.10")]);
        assert_eq!(
            client_ip(proxy, &real_ip, &trusted),
            "203.0.113.10".parse::<IpAddr>().expect("ip")
        );
        let garbage = headers(&[("x-forwarded-for", "not an ip")]);
        assert_eq!(client_ip(proxy, &garbage, &trusted), proxy);
    }

    #[test]
    fn connection_counts_are_released_and_forgotten() {
        let per_ip = PerIp::new(&LimitsConfig {
            max_connections_per_ip: Some(2),
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let a = per_ip.connect(ip).expect("first");
        let b = per_ip.connect(ip).expect("second");
        assert_eq!(per_ip.connect(ip).err(), Some(Limited::Connections));
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(per_ip.connect(other).is_ok());
        drop(a);
        let c = per_ip.connect(ip).expect("a place was freed");
        drop((b, c));
        assert_eq!(per_ip.tracked_connections(), 0, "no entry left behind");
    }

    #[test]
    fn publish_rate_refills_and_says_when() {
        let per_ip = PerIp::new(&LimitsConfig {
            publish_rate_per_ip: Some(2),
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let now = Instant::now();
        assert!(per_ip.publish(ip, now).is_ok());
        assert!(per_ip.publish(ip, now).is_ok());
        let Err(Limited::PublishRate(wait)) = per_ip.publish(ip, now) else {
            panic!("third publish in the same instant is refused");
        };
        assert_eq!(wait, Duration::from_millis(500));
        assert!(per_ip.publish(ip, now + wait).is_ok());
    }

    #[test]
    fn frames_over_the_rate_are_dropped_then_the_flood_closes() {
        let now = Instant::now();
        let config = LimitsConfig {
            frame_rate: Some(10),
            frame_burst: Some(3),
            ..LimitsConfig::default()
        };
        let mut limit = FrameLimit::new(&config, now).expect("configured");
        for _ in 0..3 {
            assert_eq!(limit.frame(now), FrameVerdict::Accept);
        }
        for _ in 1..FLOOD_FRAMES {
            assert_eq!(limit.frame(now), FrameVerdict::Drop);
        }
        assert_eq!(
            limit.frame(now + Duration::from_millis(100)),
            FrameVerdict::Accept,
            "a refilled token resets the count"
        );
        for _ in 1..FLOOD_FRAMES {
            assert_eq!(
                limit.frame(now + Duration::from_millis(100)),
                FrameVerdict::Drop
            );
        }
        assert_eq!(
            limit.frame(now + Duration::from_millis(100)),
            FrameVerdict::Close
        );
    }
}
