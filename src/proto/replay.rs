//! Log replay over unicast (the second reliability layer): a chunked
//! request/response. The client asks a peer for `topic` records of
//! `log_node` from an offset; the server answers with REPLAY_DATA frames up
//! to `max_bytes`, then REPLAY_END with the offset to continue from. The
//! client accepts records only in offset order, and re-asks from its lowest
//! missing offset when a chunk ends short or nothing arrives in time. A range
//! the server's log does not hold (a hole) shows up as an END that moves
//! `next_offset` past us twice in a row with no data: it is reported, never
//! skipped silently.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::node::Outputs;
use super::sender::emit;
use super::{Dest, Event};
use crate::wire::{
    Body, Flags, FragmentRepr, FrameRepr, FrameType, HeaderRepr, NodeId, Offset, RecordRepr,
    ReplayDataRepr, ReplayEndRepr, ReplayFragment, ReplayRequestRepr, ReplayStatus, SessionId,
};

/// Bytes asked for per chunk.
pub const CHUNK_BYTES: u32 = 256 * 1024;
/// Payload bytes per REPLAY_DATA datagram (records larger than this go in a
/// datagram of their own, up to the UDP limit).
pub const REPLAY_MTU: usize = 1400;
const RETRY_AFTER: Duration = Duration::from_millis(200);
const MAX_RETRIES: u32 = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayId(pub u32);

/// How a replay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Everything up to `next_offset` (the requested end, or the server's
    /// log end) was delivered.
    Complete { next_offset: Offset },
    /// The server no longer holds offsets below `earliest`; records from
    /// `earliest` on can be asked for again.
    BelowRetention { earliest: Offset },
    /// The server has no log for that topic and source.
    UnknownTopic,
    /// The server's log skips `[from, to)`; the replay stopped at `from`.
    Hole { from: Offset, to: Offset },
    /// The peer did not answer.
    TimedOut,
}

/// A request to serve from our log (see [`super::Node::supply_replay_chunk`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayServe {
    pub peer: SocketAddr,
    pub requester: NodeId,
    pub request_id: u32,
    pub log_node: NodeId,
    pub topic: Arc<str>,
    pub from: Offset,
    pub to: Offset,
    pub max_bytes: u32,
}

/// Builds the end marker of a served chunk.
pub fn replay_end(status: ReplayStatus, next_offset: Offset, earliest_offset: Offset) -> ReplayEnd {
    ReplayEnd {
        status,
        next_offset,
        earliest_offset,
    }
}

/// The end marker of a served chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayEnd {
    pub status: ReplayStatus,
    pub next_offset: Offset,
    pub earliest_offset: Offset,
}

struct Pending {
    peer: SocketAddr,
    log_node: NodeId,
    topic: Arc<str>,
    expected: Offset,
    to: Offset,
    deadline: Instant,
    retries: u32,
    data_this_round: bool,
    empty_ends_at: Option<Offset>,
    /// A large record being put together from REPLAY_DATA pieces; kept
    /// across re-asks so each round fills only what is still missing.
    partial: Option<Partial>,
    /// Records received past a gap, by offset (encoded), waiting for it.
    ahead: BTreeMap<Offset, Vec<u8>>,
    ahead_bytes: usize,
    /// The `to` of the request in flight (smaller than `to` while asking
    /// only for a hole before `ahead`).
    asked_to: Offset,
}

/// Bytes of out-of-order replay records a client keeps per replay.
const MAX_AHEAD_BYTES: usize = 4 << 20;

struct Partial {
    offset: Offset,
    buf: Vec<u8>,
    have: std::collections::BTreeSet<u32>,
    bytes: usize,
}

/// Largest record the client reassembles (the protocol's 64 MiB values plus
/// header and key).
const MAX_RECORD_BYTES: u32 = (64 << 20) + 65_536 + 64;

pub struct ReplayClient {
    next_id: u32,
    pending: BTreeMap<u32, Pending>,
    own: NodeId,
}

impl ReplayClient {
    pub fn new() -> Self {
        ReplayClient {
            next_id: 1,
            pending: BTreeMap::new(),
            own: NodeId(0),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        now: Instant,
        out: &mut Outputs,
        own: NodeId,
        peer: SocketAddr,
        log_node: NodeId,
        topic: &str,
        from: Offset,
        to: Offset,
    ) -> ReplayId {
        self.own = own;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut p = Pending {
            peer,
            log_node,
            topic: Arc::from(topic),
            expected: from,
            to,
            deadline: now + RETRY_AFTER,
            retries: 0,
            data_this_round: false,
            empty_ends_at: None,
            partial: None,
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            asked_to: to,
        };
        send_request(out, own, id, &mut p);
        self.pending.insert(id, p);
        ReplayId(id)
    }

    pub fn cancel(&mut self, id: ReplayId) {
        self.pending.remove(&id.0);
    }

    pub fn handle_data(&mut self, now: Instant, out: &mut Outputs, data: &ReplayDataRepr) {
        let Some(p) = self.pending.get_mut(&data.request_id) else {
            return;
        };
        p.deadline = now + RETRY_AFTER;
        if let Some(frag) = data.fragment {
            Self::handle_piece(out, ReplayId(data.request_id), p, frag);
            return;
        }
        // Records in order are taken at once; records past a lost datagram
        // wait in `ahead`, and the next request asks only for the hole
        // before them (selective repair instead of re-sending the chunk).
        let mut acc: Vec<u8> = Vec::new();
        let mut count = 0usize;
        for rec in data.records() {
            if rec.offset < p.expected || rec.offset >= p.to {
                continue;
            }
            if rec.offset == p.expected {
                let _ = rec.emit_to_vec(&mut acc);
                count += 1;
                p.expected = rec.offset.next();
                while let Some(bytes) = p.ahead.remove(&p.expected) {
                    p.ahead_bytes -= bytes.len();
                    acc.extend_from_slice(&bytes);
                    count += 1;
                    p.expected = p.expected.next();
                }
            } else if p.ahead_bytes + rec.buffer_len() <= MAX_AHEAD_BYTES
                && !p.ahead.contains_key(&rec.offset)
            {
                let mut v = Vec::with_capacity(rec.buffer_len());
                let _ = rec.emit_to_vec(&mut v);
                p.ahead_bytes += v.len();
                p.ahead.insert(rec.offset, v);
            }
        }
        if count > 0 {
            p.data_this_round = true;
            p.empty_ends_at = None;
            out.stats.replay_records_received += count as u64;
            out.events.push_back(Event::ReplayRecords {
                id: ReplayId(data.request_id),
                source: p.log_node,
                topic: p.topic.clone(),
                records: Bytes::from(acc),
                count,
            });
        }
    }

    fn handle_piece(out: &mut Outputs, id: ReplayId, p: &mut Pending, frag: ReplayFragment) {
        let piece = frag.piece;
        if frag.offset != p.expected || p.expected >= p.to || piece.total_len > MAX_RECORD_BYTES {
            return;
        }
        let partial = match &mut p.partial {
            Some(part)
                if part.offset == frag.offset && part.buf.len() == piece.total_len as usize =>
            {
                part
            }
            _ => p.partial.insert(Partial {
                offset: frag.offset,
                buf: vec![0u8; piece.total_len as usize],
                have: std::collections::BTreeSet::new(),
                bytes: 0,
            }),
        };
        let start = piece.frag_offset as usize;
        let Some(dst) = partial.buf.get_mut(start..start + piece.chunk.len()) else {
            return;
        };
        if !partial.have.insert(piece.frag_offset) {
            return;
        }
        dst.copy_from_slice(piece.chunk);
        partial.bytes += piece.chunk.len();
        p.data_this_round = true;
        if partial.bytes < partial.buf.len() {
            return;
        }
        let Some(done) = p.partial.take() else { return };
        match RecordRepr::parse(&done.buf) {
            Ok(rec) if rec.offset == p.expected => {
                p.expected = rec.offset.next();
                p.empty_ends_at = None;
                let mut acc = done.buf;
                let mut count = 1;
                while let Some(bytes) = p.ahead.remove(&p.expected) {
                    p.ahead_bytes -= bytes.len();
                    acc.extend_from_slice(&bytes);
                    count += 1;
                    p.expected = p.expected.next();
                }
                out.stats.replay_records_received += count as u64;
                out.events.push_back(Event::ReplayRecords {
                    id,
                    source: p.log_node,
                    topic: p.topic.clone(),
                    records: Bytes::from(acc),
                    count,
                });
            }
            _ => {} // a bad reassembly: asked again at END
        }
    }

    pub fn handle_end(&mut self, now: Instant, out: &mut Outputs, end: &ReplayEndRepr) {
        let id = end.request_id;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        let outcome = match end.status {
            ReplayStatus::BelowRetention => Some(ReplayOutcome::BelowRetention {
                earliest: end.earliest_offset,
            }),
            ReplayStatus::UnknownTopic => Some(ReplayOutcome::UnknownTopic),
            _ if p.expected >= p.to => Some(ReplayOutcome::Complete {
                next_offset: p.expected,
            }),
            ReplayStatus::ReachedEnd if p.asked_to >= p.to && p.expected >= end.next_offset => {
                Some(ReplayOutcome::Complete {
                    next_offset: p.expected,
                })
            }
            _ => {
                if end.next_offset > p.expected && !p.data_this_round {
                    if p.empty_ends_at == Some(p.expected) {
                        Some(ReplayOutcome::Hole {
                            from: p.expected,
                            to: end.next_offset,
                        })
                    } else {
                        p.empty_ends_at = Some(p.expected);
                        None
                    }
                } else {
                    None
                }
            }
        };
        match outcome {
            Some(outcome) => {
                self.pending.remove(&id);
                out.events.push_back(Event::ReplayDone {
                    id: ReplayId(id),
                    outcome,
                });
            }
            None => {
                // Next chunk (or the same one again, if datagrams were lost).
                p.data_this_round = false;
                p.deadline = now + RETRY_AFTER;
                if matches!(end.status, ReplayStatus::Busy) {
                    p.deadline = now + RETRY_AFTER;
                    return;
                }
                send_request(out, self.own, id, p);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outputs) {
        let mut done = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.deadline > now {
                continue;
            }
            if p.retries >= MAX_RETRIES {
                done.push(*id);
                continue;
            }
            p.retries += 1;
            p.data_this_round = false;
            p.deadline = now + RETRY_AFTER;
            out.stats.replay_retries += 1;
            send_request(out, self.own, *id, p);
        }
        for id in done {
            self.pending.remove(&id);
            out.events.push_back(Event::ReplayDone {
                id: ReplayId(id),
                outcome: ReplayOutcome::TimedOut,
            });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

fn send_request(out: &mut Outputs, own: NodeId, id: u32, p: &mut Pending) {
    // Ask only for the hole before records already held, if any.
    p.asked_to = p.ahead.keys().next().copied().unwrap_or(p.to).min(p.to);
    let repr = FrameRepr {
        header: HeaderRepr {
            frame_type: FrameType::ReplayRequest,
            flags: Flags::default(),
            node: own,
            session: SessionId(0),
        },
        body: Body::ReplayRequest(ReplayRequestRepr {
            request_id: id,
            log_node: p.log_node,
            from: p.expected,
            to: p.asked_to,
            max_bytes: CHUNK_BYTES,
            topic: &p.topic,
        }),
    };
    out.queue(Dest::Peer(p.peer), emit(&repr));
    out.stats.replay_requests_sent += 1;
}

/// Packs records into REPLAY_DATA datagrams, then the END marker.
pub(crate) fn serve_chunk(
    out: &mut Outputs,
    own: NodeId,
    serve: &ReplayServe,
    records: &[u8],
    end: ReplayEnd,
) {
    let header = |frame_type| HeaderRepr {
        frame_type,
        flags: Flags::default(),
        node: own,
        session: SessionId(0),
    };
    let mut rest = records;
    while !rest.is_empty() {
        let mut len = 0usize;
        let mut count = 0u16;
        while len < rest.len() && count < u16::MAX {
            let Ok((rec, rec_len)) = RecordRepr::parse_prefix(&rest[len..]) else {
                rest = &[]; // invariant: the log verified these; stop if not
                break;
            };
            if rec_len > REPLAY_MTU {
                if count == 0 {
                    // Too large for one datagram: send it in pieces.
                    send_pieces(out, own, serve, rec.offset, &rest[..rec_len]);
                    rest = &rest[rec_len..];
                }
                break;
            }
            if len + rec_len > REPLAY_MTU {
                break;
            }
            len += rec_len;
            count += 1;
        }
        if count == 0 {
            continue;
        }
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        let repr = FrameRepr {
            header: header(FrameType::ReplayData),
            body: Body::ReplayData(ReplayDataRepr {
                request_id: serve.request_id,
                count,
                records: chunk,
                fragment: None,
            }),
        };
        out.queue(Dest::Peer(serve.peer), emit(&repr));
        out.stats.replay_records_sent += u64::from(count);
        rest = tail;
    }
    let repr = FrameRepr {
        header: header(FrameType::ReplayEnd),
        body: Body::ReplayEnd(ReplayEndRepr {
            request_id: serve.request_id,
            status: end.status,
            next_offset: end.next_offset,
            earliest_offset: end.earliest_offset,
        }),
    };
    out.queue(Dest::Peer(serve.peer), emit(&repr));
}

fn send_pieces(out: &mut Outputs, own: NodeId, serve: &ReplayServe, offset: Offset, record: &[u8]) {
    let total_len = u32::try_from(record.len()).unwrap_or(u32::MAX);
    for (i, chunk) in record.chunks(REPLAY_MTU).enumerate() {
        let repr = FrameRepr {
            header: HeaderRepr {
                frame_type: FrameType::ReplayData,
                flags: Flags::FRAGMENT,
                node: own,
                session: SessionId(0),
            },
            body: Body::ReplayData(ReplayDataRepr {
                request_id: serve.request_id,
                count: 0,
                records: &[],
                fragment: Some(ReplayFragment {
                    offset,
                    piece: FragmentRepr {
                        total_len,
                        frag_offset: (i * REPLAY_MTU) as u32,
                        chunk,
                    },
                }),
            }),
        };
        out.queue(Dest::Peer(serve.peer), emit(&repr));
    }
    out.stats.replay_records_sent += 1;
}
