//! Connections: redis-rs's `ConnectionManager` for one server (pipelined:
//! calls share a connection without waiting for each other's replies), and
//! its asynchronous cluster client for a Redis Cluster, one call per
//! cluster connection at a time (see [`ClusterPool`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use journal_core::{JournalError, JournalResult};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{FromRedisValue, RedisResult, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    // Credentials out first: a password may hold ',', '/' or '?', which
    // would otherwise cut it into a "server".
    let url = journal_core::redact_url(url);
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

/// A node URL the driver accepts, checked without echoing it: the only
/// query parameter left to it is its own `protocol` (the journal's
/// `prefix` is taken out before; the driver would ignore a misspelt one).
fn check_node_url(url: &str) -> JournalResult<()> {
    if let Some(name) = journal_core::url::param_names(url)
        .into_iter()
        .find(|name| name != "protocol")
    {
        return Err(invalid(&format!(
            "unknown URL parameter {name:?} (the journal reads prefix=, the driver protocol=)"
        )));
    }
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

/// Connections to one server: managed, pipelined connections shared by
/// every call, used in turn.
struct SinglePool {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
}

/// Cluster connections, each carrying one call at a time: opened on
/// demand up to a cap, handed out to one call, and taken back after it.
///
/// Why not one shared, pipelined cluster connection: under a slot
/// migration, redis-rs's cluster client (1.8) wedges for good when many
/// calls share one connection. Each `MOVED` refreshes the slot map under a
/// write lock that calls queued for its read side keep from being taken
/// again, and a call sent `ASKING` can lose it to another call's command on
/// the shared socket, which makes more `MOVED`s. The resharding test
/// (`tests/reshard.rs`) saw every call on every slot time out from the
/// first seconds of a move. With one call per connection neither can
/// happen, and nothing blocks a thread: the connections stay asynchronous.
struct ClusterPool {
    client: redis::cluster::ClusterClient,
    idle: Mutex<Vec<ClusterConnection>>,
    permits: Arc<Semaphore>,
    connect_timeout: Duration,
    servers: String,
}

enum Kind {
    Single(SinglePool),
    Cluster(Box<ClusterPool>),
}

/// The storage's connections.
pub(crate) struct Pool {
    kind: Kind,
    size: usize,
}

/// One call's use of a connection. A cluster connection goes back to the
/// pool when the lease ends, unless a command on it was cut short (the
/// caller gave up, or it timed out): that connection is dropped, so no
/// half-finished exchange is ever shared.
pub(crate) struct Lease<'a> {
    connection: Leased,
    pool: &'a Pool,
    _permit: Option<OwnedSemaphorePermit>,
    clean: bool,
}

enum Leased {
    Single(ConnectionManager),
    Cluster(Option<ClusterConnection>),
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let (Leased::Cluster(connection), Kind::Cluster(cluster)) =
            (&mut self.connection, &self.pool.kind)
        {
            if let (true, Some(connection)) = (self.clean, connection.take()) {
                if let Ok(mut idle) = cluster.idle.lock() {
                    idle.push(connection);
                }
            }
        }
    }
}

impl Lease<'_> {
    /// Runs one exchange, marking the lease unclean while it is under way
    /// and after a timeout or a lost connection.
    async fn run<T>(
        &mut self,
        exchange: impl std::future::Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        self.clean = false;
        let result = exchange.await;
        self.clean = match &result {
            Err(e) => !(e.is_timeout() || e.is_connection_dropped() || e.is_io_error()),
            Ok(_) => true,
        };
        result
    }

    /// Sends `cmd`, routed by its keys.
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> RedisResult<T> {
        match &mut self.connection {
            Leased::Single(c) => cmd.query_async(c).await,
            Leased::Cluster(c) => {
                let mut c = c.clone().ok_or_else(gone)?;
                self.run(async move { cmd.query_async(&mut c).await }).await
            }
        }
    }

    /// Sends `cmd` to the primary of `slot` (the server when not
    /// clustered): for commands that name no key.
    pub(crate) async fn query_slot<T: FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        slot: u16,
    ) -> RedisResult<T> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        self.route(cmd, route).await
    }

    /// Sends `cmd` to the node at `host:port` (the server when not
    /// clustered).
    pub(crate) async fn query_node<T: FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        host: &str,
        port: u16,
    ) -> RedisResult<T> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        });
        self.route(cmd, route).await
    }

    async fn route<T: FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        route: RoutingInfo,
    ) -> RedisResult<T> {
        match &mut self.connection {
            Leased::Single(c) => cmd.query_async(c).await,
            Leased::Cluster(c) => {
                let mut c = c.clone().ok_or_else(gone)?;
                let value = self
                    .run(async move { c.route_command(cmd.clone(), route).await })
                    .await?;
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
        &mut self,
        pipe: &redis::Pipeline,
        slot: u16,
    ) -> RedisResult<Vec<Value>> {
        let values = self.query_pipe_values(pipe, slot).await?;
        if let Some(Value::ServerError(error)) =
            values.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(error.clone().into());
        }
        Ok(values)
    }

    /// Sends a pipeline to the primary of `slot` (the server when not
    /// clustered) and returns each command's reply, error replies
    /// included: commands for other slots that node serves are answered
    /// too, the others get their redirection as their reply.
    pub(crate) async fn query_pipe_values(
        &mut self,
        pipe: &redis::Pipeline,
        slot: u16,
    ) -> RedisResult<Vec<Value>> {
        let values: Vec<Value> = match &mut self.connection {
            // The replies as they came: `query_async` would look for
            // error replies through every reply's values and rebuild
            // them (a tenth of a feed page's CPU), and fail the whole
            // pipeline on one.
            Leased::Single(c) => {
                redis::aio::ConnectionLike::req_packed_commands(c, pipe, 0, pipe.len()).await?
            }
            Leased::Cluster(c) => {
                let mut c = c.clone().ok_or_else(gone)?;
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                self.run(async move { c.route_pipeline(pipe.clone(), 0, pipe.len(), route).await })
                    .await?
            }
        };
        Ok(values)
    }
}

fn gone() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "the connection was given up"))
}

impl Pool {
    /// Opens the connections to `target` and checks that the servers
    /// answer: `options.pool_size` shared connections to one server; for a
    /// cluster, one connection now and more on demand, up to
    /// `options.cluster_connections`.
    pub(crate) async fn connect(target: &Target, options: &RedisOptions) -> JournalResult<Self> {
        let no_answer = |servers: &str| {
            JournalError::unavailable(
                BACKEND,
                format!(
                    "cannot connect to {servers}: no answer within {:?}",
                    options.connect_timeout
                ),
            )
        };
        let pool = match target {
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
                let mut connections = Vec::with_capacity(options.pool_size);
                for _ in 0..options.pool_size {
                    let manager = tokio::time::timeout(
                        options.connect_timeout,
                        client.get_connection_manager_with_config(config.clone()),
                    )
                    .await
                    .map_err(|_| no_answer(&servers))?
                    .map_err(|e| unreachable(e, &servers))?;
                    connections.push(manager);
                }
                Pool {
                    size: connections.len(),
                    kind: Kind::Single(SinglePool {
                        connections,
                        next: AtomicUsize::new(0),
                    }),
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
                    // growing pause: 10 ms doubling to at most 250 ms,
                    // within the command timeout. (At most 40: the driver
                    // computes 2^retry, which must not overflow.)
                    .retries(40)
                    .min_retry_wait(5)
                    .max_retry_wait(250)
                    .retry_wait_formula(10, 2)
                    .build()
                    .map_err(|e| invalid(&format!("{:?}", e.kind())))?;
                let cluster = ClusterPool {
                    client,
                    idle: Mutex::new(Vec::new()),
                    permits: Arc::new(Semaphore::new(options.cluster_connections)),
                    connect_timeout: options.connect_timeout,
                    servers,
                };
                let first = cluster.open().await?;
                if let Ok(mut idle) = cluster.idle.lock() {
                    idle.push(first);
                }
                Pool {
                    size: options.cluster_connections,
                    kind: Kind::Cluster(Box::new(cluster)),
                }
            }
        };
        // One command proves the servers answer.
        let _: Value = pool
            .lease()
            .await?
            .query(&redis::cmd("PING"))
            .await
            .map_err(|e| unreachable(e, &servers_of_target(target)))?;
        Ok(pool)
    }

    /// A connection for one call: the next shared one for one server; an
    /// idle (or new) cluster connection, waiting while all are in use.
    pub(crate) async fn lease(&self) -> JournalResult<Lease<'_>> {
        match &self.kind {
            Kind::Single(single) => {
                let i = single.next.fetch_add(1, Ordering::Relaxed) % single.connections.len();
                Ok(Lease {
                    connection: Leased::Single(single.connections[i].clone()),
                    pool: self,
                    _permit: None,
                    clean: true,
                })
            }
            Kind::Cluster(cluster) => {
                let permit = Arc::clone(&cluster.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| JournalError::unavailable(BACKEND, "the storage was closed"))?;
                let idle = cluster.idle.lock().ok().and_then(|mut idle| idle.pop());
                let connection = match idle {
                    Some(connection) => connection,
                    None => cluster.open().await?,
                };
                Ok(Lease {
                    connection: Leased::Cluster(Some(connection)),
                    pool: self,
                    _permit: Some(permit),
                    clean: true,
                })
            }
        }
    }

    /// Shared connections (one server) or the most cluster connections.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn is_clustered(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// Lets no new call start: waiting and later calls fail.
    pub(crate) fn close(&self) {
        if let Kind::Cluster(cluster) = &self.kind {
            cluster.permits.close();
            if let Ok(mut idle) = cluster.idle.lock() {
                idle.clear();
            }
        }
    }
}

impl ClusterPool {
    async fn open(&self) -> JournalResult<ClusterConnection> {
        tokio::time::timeout(self.connect_timeout, self.client.get_async_connection())
            .await
            .map_err(|_| {
                JournalError::unavailable(
                    BACKEND,
                    format!(
                        "cannot connect to {}: no answer within {:?}",
                        self.servers, self.connect_timeout
                    ),
                )
            })?
            .map_err(|e| unreachable(e, &self.servers))
    }
}

fn unreachable(e: redis::RedisError, servers: &str) -> JournalError {
    let error = redis_error(e);
    if error.is_retryable() {
        JournalError::unavailable(BACKEND, format!("cannot connect to {servers}: {error}"))
    } else {
        error
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

#[cfg(test)]
mod tests {
    use super::servers_of;

    #[test]
    fn servers_are_named_without_any_part_of_a_password() {
        for (url, want) in [
            ("redis://127.0.0.1:6379", "127.0.0.1:6379"),
            ("redis://:s3/cret@h:1/0", "h:1"),
            ("redis://:s3,cret@h:1", "h:1"),
            ("redis://u:s3?cret@h:1", "h:1"),
            ("redis://:a@h:1,redis://:b@g:2", "h:1,g:2"),
            ("not a url", "?"),
        ] {
            let servers = servers_of(url);
            assert_eq!(servers, want, "{url}");
            assert!(
                !servers.contains("s3") && !servers.contains("cret"),
                "{url}"
            );
        }
    }
}
