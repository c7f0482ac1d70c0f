//! castlog: reliable topic messaging over UDP unicast, broadcast and
//! multicast, with a persistent per-host log and replay from an offset.
//!
//! The crate is split into rooms, one job each (see `docs/design.md`):
//!
//! - [`wire`]: bytes that cross a socket (frames, records, client IPC).
//! - [`proto`]: the protocol as sans-IO state machines (no sockets, no clock).
//! - [`log`]: the segmented append-only topic log on disk.
//! - [`netconf`]: reading and validating netconf TOML files.
//! - [`daemon`]: the only room with sockets, threads and the clock.
//! - [`client`]: the application API over the daemon's Unix socket.
//! - [`decode`]: reads packet captures and shows the castlog frames in them.
//! - `sys`: the one `unsafe` read both ends of the client IPC share.
//!
//! Dependencies point one way: `daemon -> proto, log, netconf, wire`;
//! `proto -> wire`; `log -> wire::record`; `client -> wire::ipc`;
//! `decode -> wire` (plus etherparse).

pub mod client;
pub mod daemon;
pub mod decode;
pub mod log;
pub mod netconf;
pub mod proto;
mod sys;
pub mod wire;
