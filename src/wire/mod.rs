//! `wire`: the bytes that cross a socket, and nothing else.
//!
//! Each frame has a zero-copy checked view over `&[u8]` (`new_checked`, then
//! accessors) and a plain `*Repr` struct with `parse` and `emit`, as smoltcp's
//! `wire` does. All integers are big-endian. The full byte tables, with the
//! reason for every field, are in `docs/protocol.md`.
//!
//! **No-panic contract**: no function in this module panics on any input
//! bytes; malformed input is an [`Error`]. Parsing does not allocate for DATA
//! frames (the hot path). No sockets, no clocks, no state.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod ids;
pub mod ipc;
pub mod record;

pub use error::{Error, Result};
pub use ids::{NodeId, Offset, Seq, SessionId, TopicId};
pub use record::{RecordRepr, Records};
