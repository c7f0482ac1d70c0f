//! Client -> daemon frames: PUBLISH, SUBSCRIBE, UNSUBSCRIBE, COMMIT, STATS,
//! PING (byte tables in the parent module).

use std::sync::Arc;

use bytes::Bytes;

use super::cursor::{Reader, Writer};
use super::publish::PublishBatch;
use super::{emit_to_vec, field, kind, malformed, ConsumeMode, Frame, StartFrom, FRAME_HEADER_LEN};
use crate::wire::{NodeId, Offset, Result};

/// A subscribe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Chosen by the client, unique per connection; tags every delivery.
    pub sub_id: u32,
    /// Exact topic name, `prefix.*`, or `*`.
    pub pattern: String,
    pub from: StartFrom,
    /// Consumer group; `None` = this subscriber alone.
    pub group: Option<String>,
    pub mode: ConsumeMode,
}

/// A consumer group's progress: `offset` is the next record to deliver
/// (Kafka's convention), per (group, topic, source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub group: String,
    pub topic: String,
    pub source: NodeId,
    pub offset: Offset,
}

/// A request from a client. [`Request::Disconnected`] never crosses the
/// socket: the daemon's IPC server reports a closed connection with it, so
/// the event loop sees requests and disconnects in one ordered stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A run of records of one topic, mode and timeout.
    Publish(PublishBatch),
    Subscribe(Subscribe),
    Unsubscribe {
        sub_id: u32,
    },
    Commit(Commit),
    Stats,
    /// Answered by `Pong` after every earlier request of the connection was
    /// handled: a flush barrier (e.g. after one-way publishes).
    Ping {
        nonce: u64,
    },
    /// Not a frame: the connection closed or broke (see above).
    Disconnected,
}

impl Request {
    /// Parses one whole frame (as split off by [`take_frame`](super::take_frame)). Keys and
    /// values are slices of `frame`.
    pub fn parse(frame: &Bytes) -> Result<Request> {
        Request::parse_interning(frame, &mut None)
    }

    /// Like [`parse`](Request::parse), but a PUBLISH whose topic equals
    /// `last_topic` shares it instead of allocating, and `last_topic`
    /// becomes the topic of the last PUBLISH parsed. A fast publisher sends
    /// many frames to one topic: this takes an allocation and a free per
    /// frame off the daemon's hot path.
    pub fn parse_interning(frame: &Bytes, last_topic: &mut Option<Arc<str>>) -> Result<Request> {
        let view = Frame::new_checked(&frame[..])?;
        let mut r = Reader::new(frame, field::BODY, "request");
        let request = match view.kind() {
            kind::PUBLISH => Request::Publish(PublishBatch::parse(frame, &mut r, last_topic)?),
            kind::SUBSCRIBE => {
                r.frame = "subscribe";
                let sub_id = r.u32()?;
                let from_code = r.u8()?;
                let from_offset = r.u64()?;
                let from = StartFrom::from_code(from_code, from_offset)?;
                let mode = ConsumeMode::from_code(r.u8()?)?;
                let pattern = r.str16()?;
                let group = r.str16()?;
                Request::Subscribe(Subscribe {
                    sub_id,
                    pattern,
                    from,
                    group: (!group.is_empty()).then_some(group),
                    mode,
                })
            }
            kind::UNSUBSCRIBE => Request::Unsubscribe { sub_id: r.u32()? },
            kind::COMMIT => {
                r.frame = "commit";
                let source = NodeId(r.u64()?);
                let offset = Offset(r.u64()?);
                let group = r.str16()?;
                let topic = r.str16()?;
                Request::Commit(Commit {
                    group,
                    topic,
                    source,
                    offset,
                })
            }
            kind::STATS => Request::Stats,
            kind::PING => Request::Ping { nonce: r.u64()? },
            _ => return Err(malformed("request", "unknown request kind")),
        };
        r.end()?;
        Ok(request)
    }

    /// Bytes `emit` writes (header included); 0 for `Disconnected`.
    pub fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN
            + match self {
                Request::Publish(b) => return b.frame().len(),
                Request::Subscribe(s) => {
                    4 + 1
                        + 8
                        + 1
                        + 2
                        + s.pattern.len()
                        + 2
                        + s.group.as_ref().map_or(0, String::len)
                }
                Request::Unsubscribe { .. } => 4,
                Request::Commit(c) => 8 + 8 + 2 + c.group.len() + 2 + c.topic.len(),
                Request::Stats => 0,
                Request::Ping { .. } => 8,
                Request::Disconnected => return 0,
            }
    }

    /// Writes the whole frame at the start of `buf`; returns the bytes
    /// written. `Disconnected` and an empty group name are refused.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        match self {
            Request::Publish(b) => b.emit(buf),
            Request::Subscribe(s) => {
                let group = match &s.group {
                    Some(g) if g.is_empty() => {
                        return Err(malformed("subscribe", "empty group name"))
                    }
                    Some(g) => g.as_str(),
                    None => "",
                };
                let mut w = Writer::frame(buf, len, kind::SUBSCRIBE)?;
                w.u32(s.sub_id)?;
                let (from_code, from_offset) = s.from.code();
                w.u8(from_code)?;
                w.u64(from_offset)?;
                w.u8(s.mode.code())?;
                w.str16(&s.pattern)?;
                w.str16(group)?;
                w.finish()
            }
            Request::Unsubscribe { sub_id } => {
                let mut w = Writer::frame(buf, len, kind::UNSUBSCRIBE)?;
                w.u32(*sub_id)?;
                w.finish()
            }
            Request::Commit(c) => {
                let mut w = Writer::frame(buf, len, kind::COMMIT)?;
                w.u64(c.source.0)?;
                w.u64(c.offset.0)?;
                w.str16(&c.group)?;
                w.str16(&c.topic)?;
                w.finish()
            }
            Request::Stats => Writer::frame(buf, len, kind::STATS)?.finish(),
            Request::Ping { nonce } => {
                let mut w = Writer::frame(buf, len, kind::PING)?;
                w.u64(*nonce)?;
                w.finish()
            }
            Request::Disconnected => Err(malformed("request", "disconnected is not a frame")),
        }
    }

    /// Appends the frame to `out`; on error `out` is left unchanged.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        match self {
            Request::Publish(b) => {
                out.extend_from_slice(b.frame());
                Ok(b.frame().len())
            }
            _ => emit_to_vec(out, self.buffer_len(), |buf| self.emit(buf)),
        }
    }
}
