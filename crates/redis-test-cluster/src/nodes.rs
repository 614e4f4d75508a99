//! A node's view of the cluster, read from `CLUSTER NODES`.

use std::ops::RangeInclusive;

/// What a node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A primary (`master`): serves its slots' reads and writes.
    Primary,
    /// A replica of a primary.
    Replica,
}

/// One node as some node of the cluster sees it (one line of
/// `CLUSTER NODES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its port on 127.0.0.1 (the cluster bus is on `port + 10000`).
    pub port: u16,
    /// Its node id (40 hex characters).
    pub id: String,
    /// Primary or replica.
    pub role: Role,
    /// For a replica, the id of its primary.
    pub primary_id: Option<String>,
    /// The slots it owns, as ranges.
    pub slots: Vec<RangeInclusive<u16>>,
    /// Whether the viewing node flags it as failed (`fail`, not the
    /// unconfirmed `fail?`).
    pub failed: bool,
    /// Whether this is the viewing node itself.
    pub myself: bool,
    /// Slots this node is migrating away, with the target's id; only the
    /// viewing node shows these, on its own line.
    pub migrating: Vec<(u16, String)>,
    /// Slots this node is importing, with the source's id; only on the
    /// viewing node's own line.
    pub importing: Vec<(u16, String)>,
}

impl Node {
    /// Whether it owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| range.contains(&slot))
    }

    /// Whether it is a primary.
    pub fn is_primary(&self) -> bool {
        self.role == Role::Primary
    }
}

/// Parses the output of `CLUSTER NODES`: one node per line,
/// `<id> <ip:port@bus[,host]> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`.
pub(crate) fn parse_cluster_nodes(text: &str) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || format!("unexpected CLUSTER NODES line: {line:?}");
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(bad());
        }
        let port = fields[1]
            .split('@')
            .next()
            .and_then(|address| address.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(bad)?;
        let flags: Vec<&str> = fields[2].split(',').collect();
        let role = if flags.contains(&"master") {
            Role::Primary
        } else {
            Role::Replica
        };
        let mut node = Node {
            port,
            id: fields[0].to_owned(),
            role,
            primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            slots: Vec::new(),
            failed: flags.contains(&"fail"),
            myself: flags.contains(&"myself"),
            migrating: Vec::new(),
            importing: Vec::new(),
        };
        for token in &fields[8..] {
            if let Some(inner) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                // `[slot->-target]` or `[slot-<-source]`.
                if let Some((slot, target)) = inner.split_once("->-") {
                    node.migrating
                        .push((slot.parse().map_err(|_| bad())?, target.to_owned()));
                } else if let Some((slot, source)) = inner.split_once("-<-") {
                    node.importing
                        .push((slot.parse().map_err(|_| bad())?, source.to_owned()));
                }
                continue;
            }
            let range = if let Some((start, end)) = token.split_once('-') {
                start.parse().map_err(|_| bad())?..=end.parse().map_err(|_| bad())?
            } else {
                let slot = token.parse().map_err(|_| bad())?;
                slot..=slot
            };
            node.slots.push(range);
        }
        nodes.push(node);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_cluster_nodes_are_read() {
        let text = "\
07c3 127.0.0.1:30004@40004,host slave e7d1 0 1426238317239 4 connected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 7000 [93->-292f] [77-<-67ed]
292f 127.0.0.1:30002@40002 master,fail - 1426238316232 1426238315229 2 disconnected
";
        let nodes = parse_cluster_nodes(text).expect("parses");
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].role, Role::Replica);
        assert_eq!(nodes[0].primary_id.as_deref(), Some("e7d1"));
        assert_eq!(nodes[0].port, 30004);
        let me = &nodes[1];
        assert!(me.myself && me.is_primary() && me.owns(0) && me.owns(5460) && me.owns(7000));
        assert!(!me.owns(5461));
        assert_eq!(me.migrating, vec![(93, "292f".to_owned())]);
        assert_eq!(me.importing, vec![(77, "67ed".to_owned())]);
        assert!(nodes[2].failed && nodes[2].slots.is_empty());
    }
}
