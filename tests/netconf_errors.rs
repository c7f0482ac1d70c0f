//! netconf, black-box: the issue-4 example is accepted as written, every
//! file in `netconf/` loads, every bad file in `tests/data/netconf/` fails
//! with the expected file:line, field and message, and no input panics.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use castlog::netconf::{
    check_files, FsyncPolicy, GroupKind, GroupRef, IdlePolicy, NetConf, TopicPattern,
    EMBEDDED_DEFAULT,
};
use proptest::prelude::*;

/// The netconf example of issue 4, verbatim.
const ISSUE_4_EXAMPLE: &str = r#"[node]
name = "h1"                          # default: the host name
data-dir = "/var/lib/castlog/h1"     # default: ./castlog-data
socket = "/run/castlog/h1.sock"      # client IPC socket; default: $XDG_RUNTIME_DIR or /tmp, named after the node
listen = "10.1.0.1:7500"             # this node's unicast endpoint for NAKs, repairs and replay

[group.md]                           # a group is a transport channel
kind = "multicast"
address = "239.255.1.1:7400"
interface = "10.1.0.1"               # local interface address to send and join on
ttl = 1

[group.office]
kind = "broadcast"
address = "10.1.0.255:7401"          # subnet broadcast address

[group.mesh]
kind = "unicast"
port = 7402
peers = ["10.1.0.2:7402", "10.1.0.3:7402"]   # one copy goes to each peer

[[topic]]                            # rules, first match wins
pattern = "md.*"                     # exact name, prefix.* or *
group = "md"
retention = "2d"                     # by age; also retention-bytes = "10GiB"

[[topic]]
pattern = "*"
group = "mesh"
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn issue_4_example_is_accepted_with_the_right_model() {
    let conf = NetConf::from_str(ISSUE_4_EXAMPLE, "issue4.toml").unwrap();
    assert_eq!(conf.origin, "issue4.toml");

    assert_eq!(conf.node.name.as_deref(), Some("h1"));
    assert_eq!(conf.node.data_dir, Path::new("/var/lib/castlog/h1"));
    assert_eq!(
        conf.node.socket.as_deref(),
        Some(Path::new("/run/castlog/h1.sock"))
    );
    assert_eq!(conf.node.listen, addr("10.1.0.1:7500"));
    assert_eq!(conf.node.console, None);
    assert_eq!(conf.node.idle, IdlePolicy::Backoff);
    assert_eq!(
        conf.node.fsync,
        FsyncPolicy::Interval(Duration::from_secs(1))
    );

    let names: Vec<&str> = conf.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["md", "office", "mesh"], "groups keep file order");
    assert_eq!(
        conf.group("md").unwrap().kind,
        GroupKind::Multicast {
            address: SocketAddrV4::new(Ipv4Addr::new(239, 255, 1, 1), 7400),
            interface: Ipv4Addr::new(10, 1, 0, 1),
            ttl: 1,
            loopback: true,
        }
    );
    assert_eq!(
        conf.group("office").unwrap().kind,
        GroupKind::Broadcast {
            address: SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 255), 7401)
        }
    );
    assert_eq!(
        conf.group("mesh").unwrap().kind,
        GroupKind::Unicast {
            port: 7402,
            peers: vec![addr("10.1.0.2:7402"), addr("10.1.0.3:7402")],
        }
    );
    let md = conf.group("md").unwrap();
    assert_eq!(md.mtu, 1400);
    assert!(md.gso);
    assert!(md.allow.is_empty());
    assert!(conf.group("nope").is_none());

    assert_eq!(conf.topics.len(), 2);
    assert_eq!(conf.topics[0].pattern, TopicPattern::Prefix("md".into()));
    assert_eq!(
        conf.topics[0].retention,
        Some(Duration::from_secs(2 * 86_400))
    );
    assert_eq!(conf.topics[0].retention_bytes, None);
    assert_eq!(conf.topics[0].partitions, 1);
    assert_eq!(conf.topics[1].pattern, TopicPattern::Any);
    assert_eq!(conf.rule_for("md.prices.AAPL").unwrap().group, "md");
    assert_eq!(conf.rule_for("md").unwrap().group, "mesh");
    assert_eq!(conf.rule_for("chat").unwrap().group, "mesh");
}

#[test]
fn every_file_in_netconf_dir_loads() {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir("netconf").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    for name in ["default", "multicast", "broadcast", "unicast"] {
        assert!(
            paths.contains(&PathBuf::from(format!("netconf/{name}.toml"))),
            "netconf/{name}.toml is missing"
        );
    }
    for p in &paths {
        if let Err(e) = NetConf::load(p) {
            panic!("{e}");
        }
    }
    assert_eq!(check_files(&paths), vec![]);
}

#[test]
fn embedded_default_is_the_default_file() {
    let from_file = NetConf::load(Path::new("netconf/default.toml")).unwrap();
    let embedded = NetConf::embedded_default();
    assert_eq!(embedded.origin, "<embedded default>");
    assert_eq!(embedded.groups, from_file.groups);
    assert_eq!(embedded.topics, from_file.topics);
    assert_eq!(
        EMBEDDED_DEFAULT,
        std::fs::read_to_string("netconf/default.toml").unwrap()
    );
}

/// (file in tests/data/netconf, line, field, substring of the Display).
#[rustfmt::skip]
const BAD_FILES: &[(&str, usize, &str, &str)] = &[
    ("unknown_key_top.toml", 1, "colour", "unknown key `colour`; allowed: node, group, topic"),
    ("unknown_key_node.toml", 2, "node.nmae", "unknown key `nmae`; did you mean `name`?"),
    ("unknown_key_group.toml", 4, "group.md.tll", "unknown key `tll`; did you mean `ttl`?"),
    ("unknown_key_topic.toml", 8, "topic[0].retension", "did you mean `retention`?"),
    ("key_of_other_kind.toml", 4, "group.office.ttl", "`ttl` is not used by kind \"broadcast\" (only by multicast)"),
    ("bad_kind.toml", 2, "group.md.kind", "must be one of \"multicast\", \"broadcast\", \"unicast\", got \"anycast\""),
    ("missing_kind.toml", 1, "group.md.kind", "missing key `kind`"),
    ("missing_address.toml", 4, "group.md.address", "missing key `address` (a multicast IPV4:PORT"),
    ("missing_pattern.toml", 9, "topic[1].pattern", "missing key `pattern` (an exact topic, PREFIX.* or *)"),
    ("bad_address.toml", 3, "group.md.address", "expected IPV4:PORT such as \"239.255.1.1:7400\", got \"239.255.1.1\""),
    ("not_multicast.toml", 3, "group.md.address", "must be a multicast address (224.0.0.0/4"),
    ("ttl_out_of_range.toml", 7, "group.md.ttl", "ttl_out_of_range.toml:7:7: group.md.ttl: must be 1..=255, got 0"),
    ("interface_not_ipv4.toml", 4, "group.md.interface", "expected the IPv4 address of a local interface"),
    ("bad_duration.toml", 4, "group.md.nak-delay-max", "missing unit in \"30\""),
    ("fractional_duration.toml", 4, "group.md.liveness-timeout", "unknown unit \".5s\""),
    ("bad_size.toml", 8, "topic[0].retention-bytes", "unknown unit \"gib\""),
    ("mtu_out_of_range.toml", 4, "group.md.mtu", "must be 576..=65000, got 100"),
    ("unknown_group.toml", 7, "topic[0].group", "no group named \"mdd\"; groups in this file: md"),
    ("bad_pattern.toml", 6, "topic[0].pattern", "`*` may only stand alone or as the last part after a dot, got \"md*x\""),
    ("shadowed_rule.toml", 10, "topic[1].pattern", "never used: topic[0] above (`*`)"),
    ("bad_cidr.toml", 4, "group.md.allow", "item 1: host bits are set in \"10.2.0.1/24\"; did you mean \"10.2.0.0/24\"?"),
    ("syntax_error.toml", 2, "", "syntax_error.toml:2:18: toml syntax: "),
    ("wrong_type.toml", 4, "group.md.ttl", "expected an integer 1..=255, got a string \"1\""),
    ("wrong_type_table.toml", 1, "node", "expected a table [node], got a string"),
    ("datetime_value.toml", 8, "topic[0].retention", "expected a duration string such as \"30ms\", got a datetime"),
    ("no_topic.toml", 1, "topic", "no topic rule: add a [[topic]]"),
    ("no_group.toml", 1, "group", "no group: add at least one [group.NAME]"),
    ("bad_idle.toml", 2, "node.idle", "must be one of \"block\", \"yield\", \"spin\", \"backoff\", got \"sleep\""),
    ("fsync_interval_unused.toml", 3, "node.fsync-interval", "only used with fsync = \"interval\""),
    ("empty_peers.toml", 4, "group.mesh.peers", "must list at least one peer"),
    ("bad_peer.toml", 6, "group.mesh.peers", "item 1: expected IP:PORT"),
    ("duplicate_peer.toml", 4, "group.mesh.peers", "item 2: 10.1.0.2:7402 is listed twice"),
    ("partitions_out_of_range.toml", 8, "topic[0].partitions", "must be 1..=1024, got 0"),
    ("bad_console.toml", 2, "node.console", "expected IP:PORT"),
    ("heartbeat_above_liveness.toml", 4, "group.md.heartbeat-interval-max", "must be at most half of liveness-timeout (default 5s), got 10s"),
    ("previous_key_without_key.toml", 4, "group.md.previous-key-file", "needs `key-file`"),
    ("bad_publishers.toml", 8, "topic[0].publishers", "item 1: a node name is 1..=64 characters"),
    ("bad_socket_group.toml", 3, "node.socket-group", "expected a group name (1..=32 of A-Z a-z 0-9 . _ -, not starting with -) or a gid 0..=4294967294, got \"-wheel\""),
];

#[test]
fn each_bad_file_fails_with_its_file_line_field_and_message() {
    let mut failures = Vec::new();
    for (name, line, field, message) in BAD_FILES {
        let path = PathBuf::from("tests/data/netconf").join(name);
        let e = match NetConf::load(&path) {
            Ok(_) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        let shown = e.to_string();
        let ok = e.file == path.display().to_string()
            && e.line == *line
            && e.column > 0
            && e.field == *field
            && shown.contains(message)
            && shown.starts_with(&format!("{}:{}:{}: ", e.file, e.line, e.column))
            && !shown.contains('\n');
        if !ok {
            failures.push(format!(
                "{name}: want line {line} field `{field}` containing `{message}`, got: {shown}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn socket_group_is_read_as_a_name_or_a_gid() {
    let file = |value: &str| {
        format!("[node]\nsocket-group = {value}\n[group.g]\nkind = \"broadcast\"\naddress = \"10.0.0.255:7400\"\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n")
    };
    let group = |value: &str| {
        NetConf::from_str(&file(value), "g.toml")
            .map(|c| c.node.socket_group.map(|g| g.group))
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        group("\"castlog\""),
        Ok(Some(GroupRef::Name("castlog".into())))
    );
    assert_eq!(group("1001"), Ok(Some(GroupRef::Gid(1001))));
    assert_eq!(group("\"1001\""), Ok(Some(GroupRef::Gid(1001))));
    assert!(group("4294967295")
        .unwrap_err()
        .contains("node.socket-group"));
    assert!(group("-1").unwrap_err().contains("got -1"));
    assert!(group("\"\"").is_err());
    assert!(group(&format!("\"{}\"", "g".repeat(33))).is_err());
    assert!(group("true").unwrap_err().contains("got a boolean"));
    let none = NetConf::from_str(
        &file("\"x\"").replace("socket-group = \"x\"\n", ""),
        "g.toml",
    );
    assert_eq!(none.unwrap().node.socket_group, None);
}

#[test]
fn a_socket_group_this_host_does_not_know_is_an_error_at_its_line() {
    let text = "[node]\nname = \"h1\"\n  socket-group = \"nosuchgroup\"\n[group.g]\nkind = \"broadcast\"\naddress = \"10.0.0.255:7400\"\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n";
    let conf = NetConf::from_str(text, "h1.toml").unwrap();
    let sg = conf.node.socket_group.unwrap();
    let e = sg.resolve(|_| None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "h1.toml:3:18: node.socket-group: no group \"nosuchgroup\" on this host; create it (groupadd nosuchgroup) or name an existing group or gid"
    );
    assert_eq!(
        sg.resolve(|name| (name == "nosuchgroup").then_some(77)),
        Ok(77)
    );
    let by_gid = NetConf::from_str(&text.replace("\"nosuchgroup\"", "77"), "h1.toml").unwrap();
    assert_eq!(by_gid.node.socket_group.unwrap().resolve(|_| None), Ok(77));
}

#[test]
fn every_bad_file_is_listed_in_the_table() {
    for entry in std::fs::read_dir("tests/data/netconf").unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            BAD_FILES.iter().any(|(f, ..)| *f == name),
            "tests/data/netconf/{name} has no expectation in BAD_FILES"
        );
    }
}

#[test]
fn check_files_reports_every_error_of_every_file() {
    let paths = [
        PathBuf::from("netconf/default.toml"),
        PathBuf::from("tests/data/netconf/bad_kind.toml"),
        PathBuf::from("tests/data/netconf/no_such_file.toml"),
    ];
    let errors = check_files(&paths);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{shown:#?}");
    assert!(shown[0].starts_with("tests/data/netconf/bad_kind.toml:2:8: group.md.kind: "));
    assert!(shown[1].starts_with("tests/data/netconf/no_such_file.toml: cannot read: "));
}

#[test]
fn tuning_keys_are_read_into_the_model() {
    let text = r#"
[node]
name = "h1"
console = "127.0.0.1:7480"
idle = "spin"
fsync = "never"
segment-max-size = "1GiB"
segment-max-age = "30m"

[group.md]
kind = "multicast"
address = "239.255.1.1:7400"
mtu = 9000
rate-limit = "100MiB"
heartbeat-interval-min = "250us"
heartbeat-interval-max = "1s"
nak-delay-max = "0s"
nak-retry-interval = "20ms"
nak-max-retries = 5
retransmit-window = "128MiB"
flow-window = "32MiB"
liveness-timeout = "3s"
send-buffer = "8MiB"
recv-buffer = 33554432
gso = false
loopback = false
allow = ["10.1.0.0/24", "10.2.0.7"]
key-file = "/etc/castlog/md.key"
previous-key-file = "/etc/castlog/md.key.old"

[[topic]]
pattern = "md.prices.AAPL"
group = "md"
retention-bytes = "10GiB"
partitions = 8
publishers = ["h1", "h2"]
"#;
    let conf = NetConf::from_str(text, "t.toml").unwrap();
    assert_eq!(conf.node.console, Some(addr("127.0.0.1:7480")));
    assert_eq!(conf.node.idle, IdlePolicy::Spin);
    assert_eq!(conf.node.fsync, FsyncPolicy::Never);
    assert_eq!(conf.node.segment_max_size_bytes, 1 << 30);
    assert_eq!(conf.node.segment_max_age, Duration::from_secs(1800));
    let g = &conf.groups[0];
    assert_eq!(g.mtu, 9000);
    assert_eq!(g.rate_limit_bytes_per_sec, Some(100 << 20));
    assert_eq!(g.heartbeat_interval_min, Duration::from_micros(250));
    assert_eq!(g.heartbeat_interval_max, Duration::from_secs(1));
    assert_eq!(g.nak_delay_max, Duration::ZERO);
    assert_eq!(g.nak_retry_interval, Duration::from_millis(20));
    assert_eq!(g.nak_max_retries, 5);
    assert_eq!(g.retransmit_window_bytes, 128 << 20);
    assert_eq!(g.flow_window_bytes, 32 << 20);
    assert_eq!(g.liveness_timeout, Duration::from_secs(3));
    assert_eq!(g.send_buffer_bytes, 8 << 20);
    assert_eq!(g.recv_buffer_bytes, 32 << 20);
    assert!(!g.gso);
    assert!(matches!(
        g.kind,
        GroupKind::Multicast {
            loopback: false,
            ttl: 1,
            ..
        }
    ));
    assert!(g.allows("10.1.0.99".parse().unwrap()));
    assert!(g.allows("10.2.0.7".parse().unwrap()));
    assert!(!g.allows("10.2.0.8".parse().unwrap()));
    assert_eq!(
        g.key_file.as_deref(),
        Some(Path::new("/etc/castlog/md.key"))
    );
    assert_eq!(
        g.previous_key_file.as_deref(),
        Some(Path::new("/etc/castlog/md.key.old"))
    );
    let r = &conf.topics[0];
    assert_eq!(r.retention_bytes, Some(10 << 30));
    assert_eq!(r.partitions, 8);
    assert_eq!(r.publishers, Some(vec!["h1".to_owned(), "h2".to_owned()]));
    assert!(conf.rule_for("md.prices.MSFT").is_none());
}

/// One random edit of `text`: delete, insert or replace a stretch.
fn mutate(text: &str, at: usize, len: usize, insert: &str, how: u8) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = at % (chars.len() + 1);
    let end = (at + len).min(chars.len());
    let (head, tail) = (&chars[..at], &chars[end..]);
    let mut out: String = head.iter().collect();
    match how % 3 {
        0 => {} // delete at..end
        1 => {
            out.push_str(insert); // insert, keep the rest
            out.extend(&chars[at..end]);
        }
        _ => out.push_str(insert), // replace at..end
    }
    out.extend(tail);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_text_never_panics(text in ".{0,400}") {
        let _ = NetConf::from_str(&text, "fuzz.toml");
    }

    #[test]
    fn random_edits_of_a_valid_file_never_panic(
        edits in proptest::collection::vec(
            (any::<usize>(), 0usize..12, "[-a-z0-9 .\"'=\\[\\]{},:*#\n\u{e9}]{0,8}", any::<u8>()),
            1..6,
        )
    ) {
        let mut text = ISSUE_4_EXAMPLE.to_owned();
        for (at, len, insert, how) in &edits {
            text = mutate(&text, *at, *len, insert, *how);
        }
        if let Err(e) = NetConf::from_str(&text, "fuzz.toml") {
            let shown = e.to_string();
            prop_assert!(shown.starts_with("fuzz.toml"));
            prop_assert!(!shown.contains('\n'), "multi-line error: {}", shown);
        }
    }
}

#[test]
fn deeply_nested_values_are_an_error_not_a_stack_overflow() {
    for depth in [100, 10_000, 200_000] {
        let arrays = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert!(NetConf::from_str(&arrays, "deep.toml").is_err());
        let tables = format!("x = {}{}\n", "{a = ".repeat(depth), "}".repeat(depth));
        assert!(NetConf::from_str(&tables, "deep.toml").is_err());
        let dotted = format!("{} = 1\n", vec!["a"; depth].join("."));
        assert!(NetConf::from_str(&dotted, "deep.toml").is_err());
    }
}
