//! Helpers shared by the black-box tests: the namespace LAN harness
//! ([`lan`]), netconf files for it, and real `castlogd` processes that are
//! stopped (and their logs shown on failure) when the test ends.
#![allow(dead_code)]

pub mod lan;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use castlog::client::{Client, Delivery, Message};
use lan::Lan;

/// The transport a generated netconf uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Multicast,
    Broadcast,
    Unicast,
}

/// Port numbers of generated netconf files.
pub const LISTEN_PORT: u16 = 7500;
pub const GROUP_PORT: u16 = 7400;

/// A netconf for host `i` of `lan` with one group of `kind` carrying every
/// topic; `extra_group` lines are appended to the group table (timings).
pub fn lan_netconf(lan: &Lan, i: usize, kind: Kind, extra_group: &str) -> String {
    let me = lan.addr(i);
    let group = match kind {
        Kind::Multicast => format!(
            "kind = \"multicast\"\naddress = \"239.255.42.1:{GROUP_PORT}\"\ninterface = \"{me}\"\nttl = 1\n"
        ),
        Kind::Broadcast => format!(
            "kind = \"broadcast\"\naddress = \"{}:{GROUP_PORT}\"\n",
            lan.broadcast()
        ),
        Kind::Unicast => {
            let peers: Vec<String> = (1..=lan.len())
                .map(|h| format!("\"{}:{GROUP_PORT}\"", lan.addr(h)))
                .collect();
            format!(
                "kind = \"unicast\"\nport = {GROUP_PORT}\npeers = [{}]\n",
                peers.join(", ")
            )
        }
    };
    format!(
        "[node]\nlisten = \"{me}:{LISTEN_PORT}\"\n\n[group.g]\n{group}{extra_group}\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n"
    )
}

/// A `castlogd` child process with its own data dir, socket and log file.
/// Dropping it stops it (SIGTERM, then SIGKILL) and, when the thread is
/// panicking, prints the end of its log so a failure explains itself.
pub struct DaemonProc {
    pub name: String,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub netconf: PathBuf,
    pub log: PathBuf,
    host: Option<usize>,
    child: Option<Child>,
}

impl DaemonProc {
    /// Starts `castlogd` on host `i` of `lan` (or on this host when `lan` is
    /// `None`) with `netconf` text, files under `dir`, and waits until its
    /// socket answers.
    pub fn start(lan: Option<&Lan>, i: usize, name: &str, netconf: &str, dir: &Path) -> DaemonProc {
        let netconf_path = dir.join(format!("{name}.toml"));
        std::fs::write(&netconf_path, netconf).expect("write netconf");
        let mut d = DaemonProc {
            name: name.to_string(),
            socket: dir.join(format!("{name}.sock")),
            data_dir: dir.join(format!("{name}-data")),
            netconf: netconf_path,
            log: dir.join(format!("{name}.log")),
            host: lan.map(|_| i),
            child: None,
        };
        d.spawn(lan);
        d
    }

    /// Starts the process again with the same files (after `kill9` or
    /// `terminate`).
    pub fn restart(&mut self, lan: Option<&Lan>) {
        assert!(self.child.is_none(), "daemon {} still running", self.name);
        self.spawn(lan);
    }

    fn spawn(&mut self, lan: Option<&Lan>) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_castlogd"));
        cmd.arg("--netconf")
            .arg(&self.netconf)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--name")
            .arg(&self.name)
            .env(
                "RUST_LOG",
                std::env::var("CASTLOG_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        let child = match (lan, self.host) {
            (Some(lan), Some(i)) => lan.spawn(i, cmd),
            _ => cmd.spawn(),
        }
        .expect("spawn castlogd");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10));
    }

    /// Waits until a client can connect and ping.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.ping().is_ok() {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "castlogd {} exited during startup with {status}:\n{}",
                        self.name,
                        self.log_tail(40)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "castlogd {} not ready after {timeout:?}:\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to castlogd")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no goodbye, no flush (the crash test).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = i32::try_from(child.id()).ok()?;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- castlogd {} log (tail) ---\n{}",
                self.name,
                self.log_tail(30)
            );
        }
    }
}

/// Reads records until `want` arrived or nothing came for `idle`; a gap
/// notice fails the test (these tests expect every record).
pub fn collect(c: &mut Client, want: usize, idle: Duration) -> Vec<Delivery> {
    let mut got = Vec::new();
    let mut last = Instant::now();
    while got.len() < want && last.elapsed() < idle {
        match c
            .next_message(Duration::from_millis(100))
            .expect("next message")
        {
            Some(Message::Record(d)) => {
                got.push(d);
                last = Instant::now();
            }
            Some(Message::Gap(g)) => panic!("unexpected gap notice: {g:?}"),
            None => {}
        }
    }
    got
}
