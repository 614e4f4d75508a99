//! Moving a slot from one primary to another while clients use it, in the
//! order of the Redis Cluster specification ("Cluster live
//! reconfiguration", `CLUSTER SETSLOT`) and of `redis-cli --cluster
//! reshard`:
//!
//! 1. `CLUSTER SETSLOT <slot> IMPORTING <source-id>` on the target, then
//!    `CLUSTER SETSLOT <slot> MIGRATING <target-id>` on the source (in this
//!    order, so the target accepts `ASKING` commands before the source
//!    sends any client there);
//! 2. repeatedly `CLUSTER GETKEYSINSLOT` on the source and
//!    `MIGRATE <host> <port> "" 0 <timeout> KEYS <key>...` to the target,
//!    until the source holds no key of the slot;
//! 3. `CLUSTER SETSLOT <slot> NODE <target-id>` on the target first, then
//!    on the source, then on every other primary (the target bumps its
//!    epoch and owns the slot before the source stops redirecting with
//!    `ASK`; the rest would learn it by gossip, later).

use crate::cli::{cli, cli_json, parse_string_array};
use crate::TestCluster;

/// `MIGRATE`'s timeout: the longest the source may wait on the target
/// during one transfer.
const MIGRATE_TIMEOUT_MS: &str = "10000";

impl TestCluster {
    /// Starts moving `slot` from the primary on `from` to the primary on
    /// `to`: `IMPORTING` on the target, then `MIGRATING` on the source.
    /// From now on the source answers `ASK` for keys it no longer holds,
    /// and `TRYAGAIN` for multi-key commands whose keys are split.
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) -> Result<(), String> {
        let from_id = self.id_of(from)?;
        let to_id = self.id_of(to)?;
        let slot = slot.to_string();
        cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])?;
        cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])?;
        Ok(())
    }

    /// Moves at most `max_keys` keys of `slot` from the primary on `from`
    /// to the primary on `to` with one `MIGRATE ... KEYS` (the keys as
    /// separate arguments). Returns how many keys were sent; 0 when the
    /// source held no key of the slot any more.
    pub fn migrate_keys(
        &self,
        slot: u16,
        from: u16,
        to: u16,
        max_keys: usize,
    ) -> Result<usize, String> {
        let listed = cli_json(
            from,
            &[
                "CLUSTER",
                "GETKEYSINSLOT",
                &slot.to_string(),
                &max_keys.max(1).to_string(),
            ],
        )?;
        let keys = parse_string_array(&listed)?;
        if keys.is_empty() {
            return Ok(0);
        }
        let to_port = to.to_string();
        let mut args: Vec<&str> = vec![
            "MIGRATE",
            "127.0.0.1",
            &to_port,
            "",
            "0",
            MIGRATE_TIMEOUT_MS,
            "KEYS",
        ];
        args.extend(keys.iter().map(String::as_str));
        let reply = cli(from, &args)?;
        match reply.trim() {
            // NOKEY: every key listed was gone by the time MIGRATE ran.
            "OK" | "NOKEY" => Ok(keys.len()),
            other => Err(format!("MIGRATE of slot {slot} answered {other:?}")),
        }
    }

    /// Ends the move of `slot` to the primary on `to`: `SETSLOT ... NODE`
    /// on the target, then on the source (the owner in the target's view
    /// before this call), then on every other running primary.
    pub fn finish_migration(&self, slot: u16, to: u16) -> Result<(), String> {
        let to_id = self.id_of(to)?;
        let view = self.nodes_seen_by(to)?;
        let source = view
            .iter()
            .find(|n| n.is_primary() && n.owns(slot))
            .map(|n| n.port);
        let live = self.live_ports();
        let mut order = vec![to];
        order.extend(source.filter(|p| *p != to));
        for node in &view {
            if node.is_primary()
                && !node.failed
                && live.contains(&node.port)
                && !order.contains(&node.port)
            {
                order.push(node.port);
            }
        }
        let slot = slot.to_string();
        for port in order {
            cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?;
        }
        Ok(())
    }

    /// Moves `slot` from the primary on `from` to the primary on `to`:
    /// [`begin_migration`](Self::begin_migration), then
    /// [`migrate_keys`](Self::migrate_keys) `keys_per_step` at a time until
    /// none is left, then [`finish_migration`](Self::finish_migration).
    /// Returns the keys sent.
    pub fn move_slot(
        &self,
        slot: u16,
        from: u16,
        to: u16,
        keys_per_step: usize,
    ) -> Result<usize, String> {
        self.begin_migration(slot, from, to)?;
        let mut moved = 0;
        loop {
            let sent = self.migrate_keys(slot, from, to, keys_per_step)?;
            if sent == 0 {
                break;
            }
            moved += sent;
        }
        self.finish_migration(slot, to)?;
        Ok(moved)
    }
}
