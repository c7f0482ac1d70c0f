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
//!
//! | code | frame          | file           | sent by → to                      |
//! |------|----------------|----------------|-----------------------------------|
//! | 1    | DATA           | `data.rs`      | source → group (repairs: same)    |
//! | 2    | HEARTBEAT      | `heartbeat.rs` | source → group                    |
//! | 3    | NAK            | `nak.rs`       | receiver → source, unicast        |
//! | 4    | NCF            | `ncf.rs`       | source → group                    |
//! | 5    | UNRECOVERABLE  | `ncf.rs`       | source → NAKer                    |
//! | 6    | STATUS         | `status.rs`    | receiver → source, unicast        |
//! | 7    | REPLAY_REQUEST | `replay.rs`    | client node → log holder, unicast |
//! | 8    | REPLAY_DATA    | `replay.rs`    | log holder → client node          |
//! | 9    | REPLAY_END     | `replay.rs`    | log holder → client node          |
//! | 10   | ANNOUNCE       | `announce.rs`  | any node → group                  |
//!
//! Entry points: [`FrameRepr::parse`] for a received datagram,
//! [`FrameRepr::emit`] to write one, [`rewrite_flags`] to mark a stored
//! frame as a repair, [`auth::seal`] / [`auth::verify`] for groups with a
//! shared key.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod announce;
pub mod auth;
mod codec;
pub mod data;
mod error;
pub mod frame;
pub mod header;
pub mod heartbeat;
mod ids;
pub mod ipc;
pub mod member;
pub mod nak;
pub mod ncf;
pub mod record;
pub mod replay;
pub mod status;

pub use announce::{AnnounceKind, AnnounceRepr, Extension, Extensions};
pub use data::{
    chunk_capacity, records_capacity, DataFrame, DataPayload, DataRepr, FragmentRepr,
    DATA_HEADER_LEN, FRAGMENT_HEADER_LEN,
};
pub use error::{Error, Result};
pub use frame::{Body, FrameRepr};
pub use header::{
    checksum, rewrite_flags, Flags, Frame, FrameType, HeaderRepr, HEADER_LEN, MAGIC, VERSION,
};
pub use heartbeat::{HeartbeatRepr, TopicAdvert};
pub use ids::{NodeId, Offset, Seq, SessionId, TopicId};
pub use nak::{NakRepr, SeqRange};
pub use ncf::{NcfRepr, UnrecoverableRepr};
pub use record::{RecordRepr, Records};
pub use replay::{
    ReplayDataRepr, ReplayEndRepr, ReplayFragment, ReplayRequestRepr, ReplayStatus, TO_TAIL,
};
pub use status::StatusRepr;
