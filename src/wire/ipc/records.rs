//! RECORDS: a run of records of one subscription, source and topic in one
//! frame (byte table in the parent module).
//!
//! The shared fields (subscription, source, topic, source name) travel once
//! per frame, so a subscriber of small records parses and interns them once
//! per run instead of once per record. The daemon builds the frame in place
//! at the end of a connection's output buffer: [`OpenRecords::start`] writes
//! a frame holding one record, [`OpenRecords::append`] adds the next one and
//! patches `length` and `count`. Both live here so the daemon never needs to
//! know where those fields are.

use std::sync::Arc;

use bytes::Bytes;

use super::cursor::{Reader, Writer};
use super::open_frame::{same_bytes, OpenFrame};
use super::{
    be_u32, body_len32, field, kind, len16, malformed, value_len32, Interned, FRAME_HEADER_LEN,
    MAX_VALUE_LEN,
};
use crate::wire::{NodeId, Offset, Result};

/// Fixed part of a RECORDS body before the entries: sub_id, source,
/// topic_len, source_name_len, count (topic and source name not counted).
const HEADER_FIXED_LEN: usize = 4 + 8 + 2 + 2 + 4;
/// Fixed part of one entry, before key and value.
const ENTRY_FIXED_LEN: usize = 8 + 8 + 2 + 4;

/// Records of one subscription, source and topic, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub sub_id: u32,
    /// Shared with the previous frames of the same topic (see
    /// [`Response::parse_interning`](super::Response::parse_interning)).
    pub topic: Arc<str>,
    pub source: NodeId,
    /// The source node's name, when the daemon knows it (shared likewise).
    pub source_name: Option<Arc<str>>,
    /// At least one.
    pub records: Vec<BatchRecord>,
}

/// One record of a [`RecordBatch`]; key and value are slices of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub offset: Offset,
    pub timestamp_ms: u64,
    pub key: Bytes,
    pub value: Bytes,
}

/// One record to deliver, borrowed, so the daemon can encode it straight
/// from its log buffer.
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

/// A RECORDS frame at the end of an output buffer that later records of the
/// same subscription, source, topic and source name may join. It only
/// remembers positions: [`append`](OpenRecords::append) checks that the
/// frame is still the last thing in the buffer before touching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenRecords {
    frame: OpenFrame,
}

impl RecordBatch {
    /// Bytes the frame takes (header included).
    pub fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN
            + HEADER_FIXED_LEN
            + self.topic.len()
            + self.source_name.as_deref().map_or(0, str::len)
            + self
                .records
                .iter()
                .map(|r| ENTRY_FIXED_LEN + r.key.len() + r.value.len())
                .sum::<usize>()
    }

    pub(super) fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let count = u32::try_from(self.records.len())
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| malformed("records", "a batch holds 1 to 2^32-1 records"))?;
        let mut w = Writer::frame(buf, self.buffer_len(), kind::RECORDS)?;
        w.u32(self.sub_id)?;
        w.u64(self.source.0)?;
        w.str16(&self.topic)?;
        w.str16(self.source_name.as_deref().unwrap_or(""))?;
        w.u32(count)?;
        for r in &self.records {
            if r.value.len() > MAX_VALUE_LEN {
                return Err(malformed("records", "value longer than 64 MiB"));
            }
            w.u64(r.offset.0)?;
            w.u64(r.timestamp_ms)?;
            w.len16(r.key.len(), "key longer than 65535 bytes")?;
            w.len32(r.value.len())?;
            w.bytes(&r.key)?;
            w.bytes(&r.value)?;
        }
        w.finish()
    }

    /// Reads the body after the kind byte. `count` must match the entries
    /// exactly: fewer bytes are `Truncated`, more are left for the caller's
    /// end-of-frame check.
    pub(super) fn parse(r: &mut Reader<'_>, last: &mut Interned) -> Result<RecordBatch> {
        r.frame = "records";
        let sub_id = r.u32()?;
        let source = NodeId(r.u64()?);
        let topic_len = usize::from(r.u16()?);
        let topic = r.shared_str(topic_len, &mut last.topic)?;
        let name_len = usize::from(r.u16()?);
        // An unknown name does not replace the interned one.
        let source_name = match name_len {
            0 => None,
            n => Some(r.shared_str(n, &mut last.source_name)?),
        };
        let count = r.u32()?;
        if count == 0 {
            return Err(malformed("records", "a batch holds no record"));
        }
        // A hostile count cannot reserve more than the bytes could hold.
        let fits = r.remaining() / ENTRY_FIXED_LEN;
        let mut records = Vec::with_capacity((count as usize).min(fits));
        for _ in 0..count {
            let offset = Offset(r.u64()?);
            let timestamp_ms = r.u64()?;
            let key_len = usize::from(r.u16()?);
            let value_len = r.u32()? as usize;
            if value_len > MAX_VALUE_LEN {
                return Err(malformed("records", "value longer than 64 MiB"));
            }
            let key = r.slice(key_len)?;
            let value = r.slice(value_len)?;
            records.push(BatchRecord {
                offset,
                timestamp_ms,
                key,
                value,
            });
        }
        Ok(RecordBatch {
            sub_id,
            topic,
            source,
            source_name,
            records,
        })
    }
}

/// The checked `u16`/`u32` length fields of one entry.
fn entry_lens(d: &DeliveryRef<'_>) -> Result<(u16, u32)> {
    let key_len = len16(d.key.len(), "records", "key longer than 65535 bytes")?;
    let value_len = value_len32(d.value.len(), "records")?;
    Ok((key_len, value_len))
}

fn push_entry(out: &mut Vec<u8>, d: &DeliveryRef<'_>, key_len: u16, value_len: u32) {
    out.extend_from_slice(&d.offset.0.to_be_bytes());
    out.extend_from_slice(&d.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(&value_len.to_be_bytes());
    out.extend_from_slice(d.key);
    out.extend_from_slice(d.value);
}

impl OpenRecords {
    /// Appends a RECORDS frame holding `d` alone to `out`; on error `out`
    /// is left unchanged. Checks first, then plain appends (no zero-fill).
    pub fn start(out: &mut Vec<u8>, d: &DeliveryRef<'_>) -> Result<OpenRecords> {
        let name = d.source_name.unwrap_or("");
        let topic_len = len16(d.topic.len(), "records", "topic longer than 65535 bytes")?;
        let name_len = len16(name.len(), "records", "source name longer than 65535 bytes")?;
        let (key_len, value_len) = entry_lens(d)?;
        let total = FRAME_HEADER_LEN
            + HEADER_FIXED_LEN
            + d.topic.len()
            + name.len()
            + ENTRY_FIXED_LEN
            + d.key.len()
            + d.value.len();
        let body_len = body_len32(total)?;
        let start = out.len();
        out.reserve(total);
        out.extend_from_slice(&body_len.to_be_bytes());
        out.push(kind::RECORDS);
        out.extend_from_slice(&d.sub_id.to_be_bytes());
        out.extend_from_slice(&d.source.0.to_be_bytes());
        out.extend_from_slice(&topic_len.to_be_bytes());
        out.extend_from_slice(d.topic.as_bytes());
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        let count_pos = out.len();
        out.extend_from_slice(&1u32.to_be_bytes());
        push_entry(out, d, key_len, value_len);
        Ok(OpenRecords {
            frame: OpenFrame::new(start, count_pos),
        })
    }

    /// Adds `d` to this frame when it is for the same subscription, source,
    /// topic and source name, the frame is still the last thing in `out`,
    /// and its body stays within `max_body_len`: `Ok(true)`, with `length`
    /// and `count` patched. `Ok(false)` leaves `out` unchanged (start a new
    /// frame instead); an error means `d` cannot be encoded at all.
    pub fn append(
        &mut self,
        out: &mut Vec<u8>,
        d: &DeliveryRef<'_>,
        max_body_len: usize,
    ) -> Result<bool> {
        let (key_len, value_len) = entry_lens(d)?;
        let entry_len = ENTRY_FIXED_LEN + d.key.len() + d.value.len();
        let Some(length) = self.frame.room(out, entry_len, max_body_len)? else {
            return Ok(false);
        };
        if !self.header_matches(out, d) {
            return Ok(false);
        }
        out.reserve(entry_len);
        push_entry(out, d, key_len, value_len);
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

    /// Whether the frame's shared fields are exactly those `d` would write.
    /// Runs once per delivered record, so integers are compared as integers
    /// and the short strings without a library call (six `memcmp` calls per
    /// record were a seventh of the receiving daemon's time at 64 B).
    fn header_matches(&self, out: &[u8], d: &DeliveryRef<'_>) -> bool {
        let Some(head) = out.get(self.frame.start + field::BODY..self.frame.count_pos) else {
            return false;
        };
        let name = d.source_name.unwrap_or("").as_bytes();
        let topic = d.topic.as_bytes();
        let topic_at = 4 + 8 + 2;
        let name_at = topic_at + topic.len() + 2;
        if head.len() != name_at + name.len() {
            return false;
        }
        let (Some(sub_id), Some(source), Some(topic_len), Some(name_len)) = (
            head.get(0..4),
            head.get(4..12),
            head.get(12..14),
            head.get(name_at - 2..name_at),
        ) else {
            return false;
        };
        be_u32(sub_id) == d.sub_id
            && source == d.source.0.to_be_bytes()
            && usize::from(u16::from_be_bytes([topic_len[0], topic_len[1]])) == topic.len()
            && usize::from(u16::from_be_bytes([name_len[0], name_len[1]])) == name.len()
            && same_bytes(head.get(topic_at..name_at - 2), topic)
            && same_bytes(head.get(name_at..), name)
    }
}
