//! Raw spanned tree -> validated model ("parse, don't validate").
//!
//! Every check lives here, and every error names the key's dotted path and
//! the position of the offending text (the value, or the key when the key
//! itself is the problem, or the table header when a key is missing). All
//! errors of a file are collected, then sorted by position, so `castlog
//! check` can show them all and `NetConf::from_str` returns the first.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use super::error::Error;
use super::model::{
    is_valid_node_name, FsyncPolicy, GroupConf, GroupKind, IdlePolicy, NetConf, NodeConf,
    SocketGroup, TopicPattern, TopicRule, DEFAULT_DATA_DIR,
};
use super::raw::{self, Item, Key, Value};
use super::values::{
    boolean, cidr, closest, duration_in, fmt_duration, fmt_size, group_addr, group_ref, int_in, ms,
    one_of, path_value, pattern, secs, size_in, socket_addr, string, type_error, DAY, GIB, KIB,
    MIB, PIB,
};

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
    "socket-group",
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

/// Parses and validates `text`; `origin` names it in errors.
pub(crate) fn build(text: &str, origin: &str) -> Result<NetConf, Vec<Error>> {
    let root = match raw::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            // toml's message can span lines; a netconf error is one line.
            let reason = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
                .to_lowercase();
            let reason = format!("toml syntax: {reason}");
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
        cx.errors.sort_by_key(|e| (e.line, e.column));
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

    /// Reads an optional list, each item with `each`; an item's error points
    /// at that item. Also refuses an empty list (`empty` says why) and the
    /// same item twice.
    fn opt_list<T: PartialEq + std::fmt::Display>(
        &mut self,
        t: Table,
        key: &str,
        empty: &str,
        each: Parse<T>,
    ) -> Option<Vec<T>> {
        let item = t.get(key)?;
        let field = t.field(key);
        let Value::Array(items) = &item.value else {
            self.err(
                item.span.clone(),
                &field,
                type_error("a list [..]", &item.value),
            );
            return None;
        };
        if items.is_empty() {
            self.err(item.span.clone(), &field, empty.to_owned());
            return None;
        }
        let mut out: Vec<T> = Vec::new();
        let mut ok = true;
        for (i, it) in items.iter().enumerate() {
            match each(&it.value) {
                Ok(v) if out.contains(&v) => {
                    self.err(
                        it.span.clone(),
                        &field,
                        format!("item {i}: {v} is listed twice"),
                    );
                    ok = false;
                }
                Ok(v) => out.push(v),
                Err(reason) => {
                    self.err(it.span.clone(), &field, format!("item {i}: {reason}"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Records "missing" at the table header when `key` is absent.
    fn require(&mut self, t: Table, key: &str, what: &str) {
        if t.get(key).is_none() {
            let reason = format!("missing key `{key}` ({what})");
            self.err(t.span.clone(), &t.field(key), reason);
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
    fn check_keys(
        &mut self,
        t: Table,
        allowed: &[&[&str]],
        misplaced: &dyn Fn(&str) -> Option<String>,
    ) {
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
            None => self.node(Table {
                path: "node",
                entries: &[],
                span: &empty,
            }),
            Some(item) => match &item.value {
                Value::Table(entries) => self.node(Table {
                    path: "node",
                    entries,
                    span: &item.span,
                }),
                other => {
                    let reason = format!("expected a table [node], got {}", other.type_name());
                    self.err(item.span.clone(), "node", reason);
                    self.node(Table {
                        path: "node",
                        entries: &[],
                        span: &empty,
                    })
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
                    let reason = format!("expected [group.NAME] tables, got {}", other.type_name());
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
                        let groups = (!declared.is_empty()).then_some(declared.as_slice());
                        if let Some(rule) = self.topic(i, rule, groups, &topics) {
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
                        ("backoff", IdlePolicy::Backoff),
                    ],
                )
            })
            .unwrap_or(IdlePolicy::Backoff);
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
            .opt(
                t,
                "segment-max-age",
                &duration_in(secs(1)..=secs(365 * DAY)),
            )
            .unwrap_or(secs(3600));
        let socket_group = self.opt(t, "socket-group", &group_ref).and_then(|group| {
            let item = t.get("socket-group")?;
            let (line, column) = super::error::line_column(self.text, item.span.start);
            Some(SocketGroup::new(group, self.file, line, column))
        });
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
            socket_group,
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
            let reason = format!("expected a table [{path}], got {}", item.value.type_name());
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
            .opt(
                t,
                "heartbeat-interval-min",
                &duration_in(Duration::from_micros(100)..=secs(10)),
            )
            .unwrap_or(ms(5));
        let hb_max = self
            .opt(t, "heartbeat-interval-max", &duration_in(hb_min..=secs(60)))
            .unwrap_or(ms(500).max(hb_min));
        let nak_delay_max = self
            .opt(t, "nak-delay-max", &duration_in(Duration::ZERO..=secs(10)))
            .unwrap_or(ms(2));
        let nak_retry_interval = self
            .opt(t, "nak-retry-interval", &duration_in(ms(1)..=secs(10)))
            .unwrap_or(ms(10));
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
            .opt(
                t,
                "liveness-timeout",
                &duration_in(liveness_min..=secs(3600)),
            )
            .unwrap_or(secs(5));
        if t.get("liveness-timeout").is_none() && liveness_timeout < liveness_min {
            // The max is what was raised (by itself, or by a raised min).
            let key = ["heartbeat-interval-max", "heartbeat-interval-min"]
                .into_iter()
                .find(|k| t.get(k).is_some())
                .unwrap_or("heartbeat-interval-max");
            if let Some(item) = t.get(key) {
                self.err(
                    item.span.clone(),
                    &t.field(key),
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
            .opt_list(
                t,
                "allow",
                "must list at least one network; leave `allow` out to accept any source",
                &|v| cidr(string(v)?),
            )
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
        let address = self.req(
            t,
            "address",
            "a multicast IPV4:PORT such as \"239.255.1.1:7400\"",
            &|v| {
                let a = group_addr(v)?;
                if a.ip().is_multicast() {
                    Ok(a)
                } else {
                    Err(format!(
                        "must be a multicast address (224.0.0.0/4, e.g. 239.255.1.1:7400), got {a}"
                    ))
                }
            },
        );
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
        let ttl = self
            .opt(t, "ttl", &int_in(1..=255))
            .and_then(|n| u8::try_from(n).ok());
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
            .req(
                t,
                "port",
                "the UDP port this node receives on, 1..=65535",
                &int_in(1..=65_535),
            )
            .and_then(|n| u16::try_from(n).ok());
        let what = "a list of peer addresses such as [\"10.1.0.2:7402\"]";
        self.require(t, "peers", what);
        let peers = self.opt_list(
            t,
            "peers",
            &format!("must list at least one peer: {what}"),
            &|v| {
                let a = socket_addr(v)?;
                if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
                    Err(format!(
                        "a peer must be a unicast IP:PORT with a port, got {a}"
                    ))
                } else {
                    Ok(a)
                }
            },
        );
        Some(GroupKind::Unicast {
            port: port?,
            peers: peers?,
        })
    }

    fn topic(
        &mut self,
        index: usize,
        item: &Item,
        groups: Option<&[String]>,
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
        let pattern = self.req(t, "pattern", "an exact topic, PREFIX.* or *", &|v| {
            pattern(string(v)?)
        });
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
            // No group at all is reported once, at `group`, not per rule.
            let Some(groups) = groups else {
                return Ok(g.to_owned());
            };
            if groups.iter().any(|x| x == g) {
                Ok(g.to_owned())
            } else {
                let names: Vec<&str> = groups.iter().map(String::as_str).collect();
                Err(format!(
                    "no group named \"{g}\"; groups in this file: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ))
            }
        });
        let retention = self.opt(t, "retention", &duration_in(secs(1)..=secs(3650 * DAY)));
        let retention_bytes = self.opt(t, "retention-bytes", &size_in(4 * KIB..=PIB));
        let partitions = self
            .opt(t, "partitions", &int_in(1..=1024))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1);
        let publishers = self.opt_list(
            t,
            "publishers",
            "must name at least one node; leave `publishers` out to let every node publish",
            &|v| {
                let s = string(v)?;
                if is_valid_node_name(s) {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "a node name is 1..=64 characters of A-Z a-z 0-9 . _ -, got \"{s}\""
                    ))
                }
            },
        );
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
        covered.then(|| {
            (
                j,
                format!(
                    "(`{}`) already matches every topic `{p}` matches",
                    r.pattern
                ),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn group_errors(extra: &str) -> Vec<String> {
        let text = format!(
            "[group.g]\nkind = \"multicast\"\naddress = \"239.1.1.1:7000\"\n{extra}\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n"
        );
        match build(&text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_raised_heartbeat_min_alone_cannot_outlast_liveness() {
        let errors = group_errors("heartbeat-interval-min = \"10s\"");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0]
            .starts_with("t.toml:4:26: group.g.heartbeat-interval-min: must be at most half"));
        assert!(
            group_errors("heartbeat-interval-min = \"10s\"\nliveness-timeout = \"20s\"").is_empty()
        );
    }

    #[test]
    fn windows_must_nest() {
        let errors = group_errors("retransmit-window = \"1MiB\"");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(
            "group.g.retransmit-window: must be at least flow-window (default 16MiB), got 1MiB"
        ));
        let errors = group_errors("retransmit-window = \"1MiB\"\nflow-window = \"2MiB\"");
        assert!(
            errors[0].contains("group.g.flow-window: must be 64KiB..=1MiB, got 2MiB"),
            "{errors:?}"
        );
        assert!(group_errors("retransmit-window = \"1MiB\"\nflow-window = \"1MiB\"").is_empty());
    }

    #[test]
    fn several_errors_in_one_group_are_all_reported() {
        let errors = group_errors("ttl = 0\nmtu = 1\ngso = \"yes\"");
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
