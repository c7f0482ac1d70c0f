//! Segment files: `{base_offset:020}.seg`, a fixed header followed by frames.
//!
//! ```text
//! segment header (24 bytes, big-endian)
//! offset size field        why
//! 0      4    magic        b"CLSG": refuse files that are not segments
//! 4      2    version      1; a reader refuses versions it does not know
//! 6      2    flags        0; reserved
//! 8      8    base_offset  must equal the number in the file name
//! 16     4    header_crc   crc32 of bytes 0..16
//! 20     4    reserved     0
//!
//! frame (8 + len bytes), back to back after the header
//! 0      4    len          length of the record bytes that follow
//! 4      4    crc          crc32 (crc32fast) of those record bytes
//! 8      len  records      one or more wire records (src/wire/record.rs) back
//!                          to back, topic_id 0, offsets strictly increasing
//! ```
//!
//! The records inside a frame are byte for byte the wire layout, so replay
//! copies them into a REPLAY frame without re-encoding. A single `append` is a
//! frame of one record; `append_batch` packs records into frames of up to
//! [`FRAME_TARGET_LEN`] bytes (Kafka's record batch): one CRC over 64 KiB is
//! far cheaper to verify than 1,000 CRCs over 64 bytes, and a batch is
//! recovered all or nothing. Offsets inside one segment are strictly
//! increasing; they are dense except where a replica skipped ahead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::wire::record::RecordRepr;
use crate::wire::record::HEADER_LEN as RECORD_HEADER_LEN;
use crate::wire::Offset;

use super::error::{Error, Result};

pub(crate) const MAGIC: [u8; 4] = *b"CLSG";
pub(crate) const VERSION: u16 = 1;
/// Bytes of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: u64 = 24;
/// Bytes of framing (len + crc) before each record.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest record (header + key + value) a segment accepts: 256 MiB. Bounds
/// what a corrupt length field can make a reader allocate.
pub const MAX_RECORD_LEN: usize = 256 << 20;
/// A batch frame takes more records while it stays within this many bytes
/// (a record larger than this gets a frame of its own).
pub const FRAME_TARGET_LEN: usize = 64 << 10;

/// Builds the 24-byte header for a segment starting at `base`.
pub(crate) fn encode_header(base: Offset) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_be_bytes());
    h[8..16].copy_from_slice(&base.0.to_be_bytes());
    let crc = crc32fast::hash(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Checks a segment header against the base offset from the file name.
pub(crate) fn check_header(bytes: &[u8], base: Offset) -> std::result::Result<(), &'static str> {
    let h = bytes
        .get(..SEGMENT_HEADER_LEN as usize)
        .ok_or("segment header is short")?;
    if h[0..4] != MAGIC {
        return Err("segment header has a bad magic");
    }
    if be_u16(&h[4..6]) != VERSION {
        return Err("segment header has an unknown version");
    }
    if be_u32(&h[16..20]) != crc32fast::hash(&h[0..16]) {
        return Err("segment header crc mismatch");
    }
    if be_u64(&h[8..16]) != base.0 {
        return Err("segment header base offset differs from the file name");
    }
    Ok(())
}

/// What the bytes at the start of a buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameCheck {
    /// A whole frame with a matching CRC.
    Valid(FrameInfo),
    /// The frame header announces more bytes than the buffer holds.
    Incomplete { frame_len: usize },
    /// Not a frame this log wrote.
    Invalid(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameInfo {
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub count: u32,
    pub first_ts: u64,
    pub max_ts: u64,
    /// Frame header plus records.
    pub frame_len: usize,
}

/// Checks the frame at the start of `buf`: length, CRC, then that the
/// records tile the frame exactly with strictly increasing offsets.
pub(crate) fn check_frame(buf: &[u8]) -> FrameCheck {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return FrameCheck::Incomplete {
            frame_len: FRAME_HEADER_LEN,
        };
    };
    let len = be_u32(&head[0..4]) as usize;
    if !(RECORD_HEADER_LEN..=MAX_RECORD_LEN).contains(&len) {
        return FrameCheck::Invalid("frame length out of range");
    }
    let frame_len = FRAME_HEADER_LEN + len;
    let Some(records) = buf.get(FRAME_HEADER_LEN..frame_len) else {
        return FrameCheck::Incomplete { frame_len };
    };
    check_records(records, be_u32(&head[4..8]))
}

/// Checks the record bytes of one frame against the frame's CRC, and that
/// the records fill them exactly with strictly increasing offsets.
pub(crate) fn check_records(mut records: &[u8], crc: u32) -> FrameCheck {
    let frame_len = FRAME_HEADER_LEN + records.len();
    if crc32fast::hash(records) != crc {
        return FrameCheck::Invalid("frame crc mismatch");
    }
    let mut info = FrameInfo {
        first_offset: Offset(0),
        last_offset: Offset(0),
        count: 0,
        first_ts: 0,
        max_ts: 0,
        frame_len,
    };
    while !records.is_empty() {
        let Ok((repr, rec_len)) = RecordRepr::parse_prefix(records) else {
            return FrameCheck::Invalid("records do not fill the frame");
        };
        if info.count == 0 {
            info.first_offset = repr.offset;
            info.first_ts = repr.timestamp_ms;
        } else if repr.offset <= info.last_offset {
            return FrameCheck::Invalid("record offsets in a frame do not increase");
        }
        info.last_offset = repr.offset;
        info.max_ts = info.max_ts.max(repr.timestamp_ms);
        info.count += 1;
        records = &records[rec_len..];
    }
    if info.count == 0 {
        return FrameCheck::Invalid("empty frame");
    }
    FrameCheck::Valid(info)
}

/// Cheap test whether a frame could start at `buf[0]`, used while searching
/// for the next valid frame after a corrupt region (before paying for a CRC).
fn plausible_frame(buf: &[u8], min_offset: Offset) -> bool {
    let Some(h) = buf.get(..FRAME_HEADER_LEN + RECORD_HEADER_LEN) else {
        return false;
    };
    let len = be_u32(&h[0..4]) as usize;
    if !(RECORD_HEADER_LEN..=MAX_RECORD_LEN).contains(&len) {
        return false;
    }
    let rec = &h[FRAME_HEADER_LEN..];
    let key_len = u64::from(be_u16(&rec[20..22]));
    let value_len = u64::from(be_u32(&rec[22..26]));
    let offset = be_u64(&rec[4..12]);
    RECORD_HEADER_LEN as u64 + key_len + value_len <= len as u64 && offset >= min_offset.0
}

/// Reads `buf.len()` bytes at `pos`, or fewer at end of file; returns the count.
pub(crate) fn read_full_at(file: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, "read", e)),
        }
    }
    Ok(done)
}

/// How a sequential scan of `[start, end)` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte up to `end` was a valid frame.
    Clean,
    /// The frame at `position` is invalid or runs past `end`.
    Broken { position: u64, reason: &'static str },
}

/// Visits every valid frame from `start` until `end` or the first invalid
/// frame, reading in chunks of about 1 MiB (segments can be large; memory is
/// bounded). Frames whose offset does not increase count as invalid.
pub(crate) fn scan_frames(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    mut last_offset: Option<Offset>,
    buf: &mut Vec<u8>,
    mut visit: impl FnMut(u64, FrameInfo),
) -> Result<ScanEnd> {
    const CHUNK: usize = 1 << 20;
    let mut pos = start;
    while pos < end {
        let remaining = usize::try_from(end - pos).unwrap_or(usize::MAX);
        let want = remaining.min(CHUNK.max(buf.len()));
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let got = read_full_at(file, path, &mut buf[..want], pos)?;
        if got == 0 {
            return Ok(ScanEnd::Broken {
                position: pos,
                reason: "file shorter than expected",
            });
        }
        let chunk = &buf[..got];
        let mut at = 0usize;
        loop {
            match check_frame(&chunk[at..]) {
                FrameCheck::Valid(info) => {
                    if last_offset.is_some_and(|l| info.first_offset <= l) {
                        return Ok(ScanEnd::Broken {
                            position: pos + at as u64,
                            reason: "record offset does not increase",
                        });
                    }
                    last_offset = Some(info.last_offset);
                    visit(pos + at as u64, info);
                    at += info.frame_len;
                }
                FrameCheck::Incomplete { frame_len } => {
                    let frame_end = pos + at as u64 + frame_len as u64;
                    if frame_end > end {
                        if at == chunk.len() {
                            break;
                        }
                        return Ok(ScanEnd::Broken {
                            position: pos + at as u64,
                            reason: "incomplete record at end of segment",
                        });
                    }
                    if at == 0 {
                        // One frame larger than the buffer: grow to hold it.
                        buf.resize(frame_len, 0);
                    }
                    break;
                }
                FrameCheck::Invalid(reason) => {
                    return Ok(ScanEnd::Broken {
                        position: pos + at as u64,
                        reason,
                    })
                }
            }
        }
        pos += at as u64;
    }
    Ok(ScanEnd::Clean)
}

/// Searches `(from, end)` byte by byte for the next position holding a valid
/// frame with an offset of at least `min_offset`: where reading resumes after
/// a corrupt region. A false match needs a 32-bit CRC collision on top of a
/// consistent length and record header.
pub(crate) fn find_next_valid(
    file: &File,
    path: &Path,
    from: u64,
    end: u64,
    min_offset: Offset,
    buf: &mut Vec<u8>,
) -> Result<Option<(u64, FrameInfo)>> {
    const CHUNK: usize = 1 << 20;
    let probe = FRAME_HEADER_LEN + RECORD_HEADER_LEN;
    let mut pos = from;
    while pos < end {
        let want = usize::try_from(end - pos).unwrap_or(usize::MAX).min(CHUNK);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let got = read_full_at(file, path, &mut buf[..want], pos)?;
        if got == 0 {
            return Ok(None);
        }
        // Candidates are positions whose plausibility probe fits in the chunk;
        // the last `probe - 1` positions are re-read with the next chunk.
        let last_candidate = if pos + got as u64 >= end {
            got
        } else {
            got.saturating_sub(probe - 1).max(1)
        };
        for at in 0..last_candidate {
            if plausible_frame(&buf[at..got], min_offset) {
                if let Some(hit) = verify_frame_at(file, path, pos + at as u64, end)? {
                    return Ok(Some(hit));
                }
            }
        }
        pos += last_candidate as u64;
    }
    Ok(None)
}

/// Reads and fully checks one frame at `pos`.
fn verify_frame_at(
    file: &File,
    path: &Path,
    pos: u64,
    end: u64,
) -> Result<Option<(u64, FrameInfo)>> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    if read_full_at(file, path, &mut head, pos)? < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let len = be_u32(&head[0..4]) as usize;
    let frame_len = FRAME_HEADER_LEN + len;
    if len > MAX_RECORD_LEN || pos + frame_len as u64 > end {
        return Ok(None);
    }
    let mut frame = vec![0u8; frame_len];
    if read_full_at(file, path, &mut frame, pos)? < frame_len {
        return Ok(None);
    }
    match check_frame(&frame) {
        FrameCheck::Valid(info) => Ok(Some((pos, info))),
        _ => Ok(None),
    }
}

/// File name of the segment starting at `base`.
pub(crate) fn segment_file_name(base: Offset) -> String {
    format!("{:020}.seg", base.0)
}

/// File name of the index of the segment starting at `base`.
pub(crate) fn index_file_name(base: Offset) -> String {
    format!("{:020}.idx", base.0)
}

/// The base offset in a `{base:020}.seg` name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}

pub(crate) fn be_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_be_bytes(a)
}
pub(crate) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}
pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Builds frames at the start of a reused buffer: records are added to the
/// open frame until it would pass [`FRAME_TARGET_LEN`]; `finish` seals the
/// last one. The buffer keeps its length between appends (only `len()` bytes
/// are meaningful), so steady-state appends neither allocate nor zero-fill.
#[derive(Debug, Default)]
pub(crate) struct FrameWriter {
    /// Start of the open frame in the buffer, if one is open.
    open: Option<usize>,
    /// Bytes of frames written so far.
    used: usize,
}

impl FrameWriter {
    pub fn new() -> FrameWriter {
        FrameWriter {
            open: None,
            used: 0,
        }
    }

    /// Bytes of frames at the start of the buffer.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Adds a record (`topic_id` 0), in the open frame or a new one.
    pub fn push(
        &mut self,
        out: &mut Vec<u8>,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> std::result::Result<(), crate::wire::Error> {
        let repr = RecordRepr {
            topic: crate::wire::TopicId(0),
            offset,
            timestamp_ms,
            key,
            value,
        };
        let rec_len = repr.buffer_len();
        if let Some(start) = self.open {
            if self.used - start - FRAME_HEADER_LEN + rec_len > FRAME_TARGET_LEN {
                self.finish(out);
            }
        }
        let header = if self.open.is_none() {
            FRAME_HEADER_LEN
        } else {
            0
        };
        let need = self.used + header + rec_len;
        if out.len() < need {
            out.resize(need.max(out.len().saturating_mul(2)), 0);
        }
        let at = self.used + header;
        repr.emit(&mut out[at..at + rec_len])?;
        if header > 0 {
            self.open = Some(self.used);
        }
        self.used = need;
        Ok(())
    }

    /// Fills in the length and CRC of the open frame.
    pub fn finish(&mut self, out: &mut [u8]) {
        let Some(start) = self.open.take() else {
            return;
        };
        let records = &out[start + FRAME_HEADER_LEN..self.used];
        let len = u32::try_from(records.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(records);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Appends a frame holding one record; returns its length.
#[cfg(test)]
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    offset: Offset,
    timestamp_ms: u64,
    key: &[u8],
    value: &[u8],
) -> usize {
    let mut buf = Vec::new();
    let mut w = FrameWriter::new();
    w.push(&mut buf, offset, timestamp_ms, key, value).unwrap();
    w.finish(&mut buf);
    out.extend_from_slice(&buf[..w.len()]);
    w.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_rejects_wrong_base() {
        let h = encode_header(Offset(42));
        assert_eq!(check_header(&h, Offset(42)), Ok(()));
        assert!(check_header(&h, Offset(43)).is_err());
        assert!(check_header(&h[..10], Offset(42)).is_err());
    }

    #[test]
    fn frame_golden_bytes() {
        let mut out = Vec::new();
        encode_frame(&mut out, Offset(258), 7, b"k", b"v");
        assert_eq!(&out[0..4], &[0, 0, 0, 28]);
        assert_eq!(&out[8..12], &[0, 0, 0, 0], "stored topic id is 0");
        assert_eq!(&out[12..20], &258u64.to_be_bytes());
        let crc = crc32fast::hash(&out[8..]);
        assert_eq!(&out[4..8], &crc.to_be_bytes());
        assert!(
            matches!(check_frame(&out), FrameCheck::Valid(i) if i.first_offset == Offset(258) && i.frame_len == 36)
        );
    }

    #[test]
    fn frame_with_flipped_bit_is_invalid() {
        let mut out = Vec::new();
        encode_frame(&mut out, Offset(1), 7, b"key", b"value");
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(
                !matches!(check_frame(&bad), FrameCheck::Valid(_)),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn frame_cut_short_is_incomplete() {
        let mut out = Vec::new();
        encode_frame(&mut out, Offset(1), 7, b"key", b"value");
        for len in 0..out.len() {
            assert!(
                matches!(check_frame(&out[..len]), FrameCheck::Incomplete { .. }),
                "len {len}"
            );
        }
    }

    #[test]
    fn batch_frames_hold_many_records_up_to_the_target_size() {
        let mut out = Vec::new();
        let mut w = FrameWriter::new();
        let value = [9u8; 1000];
        for o in 0..200u64 {
            w.push(&mut out, Offset(o), o, b"", &value).unwrap();
        }
        w.finish(&mut out);
        out.truncate(w.len());
        let mut at = 0;
        let mut firsts = Vec::new();
        while at < out.len() {
            let FrameCheck::Valid(info) = check_frame(&out[at..]) else {
                panic!("invalid frame at {at}");
            };
            assert!(info.frame_len <= FRAME_HEADER_LEN + FRAME_TARGET_LEN);
            assert_eq!(
                info.last_offset.0 - info.first_offset.0 + 1,
                u64::from(info.count)
            );
            firsts.push(info.first_offset.0);
            at += info.frame_len;
        }
        assert_eq!(firsts, vec![0, 63, 126, 189]);
    }

    #[test]
    fn frame_with_offsets_out_of_order_is_invalid() {
        let mut out = Vec::new();
        let mut w = FrameWriter::new();
        w.push(&mut out, Offset(5), 0, b"", b"a").unwrap();
        w.push(&mut out, Offset(5), 0, b"", b"b").unwrap();
        w.finish(&mut out);
        out.truncate(w.len());
        assert_eq!(
            check_frame(&out),
            FrameCheck::Invalid("record offsets in a frame do not increase")
        );
    }

    #[test]
    fn segment_names_parse_only_twenty_digits() {
        assert_eq!(
            parse_segment_name(&segment_file_name(Offset(12))),
            Some(Offset(12))
        );
        assert_eq!(parse_segment_name("12.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000001x.seg"), None);
    }
}
