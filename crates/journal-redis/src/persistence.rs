//! Reading the servers' persistence settings at open, and saying what a
//! restart of each would lose.

use journal_core::{JournalError, JournalResult};
use redis::Value;

use crate::connection::{Lease, Pool};
use crate::error::BACKEND;
use crate::options::PersistenceCheck;

/// One server's persistence settings, as `CONFIG GET` reported them at
/// open; `None` where the server would not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePersistence {
    /// `host:port` of the server.
    pub node: String,
    /// `appendonly`: whether every write goes to the append-only file.
    pub appendonly: Option<bool>,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub appendfsync: Option<String>,
    /// `save`: the RDB snapshot schedule (empty: no snapshots).
    pub save: Option<String>,
}

impl NodePersistence {
    /// What a restart of this server loses of the acknowledged writes, or
    /// `None` when it keeps them all (`appendonly yes`).
    pub fn restart_loses(&self) -> Option<&'static str> {
        match (self.appendonly, self.save.as_deref()) {
            (Some(true), _) => None,
            (Some(false), Some("")) => Some("every journal (no append-only file, no snapshots)"),
            (Some(false), Some(_)) => {
                Some("the writes since its last RDB snapshot (no append-only file)")
            }
            _ => Some("an unknown share of the writes (its settings could not be read)"),
        }
    }
}

/// `field:value` of an `INFO` reply.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The value of one `CONFIG GET` parameter: the reply is `[name, value]`
/// (RESP2) or a map.
fn config_value(reply: Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match reply {
        Value::Array(items) => items.get(1).and_then(text),
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        _ => None,
    }
}

async fn read_node(connection: &mut Lease<'_>, host: &str, port: u16) -> NodePersistence {
    let mut values = Vec::with_capacity(3);
    for name in ["appendonly", "appendfsync", "save"] {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        values.push(
            connection
                .query_node::<Value>(&cmd, host, port)
                .await
                .ok()
                .and_then(config_value),
        );
    }
    let mut values = values.into_iter();
    let mut next = || values.next().flatten();
    NodePersistence {
        node: format!("{host}:{port}"),
        appendonly: next().map(|v| v.eq_ignore_ascii_case("yes")),
        appendfsync: next(),
        save: next(),
    }
}

/// Every node of a cluster (primaries and replicas) from `CLUSTER SLOTS`.
async fn cluster_nodes(connection: &mut Lease<'_>) -> Vec<(String, u16)> {
    let Ok(Value::Array(ranges)) = connection
        .query::<Value>(redis::cmd("CLUSTER").arg("SLOTS"))
        .await
    else {
        return Vec::new();
    };
    let mut nodes = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        for node in parts.into_iter().skip(2) {
            let Value::Array(fields) = node else { continue };
            let host = match fields.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = fields.get(1) else {
                continue;
            };
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            if !nodes.contains(&(host.clone(), port)) {
                nodes.push((host, port));
            }
        }
    }
    nodes
}

/// Reads the settings of every server behind the pool.
pub(crate) async fn read(pool: &Pool) -> Vec<NodePersistence> {
    let Ok(mut connection) = pool.lease().await else {
        return Vec::new();
    };
    if !pool.is_clustered() {
        let mut node = read_node(&mut connection, "", 0).await;
        node.node = "server".into();
        return vec![node];
    }
    let mut out = Vec::new();
    for (host, port) in cluster_nodes(&mut connection).await {
        out.push(read_node(&mut connection, &host, port).await);
    }
    out
}

/// Whether a storage on one server may name keys of several slots in one
/// script: the server answers `INFO cluster` with `cluster_enabled:0`. A
/// cluster node reached as one server, a proxy that checks slots, or a
/// server that does not say, is taken as no.
pub(crate) async fn slots_are_free(pool: &Pool) -> bool {
    if pool.is_clustered() {
        return false;
    }
    let Ok(mut connection) = pool.lease().await else {
        return false;
    };
    let mut cmd = redis::cmd("INFO");
    cmd.arg("cluster");
    match connection.query_node::<Value>(&cmd, "", 0).await {
        Ok(Value::BulkString(bytes)) => {
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|info| info_field(info, "cluster_enabled"))
                == Some("0")
        }
        Ok(Value::VerbatimString { text, .. }) => info_field(&text, "cluster_enabled") == Some("0"),
        _ => false,
    }
}

/// Warns about, or refuses, servers whose restart loses acknowledged
/// writes.
pub(crate) fn judge(nodes: &[NodePersistence], check: PersistenceCheck) -> JournalResult<()> {
    let losing: Vec<(&NodePersistence, &str)> = nodes
        .iter()
        .filter_map(|n| n.restart_loses().map(|loss| (n, loss)))
        .collect();
    match check {
        PersistenceCheck::Skip => Ok(()),
        PersistenceCheck::Warn => {
            for (node, loss) in losing {
                tracing::warn!(
                    backend = BACKEND,
                    node = %node.node,
                    appendonly = ?node.appendonly,
                    save = ?node.save,
                    "a restart of this Redis server loses {loss}; run it with \
                     `appendonly yes` to keep acknowledged entries"
                );
            }
            Ok(())
        }
        PersistenceCheck::Require if losing.is_empty() && !nodes.is_empty() => Ok(()),
        PersistenceCheck::Require => {
            let list = if nodes.is_empty() {
                "no server reported its settings".to_owned()
            } else {
                losing
                    .iter()
                    .map(|(n, loss)| format!("{} loses {loss}", n.node))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            Err(JournalError::storage(
                BACKEND,
                format!(
                    "PersistenceCheck::Require: a server restart would lose acknowledged \
                     entries: {list}. Run every node with `appendonly yes`"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(appendonly: Option<bool>, save: Option<&str>) -> NodePersistence {
        NodePersistence {
            node: "n:1".into(),
            appendonly,
            appendfsync: Some("everysec".into()),
            save: save.map(str::to_owned),
        }
    }

    #[test]
    fn what_a_restart_loses() {
        assert_eq!(node(Some(true), Some("")).restart_loses(), None);
        assert!(node(Some(false), Some(""))
            .restart_loses()
            .is_some_and(|l| l.starts_with("every journal")));
        assert!(node(Some(false), Some("3600 1"))
            .restart_loses()
            .is_some_and(|l| l.contains("snapshot")));
        assert!(node(None, None).restart_loses().is_some());
    }

    #[test]
    fn require_refuses_any_losing_node_and_warn_never_does() {
        let nodes = [node(Some(true), Some("")), node(Some(false), Some(""))];
        assert!(judge(&nodes, PersistenceCheck::Warn).is_ok());
        let refused = judge(&nodes, PersistenceCheck::Require).expect_err("refused");
        assert!(refused.to_string().contains("appendonly yes"), "{refused}");
        assert!(judge(&nodes[..1], PersistenceCheck::Require).is_ok());
        assert!(judge(&[], PersistenceCheck::Require).is_err());
    }

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n";
        assert_eq!(info_field(info, "connected_slaves"), Some("2"));
        assert_eq!(info_field(info, "role"), Some("master"));
        assert_eq!(info_field(info, "slave0"), None);
    }
}
