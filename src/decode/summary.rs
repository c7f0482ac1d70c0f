//! What `castlog decode` shows of each frame body: ids, sequence numbers,
//! ranges, topics with offset spans and record counts, sizes. Owned and
//! serializable, so `--json` prints the same facts as the text line.

use std::fmt;

use serde::Serialize;

use crate::wire::{Body, DataPayload, Records, SeqRange};

/// A half-open sequence range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RangeSummary {
    pub start: u64,
    pub end: u64,
}

/// A run of consecutive records of one topic in a batch: topic id, first
/// and last offset, how many. Topic declarations (topic 0) are listed
/// separately with the name they declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSpan {
    pub topic: u32,
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: u64,
    pub value_bytes: u64,
}

/// A topic id declared in-band (a record with topic id 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declaration {
    pub topic: u32,
    pub name: String,
}

/// The facts of one body, by frame type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BodySummary {
    Data {
        seq: u64,
        records: u64,
        topics: Vec<TopicSpan>,
        declarations: Vec<Declaration>,
    },
    Fragment {
        seq: u64,
        total_len: u32,
        frag_offset: u32,
        chunk_len: usize,
    },
    Heartbeat {
        next_seq: u64,
        lowest_repairable: u64,
        interval_ms: u32,
        adverts: Vec<Advert>,
    },
    Nak {
        source: String,
        ranges: Vec<RangeSummary>,
    },
    Ncf {
        ranges: Vec<RangeSummary>,
    },
    Unrecoverable {
        lowest_repairable: u64,
        ranges: Vec<RangeSummary>,
    },
    Status {
        source: String,
        next_expected: u64,
        receive_window: u32,
    },
    ReplayRequest {
        request_id: u32,
        log_node: String,
        topic: String,
        from: u64,
        to: Option<u64>,
        max_bytes: u32,
    },
    ReplayData {
        request_id: u32,
        records: u64,
        topics: Vec<TopicSpan>,
        /// A piece of one record too large for a datagram.
        fragment: Option<ReplayFragmentSummary>,
    },
    ReplayEnd {
        request_id: u32,
        status: String,
        next_offset: u64,
        earliest_offset: u64,
    },
    Announce {
        kind: String,
        name: String,
        extension_bytes: usize,
    },
    Unknown {
        code: u8,
        body_len: usize,
    },
}

/// A REPLAY_DATA piece: the record's offset and where the chunk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplayFragmentSummary {
    pub offset: u64,
    pub total_len: u32,
    pub frag_offset: u32,
    pub chunk_len: usize,
}

/// A heartbeat's topic advert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advert {
    pub topic: u32,
    pub name: String,
    pub next_offset: u64,
}

impl BodySummary {
    pub fn of(body: &Body<'_>) -> BodySummary {
        match body {
            Body::Data(d) => match &d.payload {
                DataPayload::Records { .. } => {
                    let (topics, declarations, records) = spans(d.records());
                    BodySummary::Data {
                        seq: d.seq.0,
                        records,
                        topics,
                        declarations,
                    }
                }
                DataPayload::Fragment(f) => BodySummary::Fragment {
                    seq: d.seq.0,
                    total_len: f.total_len,
                    frag_offset: f.frag_offset,
                    chunk_len: f.chunk.len(),
                },
            },
            Body::Heartbeat(h) => BodySummary::Heartbeat {
                next_seq: h.next_seq.0,
                lowest_repairable: h.lowest_repairable.0,
                interval_ms: h.interval_ms,
                adverts: h
                    .topics
                    .iter()
                    .map(|a| Advert {
                        topic: a.topic.0,
                        name: a.name.to_string(),
                        next_offset: a.next_offset.0,
                    })
                    .collect(),
            },
            Body::Nak(n) => BodySummary::Nak {
                source: n.source.to_string(),
                ranges: ranges(&n.ranges),
            },
            Body::Ncf(n) => BodySummary::Ncf {
                ranges: ranges(&n.ranges),
            },
            Body::Unrecoverable(u) => BodySummary::Unrecoverable {
                lowest_repairable: u.lowest_repairable.0,
                ranges: ranges(&u.ranges),
            },
            Body::Status(s) => BodySummary::Status {
                source: s.source.to_string(),
                next_expected: s.next_expected.0,
                receive_window: s.receive_window,
            },
            Body::ReplayRequest(r) => BodySummary::ReplayRequest {
                request_id: r.request_id,
                log_node: r.log_node.to_string(),
                topic: r.topic.to_string(),
                from: r.from.0,
                to: (r.to != crate::wire::TO_TAIL).then_some(r.to.0),
                max_bytes: r.max_bytes,
            },
            Body::ReplayData(r) => {
                let (topics, _, records) = spans(r.records());
                BodySummary::ReplayData {
                    request_id: r.request_id,
                    records,
                    topics,
                    fragment: r.fragment.map(|f| ReplayFragmentSummary {
                        offset: f.offset.0,
                        total_len: f.piece.total_len,
                        frag_offset: f.piece.frag_offset,
                        chunk_len: f.piece.chunk.len(),
                    }),
                }
            }
            Body::ReplayEnd(r) => BodySummary::ReplayEnd {
                request_id: r.request_id,
                status: format!("{:?}", r.status).to_lowercase(),
                next_offset: r.next_offset.0,
                earliest_offset: r.earliest_offset.0,
            },
            Body::Announce(a) => BodySummary::Announce {
                kind: format!("{:?}", a.kind).to_lowercase(),
                name: a.name.to_string(),
                extension_bytes: a.extensions.len(),
            },
            Body::Unknown {
                frame_type,
                payload,
            } => BodySummary::Unknown {
                code: *frame_type,
                body_len: payload.len(),
            },
        }
    }
}

fn ranges(rs: &[SeqRange]) -> Vec<RangeSummary> {
    rs.iter()
        .map(|r| RangeSummary {
            start: r.start.0,
            end: r.end.0,
        })
        .collect()
}

/// Groups consecutive records of the same topic; declarations apart.
fn spans(records: Records<'_>) -> (Vec<TopicSpan>, Vec<Declaration>, u64) {
    let mut spans: Vec<TopicSpan> = Vec::new();
    let mut decls = Vec::new();
    let mut count = 0;
    for r in records {
        count += 1;
        if let Some((topic, name)) = r.declaration() {
            decls.push(Declaration {
                topic: topic.0,
                name: name.to_string(),
            });
            continue;
        }
        match spans.last_mut() {
            Some(s) if s.topic == r.topic.0 => {
                s.last_offset = r.offset.0;
                s.records += 1;
                s.value_bytes += r.value.len() as u64;
            }
            _ => spans.push(TopicSpan {
                topic: r.topic.0,
                first_offset: r.offset.0,
                last_offset: r.offset.0,
                records: 1,
                value_bytes: r.value.len() as u64,
            }),
        }
    }
    (spans, decls, count)
}

struct Ranges<'a>(&'a [RangeSummary]);

impl fmt::Display for Ranges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{}..{}", r.start, r.end)?;
        }
        write!(f, "]")
    }
}

struct Spans<'a>(&'a [TopicSpan]);

impl fmt::Display for Spans<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topics=[")?;
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(
                f,
                "{}@{}..={} x{} {}B",
                s.topic, s.first_offset, s.last_offset, s.records, s.value_bytes
            )?;
        }
        write!(f, "]")
    }
}

impl fmt::Display for BodySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodySummary::Data {
                seq,
                records,
                topics,
                declarations,
            } => {
                write!(f, "seq={seq} records={records} {}", Spans(topics))?;
                for d in declarations {
                    write!(f, " declare={}:{:?}", d.topic, d.name)?;
                }
                Ok(())
            }
            BodySummary::Fragment {
                seq,
                total_len,
                frag_offset,
                chunk_len,
            } => write!(
                f,
                "seq={seq} fragment={frag_offset}+{chunk_len}/{total_len}"
            ),
            BodySummary::Heartbeat {
                next_seq,
                lowest_repairable,
                interval_ms,
                adverts,
            } => {
                write!(
                    f,
                    "next_seq={next_seq} lowest_repairable={lowest_repairable} interval={interval_ms}ms"
                )?;
                for a in adverts {
                    write!(f, " topic={}:{:?}@{}", a.topic, a.name, a.next_offset)?;
                }
                Ok(())
            }
            BodySummary::Nak { source, ranges } => {
                write!(f, "source={source} ranges={}", Ranges(ranges))
            }
            BodySummary::Ncf { ranges } => write!(f, "ranges={}", Ranges(ranges)),
            BodySummary::Unrecoverable {
                lowest_repairable,
                ranges,
            } => write!(
                f,
                "lowest_repairable={lowest_repairable} ranges={}",
                Ranges(ranges)
            ),
            BodySummary::Status {
                source,
                next_expected,
                receive_window,
            } => write!(
                f,
                "source={source} next_expected={next_expected} window={receive_window}B"
            ),
            BodySummary::ReplayRequest {
                request_id,
                log_node,
                topic,
                from,
                to,
                max_bytes,
            } => {
                write!(
                    f,
                    "request={request_id} log_node={log_node} topic={topic:?} from={from}"
                )?;
                match to {
                    Some(to) => write!(f, " to={to}")?,
                    None => write!(f, " to=tail")?,
                }
                write!(f, " max={max_bytes}B")
            }
            BodySummary::ReplayData {
                request_id,
                records,
                topics,
                fragment,
            } => match fragment {
                Some(p) => write!(
                    f,
                    "request={request_id} record_offset={} fragment={}+{}/{}",
                    p.offset, p.frag_offset, p.chunk_len, p.total_len
                ),
                None => write!(
                    f,
                    "request={request_id} records={records} {}",
                    Spans(topics)
                ),
            },
            BodySummary::ReplayEnd {
                request_id,
                status,
                next_offset,
                earliest_offset,
            } => write!(
                f,
                "request={request_id} status={status} next_offset={next_offset} earliest_offset={earliest_offset}"
            ),
            BodySummary::Announce {
                kind,
                name,
                extension_bytes,
            } => write!(f, "kind={kind} name={name:?} extensions={extension_bytes}B"),
            BodySummary::Unknown { code, body_len } => {
                write!(f, "code={code} body={body_len}B")
            }
        }
    }
}
