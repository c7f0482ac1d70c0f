//! Client <-> daemon frames on the local Unix stream socket.
//!
//! A stream carries frames back to back; many frames travel in one `write`
//! and one `read` (the client buffers publishes and flushes them together,
//! the daemon decodes every whole frame of a chunk), which is what keeps the
//! per-record cost of the local hop far below one system call.
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
//! 0x01  PUBLISH          request_id u64, mode u8, timeout_ms u32, timestamp_ms u64,
//!                        topic_len u16, key_len u16, value_len u32, topic, key, value
//! 0x02  SUBSCRIBE        sub_id u32, from u8, from_offset u64, consume u8,
//!                        pattern str16, group str16 (empty = no group)
//! 0x03  UNSUBSCRIBE      sub_id u32
//! 0x04  COMMIT           source u64, offset u64, group str16, topic str16
//! 0x05  STATS            (empty)
//! 0x06  PING             nonce u64
//! 0x81  PUBLISHED        request_id u64, offset u64
//! 0x82  PUBLISH_FAILED   request_id u64, failure
//! 0x83  RECORD           sub_id u32, source u64, offset u64, timestamp_ms u64,
//!                        topic_len u16, source_name_len u16 (0 = unknown),
//!                        key_len u16, value_len u32, topic, source_name, key, value
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

use bytes::{Bytes, BytesMut};

use super::{Error, NodeId, Offset, Result};

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
    pub const PUBLISH: u8 = 0x01;
    pub const SUBSCRIBE: u8 = 0x02;
    pub const UNSUBSCRIBE: u8 = 0x03;
    pub const COMMIT: u8 = 0x04;
    pub const STATS: u8 = 0x05;
    pub const PING: u8 = 0x06;
    pub const PUBLISHED: u8 = 0x81;
    pub const PUBLISH_FAILED: u8 = 0x82;
    pub const RECORD: u8 = 0x83;
    pub const GAP: u8 = 0x84;
    pub const SUBSCRIBED: u8 = 0x85;
    pub const SUBSCRIBE_FAILED: u8 = 0x86;
    pub const STATS_REPLY: u8 = 0x87;
    pub const PONG: u8 = 0x88;
}

/// Fixed part of a PUBLISH body, before topic, key and value.
const PUBLISH_FIXED_LEN: usize = 8 + 1 + 4 + 8 + 2 + 2 + 4;
/// Fixed part of a RECORD body, before topic, source name, key and value.
const RECORD_FIXED_LEN: usize = 4 + 8 + 8 + 8 + 2 + 2 + 2 + 4;

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

/// A publish request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Chosen by the client, echoed in `Published`/`PublishFailed`.
    pub request_id: u64,
    pub mode: PublishMode,
    /// How long a sync publish may wait for acknowledgements before the
    /// daemon fails it with the nodes still missing; 0 = the daemon's default.
    /// The daemon, not the client, times out so that the answer can name them.
    pub timeout_ms: u32,
    /// Milliseconds since the Unix epoch; 0 = the daemon sets it.
    pub timestamp_ms: u64,
    pub topic: String,
    /// Empty = no key.
    pub key: Bytes,
    pub value: Bytes,
}

/// The borrowed form of [`Publish`], so the client can encode a record
/// straight from the caller's slices without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRef<'a> {
    pub request_id: u64,
    pub mode: PublishMode,
    pub timeout_ms: u32,
    pub timestamp_ms: u64,
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

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
    Publish(Publish),
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

/// One record delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub sub_id: u32,
    pub topic: String,
    pub source: NodeId,
    /// The source node's name, when the daemon knows it.
    pub source_name: Option<String>,
    pub offset: Offset,
    pub timestamp_ms: u64,
    pub key: Bytes,
    pub value: Bytes,
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

impl Publish {
    /// The borrowed form, for emitting.
    pub fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            request_id: self.request_id,
            mode: self.mode,
            timeout_ms: self.timeout_ms,
            timestamp_ms: self.timestamp_ms,
            topic: &self.topic,
            key: &self.key,
            value: &self.value,
        }
    }
}

impl PublishRef<'_> {
    /// Bytes `emit` writes (header included).
    pub fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN + PUBLISH_FIXED_LEN + self.topic.len() + self.key.len() + self.value.len()
    }

    /// Writes the whole frame at the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.value.len() > MAX_VALUE_LEN {
            return Err(malformed("publish", "value longer than 64 MiB"));
        }
        let mut w = Writer::frame(buf, self.buffer_len(), kind::PUBLISH)?;
        w.u64(self.request_id)?;
        w.u8(self.mode.code())?;
        w.u32(self.timeout_ms)?;
        w.u64(self.timestamp_ms)?;
        w.len16(self.topic.len(), "topic longer than 65535 bytes")?;
        w.len16(self.key.len(), "key longer than 65535 bytes")?;
        w.len32(self.value.len())?;
        w.bytes(self.topic.as_bytes())?;
        w.bytes(self.key)?;
        w.bytes(self.value)?;
        w.finish()
    }

    /// Appends the frame to `out`; on error `out` is left unchanged.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        emit_to_vec(out, self.buffer_len(), |buf| self.emit(buf))
    }
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

    /// Appends the frame to `out`; on error `out` is left unchanged.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        emit_to_vec(out, self.buffer_len(), |buf| self.emit(buf))
    }
}

impl Request {
    /// Parses one whole frame (as split off by [`take_frame`]). Keys and
    /// values are slices of `frame`.
    pub fn parse(frame: &Bytes) -> Result<Request> {
        let view = Frame::new_checked(&frame[..])?;
        let mut r = Reader::new(frame, field::BODY, "request");
        let request = match view.kind() {
            kind::PUBLISH => {
                r.frame = "publish";
                let request_id = r.u64()?;
                let mode = PublishMode::from_code(r.u8()?)?;
                let timeout_ms = r.u32()?;
                let timestamp_ms = r.u64()?;
                let topic_len = usize::from(r.u16()?);
                let key_len = usize::from(r.u16()?);
                let value_len = r.u32()? as usize;
                if value_len > MAX_VALUE_LEN {
                    return Err(malformed("publish", "value longer than 64 MiB"));
                }
                let topic = r.string(topic_len)?;
                let key = r.slice(key_len)?;
                let value = r.slice(value_len)?;
                Request::Publish(Publish {
                    request_id,
                    mode,
                    timeout_ms,
                    timestamp_ms,
                    topic,
                    key,
                    value,
                })
            }
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
                Request::Publish(p) => return p.as_ref().buffer_len(),
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
            Request::Publish(p) => p.as_ref().emit(buf),
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
            Request::Publish(p) => p.as_ref().emit_to_vec(out),
            _ => emit_to_vec(out, self.buffer_len(), |buf| self.emit(buf)),
        }
    }
}

impl Response {
    /// Parses one whole frame (as split off by [`take_frame`]). Keys and
    /// values are slices of `frame`.
    pub fn parse(frame: &Bytes) -> Result<Response> {
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
                let topic = r.string(topic_len)?;
                let name = r.string(name_len)?;
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

fn malformed(frame: &'static str, reason: &'static str) -> Error {
    Error::Malformed { frame, reason }
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

/// Checked reads from a frame body; every read past the end is
/// `Error::Truncated`, never a panic.
struct Reader<'a> {
    frame_bytes: &'a Bytes,
    pos: usize,
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn new(frame_bytes: &'a Bytes, pos: usize, frame: &'static str) -> Self {
        Reader {
            frame_bytes,
            pos,
            frame,
        }
    }

    fn remaining(&self) -> usize {
        self.frame_bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>> {
        let end = self.pos.saturating_add(n);
        if end > self.frame_bytes.len() {
            return Err(Error::Truncated {
                need: end,
                have: self.frame_bytes.len(),
            });
        }
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let range = self.take(N)?;
        let mut a = [0u8; N];
        // invariant: take checked the range against the buffer.
        a.copy_from_slice(&self.frame_bytes[range]);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn slice(&mut self, n: usize) -> Result<Bytes> {
        let range = self.take(n)?;
        Ok(self.frame_bytes.slice(range))
    }

    fn string(&mut self, n: usize) -> Result<String> {
        let range = self.take(n)?;
        match std::str::from_utf8(&self.frame_bytes[range]) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(malformed(self.frame, "string is not UTF-8")),
        }
    }

    fn str16(&mut self) -> Result<String> {
        let n = usize::from(self.u16()?);
        self.string(n)
    }

    fn skip_rest(&mut self) {
        self.pos = self.frame_bytes.len();
    }

    /// A frame with bytes left after its layout is malformed: the two ends
    /// disagree about the format.
    fn end(&self) -> Result<()> {
        if self.pos != self.frame_bytes.len() {
            return Err(Error::BadLength {
                field: "ipc frame body",
                stated: self.pos,
                actual: self.frame_bytes.len(),
            });
        }
        Ok(())
    }
}

/// Checked writes of one frame into a slice of exactly the computed length.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    len: usize,
}

impl<'a> Writer<'a> {
    /// Starts a frame of `len` bytes (header included) of kind `kind`.
    fn frame(buf: &'a mut [u8], len: usize, kind: u8) -> Result<Writer<'a>> {
        if buf.len() < len {
            return Err(Error::BufferTooSmall {
                need: len,
                have: buf.len(),
            });
        }
        let body_len = len.saturating_sub(field::LENGTH.end);
        if body_len > MAX_FRAME_BODY_LEN {
            return Err(malformed("ipc frame", "frame longer than the maximum"));
        }
        let mut w = Writer { buf, pos: 0, len };
        // invariant: body_len <= MAX_FRAME_BODY_LEN < u32::MAX.
        w.u32(body_len as u32)?;
        w.u8(kind)?;
        Ok(w)
    }

    fn bytes(&mut self, b: &[u8]) -> Result<()> {
        let end = self.pos + b.len();
        match self.buf.get_mut(self.pos..end) {
            Some(dst) if end <= self.len => {
                dst.copy_from_slice(b);
                self.pos = end;
                Ok(())
            }
            _ => Err(Error::BufferTooSmall {
                need: end,
                have: self.len,
            }),
        }
    }
    fn u8(&mut self, v: u8) -> Result<()> {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }
    fn u32(&mut self, v: u32) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }
    fn len16(&mut self, len: usize, reason: &'static str) -> Result<()> {
        let v = u16::try_from(len).map_err(|_| malformed("ipc frame", reason))?;
        self.u16(v)
    }
    fn len32(&mut self, len: usize) -> Result<()> {
        let v = u32::try_from(len).map_err(|_| malformed("ipc frame", "value too long"))?;
        self.u32(v)
    }
    fn str16(&mut self, s: &str) -> Result<()> {
        self.len16(s.len(), "string longer than 65535 bytes")?;
        self.bytes(s.as_bytes())
    }

    /// Checks that exactly the computed length was written.
    fn finish(self) -> Result<usize> {
        if self.pos != self.len {
            return Err(Error::BadLength {
                field: "ipc frame emit",
                stated: self.len,
                actual: self.pos,
            });
        }
        Ok(self.pos)
    }
}
