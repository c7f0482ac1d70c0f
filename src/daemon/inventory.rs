//! What this daemon knows about its surroundings, for the stats document
//! (and so the console and `castlog stats`): its groups, the peers heard on
//! them, and its topic logs with their offsets and sizes. Counters say how
//! much happened; these say what is there now.

use serde_json::{json, Value};

use super::Daemon;
use crate::netconf::GroupKind;

impl Daemon {
    /// The netconf (transport) groups, as `"net_groups"`:
    /// `[{"name", "kind", "address", "session", "receivers_live", "destinations"}]`.
    /// ("groups" in the stats document are consumer groups.)
    pub(super) fn net_groups_json(&self) -> Value {
        let rows: Vec<Value> = self
            .groups
            .iter()
            .zip(&self.netconf.groups)
            .map(|(io, conf)| {
                let address = match &conf.kind {
                    GroupKind::Multicast { address, .. } | GroupKind::Broadcast { address } => {
                        address.to_string()
                    }
                    GroupKind::Unicast { port, .. } => format!("port {port}"),
                };
                json!({
                    "name": io.name,
                    "kind": conf.kind.as_str(),
                    "address": address,
                    "session": self.node.session(io.id).map(|s| s.0),
                    "receivers_live": self.node.live_receivers(io.id),
                    "destinations": io.dests.len(),
                })
            })
            .collect();
        Value::Array(rows)
    }

    /// `[{"node", "name", "addr", "source_up"}]`: every node heard and not
    /// yet gone, sorted by node id.
    pub(super) fn peers_json(&self) -> Value {
        let ls = &self.loop_state;
        let now = super::clock::now();
        let mut peers: Vec<_> = ls.peers.iter().collect();
        peers.sort_by_key(|(node, _)| node.0);
        let rows: Vec<Value> = peers
            .into_iter()
            .map(|(node, addr)| {
                json!({
                    "node": node.to_string(),
                    "name": ls.names.get(node).map(|n| n.to_string()),
                    "addr": addr.to_string(),
                    "source_up": ls.sources.contains_key(node),
                    "last_heard_ms_ago": self
                        .node
                        .last_heard(*node)
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                })
            })
            .collect();
        Value::Array(rows)
    }

    /// `[{"topic", "source", "source_name", "local", "earliest_offset",
    /// "next_offset", "size_bytes", "segments"}]` for every open log (a log
    /// not touched since start-up stays closed and is listed with its topic
    /// and source only).
    pub(super) fn topics_json(&self) -> Value {
        let open: std::collections::HashMap<(String, u64), Value> = self
            .log
            .open_log_iter()
            .map(|l| {
                (
                    (l.topic().to_string(), l.source().0),
                    json!({
                        "earliest_offset": l.earliest_offset().0,
                        "next_offset": l.next_offset().0,
                        "size_bytes": l.size_bytes(),
                        "segments": l.segment_count(),
                    }),
                )
            })
            .collect();
        let rows: Vec<Value> = self
            .log
            .logs()
            .into_iter()
            .map(|(topic, source)| {
                let mut row = json!({
                    "topic": topic,
                    "source": source.to_string(),
                    "source_name": if source == self.node_id {
                        Some(self.name.clone())
                    } else {
                        self.loop_state.names.get(&source).map(|n| n.to_string())
                    },
                    "local": source == self.node_id,
                });
                if let (Some(obj), Some(Value::Object(figures))) =
                    (row.as_object_mut(), open.get(&(topic, source.0)))
                {
                    obj.extend(figures.clone());
                }
                row
            })
            .collect();
        Value::Array(rows)
    }
}
