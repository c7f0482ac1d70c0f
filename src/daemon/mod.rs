//! `daemon`: the only room that does I/O on the daemon side.
//!
//! It owns the UDP sockets ([`sockets`]), the clock ([`clock`]), signals and
//! the data directory, and drives `proto` and `log` from one mio event loop.
//! Everything here is glue: decisions live in `proto`, bytes in `wire`.

pub mod clock;
mod error;
pub mod ipc;
pub mod node_id;
pub mod replication;
pub mod signals;
pub mod sockets;
pub mod subscriptions;

pub use error::Error;
