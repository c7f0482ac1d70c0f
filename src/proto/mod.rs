//! `proto`: the castlog protocol as sans-IO state machines.
//!
//! Nothing here touches a socket, a file, a thread or the clock: time comes
//! in as `now`, randomness from a seeded [`Rng`], bytes in through
//! `handle_datagram`, and what to send comes out of `poll_transmit`. This is
//! what the deterministic lossy-network simulation ([`sim`]) drives, and what
//! the daemon's event loop drives with real sockets (quinn-proto's shape).
//!
//! # The call contract
//!
//! Inputs, with `now` never going backwards:
//! - [`Node::handle_datagram`]`(now, from, group, bytes)` for every datagram;
//! - [`Node::handle_timeout`]`(now)` once `now >= poll_timeout()`;
//! - application calls: [`Node::publish`], [`Node::flush`],
//!   [`Node::request_replay`], [`Node::supply_replay_chunk`].
//!
//! After every input, drain the outputs in this order:
//! 1. [`Node::poll_transmit`] until `None` (send each to its [`Dest`]);
//! 2. [`Node::poll_event`] until `None` (deliveries, gaps, acks, peers);
//! 3. [`Node::poll_timeout`] for the next deadline.
//!
//! Malformed bytes are counted in [`Stats`] and dropped: no input makes this
//! module panic or return an error that would stop the caller's loop.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod delivered;
pub mod groups;
mod node;
pub mod ranges;
mod receiver;
mod replay;
mod retransmit;
pub mod rng;
mod sender;
pub mod sim;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::wire::{NodeId, Offset, Seq, SeqRange, SessionId, TopicId};
pub use config::{GroupConfig, GroupKind};
pub use delivered::{DeliveredIter, DeliveredRecords};
pub use node::{Node, MAX_RECEIVERS};
pub use replay::{replay_end, ReplayEnd, ReplayId, ReplayOutcome, ReplayServe};
pub use rng::Rng;
pub use stats::Stats;

/// A group as the daemon numbers it; local to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// Where a transmit goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    /// Everyone in the group: the multicast or broadcast address, or one copy
    /// to each unicast peer.
    Group(GroupId),
    /// One node's unicast (`listen`) address.
    Peer(SocketAddr),
}

/// Identifies a publish call, in publish order per group; acknowledgements
/// arrive as "everything up to this ticket".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// Why a publish was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("no group {0:?} on this node")]
    UnknownGroup(GroupId),
    #[error("flow window full: the slowest receiver is {unacked_bytes} bytes behind; retry after acknowledgements")]
    Backpressure { unacked_bytes: usize },
    #[error("record too large: {size} bytes, the group allows {max}")]
    RecordTooLarge { size: usize, max: usize },
    #[error("topic name too long: {len} bytes, at most 65535")]
    TopicTooLong { len: usize },
}

/// What the node tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Records of one topic from one datagram (or one reassembled record),
    /// in offset order, each exactly once; datagrams in sequence order per
    /// source session. A datagram holding several topics gives one event
    /// per topic, in the order the topics first appear in it.
    Deliver {
        group: GroupId,
        source: NodeId,
        session: SessionId,
        topic: Arc<str>,
        records: DeliveredRecords,
    },
    /// Datagrams that could not be recovered from the source's window: the
    /// driver should fill the topics' offsets from the log (replay) or report
    /// a gap. Never a silent hole.
    Gap {
        group: GroupId,
        source: NodeId,
        session: SessionId,
        seqs: SeqRange,
    },
    /// A new source session was heard. `replaced` is the session of the same
    /// source that it supersedes (the source restarted).
    SourceUp {
        group: GroupId,
        source: NodeId,
        session: SessionId,
        addr: SocketAddr,
        replaced: Option<SessionId>,
    },
    /// A source fell silent for longer than the liveness timeout.
    SourceDown {
        group: GroupId,
        source: NodeId,
        session: SessionId,
    },
    /// A topic of a source was learned (first time): its name and the next
    /// offset the source will give, so a late joiner knows what it missed.
    TopicSeen {
        group: GroupId,
        source: NodeId,
        topic: Arc<str>,
        next_offset: Offset,
    },
    /// A receiver started acknowledging our session.
    ReceiverUp {
        group: GroupId,
        receiver: NodeId,
        addr: SocketAddr,
    },
    /// A receiver fell silent; it no longer holds back flow control.
    ReceiverDown { group: GroupId, receiver: NodeId },
    /// Every publish up to and including `ticket` was received by every live
    /// receiver of the group (or there is none).
    Acked { group: GroupId, ticket: Ticket },
    /// Another node announced itself (join, alive) or said goodbye (leave).
    Peer {
        group: GroupId,
        node: NodeId,
        name: Arc<str>,
        addr: SocketAddr,
        leaving: bool,
    },
    /// A peer asks for records from our log: read them and answer with
    /// [`Node::supply_replay_chunk`].
    ReplayRead(ReplayServe),
    /// Records from a replay we asked for, in offset order.
    ReplayRecords {
        id: ReplayId,
        source: NodeId,
        topic: Arc<str>,
        records: Bytes,
        count: usize,
    },
    /// A replay we asked for finished.
    ReplayDone {
        id: ReplayId,
        outcome: ReplayOutcome,
    },
}
