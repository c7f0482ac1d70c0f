//! `daemon`: the only room that does I/O on the daemon side.
//!
//! It owns the UDP sockets ([`sockets`]), the client IPC socket (`ipc`), the
//! clock ([`clock`]), signals ([`signals`]) and the data directory, and drives
//! `proto` and `log` from one mio event loop (`event_loop`). Everything here
//! is glue: decisions live in `proto`, bytes in `wire`, bytes at rest in
//! `log`, and the meaning of netconf values in the config structs this module
//! builds from the validated [`NetConf`].
//!
//! ```text
//!  client ──ipc──▶ Publish ─▶ log.append ─▶ node.publish ─▶ poll_transmit ─▶ listen socket ─▶ LAN
//!  LAN ─▶ group socket ─▶ node.handle_datagram ─▶ poll_event(Deliver) ─▶ log.append_replica ─▶ subscribers
//! ```

pub mod clock;
pub mod console;
mod error;
mod event_loop;
mod groups;
pub mod ipc;
pub mod keyfile;
pub mod node_id;
// Groups, peers and topic logs for the stats document.
mod inventory;
mod publish;
mod replay_io;
pub mod signals;
pub mod sockets;
pub mod stats;
mod subscriptions;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::{Poll, Token};

use crate::log::{LogConfig, LogDir};
use crate::netconf::{self, GroupConf, NetConf};
use crate::proto::{self, GroupConfig, GroupId, Node};
use crate::wire::auth::GroupKeys;
use crate::wire::NodeId;

pub use error::Error;
pub use stats::Stats;

use event_loop::{GroupIo, TxQueue};
use ipc::IpcServer;
use sockets::{BufferSizes, GroupBind, MulticastSend};
use subscriptions::Subscriptions;

/// Command-line values that replace the netconf's `[node]` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--name`: replaces `node.name`.
    pub name: Option<String>,
    /// `--data-dir`: replaces `node.data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--socket`: replaces `node.socket`.
    pub socket: Option<PathBuf>,
}

/// Token of the listen socket; group `k` has `GROUP_TOKEN_BASE + k`; the IPC
/// server owns [`IPC_TOKEN`] and every token above it.
const LISTEN_TOKEN: Token = Token(0);
const GROUP_TOKEN_BASE: usize = 1;
const IPC_TOKEN: Token = Token(1 << 20);

/// One running castlogd: sockets, protocol state, log and clients.
pub struct Daemon {
    name: String,
    node_id: NodeId,
    netconf: NetConf,
    poll: Poll,
    node: Node,
    listen: mio::net::UdpSocket,
    listen_addr: SocketAddr,
    groups: Vec<GroupIo>,
    /// Topic name -> group, resolved once per topic from the netconf rules.
    routes: HashMap<String, Option<GroupId>>,
    tx: TxQueue,
    ipc: IpcServer,
    log: LogDir,
    subs: Subscriptions,
    /// Consumer-group members (issue 6), see `groups`.
    group_members: groups::GroupMembers,
    replays: replay_io::Replays,
    stats: Stats,
    /// The web console, when netconf `[node] console` is set.
    console: Option<console::Console>,
    offload: sockets::Offload,
    loop_state: event_loop::LoopState,
    /// Held (flock) for the daemon's life: one daemon per data directory.
    _data_dir_lock: std::fs::File,
}

impl Daemon {
    /// Opens everything the daemon needs (data dir, node id, log, sockets,
    /// IPC socket) from a validated netconf; nothing runs until [`run`].
    ///
    /// [`run`]: Daemon::run
    pub fn new(netconf: NetConf, overrides: Overrides) -> Result<Daemon, Error> {
        let host = host_name();
        let name = overrides
            .name
            .clone()
            .unwrap_or_else(|| netconf.node.name_or(&host).to_string());
        let data_dir = overrides
            .data_dir
            .clone()
            .unwrap_or_else(|| netconf.node.data_dir.clone());
        let socket_path = overrides.socket.clone().unwrap_or_else(|| {
            netconf
                .node
                .socket_path(&name, std::env::var_os("XDG_RUNTIME_DIR").as_deref())
        });
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let data_dir_lock = lock_data_dir(&data_dir)?;
        let node_id = node_id::load_or_create(&data_dir)?;
        let log = LogDir::open(&data_dir.join("log"), log_config(&netconf)).map_err(|source| {
            Error::Log {
                path: data_dir.join("log"),
                source,
            }
        })?;

        let poll = Poll::new().map_err(Error::Poll)?;
        let detected = sockets::detect_offload();
        // netconf `gso = false` on any group switches the offloads off for
        // the listen socket, which sends for every group.
        let all_want_gso = netconf.groups.iter().all(|g| g.gso);
        let offload = sockets::Offload {
            gso: detected.gso && all_want_gso,
            gro: detected.gro && all_want_gso,
        };
        ::log::info!(
            "udp offload kernel_gso={} kernel_gro={} gso={} gro={}",
            detected.gso,
            detected.gro,
            offload.gso,
            offload.gro
        );

        let listen_buffers =
            netconf
                .groups
                .iter()
                .map(buffer_sizes)
                .fold(BufferSizes::default(), |a, b| BufferSizes {
                    recv_bytes: a.recv_bytes.max(b.recv_bytes),
                    send_bytes: a.send_bytes.max(b.send_bytes),
                });
        let mut listen = sockets::open_listen(
            netconf.node.listen,
            listen_buffers,
            multicast_send(&netconf),
        )?;
        if offload.gro {
            sockets::enable_gro(&listen.socket);
        }
        poll.registry()
            .register(&mut listen.socket, LISTEN_TOKEN, mio::Interest::READABLE)
            .map_err(Error::Poll)?;

        let now = clock::now();
        let seed = node_id.0 ^ clock::wall_ms().rotate_left(32);
        let mut node = Node::new(node_id, &name, seed);
        let group_members = groups::open_members(&data_dir, &netconf, &mut node);
        let local_ips = local_addresses();
        let mut groups = Vec::with_capacity(netconf.groups.len());
        for (k, g) in netconf.groups.iter().enumerate() {
            let id = GroupId(u32::try_from(k).unwrap_or(u32::MAX));
            let (bind, dests) = group_endpoints(g, netconf.node.listen, &local_ips);
            let keys = match &g.key_file {
                Some(current) => Some(
                    GroupKeys::load(current, g.previous_key_file.as_deref()).map_err(|source| {
                        Error::KeyFile {
                            group: g.name.clone(),
                            source,
                        }
                    })?,
                ),
                None => None,
            };
            let mut opened = sockets::open_group(bind, buffer_sizes(g))?;
            if detected.gro && g.gso {
                sockets::enable_gro(&opened.socket);
            }
            poll.registry()
                .register(
                    &mut opened.socket,
                    Token(GROUP_TOKEN_BASE + k),
                    mio::Interest::READABLE,
                )
                .map_err(Error::Poll)?;
            node.add_group(now, id, group_config(g));
            ::log::info!(
                "group ready group={} kind={} bind={} destinations={}",
                g.name,
                g.kind.as_str(),
                opened.local_addr,
                dests.len()
            );
            groups.push(GroupIo {
                id,
                name: g.name.clone(),
                socket: opened.socket,
                dests,
                keys,
            });
        }

        let console = match netconf.node.console {
            Some(addr) => Some(console::Console::start(addr)?),
            None => None,
        };
        // Resolved before the socket exists, so a bad name leaves nothing behind.
        let socket_gid = match &netconf.node.socket_group {
            Some(g) => Some(g.resolve(group_id_of).map_err(Error::Netconf)?),
            None => None,
        };
        let ipc = IpcServer::bind(&socket_path, poll.registry(), IPC_TOKEN).map_err(|source| {
            Error::Ipc {
                path: socket_path.clone(),
                source,
            }
        })?;
        if let Some(gid) = socket_gid {
            ipc.share_with_group(gid).map_err(|source| Error::Ipc {
                path: socket_path.clone(),
                source,
            })?;
        }
        ::log::info!(
            "castlogd started name={} node={} listen={} data_dir={} socket={}",
            name,
            node_id,
            listen.local_addr,
            data_dir.display(),
            socket_path.display()
        );
        Ok(Daemon {
            name,
            node_id,
            netconf,
            poll,
            node,
            listen: listen.socket,
            listen_addr: listen.local_addr,
            groups,
            routes: HashMap::new(),
            tx: TxQueue::new(offload.gso),
            ipc,
            log,
            subs: Subscriptions::open(&data_dir),
            group_members,
            replays: replay_io::Replays::default(),
            stats: Stats::default(),
            console,
            offload,
            loop_state: event_loop::LoopState::default(),
            _data_dir_lock: data_dir_lock,
        })
    }

    /// This node's id (kept in `data-dir/node-id`).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound listen address (the real port when netconf said 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The web console's bound address, when it is on.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(console::Console::addr)
    }

    /// The client IPC socket path.
    pub fn socket_path(&self) -> &Path {
        self.ipc.path()
    }

    /// The group a topic is published on: the first matching netconf rule.
    fn route(&mut self, topic: &str) -> Option<GroupId> {
        if let Some(g) = self.routes.get(topic) {
            return *g;
        }
        let group = self.netconf.rule_for(topic).and_then(|rule| {
            let k = self
                .netconf
                .groups
                .iter()
                .position(|g| g.name == rule.group)?;
            Some(GroupId(u32::try_from(k).ok()?))
        });
        if let Some(rule) = self.netconf.rule_for(topic) {
            let mut cfg = self.log.config_for(topic);
            cfg.retention_ms = rule.retention.map(duration_ms);
            cfg.retention_bytes = rule.retention_bytes;
            self.log.set_config_for(topic, cfg);
        }
        self.routes.insert(topic.to_string(), group);
        group
    }
}

/// The protocol settings of a group, from its validated netconf table.
fn group_config(g: &GroupConf) -> GroupConfig {
    let kind = match g.kind {
        netconf::GroupKind::Multicast { .. } => proto::GroupKind::Multicast,
        netconf::GroupKind::Broadcast { .. } => proto::GroupKind::Broadcast,
        netconf::GroupKind::Unicast { .. } => proto::GroupKind::Unicast,
    };
    GroupConfig {
        kind,
        mtu: g.mtu,
        heartbeat_interval_min: g.heartbeat_interval_min,
        heartbeat_interval_max: g.heartbeat_interval_max,
        nak_delay_max: g.nak_delay_max,
        nak_retry_interval: g.nak_retry_interval,
        nak_max_retries: g.nak_max_retries,
        retransmit_window_bytes: usize::try_from(g.retransmit_window_bytes).unwrap_or(usize::MAX),
        flow_window_bytes: usize::try_from(g.flow_window_bytes).unwrap_or(usize::MAX),
        liveness_timeout: g.liveness_timeout,
        rate_limit_bytes_per_sec: g.rate_limit_bytes_per_sec.unwrap_or(0),
        ..GroupConfig::default()
    }
}

fn buffer_sizes(g: &GroupConf) -> BufferSizes {
    BufferSizes {
        recv_bytes: usize::try_from(g.recv_buffer_bytes).unwrap_or(usize::MAX),
        send_bytes: usize::try_from(g.send_buffer_bytes).unwrap_or(usize::MAX),
    }
}

/// Send-side multicast options for the listen socket. `IP_MULTICAST_IF` is
/// one value per socket, so the first multicast group's interface is used
/// for all; netconf files with several multicast groups put them on one
/// interface.
fn multicast_send(netconf: &NetConf) -> Option<MulticastSend> {
    netconf.groups.iter().find_map(|g| match g.kind {
        netconf::GroupKind::Multicast {
            interface,
            ttl,
            loopback,
            ..
        } => Some(MulticastSend {
            interface,
            ttl: u32::from(ttl),
            loopback,
        }),
        _ => None,
    })
}

/// How a group's socket binds and where `Dest::Group` sends go.
///
/// A unicast group's peer list names every host, this one included (one file
/// serves all hosts); a peer on this group's port at one of this host's
/// addresses is this daemon and is skipped.
fn group_endpoints(
    g: &GroupConf,
    listen: SocketAddr,
    local_ips: &[IpAddr],
) -> (GroupBind, Vec<SocketAddr>) {
    match &g.kind {
        netconf::GroupKind::Multicast {
            address, interface, ..
        } => (
            GroupBind::Multicast {
                group: *address,
                interface: *interface,
            },
            vec![SocketAddr::V4(*address)],
        ),
        netconf::GroupKind::Broadcast { address } => (
            GroupBind::Broadcast { address: *address },
            vec![SocketAddr::V4(*address)],
        ),
        netconf::GroupKind::Unicast { port, peers } => {
            let bind = SocketAddr::new(listen.ip(), *port);
            let is_self = |p: &SocketAddr| {
                p.port() == *port
                    && (p.ip() == listen.ip()
                        || (listen.ip().is_unspecified() && local_ips.contains(&p.ip())))
            };
            let dests = peers.iter().copied().filter(|p| !is_self(p)).collect();
            (GroupBind::Unicast { bind }, dests)
        }
    }
}

fn log_config(netconf: &NetConf) -> LogConfig {
    let fsync = match netconf.node.fsync {
        netconf::FsyncPolicy::Always => crate::log::FsyncPolicy::Always,
        netconf::FsyncPolicy::Interval(d) => crate::log::FsyncPolicy::Interval(d),
        netconf::FsyncPolicy::Never => crate::log::FsyncPolicy::Never,
    };
    LogConfig {
        segment_max_bytes: netconf.node.segment_max_size_bytes,
        segment_max_age_ms: duration_ms(netconf.node.segment_max_age),
        // netconf's default is to keep everything; per-topic rules set it.
        retention_ms: None,
        retention_bytes: None,
        fsync,
        ..LogConfig::default()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Takes an exclusive lock on `data-dir/lock`, so a second daemon on the
/// same data directory (which would interleave writes into the same logs)
/// refuses to start. The kernel drops the lock when the process dies, even
/// by kill -9, so a crash never leaves it stuck.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, Error> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::DataDir {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor that `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::DataDirInUse {
            path: data_dir.to_path_buf(),
        });
    }
    Ok(file)
}

/// The gid of group `name` in this host's group database (getgrnam_r, so
/// NSS sources such as LDAP count too), for netconf `socket-group`.
fn group_id_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: all-zero bytes are a valid `group` (null pointers, 0 gid).
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf` for its length.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 22) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return (rc == 0 && !found.is_null()).then_some(grp.gr_gid);
    }
}

/// The kernel's host name, for `node.name`'s default.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "castlog".to_string();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Every IPv4 and IPv6 address of this host's interfaces (getifaddrs), to
/// recognise this daemon in a unicast peer list.
fn local_addresses() -> Vec<IpAddr> {
    let mut out = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it states.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 means the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_serves_one_daemon_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        assert!(lock_data_dir(dir.path()).is_ok());
    }

    #[test]
    fn local_addresses_include_loopback() {
        assert!(local_addresses().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn a_unicast_group_skips_this_daemon_in_its_peer_list() {
        let text = "[node]\nlisten = \"0.0.0.0:7500\"\n[group.mesh]\nkind = \"unicast\"\nport = 7402\npeers = [\"127.0.0.1:7402\", \"10.9.9.9:7402\", \"127.0.0.1:7403\"]\n[[topic]]\npattern = \"*\"\ngroup = \"mesh\"\n";
        let nc = NetConf::from_str(text, "t.toml").unwrap();
        let (_, dests) = group_endpoints(&nc.groups[0], nc.node.listen, &local_addresses());
        let want: Vec<SocketAddr> = vec![
            "10.9.9.9:7402".parse().unwrap(),
            "127.0.0.1:7403".parse().unwrap(),
        ];
        assert_eq!(dests, want);
    }
}
