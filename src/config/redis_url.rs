//! `--redis` read into what it points at: one Redis (or Valkey) server, or a Redis
//! Cluster by its seed nodes. Checked when the configuration is parsed, so a value the
//! Redis client cannot use stops the relay at start with the form wanted; the Redis
//! engine starts from the same parse.

use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// The URL scheme of a Redis Cluster given by one or more seed nodes.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// What `--redis` points at.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One Redis (or Valkey) server.
    Single(ConnectionInfo),
    /// A Redis Cluster, by its seed nodes (any of them will do to find the others).
    Cluster(Vec<ConnectionInfo>),
}

impl RedisTarget {
    /// Reads `--redis`: `redis://...` is one server; `redis+cluster://[AUTH@]HOST:PORT[,HOST:PORT...]`
    /// or several comma-separated `redis://` URLs are a cluster.
    pub fn parse(url: &str) -> Result<Self, String> {
        let node = |url: &str| {
            url.into_connection_info().map_err(|_| {
                format!(
                    "`{url}` is not a Redis URL: write redis://HOST:PORT[/DB] \
                     (redis://:PASSWORD@HOST:PORT/DB with a password), or \
                     {CLUSTER_SCHEME}HOST:PORT[,HOST:PORT...] for a Redis Cluster"
                )
            })
        };
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            if hosts.is_empty() || hosts.contains(['/', '?']) {
                return Err(format!(
                    "a Redis Cluster URL is {CLUSTER_SCHEME}[USER:PASSWORD@]HOST:PORT[,HOST:PORT...] \
                     (no database, no options)"
                ));
            }
            let nodes = hosts
                .split(',')
                .map(|host| node(&format!("redis://{auth}{host}/")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Self::Cluster(nodes));
        }
        if url.starts_with("rediss") {
            return Err("TLS to Redis is not built in".into());
        }
        if url.contains(',') {
            let nodes = url
                .split(',')
                .map(|u| node(u.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Self::Cluster(nodes));
        }
        Ok(Self::Single(node(url)?))
    }

    /// Where it points, for log lines: the URL without credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Single(node) => {
                format!(
                    "redis://{}/{}",
                    node_address(node),
                    node.redis_settings().db()
                )
            }
            Self::Cluster(nodes) => format!(
                "{CLUSTER_SCHEME}{}",
                nodes.iter().map(node_address).collect::<Vec<_>>().join(",")
            ),
        }
    }

    /// Whether this is a Redis Cluster (sharded pub/sub) rather than one server.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A node's `host:port`, for log lines (never its credentials).
pub fn node_address(node: &ConnectionInfo) -> String {
    match node.addr() {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        let Ok(RedisTarget::Cluster(nodes)) =
            RedisTarget::parse("redis+cluster://:pw@10.0.0.1:7000,h:7001")
        else {
            panic!("a cluster");
        };
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].redis_settings().password(), Some("pw"));
        assert_eq!(nodes[1].redis_settings().password(), Some("pw"));
        assert!(matches!(
            RedisTarget::parse("redis://a:1/,redis://b:2/"),
            Ok(RedisTarget::Cluster(n)) if n.len() == 2
        ));
        assert!(matches!(
            RedisTarget::parse("redis://a:1/0"),
            Ok(RedisTarget::Single(_))
        ));
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(RedisTarget::parse("redis+cluster://h:1/0").is_err());
        assert!(RedisTarget::parse("rediss://h:1").is_err());
        assert!(RedisTarget::parse("http://h:1").is_err());
    }
}
