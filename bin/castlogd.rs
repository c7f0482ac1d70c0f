//! castlogd: the per-host castlog daemon.
//!
//! Parses arguments, sets up logging (RUST_LOG, default `info`), loads the
//! netconf (the embedded default when no file is given), runs the daemon
//! until SIGTERM/SIGINT, and maps every startup error to exit code 2 with
//! its one-line message.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use castlog::daemon::{signals, Daemon, Overrides};
use castlog::netconf::NetConf;
use clap::Parser;

const ABOUT_LONG: &str = "\
castlogd is the per-host castlog daemon. It carries topic records between
hosts over UDP multicast, subnet broadcast and unicast, repairs loss with
sequence numbers and NAKs, and appends every record to a local log from which
late subscribers replay. Applications talk to it through its Unix socket
(the castlog CLI or the client library).

Configuration is one netconf file (TOML; docs/netconf.md): the [node] table
(name, data-dir, socket, listen address, web console), the [group.NAME]
transport channels and the [[topic]] rules that map topic patterns to groups.
Without --netconf the embedded default is used: one host, loopback multicast.
Check a file first with `castlog check FILE`.

Files:
  DATA-DIR/node-id   this node's id, created on first start
  DATA-DIR/log/      the topic logs, one directory per topic and source
  SOCKET             the client socket ($XDG_RUNTIME_DIR/castlog-NAME.sock,
                     else /tmp/castlog-NAME.sock, unless set)

With `console = \"127.0.0.1:7480\"` in [node], a web console is served there
(the page, /api/stats, /metrics); see docs/console.md.

Logging goes to standard error; RUST_LOG sets the level (default info).
SIGTERM or SIGINT: say goodbye on every group, flush the log, exit 0.

Exit status:
  0  stopped by SIGTERM/SIGINT
  2  could not start (bad netconf, a port in use, an unusable data
     directory); the one-line message says which and what to change";

const EXAMPLES: &str = "\
Examples:
  castlogd                                        # embedded default netconf
  castlogd --netconf /etc/castlog/h1.toml
  castlogd --name a --data-dir /tmp/a --socket /tmp/a.sock   # a second daemon on this host
  RUST_LOG=debug castlogd --netconf netconf/multicast.toml
  systemctl start castlogd@h1                     # packaging/castlogd@.service";

/// The castlog daemon: carries topic messages between hosts over UDP
/// multicast, broadcast and unicast, reliably, with a local log.
#[derive(Debug, Parser)]
#[command(name = "castlogd", version, long_about = ABOUT_LONG, after_long_help = EXAMPLES)]
struct Args {
    /// Netconf file (TOML); without it, the embedded default (one host,
    /// loopback multicast).
    #[arg(long, value_name = "FILE")]
    netconf: Option<PathBuf>,
    /// Data directory (log and node id); overrides node.data-dir.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Client IPC socket path; overrides node.socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Node name; overrides node.name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let netconf = match &args.netconf {
        Some(path) => match NetConf::load(path) {
            Ok(nc) => nc,
            Err(e) => return fail(&e),
        },
        None => NetConf::embedded_default(),
    };
    let overrides = Overrides {
        name: args.name,
        data_dir: args.data_dir,
        socket: args.socket,
    };
    signals::install();
    let mut daemon = match Daemon::new(netconf, overrides) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    match daemon.run(Arc::new(AtomicBool::new(false))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("castlogd: {e}");
    ExitCode::from(2)
}
