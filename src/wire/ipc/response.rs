//! Daemon -> client frames: PUBLISHED, PUBLISH_FAILED, RECORD, GAP,
//! SUBSCRIBED, SUBSCRIBE_FAILED, STATS_REPLY, PONG (byte tables in the
//! parent module).

use std::sync::Arc;

use bytes::Bytes;

use super::cursor::{Reader, Writer};
use super::{
    body_len32, emit_to_vec, field, kind, len16, malformed, value_len32, Failure, Frame, GapReason,
    FRAME_HEADER_LEN, MAX_VALUE_LEN, RECORD_FIXED_LEN,
};
use crate::wire::{NodeId, Offset, Result};

/// One record delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub sub_id: u32,
    /// Shared: a subscriber receives runs of one topic, and each record of a
    /// run shares one allocation (see [`Response::parse_interning`]).
    pub topic: Arc<str>,
    pub source: NodeId,
    /// The source node's name, when the daemon knows it (shared likewise).
    pub source_name: Option<Arc<str>>,
    pub offset: Offset,
    pub timestamp_ms: u64,
    pub key: Bytes,
    pub value: Bytes,
}

/// The last topic and source name [`Response::parse_interning`] saw, kept
/// by the reader between frames.
#[derive(Debug, Clone, Default)]
pub struct Interned {
    topic: Option<Arc<str>>,
    source_name: Option<Arc<str>>,
}

/// The borrowed form of [`Delivery`], so the daemon can encode a record
/// straight from its log buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef<'a> {
    pub sub_id: u32,
    pub topic: &'a str,
    pub source: NodeId,
    pub source_name: Option<&'a str>,
    pub offset: Offset,
    pub timestamp_ms: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
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
    Published { request_id: u64, offset: Offset },
    PublishFailed { request_id: u64, failure: Failure },
    Record(Delivery),
    Gap(GapNotice),
    Subscribed { sub_id: u32 },
    SubscribeFailed { sub_id: u32, failure: Failure },
    Stats { json: String },
    Pong { nonce: u64 },
}

impl Delivery {
    /// The borrowed form, for emitting.
    pub fn as_ref(&self) -> DeliveryRef<'_> {
        DeliveryRef {
            sub_id: self.sub_id,
            topic: &self.topic,
            source: self.source,
            source_name: self.source_name.as_deref(),
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: &self.key,
            value: &self.value,
        }
    }
}

impl DeliveryRef<'_> {
    /// Bytes `emit` writes (header included).
    pub fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN
            + RECORD_FIXED_LEN
            + self.topic.len()
            + self.source_name.map_or(0, str::len)
            + self.key.len()
            + self.value.len()
    }

    /// Writes the whole frame at the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.value.len() > MAX_VALUE_LEN {
            return Err(malformed("record", "value longer than 64 MiB"));
        }
        let name = self.source_name.unwrap_or("");
        let mut w = Writer::frame(buf, self.buffer_len(), kind::RECORD)?;
        w.u32(self.sub_id)?;
        w.u64(self.source.0)?;
        w.u64(self.offset.0)?;
        w.u64(self.timestamp_ms)?;
        w.len16(self.topic.len(), "topic longer than 65535 bytes")?;
        w.len16(name.len(), "source name longer than 65535 bytes")?;
        w.len16(self.key.len(), "key longer than 65535 bytes")?;
        w.len32(self.value.len())?;
        w.bytes(self.topic.as_bytes())?;
        w.bytes(name.as_bytes())?;
        w.bytes(self.key)?;
        w.bytes(self.value)?;
        w.finish()
    }

    /// Appends the frame to `out`; on error `out` is left unchanged. The
    /// daemon's hot path: checks first, then plain appends (no zero-fill).
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        let len = self.buffer_len();
        let name = self.source_name.unwrap_or("");
        let topic_len = len16(self.topic.len(), "record", "topic longer than 65535 bytes")?;
        let name_len = len16(name.len(), "record", "source name longer than 65535 bytes")?;
        let key_len = len16(self.key.len(), "record", "key longer than 65535 bytes")?;
        let value_len = value_len32(self.value.len(), "record")?;
        let body_len = body_len32(len)?;
        out.reserve(len);
        out.extend_from_slice(&body_len.to_be_bytes());
        out.push(kind::RECORD);
        out.extend_from_slice(&self.sub_id.to_be_bytes());
        out.extend_from_slice(&self.source.0.to_be_bytes());
        out.extend_from_slice(&self.offset.0.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&topic_len.to_be_bytes());
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
        Ok(len)
    }
}

impl Response {
    /// Parses one whole frame (as split off by [`take_frame`](super::take_frame)). Keys and
    /// values are slices of `frame`.
    pub fn parse(frame: &Bytes) -> Result<Response> {
        Response::parse_interning(frame, &mut Interned::default())
    }

    /// Like [`parse`](Response::parse), but a RECORD whose topic or source
    /// name equals the last one's shares it instead of allocating: the
    /// client's hot path takes no allocation per record.
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
            kind::RECORD => {
                r.frame = "record";
                let sub_id = r.u32()?;
                let source = NodeId(r.u64()?);
                let offset = Offset(r.u64()?);
                let timestamp_ms = r.u64()?;
                let topic_len = usize::from(r.u16()?);
                let name_len = usize::from(r.u16()?);
                let key_len = usize::from(r.u16()?);
                let value_len = r.u32()? as usize;
                if value_len > MAX_VALUE_LEN {
                    return Err(malformed("record", "value longer than 64 MiB"));
                }
                let topic = r.shared_str(topic_len, &mut last.topic)?;
                let name = r.shared_str(name_len, &mut last.source_name)?;
                let key = r.slice(key_len)?;
                let value = r.slice(value_len)?;
                Response::Record(Delivery {
                    sub_id,
                    topic,
                    source,
                    source_name: (!name.is_empty()).then_some(name),
                    offset,
                    timestamp_ms,
                    key,
                    value,
                })
            }
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
                Response::Record(d) => return d.as_ref().buffer_len(),
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
            Response::Record(d) => d.as_ref().emit(buf),
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
        match self {
            Response::Record(d) => d.as_ref().emit_to_vec(out),
            _ => emit_to_vec(out, self.buffer_len(), |buf| self.emit(buf)),
        }
    }
}
