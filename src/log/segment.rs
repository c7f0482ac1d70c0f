//! Segment files: `{base_offset:020}.seg`, a fixed header followed by frames.
//!
//! ```text
//! segment header (24 bytes, big-endian)
//! offset size field        why
//! 0      4    magic        b"CLSG": refuse files that are not segments
//! 4      2    version      2 (1 is still read); a reader refuses others
//! 6      2    flags        0; reserved
//! 8      8    base_offset  must equal the number in the file name
//! 16     4    header_crc   crc32 of bytes 0..16
//! 20     4    reserved     0
//!
//! frame (8 + len bytes), back to back after the header
//! 0      4    len          bytes that follow: records + trailer
//! 4      4    crc          crc32 (crc32fast) of those len bytes
//! 8      ..   records      one or more wire records (src/wire/record.rs) back
//!                          to back, topic_id 0, offsets strictly increasing
//! ..     4    count        trailer: how many records the frame holds
//! ..     4    last_record  trailer: position of the last record, counted
//!                          from the first record's first byte
//! ```
//!
//! The records inside a frame are byte for byte the wire layout, so replay
//! copies them into a REPLAY frame without re-encoding. A single `append` is a
//! frame of one record; `append_batch` packs records into frames of up to
//! [`FRAME_TARGET_LEN`] bytes (Kafka's record batch): one CRC over 64 KiB is
//! far cheaper to verify than 1,000 CRCs over 64 bytes, and a batch is
//! recovered all or nothing. The trailer (Kafka keeps the same facts in its
//! batch header) lets a reader take a CRC-verified frame's count and last
//! offset without walking its records: that walk, a chain of dependent loads
//! per record, cost as much as the CRC on replay of small records. It sits
//! after the records so that they start at the same place as in version 1.
//! Offsets inside one segment are strictly increasing; they are dense except
//! where a replica skipped ahead.
//!
//! Version 1 segments (frames without the trailer, written before) are read
//! as they are; appends never go to one (the first append after opening a
//! log whose last segment is version 1 rolls to a new segment).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::wire::record::RecordRepr;
use crate::wire::record::HEADER_LEN as RECORD_HEADER_LEN;
use crate::wire::Offset;

use super::error::{Error, Result};

pub(crate) const MAGIC: [u8; 4] = *b"CLSG";
/// Bytes of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: u64 = 24;
/// Bytes of framing (len + crc) before the records of a frame.
pub const FRAME_HEADER_LEN: usize = 8;
/// Bytes of framing (count + last record position) after the records of a
/// frame (version 2 segments).
pub const FRAME_TRAILER_LEN: usize = 8;

/// How the frames of a segment are laid out, from its header's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFormat {
    /// Version 1: len, crc, records. Read, never written.
    V1,
    /// Version 2: len, crc, records, trailer (count, last record position).
    V2,
}

impl FrameFormat {
    /// The format of the segments this build creates.
    pub const CURRENT: FrameFormat = FrameFormat::V2;

    fn from_version(version: u16) -> Option<FrameFormat> {
        match version {
            1 => Some(FrameFormat::V1),
            2 => Some(FrameFormat::V2),
            _ => None,
        }
    }

    fn version(self) -> u16 {
        match self {
            FrameFormat::V1 => 1,
            FrameFormat::V2 => 2,
        }
    }

    pub fn trailer_len(self) -> usize {
        match self {
            FrameFormat::V1 => 0,
            FrameFormat::V2 => FRAME_TRAILER_LEN,
        }
    }

    /// Range of the `len` field: one smallest record up to one largest.
    pub fn len_range(self) -> std::ops::RangeInclusive<usize> {
        RECORD_HEADER_LEN + self.trailer_len()..=MAX_RECORD_LEN + self.trailer_len()
    }
}
/// Largest record (header + key + value) a segment accepts: 256 MiB. Bounds
/// what a corrupt length field can make a reader allocate.
pub const MAX_RECORD_LEN: usize = 256 << 20;
/// A batch frame takes more records while it stays within this many bytes
/// (a record larger than this gets a frame of its own).
pub const FRAME_TARGET_LEN: usize = 64 << 10;

/// Builds the 24-byte header for a segment starting at `base`.
pub(crate) fn encode_header(base: Offset) -> [u8; SEGMENT_HEADER_LEN as usize] {
    encode_header_for(base, FrameFormat::CURRENT)
}

/// The header of a segment of `format` (tests write version 1 segments).
pub(crate) fn encode_header_for(
    base: Offset,
    format: FrameFormat,
) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&format.version().to_be_bytes());
    h[8..16].copy_from_slice(&base.0.to_be_bytes());
    let crc = crc32fast::hash(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Checks a segment header against the base offset from the file name;
/// returns the frame format its version gives.
pub(crate) fn check_header(
    bytes: &[u8],
    base: Offset,
) -> std::result::Result<FrameFormat, &'static str> {
    let h = bytes
        .get(..SEGMENT_HEADER_LEN as usize)
        .ok_or("segment header is short")?;
    if h[0..4] != MAGIC {
        return Err("segment header has a bad magic");
    }
    let format = FrameFormat::from_version(be_u16(&h[4..6]))
        .ok_or("segment header has an unknown version")?;
    if be_u32(&h[16..20]) != crc32fast::hash(&h[0..16]) {
        return Err("segment header crc mismatch");
    }
    if be_u64(&h[8..16]) != base.0 {
        return Err("segment header base offset differs from the file name");
    }
    Ok(format)
}

/// The frame format of a segment file: from its header, or, if the header
/// is damaged, from whichever format its first frame checks as (the current
/// one if neither does). `Err` only for I/O errors.
pub(crate) fn segment_format(
    file: &File,
    path: &Path,
    base: Offset,
    len: u64,
) -> Result<std::result::Result<FrameFormat, (FrameFormat, &'static str)>> {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let got = read_full_at(file, path, &mut header, 0)?;
    let reason = match check_header(header.get(..got).unwrap_or(&[]), base) {
        Ok(format) => return Ok(Ok(format)),
        Err(reason) => reason,
    };
    for format in [FrameFormat::CURRENT, FrameFormat::V1] {
        if verify_frame_at(file, path, SEGMENT_HEADER_LEN, len, format)?.is_some() {
            return Ok(Err((format, reason)));
        }
    }
    Ok(Err((FrameFormat::CURRENT, reason)))
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
    /// Newest record timestamp; only [`check_frame`] reads it (the fast
    /// check does not look at the records between the first and the last,
    /// and leaves it at `first_ts`).
    pub max_ts: u64,
    /// Bytes of records (without the trailer); they start right after the
    /// frame header.
    pub records_len: usize,
    /// Frame header plus records plus trailer.
    pub frame_len: usize,
}

/// Splits the frame at the start of `buf` into (body, crc): the `len` bytes
/// after its header, and the CRC they must match.
fn frame_body(buf: &[u8], format: FrameFormat) -> std::result::Result<(&[u8], u32), FrameCheck> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return Err(FrameCheck::Incomplete {
            frame_len: FRAME_HEADER_LEN,
        });
    };
    let len = be_u32(&head[0..4]) as usize;
    if !format.len_range().contains(&len) {
        return Err(FrameCheck::Invalid("frame length out of range"));
    }
    let frame_len = FRAME_HEADER_LEN + len;
    let Some(body) = buf.get(FRAME_HEADER_LEN..frame_len) else {
        return Err(FrameCheck::Incomplete { frame_len });
    };
    Ok((body, be_u32(&head[4..8])))
}

/// Checks the frame at the start of `buf` completely: length, CRC, that the
/// records tile the frame exactly with strictly increasing offsets, and
/// that the trailer agrees. Recovery and index rebuilds use this.
pub(crate) fn check_frame(buf: &[u8], format: FrameFormat) -> FrameCheck {
    match frame_body(buf, format) {
        Ok((body, crc)) => check_body(body, crc, format),
        Err(check) => check,
    }
}

/// [`check_frame`], or for version 2 frames only the CRC and the trailer:
/// what a reader needs before handing the records out. The CRC proves the
/// bytes are the ones this log wrote, and the writer only writes whole
/// records; the trailer gives the count and last offset without a walk
/// over the records (the walk costs as much as the CRC on small records).
pub(crate) fn check_frame_fast(buf: &[u8], format: FrameFormat) -> FrameCheck {
    match frame_body(buf, format) {
        Ok((body, crc)) => check_body_fast(body, crc, format),
        Err(check) => check,
    }
}

/// [`check_frame`] on a frame's body (the `len` bytes after its header).
pub(crate) fn check_body(body: &[u8], crc: u32, format: FrameFormat) -> FrameCheck {
    if crc32fast::hash(body) != crc {
        return FrameCheck::Invalid("frame crc mismatch");
    }
    let Some(records_len) = body.len().checked_sub(format.trailer_len()) else {
        return FrameCheck::Invalid("frame length out of range");
    };
    let (mut records, trailer) = body.split_at(records_len);
    let mut info = FrameInfo {
        first_offset: Offset(0),
        last_offset: Offset(0),
        count: 0,
        first_ts: 0,
        max_ts: 0,
        records_len,
        frame_len: FRAME_HEADER_LEN + body.len(),
    };
    let mut last_pos = 0usize;
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
        last_pos = records_len - records.len();
        info.last_offset = repr.offset;
        info.max_ts = info.max_ts.max(repr.timestamp_ms);
        info.count += 1;
        records = &records[rec_len..];
    }
    if info.count == 0 {
        return FrameCheck::Invalid("empty frame");
    }
    if format == FrameFormat::V2
        && (be_u32(trailer) != info.count || be_u32(&trailer[4..]) as usize != last_pos)
    {
        return FrameCheck::Invalid("frame trailer does not match its records");
    }
    FrameCheck::Valid(info)
}

/// [`check_frame_fast`] on a frame's body.
pub(crate) fn check_body_fast(body: &[u8], crc: u32, format: FrameFormat) -> FrameCheck {
    if format == FrameFormat::V1 {
        return check_body(body, crc, format);
    }
    if crc32fast::hash(body) != crc {
        return FrameCheck::Invalid("frame crc mismatch");
    }
    let Some(records_len) = body.len().checked_sub(FRAME_TRAILER_LEN) else {
        return FrameCheck::Invalid("frame length out of range");
    };
    let (records, trailer) = body.split_at(records_len);
    match trailer_info(records, trailer) {
        Some(info) => FrameCheck::Valid(info),
        None => FrameCheck::Invalid("frame trailer does not match its records"),
    }
}

/// [`check_frame_fast`] on a version 2 frame whose records and trailer were
/// read into different buffers (a vectored read puts the records of many
/// frames back to back in the batch, their trailers aside).
pub(crate) fn check_split_v2(records: &[u8], trailer: &[u8], crc: u32) -> FrameCheck {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(records);
    hasher.update(trailer);
    if hasher.finalize() != crc {
        return FrameCheck::Invalid("frame crc mismatch");
    }
    match trailer_info(records, trailer) {
        Some(info) => FrameCheck::Valid(info),
        None => FrameCheck::Invalid("frame trailer does not match its records"),
    }
}

/// First and last record of a version 2 body, found through its trailer and
/// checked for consistency: the last record ends exactly where the trailer
/// starts, and the offsets leave room for `count` increasing ones.
fn trailer_info(records: &[u8], trailer: &[u8]) -> Option<FrameInfo> {
    let records_len = records.len();
    let trailer = trailer.get(..FRAME_TRAILER_LEN)?;
    let count = be_u32(trailer);
    let last_pos = be_u32(&trailer[4..]) as usize;
    let first = records.get(..RECORD_HEADER_LEN)?;
    let last = records.get(last_pos..)?;
    let last_head = last.get(..RECORD_HEADER_LEN)?;
    let last_len = RECORD_HEADER_LEN as u64
        + u64::from(be_u16(&last_head[20..22]))
        + u64::from(be_u32(&last_head[22..26]));
    let first_offset = be_u64(&first[4..12]);
    let last_offset = be_u64(&last_head[4..12]);
    let span_ok = last_offset
        .checked_sub(first_offset)
        .is_some_and(|span| span >= u64::from(count).saturating_sub(1));
    let fits = count >= 1
        && (count == 1) == (last_pos == 0)
        && last_len == last.len() as u64
        && u64::from(count) * RECORD_HEADER_LEN as u64 <= records_len as u64;
    if !(fits && span_ok) {
        return None;
    }
    let first_ts = be_u64(&first[12..20]);
    Some(FrameInfo {
        first_offset: Offset(first_offset),
        last_offset: Offset(last_offset),
        count,
        first_ts,
        max_ts: first_ts,
        records_len,
        frame_len: FRAME_HEADER_LEN + records_len + FRAME_TRAILER_LEN,
    })
}

/// Cheap test whether a frame could start at `buf[0]`, used while searching
/// for the next valid frame after a corrupt region (before paying for a CRC).
fn plausible_frame(buf: &[u8], min_offset: Offset, format: FrameFormat) -> bool {
    let Some(h) = buf.get(..FRAME_HEADER_LEN + RECORD_HEADER_LEN) else {
        return false;
    };
    let len = be_u32(&h[0..4]) as usize;
    if !format.len_range().contains(&len) {
        return false;
    }
    let rec = &h[FRAME_HEADER_LEN..];
    let key_len = u64::from(be_u16(&rec[20..22]));
    let value_len = u64::from(be_u32(&rec[22..26]));
    let offset = be_u64(&rec[4..12]);
    (RECORD_HEADER_LEN + format.trailer_len()) as u64 + key_len + value_len <= len as u64
        && offset >= min_offset.0
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
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_frames(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    mut last_offset: Option<Offset>,
    format: FrameFormat,
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
            match check_frame(&chunk[at..], format) {
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
    format: FrameFormat,
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
            if plausible_frame(&buf[at..got], min_offset, format) {
                if let Some(hit) = verify_frame_at(file, path, pos + at as u64, end, format)? {
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
    format: FrameFormat,
) -> Result<Option<(u64, FrameInfo)>> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    if read_full_at(file, path, &mut head, pos)? < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let len = be_u32(&head[0..4]) as usize;
    let frame_len = FRAME_HEADER_LEN + len;
    if !format.len_range().contains(&len) || pos + frame_len as u64 > end {
        return Ok(None);
    }
    let mut frame = vec![0u8; frame_len];
    if read_full_at(file, path, &mut frame, pos)? < frame_len {
        return Ok(None);
    }
    match check_frame(&frame, format) {
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

/// Why the writer refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordTooLarge;

/// Encodes the frames of one append straight into one reused buffer, and
/// notes what the append holds (frame starts, count, timestamps, last
/// offset) as it goes, so that nothing walks the records again after the
/// write. `reset` starts the next append; the buffer keeps its length
/// between appends (only `len()` bytes are meaningful), so steady-state
/// appends neither allocate nor zero-fill.
#[derive(Debug, Default)]
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
    /// Start of the open frame in `buf`, if one is open.
    open: Option<usize>,
    /// Records in the open frame, and where its last one starts (from the
    /// frame's first record).
    open_count: u32,
    open_last: usize,
    /// Bytes of frames written so far.
    used: usize,
    /// Position in `buf` and first offset of every frame of this append.
    frames: Vec<(usize, Offset)>,
    /// Records of this append.
    pub count: u64,
    /// Timestamp of its first record, the newest timestamp, the last offset.
    pub first_ts: Option<u64>,
    pub max_ts: u64,
    pub last_offset: Option<Offset>,
}

impl FrameWriter {
    /// Largest buffer kept from one append to the next.
    const KEEP: usize = 8 << 20;

    /// Forgets the previous append.
    pub fn reset(&mut self) {
        if self.buf.len() > Self::KEEP {
            // One huge batch should not pin its buffer for the log's lifetime.
            self.buf = Vec::new();
        }
        self.open = None;
        self.used = 0;
        self.frames.clear();
        self.count = 0;
        self.first_ts = None;
        self.max_ts = 0;
        self.last_offset = None;
    }

    /// The encoded frames (after `finish`).
    pub fn bytes(&self) -> &[u8] {
        self.buf.get(..self.used).unwrap_or(&[])
    }

    /// Bytes of frames written so far.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Position in the buffer and first offset of each frame.
    pub fn frames(&self) -> &[(usize, Offset)] {
        &self.frames
    }

    /// Adds a record (`topic_id` 0), in the open frame or a new one. The
    /// caller keeps offsets strictly increasing. Inlined into the batch
    /// loops (see `TopicLog::encode`).
    #[inline(always)]
    pub fn push(
        &mut self,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> std::result::Result<(), RecordTooLarge> {
        let key_len = u16::try_from(key.len()).map_err(|_| RecordTooLarge)?;
        let value_len = u32::try_from(value.len()).map_err(|_| RecordTooLarge)?;
        let rec_len = RECORD_HEADER_LEN + key.len() + value.len();
        if let Some(start) = self.open {
            if self.used - start - FRAME_HEADER_LEN + rec_len + FRAME_TRAILER_LEN > FRAME_TARGET_LEN
            {
                self.finish();
            }
        }
        let header = if self.open.is_none() {
            FRAME_HEADER_LEN
        } else {
            0
        };
        // Room for the trailer too, so that `finish` never grows the buffer.
        let need = self.used + header + rec_len + FRAME_TRAILER_LEN;
        if self.buf.len() < need {
            self.buf
                .resize(need.max(self.buf.len().saturating_mul(2)), 0);
        }
        let at = self.used + header;
        let Some(rec) = self.buf.get_mut(at..at + rec_len) else {
            return Err(RecordTooLarge);
        };
        let Some((head, body)) = rec.split_first_chunk_mut::<RECORD_HEADER_LEN>() else {
            return Err(RecordTooLarge);
        };
        head[0..4].copy_from_slice(&[0; 4]);
        head[4..12].copy_from_slice(&offset.0.to_be_bytes());
        head[12..20].copy_from_slice(&timestamp_ms.to_be_bytes());
        head[20..22].copy_from_slice(&key_len.to_be_bytes());
        head[22..26].copy_from_slice(&value_len.to_be_bytes());
        let (k, v) = body.split_at_mut(key.len());
        k.copy_from_slice(key);
        v.copy_from_slice(value);
        if header > 0 {
            self.open = Some(self.used);
            self.open_count = 0;
            self.frames.push((self.used, offset));
        }
        let frame_start = self.open.unwrap_or(self.used);
        self.open_last = at - frame_start - FRAME_HEADER_LEN;
        self.open_count += 1;
        self.used = at + rec_len;
        self.count += 1;
        self.first_ts.get_or_insert(timestamp_ms);
        self.max_ts = self.max_ts.max(timestamp_ms);
        self.last_offset = Some(offset);
        Ok(())
    }

    /// Closes the open frame: trailer, then length and CRC.
    pub fn finish(&mut self) {
        let Some(start) = self.open.take() else {
            return;
        };
        let trailer_at = self.used;
        self.used += FRAME_TRAILER_LEN;
        let last = u32::try_from(self.open_last).unwrap_or(u32::MAX);
        // invariant: `push` reserved the trailer's bytes.
        if let Some(t) = self.buf.get_mut(trailer_at..self.used) {
            t[0..4].copy_from_slice(&self.open_count.to_be_bytes());
            t[4..8].copy_from_slice(&last.to_be_bytes());
        }
        let Some(frame) = self.buf.get_mut(start..self.used) else {
            return;
        };
        let (head, body) = frame.split_at_mut(FRAME_HEADER_LEN);
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(body);
        head[0..4].copy_from_slice(&len.to_be_bytes());
        head[4..8].copy_from_slice(&crc.to_be_bytes());
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
    let mut w = FrameWriter::default();
    w.push(offset, timestamp_ms, key, value).unwrap();
    w.finish();
    out.extend_from_slice(w.bytes());
    w.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_rejects_wrong_base() {
        let h = encode_header(Offset(42));
        assert_eq!(check_header(&h, Offset(42)), Ok(FrameFormat::V2));
        let v1 = encode_header_for(Offset(42), FrameFormat::V1);
        assert_eq!(check_header(&v1, Offset(42)), Ok(FrameFormat::V1));
        assert!(check_header(&h, Offset(43)).is_err());
        assert!(check_header(&h[..10], Offset(42)).is_err());
    }

    #[test]
    fn frame_golden_bytes() {
        let mut out = Vec::new();
        encode_frame(&mut out, Offset(258), 7, b"k", b"v");
        assert_eq!(&out[0..4], &[0, 0, 0, 36], "record 28 + trailer 8");
        assert_eq!(&out[8..12], &[0, 0, 0, 0], "stored topic id is 0");
        assert_eq!(&out[12..20], &258u64.to_be_bytes());
        assert_eq!(
            &out[36..44],
            &[0, 0, 0, 1, 0, 0, 0, 0],
            "count 1, last at 0"
        );
        let crc = crc32fast::hash(&out[8..]);
        assert_eq!(&out[4..8], &crc.to_be_bytes());
        for check in [check_frame, check_frame_fast] {
            assert!(matches!(check(&out, FrameFormat::V2), FrameCheck::Valid(i)
                    if i.first_offset == Offset(258) && i.frame_len == 44 && i.records_len == 28));
        }
    }

    #[test]
    fn version_1_frame_without_trailer_is_read_as_version_1_only() {
        let mut v1 = Vec::new();
        encode_frame(&mut v1, Offset(3), 7, b"k", b"v");
        // A version 1 frame: the same record, no trailer.
        v1.truncate(FRAME_HEADER_LEN + 28);
        v1[0..4].copy_from_slice(&28u32.to_be_bytes());
        let crc = crc32fast::hash(&v1[8..]);
        v1[4..8].copy_from_slice(&crc.to_be_bytes());
        for check in [check_frame, check_frame_fast] {
            assert!(matches!(check(&v1, FrameFormat::V1), FrameCheck::Valid(i)
                if i.first_offset == Offset(3) && i.count == 1 && i.records_len == 28));
            assert!(!matches!(check(&v1, FrameFormat::V2), FrameCheck::Valid(_)));
        }
        let mut v2 = Vec::new();
        encode_frame(&mut v2, Offset(3), 7, b"k", b"v");
        assert!(!matches!(
            check_frame(&v2, FrameFormat::V1),
            FrameCheck::Valid(_)
        ));
    }

    #[test]
    fn trailer_that_disagrees_with_the_records_is_invalid_even_with_a_good_crc() {
        let mut out = Vec::new();
        let mut w = FrameWriter::default();
        for o in 0..3u64 {
            w.push(Offset(o), 0, b"k", b"value").unwrap();
        }
        w.finish();
        out.extend_from_slice(w.bytes());
        let n = out.len();
        let good = out.clone();
        // (count, last record position) pairs that do not describe the frame.
        for (count, last) in [
            (2u32, 64u32),
            (0, 64),
            (3, 0),
            (3, 63),
            (3, 65),
            (9, 64),
            (1, 64),
        ] {
            out.copy_from_slice(&good);
            out[n - 8..n - 4].copy_from_slice(&count.to_be_bytes());
            out[n - 4..].copy_from_slice(&last.to_be_bytes());
            let crc = crc32fast::hash(&out[8..]);
            out[4..8].copy_from_slice(&crc.to_be_bytes());
            assert!(
                !matches!(check_frame(&out, FrameFormat::V2), FrameCheck::Valid(_)),
                "full check took count {count} last {last}"
            );
            if (count, last) != (2, 64) {
                assert!(
                    !matches!(
                        check_frame_fast(&out, FrameFormat::V2),
                        FrameCheck::Valid(_)
                    ),
                    "fast check took count {count} last {last}"
                );
            }
        }
        assert!(
            matches!(check_frame_fast(&good, FrameFormat::V2), FrameCheck::Valid(i)
            if i.count == 3 && i.last_offset == Offset(2))
        );
    }

    #[test]
    fn frame_with_flipped_bit_is_invalid() {
        let mut out = Vec::new();
        encode_frame(&mut out, Offset(1), 7, b"key", b"value");
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            for check in [check_frame, check_frame_fast] {
                assert!(
                    !matches!(check(&bad, FrameFormat::V2), FrameCheck::Valid(_)),
                    "flip at {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn frame_cut_short_is_incomplete() {
        let mut out = Vec::new();
        encode_frame(&mut out, Offset(1), 7, b"key", b"value");
        for len in 0..out.len() {
            assert!(
                matches!(
                    check_frame(&out[..len], FrameFormat::V2),
                    FrameCheck::Incomplete { .. }
                ),
                "len {len}"
            );
        }
    }

    #[test]
    fn batch_frames_hold_many_records_up_to_the_target_size() {
        let mut w = FrameWriter::default();
        let value = [9u8; 1000];
        for o in 0..200u64 {
            w.push(Offset(o), o, b"", &value).unwrap();
        }
        w.finish();
        let out = w.bytes();
        assert_eq!((w.count, w.first_ts, w.max_ts), (200, Some(0), 199));
        assert_eq!(w.last_offset, Some(Offset(199)));
        let mut at = 0;
        let mut firsts = Vec::new();
        while at < out.len() {
            let FrameCheck::Valid(info) = check_frame(&out[at..], FrameFormat::V2) else {
                panic!("invalid frame at {at}");
            };
            assert_eq!(
                check_frame_fast(&out[at..], FrameFormat::V2),
                FrameCheck::Valid(FrameInfo {
                    max_ts: info.first_ts,
                    ..info
                })
            );
            assert!(info.frame_len <= FRAME_HEADER_LEN + FRAME_TARGET_LEN);
            assert_eq!(
                info.last_offset.0 - info.first_offset.0 + 1,
                u64::from(info.count)
            );
            firsts.push(info.first_offset.0);
            at += info.frame_len;
        }
        assert_eq!(firsts, vec![0, 63, 126, 189]);
        let starts: Vec<u64> = w.frames().iter().map(|f| f.1 .0).collect();
        assert_eq!(starts, firsts);
    }

    #[test]
    fn frame_with_offsets_out_of_order_is_invalid() {
        let mut w = FrameWriter::default();
        w.push(Offset(5), 0, b"", b"a").unwrap();
        w.push(Offset(5), 0, b"", b"b").unwrap();
        w.finish();
        assert_eq!(
            check_frame(w.bytes(), FrameFormat::V2),
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
