use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use thiserror::Error;

/// Why the daemon could not start or had to stop. Each variant carries what a
/// user needs to fix it (the address that would not bind, the path that could
/// not be read), and `source()` is the underlying OS error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot bind udp socket to {addr}: {source} (is another process using it, or is the address not on this host?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot set socket option {option} on {addr}: {source}")]
    SocketOption {
        option: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot join multicast group {group} on interface {interface}: {source} (is {interface} an address of this host with a multicast route?)")]
    JoinMulticast {
        group: Ipv4Addr,
        interface: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error("multicast group {group} needs an ipv4 address, got {addr}")]
    NotIpv4 { group: String, addr: SocketAddr },
    #[error("cannot serve the web console on {addr}: {reason} (is the port in use? change [node] console)")]
    Console { addr: SocketAddr, reason: String },
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "data directory {path} is in use by another castlogd (give each daemon its own --data-dir)"
    )]
    DataDirInUse { path: PathBuf },
    #[error("node id file {path} is corrupt: {reason} (delete it to get a new node id)")]
    NodeIdCorrupt { path: PathBuf, reason: &'static str },
    #[error("cannot open the log in {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: crate::log::Error,
    },
    #[error("cannot open the client socket {path}: {source}")]
    Ipc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("group {group}: {source}")]
    KeyFile {
        group: String,
        #[source]
        source: super::keyfile::KeyFileError,
    },
    /// A netconf value that only this host can check (a `socket-group`
    /// name), located in the file like every netconf error.
    #[error("{0}")]
    Netconf(#[source] crate::netconf::Error),
    #[error("event loop failed: {0}")]
    Poll(#[source] io::Error),
}
