//! The receiving side of one source session: gap detection, randomized NAKs
//! with suppression and backoff, in-order exactly-once delivery, fragment
//! reassembly, STATUS for flow control, and giving up with an explicit gap.
//!
//! NAK timing follows SRM/PGM/Aeron: a gap waits a random delay in
//! `0..nak_delay_max` before the NAK, so that on a shared medium the first
//! receiver's NAK (confirmed to all by the source's NCF) suppresses the
//! others; after a NAK or a suppression the receiver waits for the repair
//! with exponential backoff, and after `nak_max_retries` reports a gap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::node::Outputs;
use super::ranges::{coalesce, expand};
use super::sender::emit;
use super::{DeliveredRecords, Dest, Event, GroupConfig, GroupId};
use crate::wire::{
    Body, DataPayload, Flags, Frame, FrameRepr, FrameType, HeaderRepr, HeartbeatRepr, NakRepr,
    NodeId, Offset, RecordRepr, Seq, SeqRange, SessionId, StatusRepr, TopicId,
};

#[derive(Debug, Clone, Copy)]
struct NakState {
    deadline: Instant,
    retries: u32,
}

pub struct Receiver {
    own_node: NodeId,
    group: GroupId,
    source: NodeId,
    session: SessionId,
    addr: SocketAddr,
    cfg: GroupConfig,
    next_deliver: Seq,
    /// One past the highest seq known to exist.
    highest_next: Seq,
    buffer: BTreeMap<Seq, Bytes>,
    buffered_bytes: usize,
    missing: BTreeMap<Seq, NakState>,
    abandoned: BTreeSet<Seq>,
    topics: TopicTable,
    reassembly: Option<Vec<u8>>,
    last_heard: Instant,
    status_sent_at: Option<Instant>,
    status_sent_next: Seq,
    nak_deadline: Option<Instant>,
    down: bool,
    came_back: bool,
    /// Scratch for `deliver_frame`, kept to avoid an allocation per frame.
    runs: Vec<(TopicId, Offset, usize)>,
}

impl Receiver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        own_node: NodeId,
        group: GroupId,
        source: NodeId,
        session: SessionId,
        addr: SocketAddr,
        start: Seq,
        cfg: GroupConfig,
    ) -> Receiver {
        Receiver {
            own_node,
            group,
            source,
            session,
            addr,
            cfg,
            next_deliver: start,
            highest_next: start,
            buffer: BTreeMap::new(),
            buffered_bytes: 0,
            missing: BTreeMap::new(),
            abandoned: BTreeSet::new(),
            topics: TopicTable::default(),
            reassembly: None,
            last_heard: now,
            status_sent_at: None,
            status_sent_next: start,
            nak_deadline: None,
            down: false,
            came_back: false,
            runs: Vec::new(),
        }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn source(&self) -> NodeId {
        self.source
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn is_silent(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard) > self.cfg.liveness_timeout
    }

    /// Silent so long that its state is not worth keeping: a session that
    /// comes back after a short silence resumes where it was (and learns
    /// what it missed through NAKs, UNRECOVERABLE and gaps); one that comes
    /// back after this starts afresh.
    pub fn is_forgotten(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard) > self.cfg.liveness_timeout * 10
    }

    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    pub fn is_down(&self) -> bool {
        self.down
    }

    pub fn set_down(&mut self) {
        self.down = true;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn heard(&mut self, now: Instant, from: SocketAddr) {
        self.last_heard = now;
        self.addr = from;
        if self.down {
            self.down = false;
            self.came_back = true;
        }
    }

    /// Whether the source spoke again after being reported down (once).
    pub fn take_came_back(&mut self) -> bool {
        std::mem::take(&mut self.came_back)
    }

    /// Marks `[highest_next, up_to)` missing: these will be NAKed after one
    /// shared random delay, so a burst of loss goes out as one NAK.
    fn extend_to(&mut self, now: Instant, out: &mut Outputs, up_to: Seq) {
        if up_to <= self.highest_next {
            return;
        }
        let max_span = (self.cfg.receive_window_bytes / 64).max(1024) as u64;
        let from = self.highest_next.max(Seq(up_to.0.saturating_sub(max_span)));
        if from > self.highest_next {
            // A jump beyond what we could ever buffer: give up on the part
            // that does not fit; the log layer fills it.
            for s in self.highest_next.0..from.0 {
                self.abandon(out, Seq(s));
            }
        }
        let delay = out.rng.below(self.cfg.nak_delay_max.as_nanos() as u64 + 1);
        let deadline = now + Duration::from_nanos(delay);
        let mut s = from;
        let mut any = false;
        while s < up_to {
            if !self.buffer.contains_key(&s) {
                self.missing.insert(
                    s,
                    NakState {
                        deadline,
                        retries: 0,
                    },
                );
                any = true;
            }
            s = s.next();
        }
        if any {
            out.stats.gaps_detected += 1;
            self.nak_deadline = Some(self.nak_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        self.highest_next = up_to;
    }

    pub fn handle_data(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        from: SocketAddr,
        header: &HeaderRepr,
        seq: Seq,
        frame: Bytes,
    ) {
        self.heard(now, from);
        out.stats.data_frames_received += 1;
        let is_repair = header.flags.contains(Flags::REPAIR);
        if seq < self.next_deliver
            || self.buffer.contains_key(&seq)
            || self.abandoned.contains(&seq)
        {
            out.stats.duplicates_dropped += 1;
            return;
        }
        // A full buffer refuses only new data beyond what we have seen: the
        // seqs we are waiting for (the head above all) are always taken, or
        // a buffer full of later data would refuse the very repair that
        // lets it drain.
        if seq >= self.highest_next
            && self.buffered_bytes + frame.len() > self.cfg.receive_window_bytes
        {
            out.stats.out_of_window_dropped += 1;
            return;
        }
        if self.missing.remove(&seq).is_some() && is_repair {
            out.stats.repairs_received += 1;
        }
        self.extend_to(now, out, seq);
        self.highest_next = self.highest_next.max(seq.next());
        // In order with nothing waiting (the common case): delivered without
        // a trip through the reorder buffer.
        if seq == self.next_deliver && self.buffer.is_empty() && self.deliver_frame(out, &frame) {
            self.next_deliver = seq.next();
            self.deliver(out);
            return;
        }
        self.buffered_bytes += frame.len();
        self.buffer.insert(seq, frame);
        self.deliver(out);
    }

    pub fn handle_heartbeat(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        from: SocketAddr,
        hb: &HeartbeatRepr,
    ) {
        self.heard(now, from);
        out.stats.heartbeats_received += 1;
        for t in &hb.topics {
            if !self.topics.contains(t.topic) {
                let name: Arc<str> = Arc::from(t.name);
                if !self.topics.insert(t.topic, name.clone()) {
                    continue;
                }
                out.events.push_back(Event::TopicSeen {
                    group: self.group,
                    source: self.source,
                    topic: name,
                    next_offset: t.next_offset,
                });
            }
        }
        self.extend_to(now, out, hb.next_seq);
        self.give_up_below(out, hb.lowest_repairable);
        self.deliver(out);
    }

    pub fn handle_ncf(&mut self, now: Instant, out: &mut Outputs, ranges: &[SeqRange]) {
        out.stats.ncfs_received += 1;
        let limit = self.missing.len() as u64 * 2 + 1024;
        for seq in expand(ranges, limit) {
            if let Some(st) = self.missing.get_mut(&seq) {
                if st.retries == 0 && st.deadline > now {
                    out.stats.naks_suppressed += 1;
                }
                // Someone asked: wait for the repair instead of asking too.
                let jitter = Duration::from_nanos(
                    out.rng.below(self.cfg.nak_delay_max.as_nanos() as u64 + 1),
                );
                st.deadline = now + backoff(self.cfg.nak_retry_interval, st.retries) + jitter;
                st.retries = st.retries.max(1);
            }
        }
        self.nak_deadline = None; // recomputed lazily
    }

    pub fn handle_unrecoverable(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        from: SocketAddr,
        lowest_repairable: Seq,
        ranges: &[SeqRange],
    ) {
        self.heard(now, from);
        out.stats.unrecoverable_received += 1;
        let limit = self.missing.len() as u64 + 1;
        let seqs: Vec<Seq> = expand(ranges, limit.max(1024))
            .filter(|s| self.missing.contains_key(s))
            .collect();
        for s in seqs {
            self.abandon(out, s);
        }
        self.give_up_below(out, lowest_repairable);
        self.deliver(out);
    }

    fn give_up_below(&mut self, out: &mut Outputs, lowest: Seq) {
        let doomed: Vec<Seq> = self.missing.range(..lowest).map(|(s, _)| *s).collect();
        for s in doomed {
            self.abandon(out, s);
        }
    }

    fn abandon(&mut self, out: &mut Outputs, seq: Seq) {
        self.missing.remove(&seq);
        if seq >= self.next_deliver && !self.buffer.contains_key(&seq) {
            self.abandoned.insert(seq);
            out.stats.seqs_lost += 1;
        }
    }

    /// Delivers everything contiguous from `next_deliver`.
    fn deliver(&mut self, out: &mut Outputs) {
        let mut gap_start: Option<Seq> = None;
        loop {
            let seq = self.next_deliver;
            if self.abandoned.remove(&seq) {
                gap_start.get_or_insert(seq);
                if self.reassembly.take().is_some() {
                    out.stats.fragments_dropped += 1;
                }
                self.next_deliver = seq.next();
                continue;
            }
            let Some(frame) = self.buffer.get(&seq).cloned() else {
                break;
            };
            // The gap goes out before the records after it: a driver that
            // fills gaps from a log must hold those records until the fill is
            // done, so it has to know of the gap when they arrive.
            if let Some(start) = gap_start.take() {
                self.report_gap(out, start, seq);
            }
            if !self.deliver_frame(out, &frame) {
                break; // held: a topic id whose name we have not learned yet
            }
            self.buffer.remove(&seq);
            self.buffered_bytes -= frame.len();
            self.next_deliver = seq.next();
        }
        if let Some(start) = gap_start {
            self.report_gap(out, start, self.next_deliver);
        }
    }

    fn report_gap(&mut self, out: &mut Outputs, start: Seq, end: Seq) {
        out.stats.gaps_reported += 1;
        out.events.push_back(Event::Gap {
            group: self.group,
            source: self.source,
            session: self.session,
            seqs: SeqRange { start, end },
        });
    }

    /// Returns false (and delivers nothing) when the frame names a topic id
    /// we cannot name yet.
    fn deliver_frame(&mut self, out: &mut Outputs, frame: &Bytes) -> bool {
        // The CRC was checked on arrival; only the body is parsed again.
        let view = Frame::new_unchecked(&frame[..]);
        let Ok(Body::Data(data)) = Body::parse(view.frame_type(), view.flags(), view.payload())
        else {
            return true; // invariant: validated on arrival; skip if not
        };
        match data.payload {
            DataPayload::Records { bytes, .. } => {
                let mut declared: Vec<TopicId> = Vec::new();
                for rec in data.payload.records() {
                    if let Some((id, _)) = rec.declaration() {
                        declared.push(id);
                    } else if !self.topics.contains(rec.topic) && !declared.contains(&rec.topic) {
                        out.stats.records_held_unknown_topic += 1;
                        return false;
                    }
                }
                // (topic, offset expected before this frame, records taken)
                let mut runs = std::mem::take(&mut self.runs);
                for rec in data.payload.records() {
                    if let Some(from) = self.accept(out, &rec) {
                        match runs.iter_mut().find(|(t, _, _)| *t == rec.topic) {
                            Some(run) => run.2 += 1,
                            None => runs.push((rec.topic, from, 1)),
                        }
                    }
                }
                let batch = frame.slice_ref(bytes);
                for (topic, from, count) in runs.drain(..) {
                    self.emit_deliver(out, &batch, topic, from, count);
                }
                self.runs = runs;
            }
            DataPayload::Fragment(f) => {
                let max_total = self.cfg.max_record_bytes
                    + crate::wire::record::HEADER_LEN
                    + usize::from(u16::MAX);
                if f.frag_offset == 0 {
                    if self.reassembly.take().is_some() {
                        out.stats.fragments_dropped += 1;
                    }
                    if f.total_len as usize > max_total {
                        out.stats.fragments_dropped += 1;
                        return true;
                    }
                    self.reassembly = Some(Vec::with_capacity(f.total_len as usize));
                }
                let Some(buf) = self.reassembly.as_mut() else {
                    out.stats.fragments_dropped += 1;
                    return true;
                };
                if buf.len() != f.frag_offset as usize {
                    self.reassembly = None;
                    out.stats.fragments_dropped += 1;
                    return true;
                }
                buf.extend_from_slice(f.chunk);
                if buf.len() >= f.total_len as usize {
                    let whole = Bytes::from(self.reassembly.take().unwrap_or_default());
                    match RecordRepr::parse(&whole) {
                        Ok(rec) => {
                            if !self.topics.contains(rec.topic) && rec.declaration().is_none() {
                                // A late joiner that never learned this topic's
                                // name: the log layer replays it by name.
                                out.stats.fragments_dropped += 1;
                                return true;
                            }
                            if let Some(from) = self.accept(out, &rec) {
                                self.emit_deliver(out, &whole, rec.topic, from, 1);
                            }
                        }
                        Err(_) => out.stats.fragments_dropped += 1,
                    }
                }
            }
        }
        true
    }

    /// Learns a declaration, or decides whether a record is delivered (its
    /// offset at or past the topic's next); returns the topic's next offset
    /// from before it if so.
    fn accept(&mut self, out: &mut Outputs, rec: &RecordRepr) -> Option<Offset> {
        if let Some((id, name)) = rec.declaration() {
            if !self.topics.contains(id) {
                let name: Arc<str> = Arc::from(name);
                if !self.topics.insert(id, name.clone()) {
                    return None;
                }
                out.events.push_back(Event::TopicSeen {
                    group: self.group,
                    source: self.source,
                    topic: name,
                    next_offset: rec.offset,
                });
            }
            return None;
        }
        let slot = self.topics.get_mut(rec.topic)?;
        let from = slot.next.unwrap_or(Offset(0));
        if rec.offset < from {
            out.stats.duplicates_dropped += 1;
            return None;
        }
        slot.next = Some(rec.offset.next());
        out.stats.records_delivered += 1;
        out.stats.bytes_delivered += rec.value.len() as u64;
        Some(from)
    }

    /// One event for the records of `topic` in `batch` that `accept` took.
    fn emit_deliver(
        &self,
        out: &mut Outputs,
        batch: &Bytes,
        topic: TopicId,
        from: Offset,
        count: usize,
    ) {
        let Some(name) = self.topics.name(topic) else {
            return; // invariant: accept found the topic
        };
        out.events.push_back(Event::Deliver {
            group: self.group,
            source: self.source,
            session: self.session,
            topic: name.clone(),
            records: DeliveredRecords::new(batch.clone(), topic, from, count),
        });
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outputs) {
        if self.nak_deadline.is_none_or(|d| d <= now) {
            self.fire_naks(now, out);
        }
        let progressed = self.next_deliver > self.status_sent_next;
        let due = match self.status_sent_at {
            None => true,
            Some(at) => {
                let since = now.saturating_duration_since(at);
                (progressed && since >= self.cfg.status_interval)
                    || since >= self.cfg.status_keepalive
            }
        };
        if due {
            self.send_status(now, out);
        }
    }

    fn fire_naks(&mut self, now: Instant, out: &mut Outputs) {
        let mut ask = Vec::new();
        let mut give_up = Vec::new();
        let mut next: Option<Instant> = None;
        // Retries are spread like first NAKs, so receivers that were
        // suppressed together do not all ask again at the same instant.
        let jitter =
            Duration::from_nanos(out.rng.below(self.cfg.nak_delay_max.as_nanos() as u64 + 1));
        for (seq, st) in self.missing.iter_mut() {
            if st.deadline <= now {
                if st.retries >= self.cfg.nak_max_retries {
                    give_up.push(*seq);
                    continue;
                }
                ask.push(*seq);
                st.retries += 1;
                st.deadline = now + backoff(self.cfg.nak_retry_interval, st.retries - 1) + jitter;
            }
            next = Some(next.map_or(st.deadline, |n: Instant| n.min(st.deadline)));
        }
        for s in give_up {
            self.abandon(out, s);
        }
        if !self.missing.is_empty() || !ask.is_empty() {
            self.nak_deadline = next;
        } else {
            self.nak_deadline = None;
        }
        if !ask.is_empty() {
            out.stats.nak_seqs_requested += ask.len() as u64;
            let ranges = coalesce(ask);
            let per_frame = (self.cfg.mtu.saturating_sub(crate::wire::HEADER_LEN + 12) / 16).max(1);
            for chunk in ranges.chunks(per_frame) {
                let repr = FrameRepr {
                    header: HeaderRepr {
                        frame_type: FrameType::Nak,
                        flags: Flags::default(),
                        node: self.own_node,
                        session: self.session,
                    },
                    body: Body::Nak(NakRepr {
                        source: self.source,
                        ranges: chunk.to_vec(),
                    }),
                };
                out.queue(Dest::Peer(self.addr), emit(&repr));
                out.stats.naks_sent += 1;
            }
        }
        self.deliver(out);
    }

    fn send_status(&mut self, now: Instant, out: &mut Outputs) {
        let window = self
            .cfg
            .receive_window_bytes
            .saturating_sub(self.buffered_bytes);
        let repr = FrameRepr {
            header: HeaderRepr {
                frame_type: FrameType::Status,
                flags: Flags::default(),
                node: self.own_node,
                session: self.session,
            },
            body: Body::Status(StatusRepr {
                source: self.source,
                next_expected: self.next_deliver,
                receive_window: u32::try_from(window).unwrap_or(u32::MAX),
            }),
        };
        out.queue(Dest::Peer(self.addr), emit(&repr));
        out.stats.status_sent += 1;
        self.status_sent_at = Some(now);
        self.status_sent_next = self.next_deliver;
    }

    pub fn poll_timeout(&self) -> Instant {
        let status = match self.status_sent_at {
            None => self.last_heard,
            Some(at) => {
                if self.next_deliver > self.status_sent_next {
                    at + self.cfg.status_interval
                } else {
                    at + self.cfg.status_keepalive
                }
            }
        };
        let nak = match self.nak_deadline {
            Some(d) => d,
            None if !self.missing.is_empty() => self.last_heard, // recompute now
            None => status,
        };
        let liveness = if self.down {
            self.last_heard + self.cfg.liveness_timeout * 10 + Duration::from_millis(1)
        } else {
            self.last_heard + self.cfg.liveness_timeout + Duration::from_millis(1)
        };
        if self.down {
            return liveness;
        }
        status.min(nak).min(liveness)
    }
}

/// Most topic ids one session may declare: ids are dense from 1, so a
/// vector indexed by id serves the hot path without hashing, and this cap
/// bounds what a hostile source can make us hold.
const MAX_TOPIC_ID: u32 = 65_536;

struct TopicSlot {
    name: Arc<str>,
    /// Next offset expected (duplicates below it are dropped).
    next: Option<Offset>,
}

#[derive(Default)]
struct TopicTable {
    slots: Vec<Option<TopicSlot>>,
}

impl TopicTable {
    fn contains(&self, id: TopicId) -> bool {
        self.slots.get(id.0 as usize).is_some_and(Option::is_some)
    }

    fn name(&self, id: TopicId) -> Option<&Arc<str>> {
        self.slots
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map(|s| &s.name)
    }

    fn get_mut(&mut self, id: TopicId) -> Option<&mut TopicSlot> {
        self.slots.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// False (and nothing stored) past the cap.
    fn insert(&mut self, id: TopicId, name: Arc<str>) -> bool {
        if id.0 > MAX_TOPIC_ID {
            return false;
        }
        let i = id.0 as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(TopicSlot { name, next: None });
        true
    }
}

fn backoff(base: Duration, retries: u32) -> Duration {
    base.saturating_mul(1u32 << retries.min(6))
}
