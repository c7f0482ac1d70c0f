//! PUBLISH: a run of records of one topic, mode and timeout in one frame,
//! with consecutive request ids (byte table in the parent module).
//!
//! The shared fields travel once per frame, so a publisher of small records
//! encodes, and the daemon parses and interns, them once per run instead of
//! once per record. The client builds the frame in place at the end of its
//! output buffer: [`OpenPublish::start`] writes a frame holding one record,
//! [`OpenPublish::append`] adds the next one and patches `length` and
//! `count`. Both live here so the client never needs to know where those
//! fields are.
//!
//! A parsed [`PublishBatch`] keeps the frame and the position of each entry,
//! not a `Bytes` per key and value: the daemon writes most records to its log
//! and its subscribers from borrowed slices, and takes a shared handle
//! ([`PublishBatch::payload`]) only for the few it must keep.

use std::sync::Arc;

use bytes::Bytes;

use super::cursor::Reader;
use super::open_frame::{same_bytes, OpenFrame};
use super::{
    be_u32, body_len32, field, kind, len16, malformed, value_len32, PublishMode, FRAME_HEADER_LEN,
    MAX_VALUE_LEN,
};
use crate::wire::{Error, Result};

/// Fixed part of a PUBLISH body before the entries: mode, timeout_ms,
/// topic_len, first_request_id, count (topic not counted).
const HEADER_FIXED_LEN: usize = 1 + 4 + 2 + 8 + 4;
/// Fixed part of one entry, before key and value.
const ENTRY_FIXED_LEN: usize = 8 + 2 + 4;

/// One record to publish, borrowed, so the client can encode it straight
/// from the caller's slices without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRef<'a> {
    /// Chosen by the client, echoed in `Published`/`PublishFailed`. In a
    /// frame, entry `i` has `first_request_id + i`.
    pub request_id: u64,
    pub mode: PublishMode,
    /// How long a sync publish may wait for acknowledgements before the
    /// daemon fails it with the nodes still missing; 0 = the daemon's default.
    /// The daemon, not the client, times out so that the answer can name them.
    pub timeout_ms: u32,
    /// Milliseconds since the Unix epoch; 0 = the daemon sets it.
    pub timestamp_ms: u64,
    pub topic: &'a str,
    /// Empty = no key.
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// A parsed PUBLISH frame: at least one record of one topic, mode and
/// timeout. Equal batches have equal frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishBatch {
    pub mode: PublishMode,
    /// See [`PublishRef::timeout_ms`].
    pub timeout_ms: u32,
    /// Shared: consecutive frames to one topic share one allocation (see
    /// [`Request::parse_interning`](super::Request::parse_interning)).
    pub topic: Arc<str>,
    /// The request id of the first entry; entry `i` has this plus `i`.
    pub first_request_id: u64,
    /// The whole frame (header included): entries are read from it.
    frame: Bytes,
    entries: Vec<EntryPos>,
}

/// Where one entry's key and value are in the frame (the value follows the
/// key). 24 bytes: a frame is below 4 GiB, so positions fit a `u32`, and a
/// batch of empty records costs less than twice its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryPos {
    timestamp_ms: u64,
    key_start: u32,
    value_len: u32,
    key_len: u16,
}

impl EntryPos {
    fn key(&self) -> core::ops::Range<usize> {
        let start = self.key_start as usize;
        start..start + usize::from(self.key_len)
    }
    fn value(&self) -> core::ops::Range<usize> {
        let start = self.key().end;
        start..start + self.value_len as usize
    }
}

/// One record of a [`PublishBatch`], borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishEntry<'a> {
    pub request_id: u64,
    /// 0 = the daemon sets it.
    pub timestamp_ms: u64,
    /// Empty = no key.
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// A PUBLISH frame at the end of an output buffer that later records of the
/// same topic, mode and timeout may join. It only remembers positions:
/// [`append`](OpenPublish::append) checks that the frame is still the last
/// thing in the buffer before touching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenPublish {
    frame: OpenFrame,
    first_request_id: u64,
}

impl PublishRef<'_> {
    /// Bytes of a PUBLISH frame holding this record alone (header included).
    pub fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN
            + HEADER_FIXED_LEN
            + self.topic.len()
            + ENTRY_FIXED_LEN
            + self.key.len()
            + self.value.len()
    }

    /// Appends a PUBLISH frame holding this record alone to `out`; on error
    /// `out` is left unchanged. Returns the bytes written.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        OpenPublish::start(out, self)?;
        Ok(self.buffer_len())
    }

    /// The checked `u16`/`u32` length fields of the entry.
    fn entry_lens(&self) -> Result<(u16, u32)> {
        let key_len = len16(self.key.len(), "publish", "key longer than 65535 bytes")?;
        let value_len = value_len32(self.value.len(), "publish")?;
        Ok((key_len, value_len))
    }

    fn push_entry(&self, out: &mut Vec<u8>, key_len: u16, value_len: u32) {
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
    }
}

impl OpenPublish {
    /// Appends a PUBLISH frame holding `p` alone to `out`; on error `out`
    /// is left unchanged. Checks first, then plain appends (no zero-fill).
    pub fn start(out: &mut Vec<u8>, p: &PublishRef<'_>) -> Result<OpenPublish> {
        let topic_len = len16(p.topic.len(), "publish", "topic longer than 65535 bytes")?;
        let (key_len, value_len) = p.entry_lens()?;
        let total = p.buffer_len();
        let body_len = body_len32(total)?;
        let start = out.len();
        out.reserve(total);
        out.extend_from_slice(&body_len.to_be_bytes());
        out.push(kind::PUBLISH);
        out.push(p.mode.code());
        out.extend_from_slice(&p.timeout_ms.to_be_bytes());
        out.extend_from_slice(&topic_len.to_be_bytes());
        out.extend_from_slice(p.topic.as_bytes());
        out.extend_from_slice(&p.request_id.to_be_bytes());
        let count_pos = out.len();
        out.extend_from_slice(&1u32.to_be_bytes());
        p.push_entry(out, key_len, value_len);
        Ok(OpenPublish {
            frame: OpenFrame::new(start, count_pos),
            first_request_id: p.request_id,
        })
    }

    /// Adds `p` to this frame when it has the same topic, mode and timeout,
    /// its request id is the next one (any id for one-way publishes, which
    /// are never answered), the frame is still the last thing in `out`, and
    /// its body stays within `max_body_len`: `Ok(true)`, with `length` and
    /// `count` patched. `Ok(false)` leaves `out` unchanged (start a new frame
    /// instead); an error means `p` cannot be encoded at all.
    pub fn append(
        &mut self,
        out: &mut Vec<u8>,
        p: &PublishRef<'_>,
        max_body_len: usize,
    ) -> Result<bool> {
        let (key_len, value_len) = p.entry_lens()?;
        let next_id = self
            .first_request_id
            .wrapping_add(u64::from(self.frame.count));
        if p.mode != PublishMode::OneWay && p.request_id != next_id {
            return Ok(false);
        }
        let entry_len = ENTRY_FIXED_LEN + p.key.len() + p.value.len();
        let Some(length) = self.frame.room(out, entry_len, max_body_len)? else {
            return Ok(false);
        };
        if !self.header_matches(out, p) {
            return Ok(false);
        }
        out.reserve(entry_len);
        p.push_entry(out, key_len, value_len);
        self.frame.commit(out, length);
        Ok(true)
    }

    /// Where the frame begins in the buffer: bytes before it may be written
    /// out, bytes from it on must not be until the frame is closed.
    pub fn start_pos(&self) -> usize {
        self.frame.start
    }

    /// Records in the frame so far.
    pub fn count(&self) -> u32 {
        self.frame.count
    }

    /// Whether mode, timeout and topic are exactly those `p` would write.
    /// Runs once per published record, so integers are compared as
    /// integers and the topic without a library call (as in
    /// `OpenRecords::append`).
    fn header_matches(&self, out: &[u8], p: &PublishRef<'_>) -> bool {
        // The request id (8 bytes before count) is checked by the caller.
        let Some(head) =
            out.get(self.frame.start + field::BODY..self.frame.count_pos.saturating_sub(8))
        else {
            return false;
        };
        let topic = p.topic.as_bytes();
        let topic_at = 1 + 4 + 2;
        if head.len() != topic_at + topic.len() {
            return false;
        }
        let (Some(&mode), Some(timeout_ms), Some(topic_len)) =
            (head.first(), head.get(1..5), head.get(5..7))
        else {
            return false;
        };
        mode == p.mode.code()
            && be_u32(timeout_ms) == p.timeout_ms
            && usize::from(u16::from_be_bytes([topic_len[0], topic_len[1]])) == topic.len()
            && same_bytes(head.get(topic_at..), topic)
    }
}

impl PublishBatch {
    /// A batch of `entries` (at least one), encoded and parsed back: for
    /// tests and tools; the client builds its frames with [`OpenPublish`].
    pub fn new(
        mode: PublishMode,
        timeout_ms: u32,
        topic: &str,
        first_request_id: u64,
        entries: &[(u64, &[u8], &[u8])],
    ) -> Result<PublishBatch> {
        let mut out = Vec::new();
        let mut open: Option<OpenPublish> = None;
        for (i, &(timestamp_ms, key, value)) in entries.iter().enumerate() {
            let p = PublishRef {
                request_id: first_request_id.wrapping_add(i as u64),
                mode,
                timeout_ms,
                timestamp_ms,
                topic,
                key,
                value,
            };
            match open.as_mut() {
                Some(o) => {
                    if !o.append(&mut out, &p, super::MAX_FRAME_BODY_LEN)? {
                        return Err(malformed("publish", "entries do not fit one frame"));
                    }
                }
                None => open = Some(OpenPublish::start(&mut out, &p)?),
            }
        }
        if open.is_none() {
            return Err(malformed("publish", "a batch holds no record"));
        }
        match super::Request::parse(&Bytes::from(out))? {
            super::Request::Publish(b) => Ok(b),
            _ => Err(malformed("publish", "not a publish frame")),
        }
    }

    /// Records in the batch (at least one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true for a parsed batch; here for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the value lengths (what the daemon counts toward a log write).
    pub fn value_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.value_len as usize).sum()
    }

    /// The entries in order, borrowed from the frame.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = PublishEntry<'_>> + '_ {
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, e)| self.entry_at(i, e))
    }

    /// Entry `i`, if there is one.
    pub fn entry(&self, i: usize) -> Option<PublishEntry<'_>> {
        self.entries.get(i).map(|e| self.entry_at(i, e))
    }

    /// Key and value of entry `i` as shared slices of the frame (no copy),
    /// for a record that must outlive the batch.
    pub fn payload(&self, i: usize) -> Option<(Bytes, Bytes)> {
        let e = self.entries.get(i)?;
        let (key, value) = (e.key(), e.value());
        // invariant: parse checked both ranges against the frame.
        (value.end <= self.frame.len()).then(|| (self.frame.slice(key), self.frame.slice(value)))
    }

    /// The frame as received (header included): emitting copies it.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    fn entry_at(&self, i: usize, e: &EntryPos) -> PublishEntry<'_> {
        // invariant: parse checked every range against the frame.
        let bytes = &self.frame[..];
        PublishEntry {
            request_id: self.first_request_id.wrapping_add(i as u64),
            timestamp_ms: e.timestamp_ms,
            key: bytes.get(e.key()).unwrap_or_default(),
            value: bytes.get(e.value()).unwrap_or_default(),
        }
    }

    /// Reads the body after the kind byte. `count` must match the entries
    /// exactly: fewer bytes are `Truncated`, more are left for the caller's
    /// end-of-frame check.
    pub(super) fn parse(
        frame: &Bytes,
        r: &mut Reader<'_>,
        last_topic: &mut Option<Arc<str>>,
    ) -> Result<PublishBatch> {
        r.frame = "publish";
        let mode = PublishMode::from_code(r.u8()?)?;
        let timeout_ms = r.u32()?;
        let topic_len = usize::from(r.u16()?);
        let topic = r.shared_str(topic_len, last_topic)?;
        let first_request_id = r.u64()?;
        let count = r.u32()?;
        if count == 0 {
            return Err(malformed("publish", "a batch holds no record"));
        }
        // A hostile count cannot reserve more than the bytes could hold.
        let fits = r.remaining() / ENTRY_FIXED_LEN;
        let mut entries = Vec::with_capacity((count as usize).min(fits));
        for _ in 0..count {
            let timestamp_ms = r.u64()?;
            let key_len = r.u16()?;
            let value_len = r.u32()?;
            if value_len as usize > MAX_VALUE_LEN {
                return Err(malformed("publish", "value longer than 64 MiB"));
            }
            let key = r.take(usize::from(key_len))?;
            r.take(value_len as usize)?;
            let key_start = u32::try_from(key.start)
                .map_err(|_| malformed("publish", "frame longer than the maximum"))?;
            entries.push(EntryPos {
                timestamp_ms,
                key_start,
                value_len,
                key_len,
            });
        }
        Ok(PublishBatch {
            mode,
            timeout_ms,
            topic,
            first_request_id,
            frame: frame.clone(),
            entries,
        })
    }

    /// Writes the frame at the start of `buf`; returns the bytes written.
    pub(super) fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.frame.len();
        match buf.get_mut(..len) {
            Some(dst) => {
                dst.copy_from_slice(&self.frame);
                Ok(len)
            }
            None => Err(Error::BufferTooSmall {
                need: len,
                have: buf.len(),
            }),
        }
    }
}
