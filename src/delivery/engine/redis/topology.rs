//! Where the relay's data and channels live in Redis: one server, or the shards of a
//! Redis Cluster.
//!
//! Both are described the same way, as a list of [`Shard`]s that own hash slots: one
//! server is one shard owning every slot. The listener keeps one pub/sub connection per
//! shard and subscribes each key's channel on the shard that owns the key's slot; on a
//! cluster it uses sharded pub/sub (SSUBSCRIBE, and SPUBLISH in the scripts), so a
//! message only touches its slot's shard.

use ::redis::{ConnectionAddr, ConnectionInfo, Value};

use crate::config::redis_url::node_address as address;

/// How many hash slots a Redis Cluster has.
pub const SLOTS: usize = 16384;

/// Classic pub/sub on one server, sharded pub/sub on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// PUBLISH / SUBSCRIBE / UNSUBSCRIBE.
    Classic,
    /// SPUBLISH / SSUBSCRIBE / SUNSUBSCRIBE: a message reaches only its slot's shard.
    Sharded,
}

impl Flavor {
    /// The publish command, as the scripts call it.
    pub fn publish(self) -> &'static str {
        match self {
            Self::Classic => "PUBLISH",
            Self::Sharded => "SPUBLISH",
        }
    }

    pub fn subscribe(self) -> &'static str {
        match self {
            Self::Classic => "SUBSCRIBE",
            Self::Sharded => "SSUBSCRIBE",
        }
    }

    pub fn unsubscribe(self) -> &'static str {
        match self {
            Self::Classic => "UNSUBSCRIBE",
            Self::Sharded => "SUNSUBSCRIBE",
        }
    }
}

/// The hash slot of a Redis name: CRC16 of its hash tag (the text between the first `{`
/// and the next `}`, when not empty) or of the whole name, modulo [`SLOTS`].
pub fn slot(name: &[u8]) -> u16 {
    let tagged = name.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &name[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let hashed = tagged.unwrap_or(name);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS as u16
}

/// One pub/sub shard: a server and the slots it owns.
#[derive(Debug, Clone)]
pub struct Shard {
    /// How to connect to it (the seed's credentials, the shard's address).
    pub node: ConnectionInfo,
    /// The slot ranges it owns, inclusive; empty for a single server (it owns all).
    pub slots: Vec<(u16, u16)>,
}

impl Shard {
    /// `host:port`, for log lines.
    pub fn name(&self) -> String {
        address(&self.node)
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots.is_empty() || self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// The shards, and which owns each slot.
#[derive(Debug, Clone)]
pub struct Topology {
    pub flavor: Flavor,
    pub shards: Vec<Shard>,
    /// The shard index of each slot (cluster only).
    owner: Vec<u16>,
}

impl Topology {
    /// One server: one shard that owns everything.
    pub fn single(node: ConnectionInfo) -> Self {
        Self {
            flavor: Flavor::Classic,
            shards: vec![Shard {
                node,
                slots: Vec::new(),
            }],
            owner: Vec::new(),
        }
    }

    /// A cluster from its `CLUSTER SLOTS` answer, asked of `asked` (whose credentials
    /// the shards' connections use). `None` unless every slot has a master.
    pub fn from_cluster_slots(asked: &ConnectionInfo, answer: &Value) -> Option<Self> {
        let Value::Array(ranges) = answer else {
            return None;
        };
        let asked_host = match asked.addr() {
            ConnectionAddr::Tcp(host, _) => host.clone(),
            _ => return None,
        };
        let mut shards: Vec<Shard> = Vec::new();
        let mut owner = vec![u16::MAX; SLOTS];
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(start), Some(end), Some(Value::Array(master))) =
                (int(fields.first()), int(fields.get(1)), fields.get(2))
            else {
                return None;
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return None,
            };
            // An empty host means "the node you asked".
            let host = if host.is_empty() || host == "?" {
                asked_host.clone()
            } else {
                host
            };
            let port = u16::try_from(int(master.get(1))?).ok()?;
            let (start, end) = (u16::try_from(start).ok()?, u16::try_from(end).ok()?);
            if start > end || usize::from(end) >= SLOTS {
                return None;
            }
            let addr = ConnectionAddr::Tcp(host, port);
            let index = match shards.iter().position(|s| *s.node.addr() == addr) {
                Some(index) => index,
                None => {
                    shards.push(Shard {
                        node: asked.clone().set_addr(addr),
                        slots: Vec::new(),
                    });
                    shards.len() - 1
                }
            };
            shards[index].slots.push((start, end));
            for slot in start..=end {
                owner[usize::from(slot)] = index as u16;
            }
        }
        if owner.contains(&u16::MAX) {
            return None;
        }
        Some(Self {
            flavor: Flavor::Sharded,
            shards,
            owner,
        })
    }

    /// The shard that owns the slot of `name` (a channel or a key).
    pub fn shard_of(&self, name: &str) -> usize {
        match self.flavor {
            Flavor::Classic => 0,
            Flavor::Sharded => usize::from(
                self.owner
                    .get(usize::from(slot(name.as_bytes())))
                    .copied()
                    .unwrap_or(0),
            ),
        }
    }

    /// A probe channel for each shard that hashes to a slot the shard owns (so that the
    /// probe, published through its slot, comes back on that shard's connection).
    pub fn probe_channels(&self, relay: &str) -> Vec<String> {
        self.shards
            .iter()
            .enumerate()
            .map(|(index, shard)| {
                (0u32..)
                    .map(|n| super::keys::probe_channel(relay, index, n))
                    .find(|channel| shard.owns(slot(channel.as_bytes())))
                    .unwrap_or_default()
            })
            .collect()
    }
}

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redis_url::RedisTarget;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Known values (CLUSTER KEYSLOT on Redis 7).
        assert_eq!(slot(b"nr:{a}:m"), 15495);
        assert_eq!(slot(b"nr:{a}:m"), slot(b"nr:{a}:ch"));
        assert_eq!(slot(b"foo"), 12182);
        // An empty tag hashes the whole name.
        assert_ne!(slot(b"x{}a"), slot(b"y{}a"));
    }

    #[test]
    fn cluster_slots_make_shards_and_probe_channels() {
        let seed = RedisTarget::parse("redis://127.0.0.1:7000/").map(|t| match t {
            RedisTarget::Single(info) => info,
            RedisTarget::Cluster(_) => unreachable!(),
        });
        let seed = seed.expect("parses");
        let master = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, port: i64| {
            Value::Array(vec![Value::Int(a), Value::Int(b), master(port)])
        };
        let answer = Value::Array(vec![
            range(0, 5460, 7000),
            range(5461, 10922, 7001),
            range(10923, 16383, 7002),
        ]);
        let topology = Topology::from_cluster_slots(&seed, &answer).expect("full coverage");
        assert_eq!(topology.shards.len(), 3);
        assert_eq!(topology.shard_of("nr:{a}:ch"), 2);
        for (index, channel) in topology.probe_channels("r1").iter().enumerate() {
            assert_eq!(topology.shard_of(channel), index, "{channel}");
        }
        let partial = Value::Array(vec![range(0, 5460, 7000)]);
        assert!(Topology::from_cluster_slots(&seed, &partial).is_none());
    }
}
