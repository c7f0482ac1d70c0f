//! Consumer groups in one real `castlogd` on this host: a group's committed
//! offsets survive a restart of the daemon, and a new member continues
//! exactly where the group left off. Also `castlog groups --json`.

mod common;

use std::process::Command;
use std::time::Duration;

use castlog::client::{Client, ConsumeMode, Message, Offset, StartFrom};
use common::DaemonProc;

/// One host, a multicast group on loopback that no other test uses.
const NETCONF: &str = "[node]\nlisten = \"127.0.0.1:0\"\n\n[group.g]\nkind = \"multicast\"\n\
address = \"239.255.91.7:7491\"\ninterface = \"127.0.0.1\"\nttl = 1\nloopback = true\n\n\
[[topic]]\npattern = \"*\"\ngroup = \"g\"\npartitions = 4\n";

fn take(c: &mut Client, want: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < want {
        match c
            .next_message(Duration::from_secs(5))
            .expect("next message")
        {
            Some(Message::Record(d)) => got.push(d.offset.0),
            Some(Message::Gap(g)) => panic!("unexpected gap notice: {g:?}"),
            None => break,
        }
    }
    got
}

#[test]
fn a_new_member_after_a_daemon_restart_continues_from_the_committed_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = DaemonProc::start(None, 0, "solo", NETCONF, dir.path());
    let mut publisher = d.client();
    for k in 0..100u64 {
        let key = format!("k{}", k % 7);
        publisher
            .publish_sync("jobs", Some(key.as_bytes()), b"x", Duration::from_secs(5))
            .expect("publish");
    }
    let source = {
        let mut m = d.client();
        m.subscribe(
            "jobs",
            StartFrom::Committed,
            Some("w"),
            ConsumeMode::Clustering,
        )
        .expect("subscribe");
        // The only member owns every partition and starts at the oldest
        // record: it gets all 100, in offset order.
        let got = take(&mut m, 100);
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        // It processed the first 60 and commits that, then dies.
        let stats: serde_json::Value =
            serde_json::from_str(&m.stats_json().expect("stats")).expect("json");
        let node = stats["node"]["id"].as_str().expect("node id").to_string();
        let node = castlog::client::NodeId(u64::from_str_radix(&node, 16).expect("hex"));
        m.commit("w", "jobs", node, Offset(60)).expect("commit");
        m.ping().expect("ping");
        node
    };
    // Offsets reach the disk at the latest on a clean stop.
    d.terminate();
    d.restart(None);
    let out = Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["groups", "--json"])
        .output()
        .expect("run castlog groups");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).expect("groups json");
    let parts = groups[0]["partitions"].as_array().expect("partitions");
    assert_eq!(groups[0]["group"], "w");
    assert_eq!(parts.len(), 4, "{groups}");
    // The commit covered every record delivered up to offset 59: each
    // partition's committed offset is just past its last record below 60.
    for p in parts {
        let committed = p["committed"].as_u64().expect("committed");
        assert!((50..=60).contains(&committed), "{groups}");
    }
    let mut m = d.client();
    m.subscribe(
        "jobs",
        StartFrom::Committed,
        Some("w"),
        ConsumeMode::Clustering,
    )
    .expect("subscribe again");
    let got = take(&mut m, 40);
    assert_eq!(got, (60..100).collect::<Vec<_>>(), "source {source:?}");
    assert!(m
        .next_message(Duration::from_millis(500))
        .expect("next")
        .is_none());
}

#[test]
fn auto_commit_commits_each_record_as_it_is_handed_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let netconf = NETCONF.replace("239.255.91.7:7491", "239.255.91.8:7492");
    let d = DaemonProc::start(None, 0, "autoc", &netconf, dir.path());
    let mut publisher = d.client();
    for k in 0..50u64 {
        let key = format!("k{k}");
        publisher
            .publish_sync("tasks", Some(key.as_bytes()), b"x", Duration::from_secs(5))
            .expect("publish");
    }
    {
        let mut m = d.client();
        m.set_auto_commit(true);
        m.subscribe(
            "tasks",
            StartFrom::Committed,
            Some("a"),
            ConsumeMode::Clustering,
        )
        .expect("subscribe");
        // Handed out 20, never committed by hand; then the member leaves.
        assert_eq!(take(&mut m, 20), (0..20).collect::<Vec<_>>());
        m.ping().expect("ping");
    }
    // The next member of the group starts right after what was handed out.
    let mut m2 = d.client();
    m2.subscribe(
        "tasks",
        StartFrom::Committed,
        Some("a"),
        ConsumeMode::Clustering,
    )
    .expect("subscribe");
    assert_eq!(take(&mut m2, 30), (20..50).collect::<Vec<_>>());
}
