//! `Node`: all protocol state of one daemon. It demultiplexes datagrams to
//! the right sender (our sessions, by session id) or receiver (by source node
//! and session), and collects what they want sent and reported.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::groups::{ConsumerGroups, GroupsConfig};
use super::receiver::Receiver;
use super::replay::{ReplayClient, ReplayEnd, ReplayServe};
use super::sender::{emit, Sender};
use super::{Dest, Event, GroupConfig, GroupId, PublishError, ReplayId, Rng, Stats, Ticket};
use crate::wire::{
    AnnounceKind, AnnounceRepr, Body, Flags, Frame, FrameRepr, FrameType, HeaderRepr, NodeId,
    Offset, Seq, SessionId, HEADER_LEN,
};

/// Replaced sessions remembered (to drop their stray or replayed frames).
const MAX_RETIRED_SESSIONS: usize = 1024;

/// Source sessions tracked at once, over all groups. Every frame from a new
/// (node, session) on a group socket creates a receiver, with NAK timers
/// and a receive buffer, and anyone who can reach the port can make up
/// sessions; past this, new sessions are refused (`sessions_refused`), and
/// once the table is three quarters full, sessions gone silent are
/// forgotten at once rather than after ten liveness timeouts, so a flood
/// locks real sources out for at most one liveness timeout.
pub const MAX_RECEIVERS: usize = 1024;

/// What components hand back to the node: frames to send, events, counters.
pub(crate) struct Outputs {
    pub transmits: VecDeque<(Dest, Bytes)>,
    pub events: VecDeque<Event>,
    pub stats: Stats,
    pub rng: Rng,
}

impl Outputs {
    pub fn queue(&mut self, dest: Dest, frame: Bytes) {
        if !frame.is_empty() {
            self.transmits.push_back((dest, frame));
        }
    }
}

struct Group {
    cfg: GroupConfig,
    sender: Sender,
}

pub struct Node {
    id: NodeId,
    name: Arc<str>,
    groups: BTreeMap<GroupId, Group>,
    /// Our sessions, to route NAK and STATUS.
    sessions: HashMap<SessionId, GroupId>,
    receivers: BTreeMap<(NodeId, SessionId), Receiver>,
    /// Current session per (group, source), to recognise restarts.
    current: HashMap<(GroupId, NodeId), SessionId>,
    replay: ReplayClient,
    /// Sessions that a newer session of the same source replaced: their
    /// late or replayed frames are dropped, never taken for a new session.
    retired: VecDeque<(NodeId, SessionId)>,
    out: Outputs,
    /// Consumer groups (issue 6): membership, assignment, commits. Its
    /// member lists ride in our ANNOUNCE frames.
    consumers: ConsumerGroups,
}

impl Node {
    pub fn new(id: NodeId, name: &str, rng_seed: u64) -> Node {
        Node {
            id,
            name: Arc::from(name),
            groups: BTreeMap::new(),
            sessions: HashMap::new(),
            receivers: BTreeMap::new(),
            current: HashMap::new(),
            replay: ReplayClient::new(),
            retired: VecDeque::new(),
            consumers: ConsumerGroups::new(id, GroupsConfig::default()),
            out: Outputs {
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                stats: Stats::default(),
                rng: Rng::from_seed(rng_seed),
            },
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Starts a session on a group (with a fresh random session id) and
    /// announces this node on it.
    pub fn add_group(&mut self, now: Instant, group: GroupId, cfg: GroupConfig) {
        let mut session = SessionId(self.out.rng.next_u32());
        while session.0 == 0 || self.sessions.contains_key(&session) {
            session = SessionId(self.out.rng.next_u32());
        }
        let sender = Sender::new(now, self.id, session, group, cfg.clone());
        self.sessions.insert(session, group);
        self.groups.insert(group, Group { cfg, sender });
        self.announce(group, AnnounceKind::Join);
    }

    /// Says goodbye on every group (the driver sends these before exiting).
    pub fn leave(&mut self) {
        let groups: Vec<GroupId> = self.groups.keys().copied().collect();
        for g in groups {
            self.announce(g, AnnounceKind::Leave);
        }
    }

    fn announce(&mut self, group: GroupId, kind: AnnounceKind) {
        let Some(g) = self.groups.get(&group) else {
            return;
        };
        let frame = announce_frame(self.id, g.sender.session(), kind, &self.name, &[]);
        self.out.queue(Dest::Group(group), frame);
    }

    /// Our session id on a group.
    pub fn session(&self, group: GroupId) -> Option<SessionId> {
        self.groups.get(&group).map(|g| g.sender.session())
    }

    /// Whether a publish on `group` would be taken now (flow window open).
    pub fn can_publish(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| g.sender.can_publish())
    }

    /// Live receivers acknowledging our session on `group`.
    pub fn live_receivers(&self, group: GroupId) -> usize {
        self.groups
            .get(&group)
            .map_or(0, |g| g.sender.live_receivers())
    }

    /// When `node` was last heard from, as a source or as a receiver of one
    /// of our sessions; `None` if it is not known (or forgotten).
    pub fn last_heard(&self, node: NodeId) -> Option<Instant> {
        let as_source = self
            .receivers
            .values()
            .filter(|r| r.source() == node)
            .map(|r| r.last_heard());
        let as_receiver = self
            .groups
            .values()
            .filter_map(|g| g.sender.receiver_heard(node));
        as_source.chain(as_receiver).max()
    }

    /// Live receivers of `group` that have not acknowledged `ticket` yet.
    pub fn receivers_behind(&self, group: GroupId, ticket: Ticket) -> Vec<NodeId> {
        self.groups
            .get(&group)
            .map_or_else(Vec::new, |g| g.sender.receivers_behind(ticket))
    }

    /// Queues a record (whose offset the caller's log assigned) for sending.
    /// Small records are batched until the datagram is full or [`flush`] is
    /// called; large ones are fragmented.
    ///
    /// [`flush`]: Node::flush
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        now: Instant,
        group: GroupId,
        topic: &str,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<Ticket, PublishError> {
        let g = self
            .groups
            .get_mut(&group)
            .ok_or(PublishError::UnknownGroup(group))?;
        g.sender
            .publish(now, &mut self.out, topic, offset, timestamp_ms, key, value)
    }

    /// Sends every partly filled batch now.
    pub fn flush(&mut self, now: Instant) {
        for g in self.groups.values_mut() {
            g.sender.flush(now, &mut self.out);
        }
    }

    /// Feeds one received datagram. `group` is the group socket it arrived
    /// on, or `None` for the node's unicast (listen) socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        group: Option<GroupId>,
        bytes: &[u8],
    ) {
        self.out.stats.datagrams_received += 1;
        // Our own multicast, looped back so that daemons can share a host:
        // dropped before the CRC is computed.
        if Frame::new_unchecked(bytes).node() == self.id {
            self.out.stats.datagrams_own_dropped += 1;
            return;
        }
        let frame = match FrameRepr::parse(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.out.stats.datagrams_malformed += 1;
                log::trace!("malformed datagram from={from} error={e}");
                return;
            }
        };
        let h = frame.header;
        if h.node == self.id {
            self.out.stats.datagrams_own_dropped += 1;
            return;
        }
        match &frame.body {
            Body::Data(d) => {
                let seq = d.seq;
                if let Some(r) = self
                    .receiver_for(now, from, group, &h, seq, Seq(0))
                    .and_then(|k| self.receivers.get_mut(&k))
                {
                    let bytes = Bytes::copy_from_slice(bytes);
                    r.handle_data(now, &mut self.out, from, &h, seq, bytes);
                    Self::note_came_back(&mut self.out, r);
                }
            }
            Body::Heartbeat(hb) => {
                if let Some(r) = self
                    .receiver_for(now, from, group, &h, hb.next_seq, hb.lowest_repairable)
                    .and_then(|k| self.receivers.get_mut(&k))
                {
                    r.handle_heartbeat(now, &mut self.out, from, hb);
                    Self::note_came_back(&mut self.out, r);
                }
            }
            Body::Ncf(ncf) => {
                if let Some(r) = self.receivers.get_mut(&(h.node, h.session)) {
                    r.handle_ncf(now, &mut self.out, &ncf.ranges);
                }
            }
            Body::Unrecoverable(u) => {
                if let Some(r) = self.receivers.get_mut(&(h.node, h.session)) {
                    r.handle_unrecoverable(
                        now,
                        &mut self.out,
                        from,
                        u.lowest_repairable,
                        &u.ranges,
                    );
                }
            }
            Body::Nak(nak) => {
                if nak.source != self.id {
                    self.out.stats.datagrams_unknown_dropped += 1;
                    return;
                }
                match self
                    .sessions
                    .get(&h.session)
                    .and_then(|g| self.groups.get_mut(g))
                {
                    Some(g) => g.sender.handle_nak(now, &mut self.out, from, &nak.ranges),
                    None => self.out.stats.datagrams_unknown_dropped += 1,
                }
            }
            Body::Status(st) => {
                if st.source != self.id {
                    self.out.stats.datagrams_unknown_dropped += 1;
                    return;
                }
                match self
                    .sessions
                    .get(&h.session)
                    .and_then(|g| self.groups.get_mut(g))
                {
                    Some(g) => {
                        g.sender
                            .handle_status(now, &mut self.out, from, h.node, st.next_expected)
                    }
                    None => self.out.stats.datagrams_unknown_dropped += 1,
                }
            }
            Body::Announce(a) => {
                if group.is_some() {
                    self.consumers
                        .handle_announce(now, h.node, h.session, a.kind, a.extensions());
                }
                if let Some(group) = group {
                    self.out.events.push_back(Event::Peer {
                        group,
                        node: h.node,
                        name: Arc::from(a.name),
                        addr: from,
                        leaving: a.kind == AnnounceKind::Leave,
                    });
                }
            }
            Body::ReplayRequest(req) => {
                self.out.stats.replay_requests_received += 1;
                self.out.events.push_back(Event::ReplayRead(ReplayServe {
                    peer: from,
                    requester: h.node,
                    request_id: req.request_id,
                    log_node: req.log_node,
                    topic: Arc::from(req.topic),
                    from: req.from,
                    to: req.to,
                    max_bytes: req.max_bytes,
                }));
            }
            Body::ReplayData(data) => {
                self.replay.handle_data(now, &mut self.out, data);
            }
            Body::ReplayEnd(end) => {
                self.replay.handle_end(now, &mut self.out, end);
            }
            Body::Unknown { .. } => self.out.stats.datagrams_unknown_dropped += 1,
        }
    }

    fn note_came_back(out: &mut Outputs, r: &mut Receiver) {
        if r.take_came_back() {
            out.stats.sources_up += 1;
            out.events.push_back(Event::SourceUp {
                group: r.group(),
                source: r.source(),
                session: r.session(),
                addr: r.addr(),
                replaced: None,
            });
        }
    }

    /// Finds or creates the receiver for a source session. New sessions are
    /// only created from frames that arrived on a group socket.
    fn receiver_for(
        &mut self,
        now: Instant,
        from: SocketAddr,
        group: Option<GroupId>,
        h: &HeaderRepr,
        seen_seq: Seq,
        lowest: Seq,
    ) -> Option<(NodeId, SessionId)> {
        let key = (h.node, h.session);
        if !self.receivers.contains_key(&key) {
            if self.retired.contains(&key) {
                self.out.stats.datagrams_stale_session += 1;
                return None;
            }
            let group = group?;
            let cfg = self.groups.get(&group)?.cfg.clone();
            // A new session of a source we track replaces it (no growth).
            if self.receivers.len() >= MAX_RECEIVERS && !self.current.contains_key(&(group, h.node))
            {
                self.out.stats.sessions_refused += 1;
                return None;
            }
            // Join rule: a young session is taken from its start (we were
            // there, its first datagrams were lost); an old one from now on
            // (the log layer replays its past).
            let start = if seen_seq.0 <= cfg.join_backfill_seqs {
                lowest.min(seen_seq)
            } else {
                seen_seq
            };
            let replaced = self.current.insert((group, h.node), h.session);
            if let Some(old) = replaced {
                self.receivers.remove(&(h.node, old));
                self.out.stats.sessions_replaced += 1;
                if self.retired.len() >= MAX_RETIRED_SESSIONS {
                    self.retired.pop_front();
                }
                self.retired.push_back((h.node, old));
            }
            self.out.stats.sources_up += 1;
            self.out.events.push_back(Event::SourceUp {
                group,
                source: h.node,
                session: h.session,
                addr: from,
                replaced,
            });
            let r = Receiver::new(now, self.id, group, h.node, h.session, from, start, cfg);
            self.receivers.insert(key, r);
        }
        Some(key)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for g in self.groups.values_mut() {
            g.sender.handle_timeout(now, &mut self.out);
        }
        let mut forgotten = Vec::new();
        let crowded = self.receivers.len() * 4 >= MAX_RECEIVERS * 3;
        for (key, r) in self.receivers.iter_mut() {
            if r.is_forgotten(now) || (crowded && r.is_down()) {
                forgotten.push(*key);
            } else if r.is_silent(now) {
                if !r.is_down() {
                    r.set_down();
                    self.out.stats.sources_down += 1;
                    self.out.events.push_back(Event::SourceDown {
                        group: r.group(),
                        source: r.source(),
                        session: r.session(),
                    });
                }
            } else {
                r.handle_timeout(now, &mut self.out);
            }
        }
        for key in forgotten {
            if let Some(r) = self.receivers.remove(&key) {
                if self.current.get(&(r.group(), r.source())) == Some(&r.session()) {
                    self.current.remove(&(r.group(), r.source()));
                }
            }
        }
        self.replay.handle_timeout(now, &mut self.out);
        self.consumers.handle_timeout(now);
    }

    /// Next datagram to send and where, as the frame itself (no copy): the
    /// caller hands the bytes to the kernel.
    pub fn poll_transmit(&mut self) -> Option<(Dest, Bytes)> {
        self.queue_consumer_announcements();
        self.out.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let senders = self.groups.values().map(|g| g.sender.poll_timeout());
        let receivers = self.receivers.values().map(|r| r.poll_timeout());
        senders
            .chain(receivers)
            .chain(self.replay.poll_timeout())
            .chain(self.consumers.poll_timeout())
            .min()
    }

    pub fn stats(&self) -> &Stats {
        &self.out.stats
    }

    /// Asks `peer` for records of `log_node`'s log of `topic` in
    /// `[from, to)` (`to = Offset(u64::MAX)`: up to the tail).
    pub fn request_replay(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        log_node: NodeId,
        topic: &str,
        from: Offset,
        to: Offset,
    ) -> ReplayId {
        let id = self.id;
        self.replay
            .request(now, &mut self.out, id, peer, log_node, topic, from, to)
    }

    /// Stops a replay we asked for (no more events for it).
    pub fn cancel_replay(&mut self, id: ReplayId) {
        self.replay.cancel(id);
    }

    /// Answers a [`Event::ReplayRead`]: `records` are back-to-back records
    /// in the wire layout, read from the log, then the end marker.
    pub fn supply_replay_chunk(
        &mut self,
        _now: Instant,
        serve: &ReplayServe,
        records: &[u8],
        end: ReplayEnd,
    ) {
        super::replay::serve_chunk(&mut self.out, self.id, serve, records, end);
    }
}

/// Consumer groups (issue 6). The driver registers members, routes
/// delivered records and commits through [`consumers_mut`]; after every
/// input it drains [`ConsumerGroups::poll_event`] (after `poll_event`).
///
/// [`consumers_mut`]: Node::consumers_mut
impl Node {
    pub fn consumers(&self) -> &ConsumerGroups {
        &self.consumers
    }

    pub fn consumers_mut(&mut self) -> &mut ConsumerGroups {
        &mut self.consumers
    }

    /// Wraps the member lists and commits the groups want sent into
    /// ANNOUNCE (alive) frames, one copy per transport group, sized to the
    /// smallest MTU.
    fn queue_consumer_announcements(&mut self) {
        if !self.consumers.wants_announce() || self.groups.is_empty() {
            return;
        }
        let mtu = self
            .groups
            .values()
            .map(|g| g.cfg.mtu)
            .min()
            .unwrap_or(1400);
        let budget = mtu.saturating_sub(HEADER_LEN + 4 + self.name.len());
        for ext in self.consumers.take_announcements(budget) {
            for (gid, g) in &self.groups {
                let frame = announce_frame(
                    self.id,
                    g.sender.session(),
                    AnnounceKind::Alive,
                    &self.name,
                    &ext,
                );
                self.out.transmits.push_back((Dest::Group(*gid), frame));
            }
        }
    }
}

/// An ANNOUNCE of this node on one of its sessions.
fn announce_frame(
    node: NodeId,
    session: SessionId,
    kind: AnnounceKind,
    name: &str,
    extensions: &[u8],
) -> Bytes {
    emit(&FrameRepr {
        header: HeaderRepr {
            frame_type: FrameType::Announce,
            flags: Flags::default(),
            node,
            session,
        },
        body: Body::Announce(AnnounceRepr {
            kind,
            name,
            extensions,
        }),
    })
}
