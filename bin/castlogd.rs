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

/// The castlog daemon: carries topic messages between hosts over UDP
/// multicast, broadcast and unicast, reliably, with a local log.
#[derive(Debug, Parser)]
#[command(name = "castlogd", version)]
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
