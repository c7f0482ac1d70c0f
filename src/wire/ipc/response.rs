//! Daemon -> client frames: PUBLISHED, PUBLISH_FAILED, RECORDS, GAP,
//! SUBSCRIBED, SUBSCRIBE_FAILED, STATS_REPLY, PONG (byte tables in the
//! parent module).

use std::sync::Arc;

use bytes::Bytes;

use super::cursor::{Reader, Writer};
use super::records::RecordBatch;
use super::{emit_to_vec, field, kind, malformed, Failure, Frame, GapReason, FRAME_HEADER_LEN};
use crate::wire::{NodeId, Offset, Result};

/// The last topic and source name [`Response::parse_interning`] saw, kept
/// by the reader between frames.
#[derive(Debug, Clone, Default)]
pub struct Interned {
    pub(super) topic: Option<Arc<str>>,
    pub(super) source_name: Option<Arc<str>>,
}

/// An explicit notice that offsets `from..to` (end exclusive) of one
/// source's topic will never be delivered: never a silent hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapNotice {
    pub sub_id: u32,
    pub topic: String,
    pub source: NodeId,
    pub from: Offset,
    pub to: Offset,
    pub reason: GapReason,
}

/// A response or a delivery from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Published {
        request_id: u64,
        offset: Offset,
    },
    PublishFailed {
        request_id: u64,
        failure: Failure,
    },
    /// Records of one subscription, source and topic.
    Records(RecordBatch),
    Gap(GapNotice),
    Subscribed {
        sub_id: u32,
    },
    SubscribeFailed {
        sub_id: u32,
        failure: Failure,
    },
    Stats {
        json: String,
    },
    Pong {
        nonce: u64,
    },
}

impl Response {
    /// Parses one whole frame (as split off by [`take_frame`](super::take_frame)). Keys and
    /// values are slices of `frame`.
    pub fn parse(frame: &Bytes) -> Result<Response> {
        Response::parse_interning(frame, &mut Interned::default())
    }

    /// Like [`parse`](Response::parse), but a RECORDS frame whose topic or
    /// source name equals the last one's shares it instead of allocating:
    /// the client's hot path allocates no names, only one `Vec` per frame.
    pub fn parse_interning(frame: &Bytes, last: &mut Interned) -> Result<Response> {
        let view = Frame::new_checked(&frame[..])?;
        let mut r = Reader::new(frame, field::BODY, "response");
        let response = match view.kind() {
            kind::PUBLISHED => Response::Published {
                request_id: r.u64()?,
                offset: Offset(r.u64()?),
            },
            kind::PUBLISH_FAILED => Response::PublishFailed {
                request_id: r.u64()?,
                failure: Failure::parse(&mut r)?,
            },
            kind::RECORDS => Response::Records(RecordBatch::parse(&mut r, last)?),
            kind::GAP => {
                r.frame = "gap";
                let sub_id = r.u32()?;
                let source = NodeId(r.u64()?);
                let from = Offset(r.u64()?);
                let to = Offset(r.u64()?);
                let reason = GapReason::from_code(r.u8()?);
                let topic = r.str16()?;
                Response::Gap(GapNotice {
                    sub_id,
                    topic,
                    source,
                    from,
                    to,
                    reason,
                })
            }
            kind::SUBSCRIBED => Response::Subscribed { sub_id: r.u32()? },
            kind::SUBSCRIBE_FAILED => Response::SubscribeFailed {
                sub_id: r.u32()?,
                failure: Failure::parse(&mut r)?,
            },
            kind::STATS_REPLY => {
                let len = r.remaining();
                Response::Stats {
                    json: r.string(len)?,
                }
            }
            kind::PONG => Response::Pong { nonce: r.u64()? },
            _ => return Err(malformed("response", "unknown response kind")),
        };
        r.end()?;
        Ok(response)
    }

    /// Bytes `emit` writes (header included).
    pub fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN
            + match self {
                Response::Published { .. } => 16,
                Response::PublishFailed { failure, .. } => 8 + failure.buffer_len(),
                Response::Records(b) => return b.buffer_len(),
                Response::Gap(g) => 4 + 8 + 8 + 8 + 1 + 2 + g.topic.len(),
                Response::Subscribed { .. } => 4,
                Response::SubscribeFailed { failure, .. } => 4 + failure.buffer_len(),
                Response::Stats { json } => json.len(),
                Response::Pong { .. } => 8,
            }
    }

    /// Writes the whole frame at the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        match self {
            Response::Published { request_id, offset } => {
                let mut w = Writer::frame(buf, len, kind::PUBLISHED)?;
                w.u64(*request_id)?;
                w.u64(offset.0)?;
                w.finish()
            }
            Response::PublishFailed {
                request_id,
                failure,
            } => {
                let mut w = Writer::frame(buf, len, kind::PUBLISH_FAILED)?;
                w.u64(*request_id)?;
                failure.emit(&mut w)?;
                w.finish()
            }
            Response::Records(b) => b.emit(buf),
            Response::Gap(g) => {
                let mut w = Writer::frame(buf, len, kind::GAP)?;
                w.u32(g.sub_id)?;
                w.u64(g.source.0)?;
                w.u64(g.from.0)?;
                w.u64(g.to.0)?;
                w.u8(g.reason.code())?;
                w.str16(&g.topic)?;
                w.finish()
            }
            Response::Subscribed { sub_id } => {
                let mut w = Writer::frame(buf, len, kind::SUBSCRIBED)?;
                w.u32(*sub_id)?;
                w.finish()
            }
            Response::SubscribeFailed { sub_id, failure } => {
                let mut w = Writer::frame(buf, len, kind::SUBSCRIBE_FAILED)?;
                w.u32(*sub_id)?;
                failure.emit(&mut w)?;
                w.finish()
            }
            Response::Stats { json } => {
                let mut w = Writer::frame(buf, len, kind::STATS_REPLY)?;
                w.bytes(json.as_bytes())?;
                w.finish()
            }
            Response::Pong { nonce } => {
                let mut w = Writer::frame(buf, len, kind::PONG)?;
                w.u64(*nonce)?;
                w.finish()
            }
        }
    }

    /// Appends the frame to `out`; on error `out` is left unchanged.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        emit_to_vec(out, self.buffer_len(), |buf| self.emit(buf))
    }
}
