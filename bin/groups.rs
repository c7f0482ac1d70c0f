//! `castlog groups`: consumer groups as the local daemon sees them (from
//! its stats document): members, the owner of each partition, committed
//! offsets and lag.

use std::io::{self, Write};

use clap::Args;
use serde_json::Value;

pub const GROUPS_LONG: &str = "\
List the consumer groups the local daemon knows: their members (on every
host), the assignment epoch, and per topic, source and partition the owner,
the committed offset (the next record the group has to process), the end of
the local log and the lag (log end minus committed: records of the whole
topic, an upper bound for one partition). --json prints the groups as a
JSON array.";

pub const GROUPS_EXAMPLES: &str = "\
Examples:
  castlog groups
  castlog groups --group workers
  castlog groups --json | jq '.[].partitions[] | select(.lag > 1000)'";

#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// Only this consumer group
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Print the groups as a JSON array
    #[arg(long)]
    pub json: bool,
}

/// The `groups` array of the daemon's stats document, filtered.
pub fn select(stats: &Value, group: Option<&str>) -> Vec<Value> {
    stats
        .get("groups")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .filter(|g| {
                    group.is_none_or(|name| g.get("group").and_then(Value::as_str) == Some(name))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Human-readable report: one block per group.
pub fn print(out: &mut impl Write, groups: &[Value]) -> io::Result<()> {
    if groups.is_empty() {
        writeln!(out, "no consumer groups")?;
    }
    for g in groups {
        writeln!(
            out,
            "group {}  epoch {}",
            text(g.get("group")),
            text(g.get("epoch"))
        )?;
        for m in g
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let patterns: Vec<String> = m
                .get("patterns")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| text(Some(p)))
                .collect();
            writeln!(
                out,
                "  member {}/{}  {}{}  {}",
                text(m.get("node")),
                text(m.get("member")),
                text(m.get("mode")),
                if m.get("local").and_then(Value::as_bool) == Some(true) {
                    " (here)"
                } else {
                    ""
                },
                patterns.join(" ")
            )?;
        }
        let parts: Vec<&Value> = g
            .get("partitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        if parts.is_empty() {
            continue;
        }
        writeln!(
            out,
            "  {:<24} {:<16} {:>9} {:>12} {:>12} {:>10}  owner",
            "topic", "source", "partition", "committed", "log end", "lag"
        )?;
        for p in parts {
            writeln!(
                out,
                "  {:<24} {:<16} {:>9} {:>12} {:>12} {:>10}  {}",
                text(p.get("topic")),
                text(p.get("source")),
                text(p.get("partition")),
                text(p.get("committed")),
                text(p.get("log_end")),
                text(p.get("lag")),
                text(p.get("owner"))
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_shows_members_and_partitions_and_filters_by_group() {
        let stats = serde_json::json!({"groups": [
            {"group": "workers", "epoch": 3,
             "members": [{"node": "00000000000003e8", "member": "h1.1", "local": true,
                          "mode": "clustering", "patterns": ["orders.*"]}],
             "partitions": [{"topic": "orders.eu", "source": "00000000000003e8", "partition": 0,
                             "owner": "00000000000003e8/h1.1", "committed": 10, "log_end": 12, "lag": 2}]},
            {"group": "audit", "epoch": 1, "members": [], "partitions": []}
        ]});
        assert_eq!(select(&stats, None).len(), 2);
        let one = select(&stats, Some("workers"));
        assert_eq!(one.len(), 1);
        let mut out = Vec::new();
        print(&mut out, &one).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("group workers  epoch 3"), "{text}");
        assert!(text.contains("h1.1  clustering (here)  orders.*"), "{text}");
        assert!(text.contains("orders.eu"), "{text}");
        assert!(select(&serde_json::json!({}), None).is_empty());
    }
}
