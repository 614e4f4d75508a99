//! Waiting for an actor's journal to grow (contract rule 27): `XREAD BLOCK`
//! on the actor's entries stream, over connections of its own.
//!
//! A blocked command holds its connection until it returns, so it must not
//! go over the shared, pipelined connections that carry everyone's calls:
//! every call queued behind it would wait too. Each wait takes a dedicated
//! connection ([`Watchers`]): an idle one, or a new one. It goes back to
//! the idle list after a command that completed, and is dropped after an
//! error, a timeout, or a caller that gave up mid-command, so no
//! half-finished exchange is ever reused.

use std::sync::Mutex;
use std::time::Duration;

use journal_core::{JournalError, JournalResult};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisResult, Value};

use crate::connection::{servers_of, Target};
use crate::error::{redis_error, BACKEND};
use crate::options::RedisOptions;

/// The longest one `XREAD BLOCK` waits, whatever the caller's timeout:
/// returning early is allowed (the caller reads and waits again).
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(300);

/// Idle dedicated connections kept for later waits; more are closed.
pub(crate) const MAX_IDLE: usize = 16;

/// Where the dedicated connections go.
enum Client {
    Single(redis::Client),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// One dedicated connection.
enum Connection {
    Single(MultiplexedConnection),
    Cluster(Box<ClusterConnection>),
}

impl Connection {
    /// Sends `cmd` to the server, or to the primary of `slot` on a cluster
    /// (the cluster client follows `MOVED` and `ASK`).
    async fn send(&mut self, cmd: &redis::Cmd, slot: u16) -> RedisResult<Value> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                c.route_command(cmd.clone(), route).await
            }
        }
    }
}

/// Dedicated connections for blocking reads, opened on demand.
pub(crate) struct Watchers {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    connect_timeout: Duration,
    /// Added to the blocking time to give the reply time to arrive.
    margin: Duration,
    servers: String,
}

impl Watchers {
    /// Clients for `target`; nothing connects until the first wait.
    pub(crate) fn new(target: &Target, options: &RedisOptions) -> JournalResult<Self> {
        let invalid = |e: redis::RedisError| {
            JournalError::storage(BACKEND, format!("invalid Redis URL: {:?}", e.kind()))
        };
        let margin = options.command_timeout;
        let (client, servers) = match target {
            Target::Single(url) => (
                Client::Single(redis::Client::open(url.as_str()).map_err(invalid)?),
                servers_of(url),
            ),
            Target::Cluster(nodes) => {
                // Each node's reply may take as long as the longest block;
                // every wait is bounded here by its own block and margin.
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(MAX_BLOCK.saturating_add(margin))
                    .overall_response_timeout(Some(MAX_BLOCK.saturating_add(margin)))
                    .retries(40)
                    .min_retry_wait(5)
                    .max_retry_wait(250)
                    .retry_wait_formula(10, 2)
                    .build()
                    .map_err(invalid)?;
                let servers = nodes
                    .iter()
                    .map(|n| servers_of(n))
                    .collect::<Vec<_>>()
                    .join(",");
                (Client::Cluster(Box::new(client)), servers)
            }
        };
        Ok(Watchers {
            client,
            idle: Mutex::new(Vec::new()),
            connect_timeout: options.connect_timeout,
            margin,
            servers,
        })
    }

    async fn open(&self) -> JournalResult<Connection> {
        let opening = async {
            match &self.client {
                Client::Single(client) => {
                    // No response timeout in the driver: each wait bounds
                    // its own command below.
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(None);
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Connection::Single)
                }
                Client::Cluster(client) => client
                    .get_async_connection()
                    .await
                    .map(|c| Connection::Cluster(Box::new(c))),
            }
        };
        match tokio::time::timeout(self.connect_timeout, opening).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => {
                let error = redis_error(e);
                Err(if error.is_retryable() {
                    JournalError::unavailable(
                        BACKEND,
                        format!("cannot connect to {}: {error}", self.servers),
                    )
                } else {
                    error
                })
            }
            Err(_) => Err(JournalError::unavailable(
                BACKEND,
                format!(
                    "cannot connect to {}: no answer within {:?}",
                    self.servers, self.connect_timeout
                ),
            )),
        }
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }

    fn give_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
    }

    /// Closes the idle connections.
    pub(crate) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Sends the blocking command `cmd`, which blocks the server for at
    /// most `block`, to the server (the primary of `slot` on a cluster) on
    /// a dedicated connection, and returns its reply. An idle connection
    /// that turns out to be closed (the server's idle timeout, a restart)
    /// is replaced by a new one once.
    pub(crate) async fn blocking(
        &self,
        cmd: &redis::Cmd,
        slot: u16,
        block: Duration,
    ) -> JournalResult<Value> {
        let limit = block.saturating_add(self.margin);
        let mut reused = self.take_idle();
        loop {
            let fresh = reused.is_none();
            let mut connection = match reused.take() {
                Some(connection) => connection,
                None => self.open().await?,
            };
            match tokio::time::timeout(limit, connection.send(cmd, slot)).await {
                Ok(Ok(Value::ServerError(e))) => return Err(redis_error(e.into())),
                Ok(Ok(value)) => {
                    self.give_back(connection);
                    return Ok(value);
                }
                Ok(Err(e)) if !fresh && (e.is_connection_dropped() || e.is_io_error()) => {
                    tracing::debug!(
                        backend = BACKEND,
                        error = %e,
                        "an idle blocking-read connection was closed; opening another"
                    );
                }
                Ok(Err(e)) => return Err(redis_error(e)),
                Err(_) => {
                    return Err(JournalError::unavailable(
                        BACKEND,
                        format!(
                            "no reply from {} within {limit:?} to a read blocking for {block:?}",
                            self.servers
                        ),
                    ))
                }
            }
        }
    }
}
