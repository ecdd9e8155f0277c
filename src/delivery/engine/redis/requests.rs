//! The connection the scripts run on: a [`ConnectionManager`] to one server, or the
//! redis crate's cluster client, which sends each script to the master of its keys' slot
//! (every script's keys share one hash tag) and follows MOVED redirections by itself.

use std::sync::Mutex;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::{Shared, REQUEST_TIMEOUT};
use crate::config::redis_url::RedisTarget;
use crate::delivery::engine::Unavailable;

/// How to reach Redis for requests.
pub(super) enum Requests {
    /// One server: a manager that reconnects by itself.
    Single(ConnectionManager),
    /// A cluster: the client, and its connection once one was made (the relay may start
    /// before the cluster is reachable).
    Cluster {
        client: Box<ClusterClient>,
        connection: Mutex<Option<ClusterConnection>>,
    },
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Requests::Single",
            Self::Cluster { .. } => "Requests::Cluster",
        })
    }
}

impl Requests {
    /// Requests to `target`; nothing is connected yet.
    pub fn new(target: &RedisTarget) -> RedisResult<Self> {
        Ok(match target {
            RedisTarget::Single(node) => Self::Single(ConnectionManager::new_lazy_with_config(
                ::redis::Client::open(node.clone())?,
                ConnectionManagerConfig::new()
                    .set_response_timeout(Some(REQUEST_TIMEOUT))
                    .set_connection_timeout(Some(REQUEST_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(REQUEST_TIMEOUT),
            )?),
            RedisTarget::Cluster(nodes) => Self::Cluster {
                client: Box::new(
                    ClusterClient::builder(nodes.clone())
                        .connection_timeout(REQUEST_TIMEOUT)
                        .response_timeout(REQUEST_TIMEOUT)
                        .retries(2)
                        .min_retry_wait(10)
                        .max_retry_wait(200)
                        .build()?,
                ),
                connection: Mutex::new(None),
            },
        })
    }

    /// Makes the cluster connection if there is none yet (the cluster client keeps it
    /// connected from then on); nothing to do for one server.
    pub async fn connect(&self) -> RedisResult<()> {
        if let Self::Cluster { client, connection } = self {
            if Shared::lock(connection).is_none() {
                let made = client.get_async_connection().await?;
                Shared::lock(connection).get_or_insert(made);
            }
        }
        Ok(())
    }

    /// A handle for one request.
    pub fn connection(&self) -> Result<Connection, Unavailable> {
        match self {
            Self::Single(manager) => Ok(Connection::Single(manager.clone())),
            Self::Cluster { connection, .. } => Shared::lock(connection)
                .clone()
                .map(Connection::Cluster)
                .ok_or(Unavailable),
        }
    }
}

/// A handle on [`Requests`]' connection.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
