//! Connections: redis-rs's `ConnectionManager` for one server, its
//! asynchronous cluster client for a Redis Cluster. Both pipeline: calls
//! share a connection without waiting for each other's replies, and every
//! reply reaches the call that sent its command.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use journal_core::{JournalError, JournalResult};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{FromRedisValue, RedisResult, Value};

use crate::error::{redis_error, BACKEND};
use crate::options::RedisOptions;

/// Where the storage connects: one server, or the seed nodes of a cluster,
/// each as a `redis://` (or `rediss://`) URL with its credentials.
pub(crate) enum Target {
    Single(String),
    Cluster(Vec<String>),
}

/// The servers a URL names, as `host:port` only: no user, no password, no
/// path; `?` for a part that is not a URL. For errors and spans.
pub(crate) fn servers_of(url: &str) -> String {
    url.split(',')
        .map(|part| {
            part.split_once("://")
                .map(|(_, rest)| rest)
                .and_then(|rest| rest.split(['/', '?']).next())
                .map(|authority| authority.rsplit('@').next().unwrap_or_default())
                .filter(|host| !host.is_empty())
                .unwrap_or("?")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn invalid(why: &str) -> JournalError {
    // The URL itself is never repeated: one that does not parse cannot be
    // redacted reliably.
    JournalError::storage(BACKEND, format!("invalid Redis URL: {why}"))
}

/// Reads `url` as one server (`redis://`, `rediss://`), a cluster
/// (`redis-cluster://[user:password@]host:port?node=host:port`), or a
/// comma-separated list of `redis://host:port` cluster nodes.
pub(crate) fn parse_url(url: &str) -> JournalResult<Target> {
    let parts: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(invalid("no server named"));
    }
    let mut schemes = Vec::with_capacity(parts.len());
    for part in &parts {
        let scheme = part
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .filter(|s| {
                ["redis", "rediss", "redis-cluster", "rediss-cluster"].contains(&s.as_str())
            })
            .ok_or_else(|| {
                invalid("use redis://, rediss://, redis-cluster:// or a list of redis:// nodes")
            })?;
        schemes.push(scheme);
    }
    let tls = schemes.iter().any(|s| s.starts_with("rediss"));
    if tls && !schemes.iter().all(|s| s.starts_with("rediss")) {
        return Err(invalid("a node list mixes rediss:// and redis://"));
    }
    if tls && !cfg!(feature = "tls-rustls") {
        // Without the feature the driver could not speak TLS at all.
        return Err(JournalError::storage(
            BACKEND,
            "a rediss:// URL needs journal-redis's `tls-rustls` feature",
        ));
    }
    let plain = if tls { "rediss" } else { "redis" };
    if parts.len() > 1 {
        if schemes.iter().any(|s| s.ends_with("-cluster")) {
            return Err(invalid("a node list holds redis:// or rediss:// URLs only"));
        }
        for part in &parts {
            check_node_url(part)?;
        }
        return Ok(Target::Cluster(
            parts.iter().map(|p| (*p).to_owned()).collect(),
        ));
    }
    let url = parts[0];
    let Some(scheme) = schemes.first().filter(|s| s.ends_with("-cluster")) else {
        check_node_url(url)?;
        return Ok(Target::Single(url.to_owned()));
    };
    // redis-cluster://[credentials@]host:port[?node=host:port&...]
    let rest = &url[scheme.len() + 3..];
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let (credentials, first) = match authority.rsplit_once('@') {
        Some((credentials, host)) => (Some(credentials), host),
        None => (None, authority),
    };
    let mut hosts = vec![first];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("node", node)) if !node.is_empty() => hosts.push(node),
            _ => {
                return Err(invalid(
                    "a cluster URL takes only node=host:port parameters",
                ))
            }
        }
    }
    let nodes: Vec<String> = hosts
        .iter()
        .map(|host| match credentials {
            Some(credentials) => format!("{plain}://{credentials}@{host}"),
            None => format!("{plain}://{host}"),
        })
        .collect();
    for node in &nodes {
        check_node_url(node)?;
    }
    Ok(Target::Cluster(nodes))
}

/// A node URL the driver accepts, checked without echoing it.
fn check_node_url(url: &str) -> JournalResult<()> {
    let host = servers_of(url);
    let port_ok = host
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_ok());
    if host == "?" || !port_ok {
        return Err(invalid("a server is not host:port"));
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| invalid(&format!("{:?}", e.kind())))
}

/// One connection: a managed connection to one server, or a cluster
/// connection (one connection to each node it talks to).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Sends `cmd`, routed by its keys.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// Sends `cmd` to the primary of `slot` (any server when not
    /// clustered): for commands that name no key.
    pub(crate) async fn query_slot<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        slot: u16,
    ) -> RedisResult<T> {
        match self {
            Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let value = c.clone().route_command(cmd.clone(), route).await?;
                T::from_redis_value(value).map_err(Into::into)
            }
        }
    }

    /// Sends `cmd` to the node at `host:port` (the one server when not
    /// clustered).
    pub(crate) async fn query_node<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        host: &str,
        port: u16,
    ) -> RedisResult<T> {
        match self {
            Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_owned(),
                    port,
                });
                let value = c.clone().route_command(cmd.clone(), route).await?;
                T::from_redis_value(value).map_err(Into::into)
            }
        }
    }

    /// Sends a pipeline to the primary of `slot` as one unit, and returns
    /// each command's reply. The cluster client follows a redirection of
    /// any command (`ASK`, `MOVED`, `TRYAGAIN`) by sending the whole
    /// pipeline again where it belongs; any other error reply (`NOSCRIPT`,
    /// say) is the call's error.
    pub(crate) async fn query_pipe(
        &self,
        pipe: &redis::Pipeline,
        slot: u16,
    ) -> RedisResult<Vec<Value>> {
        let values = self.send_pipe(pipe, slot).await?;
        if let Some(Value::ServerError(error)) =
            values.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(error.clone().into());
        }
        Ok(values)
    }

    async fn send_pipe(&self, pipe: &redis::Pipeline, slot: u16) -> RedisResult<Vec<Value>> {
        match self {
            Connection::Single(c) => pipe.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                c.clone()
                    .route_pipeline(pipe.clone(), 0, pipe.len(), route)
                    .await
            }
        }
    }
}

/// The storage's connections, used in turn.
pub(crate) struct Pool {
    connections: Vec<Connection>,
    next: AtomicUsize,
    clustered: bool,
}

impl Pool {
    /// Opens `options.pool_size` connections to `target` and checks that
    /// the server answers.
    pub(crate) async fn connect(target: &Target, options: &RedisOptions) -> JournalResult<Self> {
        let unreachable = |e: redis::RedisError, servers: &str| {
            let error = redis_error(e);
            if error.is_retryable() {
                JournalError::unavailable(BACKEND, format!("cannot connect to {servers}: {error}"))
            } else {
                error
            }
        };
        let mut connections = Vec::with_capacity(options.pool_size);
        match target {
            Target::Single(url) => {
                let servers = servers_of(url);
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| invalid(&format!("{:?}", e.kind())))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(options.command_timeout))
                    .set_number_of_retries(6)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_secs(2));
                for _ in 0..options.pool_size {
                    let manager = tokio::time::timeout(
                        options.connect_timeout,
                        client.get_connection_manager_with_config(config.clone()),
                    )
                    .await
                    .map_err(|_| {
                        JournalError::unavailable(
                            BACKEND,
                            format!(
                                "cannot connect to {servers}: no answer within {:?}",
                                options.connect_timeout
                            ),
                        )
                    })?
                    .map_err(|e| unreachable(e, &servers))?;
                    connections.push(Connection::Single(manager));
                }
            }
            Target::Cluster(nodes) => {
                let servers = nodes
                    .iter()
                    .map(|n| servers_of(n))
                    .collect::<Vec<_>>()
                    .join(",");
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.command_timeout)
                    .overall_response_timeout(Some(options.command_timeout))
                    // TRYAGAIN (a slot half moved), CLUSTERDOWN and
                    // MASTERDOWN (a failover) are retried after a short,
                    // growing pause: 10 ms doubling to at most 250 ms, within
                    // the command timeout.
                    .retries(64)
                    .min_retry_wait(5)
                    .max_retry_wait(250)
                    .retry_wait_formula(10, 2)
                    .build()
                    .map_err(|e| invalid(&format!("{:?}", e.kind())))?;
                for _ in 0..options.pool_size {
                    let connection = tokio::time::timeout(
                        options.connect_timeout,
                        client.get_async_connection(),
                    )
                    .await
                    .map_err(|_| {
                        JournalError::unavailable(
                            BACKEND,
                            format!(
                                "cannot connect to {servers}: no answer within {:?}",
                                options.connect_timeout
                            ),
                        )
                    })?
                    .map_err(|e| unreachable(e, &servers))?;
                    connections.push(Connection::Cluster(connection));
                }
            }
        }
        let pool = Pool {
            clustered: matches!(target, Target::Cluster(_)),
            connections,
            next: AtomicUsize::new(0),
        };
        // A cluster connection opens lazily: one command proves the
        // servers answer.
        let _: Value = pool
            .next()
            .query(&redis::cmd("PING"))
            .await
            .map_err(|e| unreachable(e, &servers_of_target(target)))?;
        Ok(pool)
    }

    /// The next connection, round robin.
    pub(crate) fn next(&self) -> &Connection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        &self.connections[i]
    }

    pub(crate) fn size(&self) -> usize {
        self.connections.len()
    }

    pub(crate) fn is_clustered(&self) -> bool {
        self.clustered
    }
}

fn servers_of_target(target: &Target) -> String {
    match target {
        Target::Single(url) => servers_of(url),
        Target::Cluster(nodes) => nodes
            .iter()
            .map(|n| servers_of(n))
            .collect::<Vec<_>>()
            .join(","),
    }
}
