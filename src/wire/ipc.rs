//! Client <-> daemon frames on the local Unix stream socket.
//!
//! A stream carries frames back to back; many frames travel in one `write`
//! and one `read` (the client buffers publishes and flushes them together,
//! the daemon decodes every whole frame of a chunk), which is what keeps the
//! per-record cost of the local hop far below one system call. Records get
//! the same treatment one level down, both ways: a PUBLISH frame carries a
//! run of records of one topic, mode and timeout with consecutive request
//! ids, a RECORDS frame a run of one subscription, source and topic, with
//! those fields written once; the writer keeps adding to the last frame of
//! its output while the run lasts ([`OpenPublish`], [`OpenRecords`]).
//!
//! ```text
//! frame
//! offset size field    why
//! 0      4    length   bytes after this field (kind + body): 1..=MAX_FRAME_BODY_LEN,
//!                      so a reader knows how much to wait for and rejects a
//!                      hostile length before allocating
//! 4      1    kind     which request or response (table below)
//! 5      ..   body     the kind's layout, all integers big-endian
//! ```
//!
//! Strings (topic, pattern, group, names, messages) are UTF-8 with a `u16`
//! length in front (`str16`). `key` has a `u16` length (as in the record
//! layout, `wire::record`), `value` a `u32` length, at most
//! [`MAX_VALUE_LEN`] (64 MiB).
//!
//! ```text
//! kind  frame            body
//! 0x01  (retired)        the one-record PUBLISH of earlier builds: refused as an
//!                        unknown kind, so a mismatched client is closed at once
//! 0x02  SUBSCRIBE        sub_id u32, from u8, from_offset u64, consume u8,
//!                        pattern str16, group str16 (empty = no group)
//! 0x03  UNSUBSCRIBE      sub_id u32
//! 0x04  COMMIT           source u64, offset u64, group str16, topic str16
//! 0x05  STATS            (empty)
//! 0x06  PING             nonce u64
//! 0x07  PUBLISH          mode u8, timeout_ms u32, topic str16, first_request_id u64,
//!                        count u32 (>= 1), then count x publish entry; entry i
//!                        has request id first_request_id + i (wrapping)
//!
//! publish entry = timestamp_ms u64, key_len u16, value_len u32, key, value
//!
//! 0x81  PUBLISHED        request_id u64, offset u64
//! 0x82  PUBLISH_FAILED   request_id u64, failure
//! 0x83  RECORDS          sub_id u32, source u64, topic str16,
//!                        source_name str16 (empty = unknown), count u32 (>= 1),
//!                        then count x records entry
//!
//! records entry = offset u64, timestamp_ms u64, key_len u16, value_len u32, key, value
//!
//! 0x84  GAP              sub_id u32, source u64, from u64, to u64 (exclusive),
//!                        reason u8, topic str16
//! 0x85  SUBSCRIBED       sub_id u32
//! 0x86  SUBSCRIBE_FAILED sub_id u32, failure
//! 0x87  STATS_REPLY      json (the rest of the body, UTF-8)
//! 0x88  PONG             nonce u64
//!
//! failure = code u8, message str16, then by code:
//!   1 unknown topic rule   (nothing)
//!   2 record too large     size u64, max u64
//!   3 timeout              count u16, count x node name str16
//!   4 backpressure         (nothing)
//!   5 log error            (nothing)
//!   6 invalid request      (nothing)
//!   other codes            (the rest is ignored; message still shown)
//! ```
//!
//! Request kinds, publish modes, start positions and consume modes that this
//! build does not know are errors, not `Unknown(u8)`: client and daemon ship
//! together, so such a frame means a mismatched peer and closing the
//! connection is the clearest answer. Failure codes and gap reasons are kept
//! as `Unknown(u8)` instead, because a client can still report them.
//!
//! Parsing takes the whole frame as [`Bytes`] and hands out keys and values as
//! slices of it, so a 64 MiB value is never copied by the decoder.

mod cursor;
mod open_frame;
mod publish;
mod records;
mod request;
mod response;

use bytes::{Bytes, BytesMut};

use self::cursor::{Reader, Writer};
use super::{Error, Offset, Result};

pub use self::publish::{OpenPublish, PublishBatch, PublishEntry, PublishRef};
pub use self::records::{BatchRecord, DeliveryRef, OpenRecords, RecordBatch};
pub use self::request::{Commit, Request, Subscribe};
pub use self::response::{GapNotice, Interned, Response};

/// Bytes before the body: `length` and `kind`.
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest record value a client may publish (and the daemon may deliver).
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;
/// Largest key: the record layout stores its length in a `u16`.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Largest `length` field accepted: a maximal record plus room for its
/// topic, key and source name. Anything above is a malformed frame.
pub const MAX_FRAME_BODY_LEN: usize = MAX_VALUE_LEN + 256 * 1024;

mod field {
    use core::ops::Range;
    pub const LENGTH: Range<usize> = 0..4;
    pub const KIND: usize = 4;
    pub const BODY: usize = 5;
}

mod kind {
    pub const PUBLISH: u8 = 0x07;
    pub const SUBSCRIBE: u8 = 0x02;
    pub const UNSUBSCRIBE: u8 = 0x03;
    pub const COMMIT: u8 = 0x04;
    pub const STATS: u8 = 0x05;
    pub const PING: u8 = 0x06;
    pub const PUBLISHED: u8 = 0x81;
    pub const PUBLISH_FAILED: u8 = 0x82;
    pub const RECORDS: u8 = 0x83;
    pub const GAP: u8 = 0x84;
    pub const SUBSCRIBED: u8 = 0x85;
    pub const SUBSCRIBE_FAILED: u8 = 0x86;
    pub const STATS_REPLY: u8 = 0x87;
    pub const PONG: u8 = 0x88;
}

/// Says whether `buf` starts with a whole frame: `Ok(Some(total_len))` when
/// it does, `Ok(None)` when more bytes must arrive first, and an error when
/// the length field is out of range (the connection cannot be resynced).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>> {
    let Some(len_bytes) = buf.get(field::LENGTH) else {
        return Ok(None);
    };
    let body_len = be_u32(len_bytes) as usize;
    if body_len == 0 || body_len > MAX_FRAME_BODY_LEN {
        return Err(Error::BadLength {
            field: "ipc frame length",
            stated: body_len,
            actual: MAX_FRAME_BODY_LEN,
        });
    }
    let total = field::LENGTH.end + body_len;
    Ok((buf.len() >= total).then_some(total))
}

/// Splits the first whole frame off the front of `buf`, if there is one.
/// The returned `Bytes` shares `buf`'s allocation (no copy).
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<Bytes>> {
    match frame_len(buf)? {
        Some(total) => Ok(Some(buf.split_to(total).freeze())),
        None => Ok(None),
    }
}

/// A checked view over one whole frame (header and body, nothing after).
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that `buffer` holds exactly one frame whose length field is in
    /// range and matches the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let bytes = buffer.as_ref();
        let have = bytes.len();
        match frame_len(bytes)? {
            None => Err(Error::Truncated {
                need: if have < FRAME_HEADER_LEN {
                    FRAME_HEADER_LEN
                } else {
                    field::LENGTH.end + be_u32(&bytes[field::LENGTH]) as usize
                },
                have,
            }),
            Some(total) if total != have => Err(Error::BadLength {
                field: "ipc frame length",
                stated: total,
                actual: have,
            }),
            Some(_) => Ok(Frame { buffer }),
        }
    }

    // invariant (accessors): new_checked saw at least FRAME_HEADER_LEN bytes
    // (the length field is >= 1, so the kind byte is present).
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }
}

/// How the daemon answers a publish (as RocketMQ's send modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishMode {
    /// No answer at all, not even on failure: the fastest path.
    OneWay,
    /// `Published` once the record is in the local log, or `PublishFailed`.
    Async,
    /// `Published` once the record is in the local log and every live
    /// receiver of its group acknowledged it; `PublishFailed` (timeout with
    /// the nodes that did not) otherwise.
    Sync,
}

/// Where a subscription starts in each source's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// The consumer group's committed offset (the next record to deliver).
    Committed,
    Offset(Offset),
}

/// How the members of one consumer group share a topic (RocketMQ's terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsumeMode {
    /// Each record goes to one member of the group.
    Clustering,
    /// Every member gets every record.
    Broadcast,
}

/// Why a range of offsets will never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// Every node that held the range deleted it (retention).
    Retention,
    /// No reachable node holds the range (the source is gone, say).
    Unavailable,
    /// A code from a newer daemon.
    Unknown(u8),
}

/// Why a publish or a subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// No netconf `[[topic]]` rule matches the topic.
    UnknownTopicRule,
    /// The record (value) is above the limit.
    RecordTooLarge { size: u64, max: u64 },
    /// A sync publish was not acknowledged in time by these nodes.
    Timeout { waiting_for: Vec<String> },
    /// The daemon is over its buffering limit; retry later.
    Backpressure,
    /// The local log could not store the record.
    Log,
    /// The request was not valid (a bad pattern, say); `message` says why.
    InvalidRequest,
    /// A code from a newer daemon; `message` still explains it.
    Unknown(u8),
}

/// A refusal: a machine-readable kind and a line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl PublishMode {
    fn code(self) -> u8 {
        match self {
            PublishMode::OneWay => 0,
            PublishMode::Async => 1,
            PublishMode::Sync => 2,
        }
    }
    fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(PublishMode::OneWay),
            1 => Ok(PublishMode::Async),
            2 => Ok(PublishMode::Sync),
            _ => Err(malformed("publish", "unknown publish mode")),
        }
    }
}

impl StartFrom {
    fn code(self) -> (u8, u64) {
        match self {
            StartFrom::Earliest => (0, 0),
            StartFrom::Latest => (1, 0),
            StartFrom::Committed => (2, 0),
            StartFrom::Offset(o) => (3, o.0),
        }
    }
    fn from_code(code: u8, offset: u64) -> Result<Self> {
        match code {
            0 => Ok(StartFrom::Earliest),
            1 => Ok(StartFrom::Latest),
            2 => Ok(StartFrom::Committed),
            3 => Ok(StartFrom::Offset(Offset(offset))),
            _ => Err(malformed("subscribe", "unknown start position")),
        }
    }
}

impl ConsumeMode {
    fn code(self) -> u8 {
        match self {
            ConsumeMode::Clustering => 0,
            ConsumeMode::Broadcast => 1,
        }
    }
    fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(ConsumeMode::Clustering),
            1 => Ok(ConsumeMode::Broadcast),
            _ => Err(malformed("subscribe", "unknown consume mode")),
        }
    }
}

impl GapReason {
    fn code(self) -> u8 {
        match self {
            GapReason::Retention => 1,
            GapReason::Unavailable => 2,
            GapReason::Unknown(c) => c,
        }
    }
    fn from_code(code: u8) -> Self {
        match code {
            1 => GapReason::Retention,
            2 => GapReason::Unavailable,
            c => GapReason::Unknown(c),
        }
    }
    /// A short lowercase word for logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Retention => "retention",
            GapReason::Unavailable => "unavailable",
            GapReason::Unknown(_) => "unknown",
        }
    }
}

impl FailureKind {
    fn code(&self) -> u8 {
        match self {
            FailureKind::UnknownTopicRule => 1,
            FailureKind::RecordTooLarge { .. } => 2,
            FailureKind::Timeout { .. } => 3,
            FailureKind::Backpressure => 4,
            FailureKind::Log => 5,
            FailureKind::InvalidRequest => 6,
            FailureKind::Unknown(c) => *c,
        }
    }
}

impl Failure {
    fn buffer_len(&self) -> usize {
        let tail = match &self.kind {
            FailureKind::RecordTooLarge { .. } => 16,
            FailureKind::Timeout { waiting_for } => {
                2 + waiting_for.iter().map(|n| 2 + n.len()).sum::<usize>()
            }
            _ => 0,
        };
        1 + 2 + self.message.len() + tail
    }

    fn emit(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u8(self.kind.code())?;
        w.str16(&self.message)?;
        match &self.kind {
            FailureKind::RecordTooLarge { size, max } => {
                w.u64(*size)?;
                w.u64(*max)?;
            }
            FailureKind::Timeout { waiting_for } => {
                let count = u16::try_from(waiting_for.len())
                    .map_err(|_| malformed("failure", "more than 65535 node names"))?;
                w.u16(count)?;
                for name in waiting_for {
                    w.str16(name)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn parse(r: &mut Reader<'_>) -> Result<Failure> {
        let code = r.u8()?;
        let message = r.str16()?;
        let kind = match code {
            1 => FailureKind::UnknownTopicRule,
            2 => FailureKind::RecordTooLarge {
                size: r.u64()?,
                max: r.u64()?,
            },
            3 => {
                let count = r.u16()?;
                let mut waiting_for = Vec::with_capacity(usize::from(count).min(64));
                for _ in 0..count {
                    waiting_for.push(r.str16()?);
                }
                FailureKind::Timeout { waiting_for }
            }
            4 => FailureKind::Backpressure,
            5 => FailureKind::Log,
            6 => FailureKind::InvalidRequest,
            c => {
                // A newer daemon's tail is not ours to interpret.
                r.skip_rest();
                FailureKind::Unknown(c)
            }
        };
        Ok(Failure { kind, message })
    }
}

fn malformed(frame: &'static str, reason: &'static str) -> Error {
    Error::Malformed { frame, reason }
}

/// A string, key or name length as its `u16` field.
fn len16(len: usize, frame: &'static str, reason: &'static str) -> Result<u16> {
    u16::try_from(len).map_err(|_| malformed(frame, reason))
}

/// A value length as its `u32` field, at most [`MAX_VALUE_LEN`].
fn value_len32(len: usize, frame: &'static str) -> Result<u32> {
    if len > MAX_VALUE_LEN {
        return Err(malformed(frame, "value longer than 64 MiB"));
    }
    u32::try_from(len).map_err(|_| malformed(frame, "value longer than 64 MiB"))
}

/// The `length` field of a frame of `total_len` bytes (header included).
fn body_len32(total_len: usize) -> Result<u32> {
    let body_len = total_len.saturating_sub(field::LENGTH.end);
    if body_len > MAX_FRAME_BODY_LEN {
        return Err(malformed("ipc frame", "frame longer than the maximum"));
    }
    u32::try_from(body_len).map_err(|_| malformed("ipc frame", "frame longer than the maximum"))
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn emit_to_vec(
    out: &mut Vec<u8>,
    len: usize,
    emit: impl FnOnce(&mut [u8]) -> Result<usize>,
) -> Result<usize> {
    let start = out.len();
    out.resize(start + len, 0);
    match emit(&mut out[start..]) {
        Ok(n) => Ok(n),
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}
