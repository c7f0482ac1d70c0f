//! The source side of one session on one group: sequence numbers, batching
//! into datagrams up to the MTU, fragmentation, heartbeats, flow control from
//! receivers' STATUS, and answers to NAKs (repair, NCF, UNRECOVERABLE).
//!
//! Repair mechanics follow Aeron: duplicate NAKs for a seq repaired less than
//! `repair_linger` ago are coalesced, repairs are rate-limited, and (unlike
//! Aeron) NAKs below the window are answered with UNRECOVERABLE so the
//! receiver switches to log replay instead of asking forever.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::node::Outputs;
use super::ranges::{coalesce, expand};
use super::retransmit::RetransmitWindow;
use super::{Dest, Event, GroupConfig, GroupId, PublishError, Ticket};
use crate::wire::{
    self, record, Body, DataPayload, DataRepr, Flags, FragmentRepr, FrameRepr, FrameType,
    HeaderRepr, HeartbeatRepr, NcfRepr, NodeId, Offset, RecordRepr, Seq, SeqRange, SessionId,
    TopicAdvert, TopicId, UnrecoverableRepr,
};

/// A topic of this session: its name and the next offset it will carry.
struct TopicState {
    name: Arc<str>,
    next_offset: Offset,
}

struct ReceiverInfo {
    addr: SocketAddr,
    next_expected: Seq,
    last_heard: Instant,
}

pub struct Sender {
    node: NodeId,
    session: SessionId,
    group: GroupId,
    cfg: GroupConfig,
    next_seq: Seq,
    /// Name to id; ids are dense from 1 and index `topic_states` (id - 1).
    topics: HashMap<Arc<str>, TopicId>,
    topic_states: Vec<TopicState>,
    /// The last topic published: runs of one topic skip the hash lookup.
    last_topic: Option<TopicId>,
    advert_cursor: usize,
    /// Encoded records waiting to be sealed into the next DATA frame.
    pending: Vec<u8>,
    pending_count: u16,
    pending_ticket: Option<Ticket>,
    next_ticket: u64,
    window: RetransmitWindow,
    /// Every seq below it was received by every live receiver (or given up).
    ack_floor: Seq,
    unacked_bytes: usize,
    /// Last ticket carried by each sealed seq that carried one.
    tickets: VecDeque<(Seq, Ticket)>,
    receivers: BTreeMap<NodeId, ReceiverInfo>,
    heartbeat_at: Instant,
    heartbeat_interval: Duration,
    repair_queue: VecDeque<(Seq, Dest)>,
    repair_queued: HashSet<(Seq, Dest)>,
    /// When each (seq, dest) was last repaired, for `repair_linger`.
    repaired_at: HashMap<(Seq, Dest), Instant>,
    /// The same entries in the order they were made (so by time): pruning
    /// pops the front, instead of scanning the map on every publish.
    repaired_order: VecDeque<(Instant, (Seq, Dest))>,
    repair_tokens: f64,
    repair_tokens_at: Instant,
    repair_at: Option<Instant>,
    liveness_check_at: Instant,
    /// Sealed frames waiting for the data rate limit.
    paced: VecDeque<Bytes>,
    /// One past the highest seq actually handed out to send.
    sent_next: Seq,
    rate_tokens: f64,
    rate_at: Instant,
    pace_at: Option<Instant>,
}

impl Sender {
    pub fn new(
        now: Instant,
        node: NodeId,
        session: SessionId,
        group: GroupId,
        cfg: GroupConfig,
    ) -> Sender {
        Sender {
            node,
            session,
            group,
            next_seq: Seq(0),
            topics: HashMap::new(),
            topic_states: Vec::new(),
            last_topic: None,
            advert_cursor: 0,
            pending: Vec::with_capacity(cfg.mtu),
            pending_count: 0,
            pending_ticket: None,
            next_ticket: 0,
            window: RetransmitWindow::new(Seq(0)),
            ack_floor: Seq(0),
            unacked_bytes: 0,
            tickets: VecDeque::new(),
            receivers: BTreeMap::new(),
            // The first heartbeat goes out at once so receivers learn the
            // session (and start acknowledging) before the first data.
            heartbeat_at: now,
            heartbeat_interval: cfg.heartbeat_interval_min,
            repair_queue: VecDeque::new(),
            repair_queued: HashSet::new(),
            repaired_at: HashMap::new(),
            repaired_order: VecDeque::new(),
            repair_tokens: 0.0,
            repair_tokens_at: now,
            repair_at: None,
            liveness_check_at: now + cfg.liveness_timeout,
            paced: VecDeque::new(),
            sent_next: Seq(0),
            rate_tokens: 0.0,
            rate_at: now,
            pace_at: None,
            cfg,
        }
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Live receivers that have not yet acknowledged `ticket` (for a sync
    /// publish that timed out, to name who held it up).
    pub fn receivers_behind(&self, ticket: Ticket) -> Vec<NodeId> {
        let seq = self
            .tickets
            .iter()
            .find(|(_, t)| *t >= ticket)
            .map(|(s, _)| *s)
            .unwrap_or(self.next_seq);
        self.receivers
            .iter()
            .filter(|(_, r)| r.next_expected <= seq)
            .map(|(n, _)| *n)
            .collect()
    }

    /// When a receiver was last heard from (its STATUS), if it is live.
    pub fn receiver_heard(&self, node: NodeId) -> Option<Instant> {
        self.receivers.get(&node).map(|r| r.last_heard)
    }

    pub fn live_receivers(&self) -> usize {
        self.receivers.len()
    }

    /// Bytes of record payload that fit in one DATA frame.
    fn batch_capacity(&self) -> usize {
        self.cfg
            .mtu
            .saturating_sub(wire::HEADER_LEN + wire::DATA_HEADER_LEN)
    }

    fn header(&self, frame_type: FrameType, flags: Flags) -> HeaderRepr {
        HeaderRepr {
            frame_type,
            flags,
            node: self.node,
            session: self.session,
        }
    }

    /// Whether the flow window has room for more data.
    pub fn can_publish(&self) -> bool {
        self.unacked_bytes < self.cfg.flow_window_bytes
    }

    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        topic: &str,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<Ticket, PublishError> {
        if value.len() > self.cfg.max_record_bytes || key.len() > usize::from(u16::MAX) {
            return Err(PublishError::RecordTooLarge {
                size: value.len() + key.len(),
                max: self.cfg.max_record_bytes,
            });
        }
        if topic.len() > usize::from(u16::MAX) {
            return Err(PublishError::TopicTooLong { len: topic.len() });
        }
        if !self.can_publish() {
            out.stats.publish_backpressured += 1;
            return Err(PublishError::Backpressure {
                unacked_bytes: self.unacked_bytes,
            });
        }
        let cached = self.last_topic.filter(|id| {
            self.topic_states
                .get(id.0 as usize - 1)
                .is_some_and(|t| *t.name == *topic)
        });
        let topic_id = match cached.or_else(|| self.topics.get(topic).copied()) {
            Some(id) => id,
            None => {
                let id = TopicId(self.topic_states.len() as u32 + 1);
                let name: Arc<str> = Arc::from(topic);
                self.topics.insert(name.clone(), id);
                self.topic_states.push(TopicState {
                    name,
                    next_offset: offset,
                });
                let id_bytes = id.0.to_be_bytes();
                let decl = RecordRepr {
                    topic: record::DECLARATION_TOPIC,
                    offset,
                    timestamp_ms,
                    key: topic.as_bytes(),
                    value: &id_bytes,
                };
                self.push_record(now, out, &decl, None);
                id
            }
        };
        self.last_topic = Some(topic_id);
        if let Some(t) = self.topic_states.get_mut(topic_id.0 as usize - 1) {
            t.next_offset = offset.next();
        }
        let rec = RecordRepr {
            topic: topic_id,
            offset,
            timestamp_ms,
            key,
            value,
        };
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.push_record(now, out, &rec, Some(ticket));
        out.stats.records_published += 1;
        Ok(ticket)
    }

    fn push_record(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        rec: &RecordRepr,
        ticket: Option<Ticket>,
    ) {
        let len = rec.buffer_len();
        let cap = self.batch_capacity();
        if self.pending.len() + len > cap || self.pending_count == u16::MAX {
            self.seal(now, out);
        }
        if len > cap {
            self.send_fragmented(now, out, rec);
            if let Some(t) = ticket {
                // The ticket rides on the last fragment.
                self.tickets
                    .push_back((Seq(self.next_seq.0.saturating_sub(1)), t));
                let floor = self.ack_floor;
                self.advance_floor(out, floor);
            }
            return;
        }
        if rec.emit_to_vec(&mut self.pending).is_ok() {
            self.pending_count += 1;
            if ticket.is_some() {
                self.pending_ticket = ticket;
            }
        }
        if self.pending.len() + record::HEADER_LEN >= cap {
            self.seal(now, out);
        }
    }

    /// Seals pending records into a DATA frame (batches favour latency when
    /// idle: the driver calls this after draining its input).
    pub fn flush(&mut self, now: Instant, out: &mut Outputs) {
        self.seal(now, out);
    }

    fn seal(&mut self, now: Instant, out: &mut Outputs) {
        if self.pending_count == 0 {
            return;
        }
        let repr = FrameRepr {
            header: self.header(FrameType::Data, Flags::default()),
            body: Body::Data(DataRepr {
                seq: self.next_seq,
                payload: DataPayload::Records {
                    count: self.pending_count,
                    bytes: &self.pending,
                },
            }),
        };
        let frame = emit(&repr);
        self.pending.clear();
        self.pending_count = 0;
        if let Some(t) = self.pending_ticket.take() {
            self.tickets.push_back((self.next_seq, t));
        }
        self.send_new(now, out, frame);
    }

    fn send_fragmented(&mut self, now: Instant, out: &mut Outputs, rec: &RecordRepr) {
        let mut encoded = Vec::with_capacity(rec.buffer_len());
        if rec.emit_to_vec(&mut encoded).is_err() {
            return;
        }
        let chunk_len = self
            .batch_capacity()
            .saturating_sub(wire::FRAGMENT_HEADER_LEN)
            .max(1);
        let total_len = encoded.len() as u32;
        for (i, chunk) in encoded.chunks(chunk_len).enumerate() {
            let repr = FrameRepr {
                header: self.header(FrameType::Data, Flags::FRAGMENT),
                body: Body::Data(DataRepr {
                    seq: self.next_seq,
                    payload: DataPayload::Fragment(FragmentRepr {
                        total_len,
                        frag_offset: (i * chunk_len) as u32,
                        chunk,
                    }),
                }),
            };
            let frame = emit(&repr);
            self.send_new(now, out, frame);
        }
    }

    fn send_new(&mut self, now: Instant, out: &mut Outputs, frame: Bytes) {
        self.next_seq = self.next_seq.next();
        self.unacked_bytes += frame.len();
        self.window.push(frame.clone());
        self.paced.push_back(frame);
        self.release(now, out);
        if self.receivers.is_empty() {
            self.advance_floor(out, self.next_seq);
        }
        self.trim_window(out);
    }

    /// Hands sealed frames to the network as the data rate limit allows.
    fn release(&mut self, now: Instant, out: &mut Outputs) {
        let rate = self.cfg.rate_limit_bytes_per_sec as f64;
        self.pace_at = None;
        if rate > 0.0 {
            let dt = now.saturating_duration_since(self.rate_at).as_secs_f64();
            let burst = (rate / 100.0).max((self.cfg.mtu * 4) as f64);
            self.rate_tokens = (self.rate_tokens + dt * rate).min(burst);
            self.rate_at = now;
        }
        let mut sent_any = false;
        while let Some(frame) = self.paced.front() {
            if rate > 0.0 {
                if self.rate_tokens < 0.0 {
                    let wait = -self.rate_tokens / rate;
                    self.pace_at = Some(now + Duration::from_secs_f64(wait));
                    break;
                }
                self.rate_tokens -= frame.len() as f64;
            }
            let Some(frame) = self.paced.pop_front() else {
                break;
            };
            out.queue(Dest::Group(self.group), frame);
            out.stats.data_frames_sent += 1;
            self.sent_next = self.sent_next.next();
            sent_any = true;
        }
        if sent_any {
            // Heartbeats come fast right after data so tail loss shows up soon.
            self.heartbeat_interval = self.cfg.heartbeat_interval_min;
            self.heartbeat_at = now + self.heartbeat_interval;
        }
    }

    /// Drops frames past the byte budget that every live receiver has (or
    /// any frame, when there is no live receiver to protect).
    fn trim_window(&mut self, out: &mut Outputs) {
        while self.window.bytes() > self.cfg.retransmit_window_bytes {
            let base = self.window.base();
            if base >= self.ack_floor {
                if !self.receivers.is_empty() {
                    break;
                }
                out.stats.window_evicted_unacked += 1;
                self.advance_floor(out, base.next());
            }
            self.window.pop_front();
        }
    }

    /// Forgets repairs older than `repair_linger` (they no longer hold a
    /// NAK back) or below the window (never asked about again).
    fn forget_old_repairs(&mut self, now: Instant) {
        let base = self.window.base();
        while let Some(&(at, key)) = self.repaired_order.front() {
            let lingering = now.saturating_duration_since(at) < self.cfg.repair_linger;
            if lingering && key.0 >= base {
                break;
            }
            self.repaired_order.pop_front();
            // A later repair of the same key has its own, newer entry.
            if self.repaired_at.get(&key) == Some(&at) {
                self.repaired_at.remove(&key);
            }
        }
    }

    fn advance_floor(&mut self, out: &mut Outputs, to: Seq) {
        if to > self.ack_floor {
            let mut s = self.ack_floor.max(self.window.base());
            while s < to {
                if let Some(f) = self.window.get(s) {
                    self.unacked_bytes = self.unacked_bytes.saturating_sub(f.len());
                }
                s = s.next();
            }
            self.ack_floor = to;
        }
        let floor = self.ack_floor;
        let mut acked = None;
        while let Some(&(seq, t)) = self.tickets.front() {
            if seq >= floor {
                break;
            }
            acked = Some(t);
            self.tickets.pop_front();
        }
        if let Some(ticket) = acked {
            out.events.push_back(Event::Acked {
                group: self.group,
                ticket,
            });
        }
    }

    fn recompute_floor(&mut self, out: &mut Outputs) {
        let min = self
            .receivers
            .values()
            .map(|r| r.next_expected)
            .min()
            .unwrap_or(self.next_seq);
        self.advance_floor(out, min.min(self.next_seq));
        self.trim_window(out);
    }

    pub fn handle_status(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        from: SocketAddr,
        receiver: NodeId,
        next_expected: Seq,
    ) {
        out.stats.status_received += 1;
        let next_expected = next_expected.min(self.next_seq);
        match self.receivers.get_mut(&receiver) {
            Some(r) => {
                r.addr = from;
                r.last_heard = now;
                r.next_expected = r.next_expected.max(next_expected);
            }
            None => {
                self.receivers.insert(
                    receiver,
                    ReceiverInfo {
                        addr: from,
                        // A receiver that joins behind the floor is a late
                        // joiner: it does not pull the floor back.
                        next_expected: next_expected.max(self.ack_floor),
                        last_heard: now,
                    },
                );
                out.stats.receivers_up += 1;
                out.events.push_back(Event::ReceiverUp {
                    group: self.group,
                    receiver,
                    addr: from,
                });
            }
        }
        self.recompute_floor(out);
    }

    pub fn handle_nak(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        from: SocketAddr,
        ranges: &[SeqRange],
    ) {
        out.stats.naks_received += 1;
        // On a shared medium a repair (and the NCF that suppresses other
        // receivers' NAKs) goes to the group, so every receiver that lost the
        // datagram gets it. With at most one live receiver there is nobody
        // else to serve: the repair goes to the NAKer's unicast socket,
        // where it is read at once instead of behind the group socket's
        // queue of newer data (measured: 11 ms from NAK to repair at 300
        // MB/s, which held the flow window shut for most of a lossy run).
        let shared = self.cfg.kind.is_shared_medium() && self.receivers.len() > 1;
        let dest = if shared {
            Dest::Group(self.group)
        } else {
            Dest::Peer(from)
        };
        let base = self.window.base();
        let end = self.sent_next;
        let mut refused = Vec::new();
        let mut confirmed = Vec::new();
        let limit = (self.cfg.retransmit_window_bytes / 64).max(1024) as u64;
        for seq in expand(ranges, limit) {
            if seq >= end {
                continue; // never sent: a confused or hostile peer
            }
            if seq < base {
                refused.push(seq);
                continue;
            }
            confirmed.push(seq);
            let key = (seq, dest);
            if self.repair_queued.contains(&key) {
                out.stats.naks_coalesced += 1;
                continue;
            }
            if let Some(at) = self.repaired_at.get(&key) {
                if now.saturating_duration_since(*at) < self.cfg.repair_linger {
                    out.stats.naks_coalesced += 1;
                    continue;
                }
            }
            self.repair_queued.insert(key);
            self.repair_queue.push_back(key);
        }
        if shared && !confirmed.is_empty() {
            let ranges = coalesce(confirmed);
            for chunk in ranges.chunks(self.max_ranges()) {
                let repr = FrameRepr {
                    header: self.header(FrameType::Ncf, Flags::default()),
                    body: Body::Ncf(NcfRepr {
                        ranges: chunk.to_vec(),
                    }),
                };
                out.queue(Dest::Group(self.group), emit(&repr));
                out.stats.ncfs_sent += 1;
            }
        }
        if !refused.is_empty() {
            out.stats.repairs_refused += refused.len() as u64;
            let ranges = coalesce(refused);
            for chunk in ranges.chunks(self.max_ranges()) {
                let repr = FrameRepr {
                    header: self.header(FrameType::Unrecoverable, Flags::default()),
                    body: Body::Unrecoverable(UnrecoverableRepr {
                        lowest_repairable: base,
                        ranges: chunk.to_vec(),
                    }),
                };
                out.queue(Dest::Peer(from), emit(&repr));
                out.stats.unrecoverable_sent += 1;
            }
        }
        self.send_repairs(now, out);
    }

    fn max_ranges(&self) -> usize {
        (self.cfg.mtu.saturating_sub(wire::HEADER_LEN + 12) / 16).max(1)
    }

    fn send_repairs(&mut self, now: Instant, out: &mut Outputs) {
        let rate = self.cfg.repair_rate_bytes_per_sec as f64;
        if rate > 0.0 {
            let dt = now
                .saturating_duration_since(self.repair_tokens_at)
                .as_secs_f64();
            let burst = (self.cfg.mtu * 16) as f64;
            self.repair_tokens = (self.repair_tokens + dt * rate).min(burst);
            self.repair_tokens_at = now;
        }
        self.repair_at = None;
        while let Some(&(seq, dest)) = self.repair_queue.front() {
            let Some(frame) = self.window.get(seq) else {
                // Slid out of the window while queued.
                self.repair_queue.pop_front();
                self.repair_queued.remove(&(seq, dest));
                continue;
            };
            if rate > 0.0 {
                let need = frame.len() as f64;
                if self.repair_tokens < need {
                    let wait = (need - self.repair_tokens) / rate;
                    self.repair_at = Some(now + Duration::from_secs_f64(wait));
                    return;
                }
                self.repair_tokens -= need;
            }
            let mut bytes = frame.to_vec();
            let flags = wire::Frame::new_checked(&bytes[..])
                .map(|f| f.flags())
                .unwrap_or_default();
            if wire::rewrite_flags(&mut bytes, flags.with(Flags::REPAIR)).is_ok() {
                out.queue(dest, Bytes::from(bytes));
                out.stats.repairs_sent += 1;
            }
            self.repair_queue.pop_front();
            self.repair_queued.remove(&(seq, dest));
            self.repaired_at.insert((seq, dest), now);
            self.repaired_order.push_back((now, (seq, dest)));
        }
        self.forget_old_repairs(now);
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outputs) {
        if self.pace_at.is_some_and(|t| t <= now) {
            self.release(now, out);
        }
        if self.repair_at.is_some_and(|t| t <= now) {
            self.send_repairs(now, out);
        }
        if self.heartbeat_at <= now {
            self.send_heartbeat(out);
            self.heartbeat_interval =
                (self.heartbeat_interval * 2).min(self.cfg.heartbeat_interval_max);
            self.heartbeat_at = now + self.heartbeat_interval;
        }
        if self.liveness_check_at <= now {
            let timeout = self.cfg.liveness_timeout;
            let gone: Vec<NodeId> = self
                .receivers
                .iter()
                .filter(|(_, r)| now.saturating_duration_since(r.last_heard) > timeout)
                .map(|(n, _)| *n)
                .collect();
            for receiver in gone {
                self.receivers.remove(&receiver);
                out.stats.receivers_down += 1;
                out.events.push_back(Event::ReceiverDown {
                    group: self.group,
                    receiver,
                });
            }
            self.recompute_floor(out);
            self.liveness_check_at = now + timeout / 4;
        }
    }

    fn send_heartbeat(&mut self, out: &mut Outputs) {
        let mut topics = Vec::new();
        let mut room = self.cfg.mtu.saturating_sub(wire::HEADER_LEN + 24);
        let n = self.topic_states.len();
        for i in 0..n {
            let idx = (self.advert_cursor + i) % n;
            let Some(t) = self.topic_states.get(idx) else {
                break;
            };
            let need = 14 + t.name.len();
            if need > room {
                break;
            }
            room -= need;
            topics.push(TopicAdvert {
                topic: TopicId(idx as u32 + 1),
                next_offset: t.next_offset,
                name: &t.name,
            });
        }
        let advertised = topics.len();
        let repr = FrameRepr {
            header: self.header(FrameType::Heartbeat, Flags::default()),
            body: Body::Heartbeat(HeartbeatRepr {
                next_seq: self.sent_next,
                lowest_repairable: self.window.base(),
                interval_ms: u32::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u32::MAX),
                topics,
            }),
        };
        let frame = emit(&repr);
        if n > 0 {
            self.advert_cursor = (self.advert_cursor + advertised) % n;
        }
        out.queue(Dest::Group(self.group), frame);
        out.stats.heartbeats_sent += 1;
    }

    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.heartbeat_at.min(self.liveness_check_at);
        if let Some(r) = self.repair_at {
            t = t.min(r);
        }
        if let Some(p) = self.pace_at {
            t = t.min(p);
        }
        t
    }
}

/// Emits a frame into a fresh buffer. Our own reprs always fit their
/// `buffer_len`; a failure would be a bug, reported as an empty frame that
/// receivers count as malformed rather than a panic.
pub(crate) fn emit(repr: &FrameRepr) -> Bytes {
    let mut buf = vec![0u8; repr.buffer_len()];
    match repr.emit(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Bytes::from(buf)
        }
        Err(e) => {
            log::error!("frame emit failed error={e}");
            Bytes::new()
        }
    }
}
