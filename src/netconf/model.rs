//! The validated netconf: plain types the daemon builds its runtime config
//! from. Every value here has passed `validate`; consumers need not check
//! ranges again. Defaults and ranges are documented once, on the fields, and
//! in `docs/netconf.md`.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A whole netconf file.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// The file path it was read from, or `<embedded default>`.
    pub origin: String,
    pub node: NodeConf,
    /// In file order; names are unique (TOML forbids duplicate tables).
    pub groups: Vec<GroupConf>,
    /// In file order; the first rule that matches a topic wins.
    pub topics: Vec<TopicRule>,
}

impl NetConf {
    /// The rule for `topic`: the first in file order whose pattern matches.
    pub fn rule_for(&self, topic: &str) -> Option<&TopicRule> {
        self.topics.iter().find(|r| r.pattern.matches(topic))
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupConf> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// The `[node]` table: this daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConf {
    /// `name`. Default: the host name (see [`NodeConf::name_or`]).
    /// 1..=64 of `A-Z a-z 0-9 . _ -`.
    pub name: Option<String>,
    /// `data-dir`: where the log and the node id live. Default: `./castlog-data`.
    pub data_dir: PathBuf,
    /// `socket`: the client IPC Unix socket. Default: see
    /// [`NodeConf::socket_path`].
    pub socket: Option<PathBuf>,
    /// `listen`: this node's unicast endpoint for NAKs, repairs and replay.
    /// Default: `0.0.0.0:0` (every interface, an ephemeral port; peers learn
    /// it from the source address of heartbeats).
    pub listen: SocketAddr,
    /// `console`: address of the web console. Default: off.
    pub console: Option<SocketAddr>,
    /// `idle`: what the event loop does when there is nothing to do.
    /// Default: `block`.
    pub idle: IdlePolicy,
    /// `fsync` and `fsync-interval`. Default: `interval`, 1s.
    pub fsync: FsyncPolicy,
    /// `segment-max-size`: roll the log segment past this size.
    /// Default: 128MiB. Range: 4KiB..=16GiB.
    pub segment_max_size_bytes: u64,
    /// `segment-max-age`: roll the log segment when its first record is this
    /// old, so retention by age can delete it. Default: 1h. Range: 1s..=365d.
    pub segment_max_age: Duration,
    /// `socket-group`: the group that owns the IPC socket, which is then
    /// mode 0660 so that its members may connect. Default: none (the
    /// daemon's own group, mode 0600: only its user may connect).
    pub socket_group: Option<SocketGroup>,
}

/// netconf `socket-group`, as written, with where it was written: whether a
/// name exists is known only on the host that runs the daemon, so the check
/// is [`SocketGroup::resolve`], called there, and its error still points at
/// the line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    pub group: GroupRef,
    /// (file, line, column) of the value.
    at: (String, usize, usize),
}

/// A group by name or by numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    Name(String),
    Gid(u32),
}

impl SocketGroup {
    pub(crate) fn new(group: GroupRef, file: &str, line: usize, column: usize) -> SocketGroup {
        SocketGroup {
            group,
            at: (file.to_owned(), line, column),
        }
    }

    /// The numeric group id: a gid is taken as written (as `chown` does);
    /// a name goes through `lookup` (the host's group database, read by the
    /// caller), and a name it does not know is an error at the key.
    pub fn resolve(&self, lookup: impl FnOnce(&str) -> Option<u32>) -> Result<u32, super::Error> {
        match &self.group {
            GroupRef::Gid(gid) => Ok(*gid),
            GroupRef::Name(name) => lookup(name).ok_or_else(|| {
                let (file, line, column) = self.at.clone();
                super::Error {
                    file,
                    line,
                    column,
                    field: "node.socket-group".into(),
                    reason: format!(
                        "no group \"{name}\" on this host; create it (groupadd {name}) or name an existing group or gid"
                    ),
                }
            }),
        }
    }
}

/// Default of `node.data-dir`.
pub const DEFAULT_DATA_DIR: &str = "./castlog-data";

impl NodeConf {
    /// The node name, or `host_name` when the file does not set one. The
    /// caller (the daemon) reads the host name; netconf does no I/O for it.
    pub fn name_or<'a>(&'a self, host_name: &'a str) -> &'a str {
        self.name.as_deref().unwrap_or(host_name)
    }

    /// The IPC socket path: `socket` when set, otherwise
    /// `castlog-<node_name>.sock` in `xdg_runtime_dir` (the value of
    /// `$XDG_RUNTIME_DIR`, when set and not empty) or else in `/tmp`.
    /// The environment is a parameter so that this stays testable.
    pub fn socket_path(&self, node_name: &str, xdg_runtime_dir: Option<&OsStr>) -> PathBuf {
        if let Some(p) = &self.socket {
            return p.clone();
        }
        let dir = match xdg_runtime_dir {
            Some(d) if !d.is_empty() => Path::new(d),
            _ => Path::new("/tmp"),
        };
        dir.join(format!("castlog-{node_name}.sock"))
    }
}

/// `idle`: how the daemon waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Sleep in the kernel until a socket or timer is ready (no CPU when idle).
    Block,
    /// Poll and yield for a short while after work (when the answer to
    /// what was just sent is likely to come soon), then sleep as `Block`
    /// does: a round trip is not made of blocking wakeups, and an idle
    /// daemon still costs no CPU. Aeron's default idle strategy is of this
    /// kind.
    Backoff,
    /// Poll without sleeping, yielding the CPU between polls.
    Yield,
    /// Busy-poll one core; lowest latency, 100% CPU.
    Spin,
}

/// `fsync`: when appended log data is forced to disk.
///
/// Appends always reach the OS (a `write`) before a record is acknowledged,
/// so a killed daemon (kill -9) loses nothing acknowledged under any policy;
/// the policy only decides what survives a power loss or kernel crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before every acknowledgement.
    Always,
    /// fsync at most this often (`fsync-interval`; default 1s, range 1ms..=1h).
    Interval(Duration),
    /// Leave it to the OS.
    Never,
}

/// One `[group.NAME]` table: a transport channel.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConf {
    pub name: String,
    pub kind: GroupKind,
    /// `mtu`: largest datagram payload sent. Default: 1400. Range: 576..=65000.
    pub mtu: usize,
    /// `rate-limit`: bytes per second sent on this group, repairs included.
    /// Default: none (unlimited). Range: 1KiB..=100GiB.
    pub rate_limit_bytes_per_sec: Option<u64>,
    /// `heartbeat-interval-min`: first heartbeat after data stops.
    /// Default: 5ms. Range: 100us..=10s.
    pub heartbeat_interval_min: Duration,
    /// `heartbeat-interval-max`: heartbeat interval when idle (the interval
    /// doubles from min up to max). Default: 500ms. Range: min..=60s.
    pub heartbeat_interval_max: Duration,
    /// `nak-delay-max`: a receiver waits a random delay in 0..=this before
    /// sending a NAK, so that one receiver's NAK suppresses the others'.
    /// Default: 2ms (a LAN's round trip is well under it, so the source's
    /// NCF still reaches the others first). Range: 0s..=10s.
    pub nak_delay_max: Duration,
    /// `nak-retry-interval`: wait before asking again for a range still
    /// missing. Default: 10ms. Range: 1ms..=10s.
    pub nak_retry_interval: Duration,
    /// `nak-max-retries`: NAKs for one range before falling back to log
    /// replay. Default: 10. Range: 1..=1000.
    pub nak_max_retries: u32,
    /// `retransmit-window`: bytes of sent datagrams kept for repair.
    /// Default: 64MiB. Range: 64KiB..=16GiB.
    pub retransmit_window_bytes: u64,
    /// `flow-window`: bytes a sender may have in flight beyond the slowest
    /// live receiver. Default: 16MiB. Range: 64KiB..=retransmit-window.
    pub flow_window_bytes: u64,
    /// `liveness-timeout`: a peer not heard from for this long is down.
    /// Default: 5s. Range: 2 x heartbeat-interval-max..=1h.
    pub liveness_timeout: Duration,
    /// `send-buffer`: SO_SNDBUF. Default: 4MiB. Range: 64KiB..=1GiB.
    pub send_buffer_bytes: u64,
    /// `recv-buffer`: SO_RCVBUF. Default: 16MiB. Range: 64KiB..=1GiB.
    pub recv_buffer_bytes: u64,
    /// `gso`: use UDP GSO/GRO when the kernel has it. Default: true.
    pub gso: bool,
    /// `allow`: source networks accepted on this group; empty means any.
    /// Default: `[]`.
    pub allow: Vec<Cidr>,
    /// `key-file`: shared secret authenticating every frame. Default: none.
    pub key_file: Option<PathBuf>,
    /// `previous-key-file`: the key before the current one, still accepted
    /// during a change-over. Default: none. Needs `key-file`.
    pub previous_key_file: Option<PathBuf>,
}

impl GroupConf {
    /// Whether a datagram from `source` is allowed by `allow`.
    pub fn allows(&self, source: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(source))
    }
}

/// The transport of a group, with the keys that only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKind {
    /// IP multicast. `address` is in 224.0.0.0/4; `interface` is the local
    /// address to send and join on (default 0.0.0.0: the kernel picks by
    /// route); `ttl` 1..=255 (default 1: stay on the link); `loopback`
    /// (IP_MULTICAST_LOOP, default true: other daemons on this host hear it).
    Multicast {
        address: SocketAddrV4,
        interface: Ipv4Addr,
        ttl: u8,
        loopback: bool,
    },
    /// Subnet broadcast to `address` (e.g. 10.1.0.255:7401).
    Broadcast { address: SocketAddrV4 },
    /// One copy to each peer; this node receives on `port`.
    Unicast { port: u16, peers: Vec<SocketAddr> },
}

impl GroupKind {
    /// The `kind` string as written in netconf.
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupKind::Multicast { .. } => "multicast",
            GroupKind::Broadcast { .. } => "broadcast",
            GroupKind::Unicast { .. } => "unicast",
        }
    }
}

/// An IP network such as `10.1.0.0/24`; host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network (never across v4 and v6).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_u32(self.prefix_len);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_u128(self.prefix_len);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Netmask with the top `len` bits set (`len` above 32 counts as 32).
pub(crate) fn mask_u32(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

/// Netmask with the top `len` bits set (`len` above 128 counts as 128).
pub(crate) fn mask_u128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// One `[[topic]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    pub pattern: TopicPattern,
    /// Name of an existing group.
    pub group: String,
    /// `retention`: delete log segments older than this. Default: keep.
    pub retention: Option<Duration>,
    /// `retention-bytes`: keep at most about this many bytes of log per
    /// topic (whole segments are deleted). Default: keep.
    pub retention_bytes: Option<u64>,
    /// `partitions`: for consumer groups. Default: 1. Range: 1..=1024.
    pub partitions: u32,
    /// `publishers`: node names allowed to publish. Default: any node.
    pub publishers: Option<Vec<String>>,
}

/// A topic pattern: `md.prices.AAPL`, `md.*` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    /// Exactly this topic name.
    Exact(String),
    /// `PREFIX.*`: every topic below `PREFIX.` (holds `PREFIX`, no dot);
    /// `md.*` matches `md.x` and `md.x.y` but not `md`.
    Prefix(String),
    /// `*`: every topic.
    Any,
}

impl TopicPattern {
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(name) => topic == name,
            TopicPattern::Prefix(prefix) => topic
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| !rest.is_empty()),
            TopicPattern::Any => true,
        }
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicPattern::Exact(name) => f.write_str(name),
            TopicPattern::Prefix(prefix) => write!(f, "{prefix}.*"),
            TopicPattern::Any => f.write_str("*"),
        }
    }
}

/// Whether `name` is a valid topic name: 1..=255 bytes of
/// `A-Z a-z 0-9 . _ -`, not starting or ending with `.`, no `..`.
pub fn is_valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
}

/// Whether `name` is a valid node name: 1..=64 bytes of `A-Z a-z 0-9 . _ -`
/// (it becomes part of a file name, so no `/`).
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

impl std::str::FromStr for TopicPattern {
    type Err = String;

    /// Parses `name`, `prefix.*` or `*` (the syntax of topic rules, also used
    /// by subscriptions).
    fn from_str(s: &str) -> Result<Self, String> {
        super::values::pattern(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_pattern_matches_below_the_prefix_only() {
        let p = TopicPattern::Prefix("md".into());
        assert!(p.matches("md.x"));
        assert!(p.matches("md.x.y"));
        assert!(!p.matches("md"));
        assert!(!p.matches("md."));
        assert!(!p.matches("mdx.y"));
        assert!(!p.matches("xmd.y"));
    }

    #[test]
    fn exact_and_any_patterns_match_as_named() {
        assert!(TopicPattern::Exact("a.b".into()).matches("a.b"));
        assert!(!TopicPattern::Exact("a.b".into()).matches("a.b.c"));
        assert!(TopicPattern::Any.matches("anything"));
    }

    #[test]
    fn socket_path_prefers_setting_then_xdg_then_tmp() {
        let mut node = NodeConf {
            name: None,
            data_dir: DEFAULT_DATA_DIR.into(),
            socket: None,
            listen: "0.0.0.0:0".parse().unwrap(),
            console: None,
            idle: IdlePolicy::Backoff,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            segment_max_size_bytes: 1 << 27,
            segment_max_age: Duration::from_secs(3600),
            socket_group: None,
        };
        let xdg = OsStr::new("/run/user/1000");
        assert_eq!(
            node.socket_path("h1", Some(xdg)),
            PathBuf::from("/run/user/1000/castlog-h1.sock")
        );
        assert_eq!(
            node.socket_path("h1", None),
            PathBuf::from("/tmp/castlog-h1.sock")
        );
        assert_eq!(
            node.socket_path("h1", Some(OsStr::new(""))),
            PathBuf::from("/tmp/castlog-h1.sock")
        );
        assert_eq!(node.name_or("box"), "box");
        node.socket = Some("/x.sock".into());
        node.name = Some("n".into());
        assert_eq!(node.socket_path("n", Some(xdg)), PathBuf::from("/x.sock"));
        assert_eq!(node.name_or("box"), "n");
    }

    #[test]
    fn cidr_contains_its_addresses_only() {
        let c = Cidr {
            addr: "10.1.0.0".parse().unwrap(),
            prefix_len: 24,
        };
        assert!(c.contains("10.1.0.77".parse().unwrap()));
        assert!(!c.contains("10.1.1.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all = Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            prefix_len: 0,
        };
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        let v6 = Cidr {
            addr: "fd00::".parse().unwrap(),
            prefix_len: 8,
        };
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
    }

    #[test]
    fn names_are_checked_for_file_and_wire_safety() {
        assert!(is_valid_topic("md.prices.AAPL"));
        assert!(!is_valid_topic("md..x"));
        assert!(!is_valid_topic(".md"));
        assert!(!is_valid_topic("md x"));
        assert!(is_valid_node_name("h1-a.lan"));
        assert!(!is_valid_node_name("a/b"));
        assert!(!is_valid_node_name(".."));
    }
}
