//! A virtual LAN of network-namespace hosts for tests that must cross a real
//! kernel network path: unicast, subnet broadcast and IP multicast between
//! separate hosts, with nftables loss injection.
//!
//! Each `Lan` makes one bridge (multicast snooping off, so it floods groups
//! like a plain switch) and one namespace per host, joined by a veth pair;
//! host `i` (1-based) gets `10.200.X.i/24` on `eth0`, a multicast route and
//! raised socket buffer limits. Names carry the process id and a per-process
//! counter, so parallel tests and parallel test binaries never collide, and
//! fit the 15-byte interface name limit. `Drop` removes every namespace and
//! the bridge, also when the test panics.
//!
//! The commands are those of `shared/lan/lan`, re-done with `ip` and `nft`
//! so the suite needs nothing outside the repository.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_LAN: AtomicU32 = AtomicU32::new(0);

/// A set of namespace hosts on one bridge; torn down on drop.
pub struct Lan {
    prefix: String,
    subnet: [u8; 3],
    hosts: usize,
    /// Namespaces and links made so far, so a half-built LAN is cleaned too.
    made_netns: Vec<String>,
    made_bridge: bool,
}

/// Why a LAN could not be built: the command that failed and what it said.
#[derive(Debug)]
pub struct LanError {
    pub command: String,
    pub reason: String,
}

impl fmt::Display for LanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot build test lan: `{}` failed: {} (needs root or CAP_NET_ADMIN, iproute2 and nftables)",
            self.command, self.reason
        )
    }
}

impl std::error::Error for LanError {}

impl Lan {
    /// Builds a LAN of `n_hosts` hosts, numbered 1..=n_hosts.
    pub fn new(n_hosts: usize) -> Result<Lan, LanError> {
        assert!(
            (1..=99).contains(&n_hosts),
            "a test lan has 1..=99 hosts, asked for {n_hosts}"
        );
        let counter = NEXT_LAN.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // "cl" + pid base36 (<= 5) + counter base36 (<= 2): at most 9 bytes,
        // so "{prefix}p{99}" stays within IFNAMSIZ - 1 = 15.
        let prefix = format!("cl{}{}", base36(pid % 60_466_176), base36(counter % 1296));
        // Hosts live in their own namespaces, so equal subnets in two LANs
        // never clash; varying the third octet just keeps captures readable.
        let third =
            u8::try_from((pid.wrapping_add(counter.wrapping_mul(7))) % 250 + 1).unwrap_or(1);
        let mut lan = Lan {
            prefix,
            subnet: [10, 200, third],
            hosts: n_hosts,
            made_netns: Vec::new(),
            made_bridge: false,
        };
        lan.remove_stale();
        lan.build()?;
        Ok(lan)
    }

    /// Builds a LAN, or decides what to do when this machine cannot: under
    /// `CI=true` a missing capability is a failure (panics with the reason),
    /// elsewhere the test is skipped with a note on stderr and `None`.
    pub fn new_or_skip(n_hosts: usize) -> Option<Lan> {
        match Lan::new(n_hosts) {
            Ok(lan) => Some(lan),
            Err(e) if is_ci() => panic!("{e} (CI=true, so this is a failure, not a skip)"),
            Err(e) => {
                eprintln!("skipping lan test: {e}");
                None
            }
        }
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts
    }

    /// Address of host `i` (1-based) on the LAN.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.check_host(i);
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, u8::try_from(i).unwrap_or(0))
    }

    /// The subnet broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 255)
    }

    /// Name of host `i`'s network namespace.
    pub fn netns(&self, i: usize) -> String {
        self.check_host(i);
        format!("{}-{}", self.prefix, i)
    }

    /// Spawns `cmd` inside host `i`.
    ///
    /// The child enters the namespace with `setns` between fork and exec,
    /// which is what `ip netns exec` does, but keeps everything the caller
    /// set on `cmd` (arguments, environment, directory and stdio pipes), and
    /// the child's pid is the program's own, so it can be killed directly.
    pub fn spawn(&self, i: usize, mut cmd: Command) -> io::Result<Child> {
        let path = format!("/var/run/netns/{}", self.netns(i));
        let ns = File::open(&path)?;
        let fd = ns.as_raw_fd();
        // SAFETY: the closure only calls async-signal-safe `setns` on a file
        // descriptor that `ns` keeps open until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let child = cmd.spawn();
        drop(ns);
        child
    }

    /// Runs `f` on a thread that has entered host `i`'s namespace, so the
    /// sockets it opens live on that host (a socket keeps the namespace it
    /// was created in), and returns what `f` returned.
    pub fn in_host<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let ns = File::open(format!("/var/run/netns/{}", self.netns(i)))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on this thread only; `ns` is open.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `args` inside host `i` through `ip netns exec` and waits for it.
    pub fn exec(&self, i: usize, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.netns(i)])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Drops `pct` percent of the UDP datagrams arriving at host `i`
    /// (0 turns loss off), with nftables `numgen random mod 100 lt P drop`
    /// at prerouting, before any socket sees them.
    pub fn set_loss(&self, i: usize, pct: u8) -> Result<(), LanError> {
        assert!(pct <= 100, "loss is a percentage, got {pct}");
        let ns = self.netns(i);
        let _ = run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "delete",
            "table",
            "inet",
            "castlogloss",
        ]);
        if pct == 0 {
            return Ok(());
        }
        // `counter` lets `dropped` report how many the rule took.
        let rule = format!("meta l4proto udp numgen random mod 100 lt {pct} counter drop");
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add",
            "table",
            "inet",
            "castlogloss",
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add",
            "chain",
            "inet",
            "castlogloss",
            "in",
            "{ type filter hook prerouting priority -300; }",
        ])?;
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add",
            "rule",
            "inet",
            "castlogloss",
            "in",
        ];
        args.extend(rule.split(' '));
        run(&args)
    }

    /// How many packets host `i`'s loss rule has dropped (0 with no rule).
    pub fn dropped(&self, i: usize) -> u64 {
        let ns = self.netns(i);
        let Ok(out) = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "nft",
                "list",
                "table",
                "inet",
                "castlogloss",
            ])
            .output()
        else {
            return 0;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        // The rule reads "... counter packets N bytes M drop".
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn build(&mut self) -> Result<(), LanError> {
        let br = self.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        self.made_bridge = true;
        // No multicast snooping: every port sees every group, like a plain
        // switch without IGMP snooping, so no querier is needed.
        std::fs::write(
            format!("/sys/class/net/{br}/bridge/multicast_snooping"),
            "0",
        )
        .map_err(|e| LanError {
            command: format!("write /sys/class/net/{br}/bridge/multicast_snooping"),
            reason: e.to_string(),
        })?;
        run(&["ip", "link", "set", &br, "up"])?;
        for i in 1..=self.hosts {
            let ns = self.netns(i);
            let port = format!("{}p{}", self.prefix, i);
            let end = format!("{}e{}", self.prefix, i);
            let cidr = format!("{}/24", self.addr(i));
            run(&["ip", "netns", "add", &ns])?;
            self.made_netns.push(ns.clone());
            run(&[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", &end,
            ])?;
            run(&["ip", "link", "set", &port, "master", &br, "up"])?;
            run(&["ip", "link", "set", &end, "netns", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", &end, "name", "eth0"])?;
            run(&[
                "ip", "-n", &ns, "addr", "add", &cidr, "brd", "+", "dev", "eth0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "multicast", "on"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "eth0",
            ])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.icmp_echo_ignore_broadcasts=0",
                "net.core.rmem_max=67108864",
                "net.core.wmem_max=67108864",
            ])?;
        }
        Ok(())
    }

    /// Removes what a crashed earlier process with the same pid left behind
    /// (kill -9 skips `Drop`). A name with this pid and counter can only
    /// belong to a dead process, so removing it is safe.
    fn remove_stale(&self) {
        let br = self.bridge();
        let _ = run(&["ip", "link", "del", &br]);
        for i in 1..=self.hosts {
            let _ = run(&["ip", "netns", "del", &self.netns(i)]);
        }
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    fn check_host(&self, i: usize) {
        assert!(
            (1..=self.hosts).contains(&i),
            "host {i} is not on this lan (hosts are 1..={})",
            self.hosts
        );
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace destroys its veth end, and with it the pair.
        for ns in self.made_netns.drain(..) {
            if let Err(e) = run(&["ip", "netns", "del", &ns]) {
                eprintln!("lan cleanup: {e}");
            }
        }
        if self.made_bridge {
            if let Err(e) = run(&["ip", "link", "del", &self.bridge()]) {
                eprintln!("lan cleanup: {e}");
            }
        }
    }
}

/// True when the environment says this is CI, where skipping is not allowed.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn run(args: &[&str]) -> Result<(), LanError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LanError {
            command: args.join(" "),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LanError {
            command: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
