//! Raw spanned tree -> validated model ("parse, don't validate").
//!
//! Every check lives here, and every error names the key's dotted path and
//! the position of the offending text (the value, or the key when the key
//! itself is the problem, or the table header when a key is missing). All
//! errors of a file are collected, then sorted by position, so `castlog
//! check` can show them all and `NetConf::from_str` returns the first.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::time::Duration;

use super::error::Error;
use super::model::{
    is_valid_node_name, is_valid_topic, mask_u128, mask_u32, Cidr, FsyncPolicy, GroupConf,
    GroupKind, IdlePolicy, NetConf, NodeConf, TopicPattern, TopicRule, DEFAULT_DATA_DIR,
};
use super::raw::{self, Item, Key, Value};

// Allowed keys per table. `docs/netconf.md` documents each one (a test in
// mod.rs checks that it mentions them all).
pub(crate) const TOP_KEYS: &[&str] = &["node", "group", "topic"];
pub(crate) const NODE_KEYS: &[&str] = &[
    "name",
    "data-dir",
    "socket",
    "listen",
    "console",
    "idle",
    "fsync",
    "fsync-interval",
    "segment-max-size",
    "segment-max-age",
];
pub(crate) const GROUP_KEYS: &[&str] = &[
    "kind",
    "mtu",
    "rate-limit",
    "heartbeat-interval-min",
    "heartbeat-interval-max",
    "nak-delay-max",
    "nak-retry-interval",
    "nak-max-retries",
    "retransmit-window",
    "flow-window",
    "liveness-timeout",
    "send-buffer",
    "recv-buffer",
    "gso",
    "allow",
    "key-file",
    "previous-key-file",
];
pub(crate) const MULTICAST_KEYS: &[&str] = &["address", "interface", "ttl", "loopback"];
pub(crate) const BROADCAST_KEYS: &[&str] = &["address"];
pub(crate) const UNICAST_KEYS: &[&str] = &["port", "peers"];
pub(crate) const TOPIC_KEYS: &[&str] = &[
    "pattern",
    "group",
    "retention",
    "retention-bytes",
    "partitions",
    "publishers",
];

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const PIB: u64 = 1 << 50;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const DAY: u64 = 86_400;

/// Parses and validates `text`; `origin` names it in errors.
pub(crate) fn build(text: &str, origin: &str) -> Result<NetConf, Vec<Error>> {
    let root = match raw::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let reason = e.message().trim().to_lowercase();
            return Err(vec![Error::at(origin, text, span, "", reason)]);
        }
    };
    let mut cx = Cx {
        file: origin,
        text,
        errors: Vec::new(),
    };
    let conf = cx.netconf(&root);
    if cx.errors.is_empty() {
        Ok(conf)
    } else {
        cx.errors
            .sort_by(|a, b| (a.line, a.column).cmp(&(b.line, b.column)));
        Err(cx.errors)
    }
}

/// A table being read: its entries, its dotted path and its span.
#[derive(Clone, Copy)]
struct Table<'a> {
    path: &'a str,
    entries: &'a [(Key, Item)],
    span: &'a Range<usize>,
}

impl<'a> Table<'a> {
    fn get(&self, key: &str) -> Option<&'a Item> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{}", self.path, key)
        }
    }
}

/// The validation context: the text (for positions) and the errors so far.
struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<Error>,
}

/// A parser from one raw value to a typed value, or a reason.
type Parse<'p, T> = &'p dyn Fn(&Value) -> Result<T, String>;

impl Cx<'_> {
    fn err(&mut self, span: Range<usize>, field: &str, reason: String) {
        self.errors
            .push(Error::at(self.file, self.text, span, field, reason));
    }

    /// Reads an optional key: `None` when absent or invalid (then an error
    /// is recorded).
    fn opt<T>(&mut self, t: Table, key: &str, parse: Parse<T>) -> Option<T> {
        let item = t.get(key)?;
        match parse(&item.value) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.err(item.span.clone(), &t.field(key), reason);
                None
            }
        }
    }

    /// Reads a required key: records "missing" at the table header.
    fn req<T>(&mut self, t: Table, key: &str, what: &str, parse: Parse<T>) -> Option<T> {
        if t.get(key).is_none() {
            let reason = format!("missing key `{key}` ({what})");
            self.err(t.span.clone(), &t.field(key), reason);
            return None;
        }
        self.opt(t, key, parse)
    }

    /// Records every key of `t` that is not in `allowed`; `misplaced`
    /// explains keys that are valid elsewhere (e.g. for another kind).
    fn check_keys(&mut self, t: Table, allowed: &[&[&str]], misplaced: &dyn Fn(&str) -> Option<String>) {
        for (k, _) in t.entries {
            let key = k.get_ref().as_str();
            if allowed.iter().any(|list| list.contains(&key)) {
                continue;
            }
            let reason = match misplaced(key) {
                Some(reason) => reason,
                None => {
                    let all: Vec<&str> = allowed.iter().flat_map(|l| l.iter().copied()).collect();
                    let hint = closest(key, &all)
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    format!("unknown key `{key}`; {hint}allowed: {}", all.join(", "))
                }
            };
            self.err(k.span(), &t.field(key), reason);
        }
    }

    fn netconf(&mut self, root: &[(Key, Item)]) -> NetConf {
        let empty = 0..0;
        let top = Table {
            path: "",
            entries: root,
            span: &empty,
        };
        self.check_keys(top, &[TOP_KEYS], &|_| None);

        let node = match top.get("node") {
            None => self.node(Table { path: "node", entries: &[], span: &empty }),
            Some(item) => match &item.value {
                Value::Table(entries) => self.node(Table {
                    path: "node",
                    entries,
                    span: &item.span,
                }),
                other => {
                    let reason = format!("expected a table [node], got {}", other.type_name());
                    self.err(item.span.clone(), "node", reason);
                    self.node(Table { path: "node", entries: &[], span: &empty })
                }
            },
        };

        let mut groups = Vec::new();
        // Every declared group name, valid or not, so that a rule naming a
        // group with its own errors is not reported a second time.
        let mut declared: Vec<String> = Vec::new();
        match top.get("group") {
            None => self.err(
                0..0,
                "group",
                "no group: add at least one [group.NAME] table with a `kind`".into(),
            ),
            Some(item) => match &item.value {
                Value::Table(entries) if entries.is_empty() => self.err(
                    item.span.clone(),
                    "group",
                    "no group: add at least one [group.NAME] table with a `kind`".into(),
                ),
                Value::Table(entries) => {
                    for (name, g) in entries {
                        declared.push(name.get_ref().clone());
                        if let Some(group) = self.group(name, g) {
                            groups.push(group);
                        }
                    }
                }
                other => {
                    let reason = format!(
                        "expected [group.NAME] tables, got {}",
                        other.type_name()
                    );
                    self.err(item.span.clone(), "group", reason);
                }
            },
        }

        let mut topics = Vec::new();
        match top.get("topic") {
            None => self.err(
                0..0,
                "topic",
                "no topic rule: add a [[topic]] with `pattern = \"*\"` and a `group`".into(),
            ),
            Some(item) => match &item.value {
                Value::Array(rules) if rules.is_empty() => self.err(
                    item.span.clone(),
                    "topic",
                    "no topic rule: add a [[topic]] with `pattern = \"*\"` and a `group`".into(),
                ),
                Value::Array(rules) => {
                    for (i, rule) in rules.iter().enumerate() {
                        if let Some(rule) = self.topic(i, rule, &declared, &topics) {
                            topics.push(rule);
                        }
                    }
                }
                other => {
                    let reason = format!(
                        "expected [[topic]] rules (an array of tables), got {}",
                        other.type_name()
                    );
                    self.err(item.span.clone(), "topic", reason);
                }
            },
        }

        NetConf {
            origin: self.file.to_owned(),
            node,
            groups,
            topics,
        }
    }

    fn node(&mut self, t: Table) -> NodeConf {
        self.check_keys(t, &[NODE_KEYS], &|_| None);
        let name = self.opt(t, "name", &|v| {
            let s = string(v)?;
            if is_valid_node_name(s) {
                Ok(s.to_owned())
            } else {
                Err(format!(
                    "must be 1..=64 characters of A-Z a-z 0-9 . _ -, got \"{s}\""
                ))
            }
        });
        let data_dir = self
            .opt(t, "data-dir", &path_value)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let socket = self.opt(t, "socket", &|v| {
            let p = path_value(v)?;
            // sun_path holds 108 bytes including the terminating NUL.
            if p.as_os_str().len() > 107 {
                Err(format!(
                    "a unix socket path must be at most 107 bytes, got {}",
                    p.as_os_str().len()
                ))
            } else {
                Ok(p)
            }
        });
        let listen = self
            .opt(t, "listen", &socket_addr)
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let console = self.opt(t, "console", &|v| {
            let a = socket_addr(v)?;
            if a.port() == 0 {
                Err("the console needs a fixed port, got port 0".into())
            } else {
                Ok(a)
            }
        });
        let idle = self
            .opt(t, "idle", &|v| {
                one_of(
                    v,
                    &[
                        ("block", IdlePolicy::Block),
                        ("yield", IdlePolicy::Yield),
                        ("spin", IdlePolicy::Spin),
                    ],
                )
            })
            .unwrap_or(IdlePolicy::Block);
        #[derive(Clone, Copy, PartialEq)]
        enum Fsync {
            Always,
            Interval,
            Never,
        }
        let fsync = self.opt(t, "fsync", &|v| {
            one_of(
                v,
                &[
                    ("always", Fsync::Always),
                    ("interval", Fsync::Interval),
                    ("never", Fsync::Never),
                ],
            )
        });
        let interval = self.opt(t, "fsync-interval", &duration_in(ms(1)..=secs(3600)));
        let policy = fsync.unwrap_or(Fsync::Interval);
        if policy != Fsync::Interval {
            if let Some(item) = t.get("fsync-interval") {
                self.err(
                    item.span.clone(),
                    &t.field("fsync-interval"),
                    "only used with fsync = \"interval\"; remove it or set fsync = \"interval\""
                        .into(),
                );
            }
        }
        let fsync = match policy {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Never => FsyncPolicy::Never,
            Fsync::Interval => FsyncPolicy::Interval(interval.unwrap_or(secs(1))),
        };
        let segment_max_size_bytes = self
            .opt(t, "segment-max-size", &size_in(4 * KIB..=16 * GIB))
            .unwrap_or(128 * MIB);
        let segment_max_age = self
            .opt(t, "segment-max-age", &duration_in(secs(1)..=secs(365 * DAY)))
            .unwrap_or(secs(3600));
        NodeConf {
            name,
            data_dir,
            socket,
            listen,
            console,
            idle,
            fsync,
            segment_max_size_bytes,
            segment_max_age,
        }
    }

    fn group(&mut self, name: &Key, item: &Item) -> Option<GroupConf> {
        let path = format!("group.{}", name.get_ref());
        if !is_valid_node_name(name.get_ref()) {
            self.err(
                name.span(),
                &path,
                "a group name must be 1..=64 characters of A-Z a-z 0-9 . _ -".into(),
            );
        }
        let Value::Table(entries) = &item.value else {
            let reason = format!(
                "expected a table [{path}], got {}",
                item.value.type_name()
            );
            self.err(item.span.clone(), &path, reason);
            return None;
        };
        let t = Table {
            path: &path,
            entries,
            span: &item.span,
        };
        let kind_name = self.req(t, "kind", "multicast, broadcast or unicast", &|v| {
            one_of(
                v,
                &[
                    ("multicast", "multicast"),
                    ("broadcast", "broadcast"),
                    ("unicast", "unicast"),
                ],
            )
        });
        let kind_keys: &[&str] = match kind_name {
            Some("multicast") => MULTICAST_KEYS,
            Some("broadcast") => BROADCAST_KEYS,
            Some("unicast") => UNICAST_KEYS,
            // Unknown kind: already reported; do not pile on key errors.
            _ => &[],
        };
        if kind_name.is_some() {
            let kind = kind_name.unwrap_or_default();
            self.check_keys(t, &[GROUP_KEYS, kind_keys], &|key| {
                let owners: Vec<&str> = [
                    ("multicast", MULTICAST_KEYS),
                    ("broadcast", BROADCAST_KEYS),
                    ("unicast", UNICAST_KEYS),
                ]
                .iter()
                .filter(|(_, keys)| keys.contains(&key))
                .map(|(k, _)| *k)
                .collect();
                (!owners.is_empty()).then(|| {
                    format!(
                        "`{key}` is not used by kind \"{kind}\" (only by {}); allowed here: {}",
                        owners.join(", "),
                        kind_keys.join(", ")
                    )
                })
            });
        }
        let kind = match kind_name {
            Some("multicast") => self.multicast(t),
            Some("broadcast") => self.broadcast(t),
            Some("unicast") => self.unicast(t),
            _ => None,
        };

        let mtu = self.opt(t, "mtu", &size_in(576..=65_000)).unwrap_or(1400);
        let rate_limit = self.opt(t, "rate-limit", &size_in(KIB..=100 * GIB));
        let hb_min = self
            .opt(t, "heartbeat-interval-min", &duration_in(Duration::from_micros(100)..=secs(10)))
            .unwrap_or(ms(5));
        let hb_max = self
            .opt(t, "heartbeat-interval-max", &duration_in(hb_min..=secs(60)))
            .unwrap_or(ms(500).max(hb_min));
        let nak_delay_max = self
            .opt(t, "nak-delay-max", &duration_in(Duration::ZERO..=secs(10)))
            .unwrap_or(ms(10));
        let nak_retry_interval = self
            .opt(t, "nak-retry-interval", &duration_in(ms(1)..=secs(10)))
            .unwrap_or(ms(50));
        let nak_max_retries = self
            .opt(t, "nak-max-retries", &int_in(1..=1000))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(10);
        let retransmit_window = self
            .opt(t, "retransmit-window", &size_in(64 * KIB..=16 * GIB))
            .unwrap_or(64 * MIB);
        let flow_window = self
            .opt(t, "flow-window", &size_in(64 * KIB..=retransmit_window))
            .unwrap_or(16 * MIB);
        if t.get("flow-window").is_none() && retransmit_window < flow_window {
            if let Some(item) = t.get("retransmit-window") {
                self.err(
                    item.span.clone(),
                    &t.field("retransmit-window"),
                    format!(
                        "must be at least flow-window (default {}), got {}; lower flow-window too",
                        fmt_size(flow_window),
                        fmt_size(retransmit_window)
                    ),
                );
            }
        }
        let liveness_min = hb_max.saturating_mul(2);
        let liveness_timeout = self
            .opt(t, "liveness-timeout", &duration_in(liveness_min..=secs(3600)))
            .unwrap_or(secs(5));
        if t.get("liveness-timeout").is_none() && liveness_timeout < liveness_min {
            if let Some(item) = t.get("heartbeat-interval-max") {
                self.err(
                    item.span.clone(),
                    &t.field("heartbeat-interval-max"),
                    format!(
                        "must be at most half of liveness-timeout (default {}), got {}; raise liveness-timeout too",
                        fmt_duration(liveness_timeout),
                        fmt_duration(hb_max)
                    ),
                );
            }
        }
        let send_buffer = self
            .opt(t, "send-buffer", &size_in(64 * KIB..=GIB))
            .unwrap_or(4 * MIB);
        let recv_buffer = self
            .opt(t, "recv-buffer", &size_in(64 * KIB..=GIB))
            .unwrap_or(16 * MIB);
        let gso = self.opt(t, "gso", &boolean).unwrap_or(true);
        let allow = self
            .opt(t, "allow", &|v| list(v, &|v| cidr(string(v)?)))
            .unwrap_or_default();
        let key_file = self.opt(t, "key-file", &path_value);
        let previous_key_file = self.opt(t, "previous-key-file", &path_value);
        if previous_key_file.is_some() && t.get("key-file").is_none() {
            if let Some(item) = t.get("previous-key-file") {
                self.err(
                    item.span.clone(),
                    &t.field("previous-key-file"),
                    "needs `key-file` (the current key) in the same group".into(),
                );
            }
        }

        Some(GroupConf {
            name: name.get_ref().clone(),
            kind: kind?,
            mtu: usize::try_from(mtu).unwrap_or(1400),
            rate_limit_bytes_per_sec: rate_limit,
            heartbeat_interval_min: hb_min,
            heartbeat_interval_max: hb_max,
            nak_delay_max,
            nak_retry_interval,
            nak_max_retries,
            retransmit_window_bytes: retransmit_window,
            flow_window_bytes: flow_window,
            liveness_timeout,
            send_buffer_bytes: send_buffer,
            recv_buffer_bytes: recv_buffer,
            gso,
            allow,
            key_file,
            previous_key_file,
        })
    }

    fn multicast(&mut self, t: Table) -> Option<GroupKind> {
        let address = self.req(t, "address", "a multicast IPV4:PORT such as \"239.255.1.1:7400\"", &|v| {
            let a = group_addr(v)?;
            if a.ip().is_multicast() {
                Ok(a)
            } else {
                Err(format!(
                    "must be a multicast address (224.0.0.0/4, e.g. 239.255.1.1:7400), got {a}"
                ))
            }
        });
        let interface = self
            .opt(t, "interface", &|v| {
                let s = string(v)?;
                let ip: Ipv4Addr = s.parse().map_err(|_| {
                    format!("expected the IPv4 address of a local interface such as \"10.1.0.1\", got \"{s}\"")
                })?;
                if ip.is_multicast() {
                    Err(format!("must be a local interface address, not a multicast address, got {ip}"))
                } else {
                    Ok(ip)
                }
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let ttl = self.opt(t, "ttl", &int_in(1..=255)).and_then(|n| u8::try_from(n).ok());
        let loopback = self.opt(t, "loopback", &boolean).unwrap_or(true);
        Some(GroupKind::Multicast {
            address: address?,
            interface,
            ttl: ttl.unwrap_or(1),
            loopback,
        })
    }

    fn broadcast(&mut self, t: Table) -> Option<GroupKind> {
        let address = self.req(t, "address", "the subnet broadcast IPV4:PORT such as \"10.1.0.255:7401\"", &|v| {
            let a = group_addr(v)?;
            if a.ip().is_multicast() || a.ip().is_unspecified() {
                Err(format!(
                    "must be a subnet broadcast address such as 10.1.0.255:7401 (use kind = \"multicast\" for multicast), got {a}"
                ))
            } else {
                Ok(a)
            }
        });
        Some(GroupKind::Broadcast { address: address? })
    }

    fn unicast(&mut self, t: Table) -> Option<GroupKind> {
        let port = self
            .req(t, "port", "the UDP port this node receives on, 1..=65535", &int_in(1..=65_535))
            .and_then(|n| u16::try_from(n).ok());
        let peers = self.req(t, "peers", "a list of peer addresses such as [\"10.1.0.2:7402\"]", &|v| {
            let peers = list(v, &|v| {
                let a = socket_addr(v)?;
                if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
                    Err(format!("a peer must be a unicast IP:PORT with a port, got {a}"))
                } else {
                    Ok(a)
                }
            })?;
            if peers.is_empty() {
                return Err("must list at least one peer such as \"10.1.0.2:7402\"".into());
            }
            for (i, p) in peers.iter().enumerate() {
                if peers[..i].contains(p) {
                    return Err(format!("lists {p} twice"));
                }
            }
            Ok(peers)
        });
        Some(GroupKind::Unicast {
            port: port?,
            peers: peers?,
        })
    }

    fn topic(
        &mut self,
        index: usize,
        item: &Item,
        groups: &[String],
        earlier: &[TopicRule],
    ) -> Option<TopicRule> {
        let path = format!("topic[{index}]");
        let Value::Table(entries) = &item.value else {
            let reason = format!("expected a [[topic]] table, got {}", item.value.type_name());
            self.err(item.span.clone(), &path, reason);
            return None;
        };
        let t = Table {
            path: &path,
            entries,
            span: &item.span,
        };
        self.check_keys(t, &[TOPIC_KEYS], &|_| None);
        let pattern = self.req(t, "pattern", "an exact topic, PREFIX.* or *", &|v| pattern(string(v)?));
        if let (Some(p), Some(pattern_item)) = (&pattern, t.get("pattern")) {
            if let Some((j, reason)) = shadowed_by(p, earlier) {
                self.err(
                    pattern_item.span.clone(),
                    &t.field("pattern"),
                    format!("never used: topic[{j}] above {reason}; rules are tried in order, first match wins"),
                );
            }
        }
        let group = self.req(t, "group", "the name of a [group.NAME]", &|v| {
            let g = string(v)?;
            if groups.iter().any(|x| x == g) {
                Ok(g.to_owned())
            } else {
                let names: Vec<&str> = groups.iter().map(String::as_str).collect();
                Err(format!(
                    "no group named \"{g}\"; groups in this file: {}",
                    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                ))
            }
        });
        let retention = self.opt(t, "retention", &duration_in(secs(1)..=secs(3650 * DAY)));
        let retention_bytes = self.opt(t, "retention-bytes", &size_in(4 * KIB..=PIB));
        let partitions = self
            .opt(t, "partitions", &int_in(1..=1024))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1);
        let publishers = self.opt(t, "publishers", &|v| {
            let names = list(v, &|v| {
                let s = string(v)?;
                if is_valid_node_name(s) {
                    Ok(s.to_owned())
                } else {
                    Err(format!("a node name is 1..=64 characters of A-Z a-z 0-9 . _ -, got \"{s}\""))
                }
            })?;
            if names.is_empty() {
                Err("must name at least one node; leave `publishers` out to let every node publish".into())
            } else {
                Ok(names)
            }
        });
        Some(TopicRule {
            pattern: pattern?,
            group: group?,
            retention,
            retention_bytes,
            partitions,
            publishers,
        })
    }
}

/// The earlier rule that makes `p` unreachable, with why.
fn shadowed_by(p: &TopicPattern, earlier: &[TopicRule]) -> Option<(usize, String)> {
    earlier.iter().enumerate().find_map(|(j, r)| {
        let covered = match (&r.pattern, p) {
            (TopicPattern::Any, _) => true,
            (TopicPattern::Prefix(a), TopicPattern::Prefix(b)) => {
                b == a || TopicPattern::Prefix(a.clone()).matches(b)
            }
            (TopicPattern::Prefix(_), TopicPattern::Exact(name)) => r.pattern.matches(name),
            (TopicPattern::Exact(a), TopicPattern::Exact(b)) => a == b,
            _ => false,
        };
        covered.then(|| (j, format!("(`{}`) already matches every topic `{p}` matches", r.pattern)))
    })
}

// ---- value parsers: pure functions from a raw value to a typed value ----

fn type_error(expected: &str, got: &Value) -> String {
    match got {
        Value::String(s) => format!("expected {expected}, got a string \"{s}\""),
        Value::Integer(n) => format!("expected {expected}, got an integer {n}"),
        other => format!("expected {expected}, got {}", other.type_name()),
    }
}

fn string(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(type_error("a string", other)),
    }
}

fn path_value(v: &Value) -> Result<PathBuf, String> {
    let s = string(v)?;
    if s.is_empty() {
        Err("expected a path, got an empty string".into())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        other => Err(type_error("true or false", other)),
    }
}

fn int_in(range: RangeInclusive<i64>) -> impl Fn(&Value) -> Result<i64, String> {
    move |v| match v {
        Value::Integer(n) if range.contains(n) => Ok(*n),
        Value::Integer(n) => Err(format!(
            "must be {}..={}, got {n}",
            range.start(),
            range.end()
        )),
        other => Err(type_error(
            &format!("an integer {}..={}", range.start(), range.end()),
            other,
        )),
    }
}

fn one_of<T: Copy>(v: &Value, choices: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let expected = format!("one of {}", names.join(", "));
    let s = string(v).map_err(|_| type_error(&expected, v))?;
    choices
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("must be {expected}, got \"{s}\""))
}

fn list<T>(v: &Value, each: &dyn Fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
    let Value::Array(items) = v else {
        return Err(type_error("a list [..]", v));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| each(&item.value).map_err(|e| format!("item {i}: {e}")))
        .collect()
}

fn socket_addr(v: &Value) -> Result<SocketAddr, String> {
    let s = string(v)?;
    s.parse().map_err(|_| {
        format!("expected IP:PORT such as \"10.1.0.1:7500\" (IPv6: \"[::1]:7500\"), got \"{s}\"")
    })
}

/// A group's IPv4 address with a non-zero port.
fn group_addr(v: &Value) -> Result<SocketAddrV4, String> {
    let s = string(v)?;
    let a: SocketAddrV4 = s
        .parse()
        .map_err(|_| format!("expected IPV4:PORT such as \"239.255.1.1:7400\", got \"{s}\""))?;
    if a.port() == 0 {
        return Err(format!("the port must be 1..=65535, got 0 in \"{s}\""));
    }
    Ok(a)
}

/// `10.1.0.0/24`, `fd00::/8`, or a bare address (a /32 or /128).
pub(crate) fn cidr(s: &str) -> Result<Cidr, String> {
    let bad = || format!("expected a network such as \"10.1.0.0/24\", got \"{s}\"");
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("prefix length must be 0..={max}, got \"{s}\"")),
            }
        }
        Some(_) => return Err(bad()),
    };
    let network = match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask_u32(prefix_len)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask_u128(prefix_len)).into()),
    };
    if network != addr {
        return Err(format!(
            "host bits are set in \"{s}\"; did you mean \"{network}/{prefix_len}\"?"
        ));
    }
    Ok(Cidr {
        addr: network,
        prefix_len,
    })
}

/// `md.prices.AAPL` (exact), `md.*` (prefix) or `*`.
pub(crate) fn pattern(s: &str) -> Result<TopicPattern, String> {
    if s == "*" {
        return Ok(TopicPattern::Any);
    }
    if let Some(prefix) = s.strip_suffix(".*") {
        if is_valid_topic(prefix) {
            return Ok(TopicPattern::Prefix(prefix.to_owned()));
        }
    } else if is_valid_topic(s) {
        return Ok(TopicPattern::Exact(s.to_owned()));
    }
    Err(format!(
        "expected an exact topic (A-Z a-z 0-9 . _ -, dot-separated), PREFIX.* or *; `*` may only stand alone or as the last part after a dot, got \"{s}\""
    ))
}

const DURATION_UNITS: &[(&str, u64)] = &[
    ("us", 1),
    ("µs", 1),
    ("ms", 1_000),
    ("s", 1_000_000),
    ("m", 60_000_000),
    ("h", 3_600_000_000),
    ("d", 86_400_000_000),
];

/// `250us`, `30ms`, `1s`, `5m`, `1h`, `2d`: an integer and a unit.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let help = "a duration is an integer and a unit: us, ms, s, m, h or d (e.g. \"30ms\")";
    let (digits, unit) = split_number(s);
    if digits.is_empty() {
        return Err(format!("{help}, got \"{s}\""));
    }
    let unit = unit.trim_start_matches(' ');
    if unit.is_empty() {
        return Err(format!("missing unit in \"{s}\"; {help}"));
    }
    let Some((_, micros)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("unknown unit \"{unit}\" in \"{s}\"; {help}"));
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(*micros))
        .map(Duration::from_micros)
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("KiB", KIB),
    ("MiB", MIB),
    ("GiB", GIB),
    ("TiB", TIB),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// `1400`, `64KiB`, `128MiB`, `10GiB`, `1MB` (powers of 1000).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let help = "a size is an integer of bytes with an optional unit: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB (e.g. \"128MiB\")";
    let (digits, unit) = split_number(s);
    if digits.is_empty() {
        return Err(format!("{help}, got \"{s}\""));
    }
    let unit = unit.trim_start_matches(' ');
    let Some((_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("unknown unit \"{unit}\" in \"{s}\"; {help}"));
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(*mult))
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

/// Splits leading ASCII digits from the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn duration_in(range: RangeInclusive<Duration>) -> impl Fn(&Value) -> Result<Duration, String> {
    move |v| {
        let d = match v {
            Value::String(s) => parse_duration(s)?,
            other => return Err(type_error("a duration string such as \"30ms\"", other)),
        };
        if range.contains(&d) {
            Ok(d)
        } else {
            Err(format!(
                "must be {}..={}, got {}",
                fmt_duration(*range.start()),
                fmt_duration(*range.end()),
                fmt_duration(d)
            ))
        }
    }
}

fn size_in(range: RangeInclusive<u64>) -> impl Fn(&Value) -> Result<u64, String> {
    move |v| {
        let n = match v {
            Value::String(s) => parse_size(s)?,
            Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("must not be negative, got {n}"))?,
            other => return Err(type_error("a size such as \"128MiB\" or 1400", other)),
        };
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "must be {}..={}, got {}",
                fmt_size(*range.start()),
                fmt_size(*range.end()),
                fmt_size(n)
            ))
        }
    }
}

/// The largest unit that writes `d` exactly: `1h`, `30ms`, `250us`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros == 0 {
        return "0s".into();
    }
    let (unit, n) = DURATION_UNITS
        .iter()
        .rev()
        .filter(|(u, _)| *u != "µs")
        .find(|(_, m)| micros % u128::from(*m) == 0)
        .map(|(u, m)| (*u, micros / u128::from(*m)))
        .unwrap_or(("us", micros));
    format!("{n}{unit}")
}

/// The largest binary unit that writes `n` exactly: `64KiB`, `1400`.
pub(crate) fn fmt_size(n: u64) -> String {
    for (unit, m) in [("PiB", PIB), ("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n >= m && n % m == 0 {
            return format!("{}{unit}", n / m);
        }
    }
    n.to_string()
}

/// The allowed name closest to `key` by edit distance, if close enough to
/// be a typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let (Some(&up), Some(&left)) = (row.get(j + 1), row.get(j)) else {
                continue;
            };
            let next = (prev + cost).min(up + 1).min(left + 1);
            prev = up;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = next;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_an_integer_and_a_unit() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("30ms"), Ok(ms(30)));
        assert_eq!(parse_duration("1s"), Ok(secs(1)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("2d"), Ok(secs(2 * DAY)));
        assert_eq!(parse_duration("10 ms"), Ok(ms(10)));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("1.5s").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").unwrap_err().contains("too large"));
    }

    #[test]
    fn sizes_take_bytes_or_a_binary_or_decimal_unit() {
        assert_eq!(parse_size("1400"), Ok(1400));
        assert_eq!(parse_size("128MiB"), Ok(128 * MIB));
        assert_eq!(parse_size("10GiB"), Ok(10 * GIB));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("64 KiB"), Ok(64 * KIB));
        assert!(parse_size("10gib").unwrap_err().contains("unknown unit"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn formatting_uses_the_largest_exact_unit() {
        assert_eq!(fmt_duration(ms(1500)), "1500ms");
        assert_eq!(fmt_duration(secs(3600)), "1h");
        assert_eq!(fmt_duration(Duration::from_micros(100)), "100us");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
        assert_eq!(fmt_size(64 * KIB), "64KiB");
        assert_eq!(fmt_size(1400), "1400");
        assert_eq!(fmt_size(1536), "1536");
    }

    #[test]
    fn cidrs_must_have_zero_host_bits() {
        assert_eq!(
            cidr("10.1.0.0/24"),
            Ok(Cidr { addr: "10.1.0.0".parse().unwrap(), prefix_len: 24 })
        );
        assert_eq!(cidr("10.1.0.7").map(|c| c.prefix_len), Ok(32));
        assert_eq!(cidr("fd00::/8").map(|c| c.prefix_len), Ok(8));
        assert!(cidr("10.1.0.1/24").unwrap_err().contains("did you mean \"10.1.0.0/24\""));
        assert!(cidr("10.1.0.0/33").unwrap_err().contains("0..=32"));
        assert!(cidr("10.1.0.0/").is_err());
        assert!(cidr("10.1.0.0/+8").is_err());
        assert!(cidr("banana").is_err());
    }

    #[test]
    fn patterns_are_exact_prefix_or_any() {
        assert_eq!(pattern("*"), Ok(TopicPattern::Any));
        assert_eq!(pattern("md.*"), Ok(TopicPattern::Prefix("md".into())));
        assert_eq!(pattern("md.prices"), Ok(TopicPattern::Exact("md.prices".into())));
        for bad in ["md*x", "md*", "*.md", ".*", "md.*.x", "", "md..x", "md x"] {
            assert!(pattern(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("tll", MULTICAST_KEYS), Some("ttl"));
        assert_eq!(closest("nak-dealy-max", GROUP_KEYS), Some("nak-delay-max"));
        assert_eq!(closest("zzzzzz", GROUP_KEYS), None);
    }

    #[test]
    fn a_rule_below_a_catch_all_is_reported_as_unused() {
        let rule = |p: TopicPattern| TopicRule {
            pattern: p,
            group: "g".into(),
            retention: None,
            retention_bytes: None,
            partitions: 1,
            publishers: None,
        };
        let earlier = [rule(TopicPattern::Prefix("md".into()))];
        assert!(shadowed_by(&TopicPattern::Exact("md.a".into()), &earlier).is_some());
        assert!(shadowed_by(&TopicPattern::Prefix("md.a".into()), &earlier).is_some());
        assert!(shadowed_by(&TopicPattern::Exact("mdx".into()), &earlier).is_none());
        assert!(shadowed_by(&TopicPattern::Any, &earlier).is_none());
    }
}
