//! Reading: `TopicLog::read` from any offset up to a byte budget, CRC-verified,
//! and `Cursor`, a poll-style reader that follows the tail.

use std::ops::Range;

use crate::wire::record::{RecordRepr, Records, HEADER_LEN as RECORD_HEADER_LEN};
use crate::wire::Offset;

use super::error::{Error, Result};
use super::segment::{
    be_u32, be_u64, check_body_fast, check_frame_fast, find_next_valid, read_full_at, FrameCheck,
    FrameFormat, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use super::topic_log::{ReadPos, TopicLog};

/// Records read from a log: wire-layout records back to back (stored topic
/// id 0), ready to copy into a replay frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub bytes: Vec<u8>,
    pub count: usize,
    /// Where the next read continues (last record's offset + 1, or the start
    /// position when nothing was read).
    pub next_offset: Offset,
    /// Offsets this log does not hold, just before the first record of this
    /// batch (a replica that skipped ahead, or records lost to corruption).
    pub hole: Option<Range<Offset>>,
}

impl ReadBatch {
    /// Iterates the records (they were CRC-verified when read).
    pub fn records(&self) -> std::result::Result<Records<'_>, crate::wire::Error> {
        Records::new_checked(&self.bytes, self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn reset(&mut self, from: Offset) {
        self.bytes.clear();
        self.count = 0;
        self.next_offset = from;
        self.hole = None;
    }
}

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The earliest retained offset.
    Earliest,
    /// The next offset to be appended: only new records.
    Latest,
    /// A given offset.
    Offset(Offset),
}

impl StartPosition {
    pub fn resolve(self, log: &TopicLog) -> Offset {
        match self {
            StartPosition::Earliest => log.earliest_offset(),
            StartPosition::Latest => log.next_offset(),
            StartPosition::Offset(o) => o,
        }
    }
}

/// A reader position that follows the tail: each `poll` returns the records
/// appended since the previous one (poll style, no thread, no borrow of the
/// log between calls, so the log can be appended to in between).
#[derive(Debug, Clone)]
pub struct Cursor {
    position: Offset,
    batch: ReadBatch,
}

impl Cursor {
    pub fn new(log: &TopicLog, start: StartPosition) -> Cursor {
        Cursor {
            position: start.resolve(log),
            batch: ReadBatch::default(),
        }
    }

    /// The offset the next poll reads from.
    pub fn position(&self) -> Offset {
        self.position
    }

    /// Moves the cursor (e.g. to `earliest_offset()` after `BelowRetention`).
    pub fn seek(&mut self, position: Offset) {
        self.position = position;
    }

    /// Reads what is new since the last poll, up to `max_bytes`; an empty
    /// batch means the cursor is at the tail. The batch buffer is reused.
    pub fn poll(&mut self, log: &mut TopicLog, max_bytes: usize) -> Result<&ReadBatch> {
        log.read_into(self.position, max_bytes, &mut self.batch)?;
        self.position = self.batch.next_offset;
        Ok(&self.batch)
    }
}

/// Copies the records of one verified frame with offsets `>= *want` into
/// `out`, one by one, stopping at a hole inside the frame (unless nothing was
/// read yet) or at the budget. `Some(stop)` means the frame was not finished:
/// the next read starts again at the frame and skips what it already got.
fn take_records(
    mut records: &[u8],
    want: &mut Offset,
    max_bytes: usize,
    out: &mut ReadBatch,
) -> Option<Stop> {
    while let Ok((repr, len)) = RecordRepr::parse_prefix(records) {
        let record = &records[..len];
        records = &records[len..];
        if repr.offset < *want {
            continue;
        }
        if repr.offset > *want {
            if out.count > 0 || out.hole.is_some() {
                return Some(Stop::Hole);
            }
            out.hole = Some(*want..repr.offset);
        }
        if out.count > 0 && out.bytes.len() + len > max_bytes {
            return Some(Stop::Full);
        }
        out.bytes.extend_from_slice(record);
        out.count += 1;
        *want = repr.offset.next();
        out.next_offset = *want;
    }
    None
}

/// Frames at least this large are read straight into the caller's batch.
const DIRECT_READ_MIN_LEN: usize = 8 << 10;

/// Outcome of trying to read one frame straight into the batch.
enum Direct {
    Took,
    /// The next frame does not fit the remaining budget.
    Full,
    /// Use the chunked path.
    No,
}

/// Why reading one segment stopped.
enum Stop {
    /// The byte budget is used.
    Full,
    /// The next record is after a hole; the batch ends before it.
    Hole,
    /// No more frames in this segment.
    SegmentEnd,
}

impl TopicLog {
    /// Reads records from `from` in offset order, up to `max_bytes` of record
    /// bytes (at least one record if there is any). `from` below
    /// `earliest_offset()` is `BelowRetention`; at or past `next_offset()` it
    /// is an empty batch (the clean end at the tail).
    pub fn read(&mut self, from: Offset, max_bytes: usize) -> Result<ReadBatch> {
        let mut out = ReadBatch::default();
        self.read_into(from, max_bytes, &mut out)?;
        Ok(out)
    }

    /// `read` into a caller's batch, reusing its buffer (no allocation once
    /// the buffer has grown).
    pub fn read_into(&mut self, from: Offset, max_bytes: usize, out: &mut ReadBatch) -> Result<()> {
        out.reset(from);
        let earliest = self.earliest_offset();
        if from < earliest {
            return Err(Error::BelowRetention {
                requested: from,
                earliest,
            });
        }
        let next = self.active.next;
        if from >= next {
            return Ok(());
        }
        let max_bytes = max_bytes.max(1);
        let cached = self
            .read_pos
            .filter(|rp| rp.next == from)
            .and_then(|rp| self.segment_index(rp.base).map(|i| (i, rp.position)));
        let (mut seg, mut pos) = match cached {
            Some(hit) => hit,
            None => {
                let i = self.segment_for(from);
                (i, self.index_position(i, from)?)
            }
        };
        let mut want = from;
        loop {
            match self.read_segment(seg, &mut pos, &mut want, max_bytes, out)? {
                Stop::Full | Stop::Hole => break,
                Stop::SegmentEnd => {
                    if seg >= self.sealed.len() {
                        break;
                    }
                    seg += 1;
                    pos = SEGMENT_HEADER_LEN;
                }
            }
        }
        if out.count == 0 {
            // Nothing readable from `from` to the tail: every one of those
            // records was lost to corruption (reported while skipping).
            out.hole = Some(from..next);
            out.next_offset = next;
        }
        self.stats.records_read += out.count as u64;
        self.stats.bytes_read += out.bytes.len() as u64;
        let base = self.segment_base(seg);
        self.read_pos = Some(ReadPos {
            next: out.next_offset,
            base,
            position: pos,
        });
        Ok(())
    }

    /// Index (into sealed + active) of the segment that holds `offset`.
    fn segment_for(&self, offset: Offset) -> usize {
        if offset >= self.active.base {
            return self.sealed.len();
        }
        self.sealed
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1)
    }

    fn segment_index(&self, base: Offset) -> Option<usize> {
        if base == self.active.base {
            return Some(self.sealed.len());
        }
        self.sealed.binary_search_by_key(&base, |s| s.base).ok()
    }

    fn segment_base(&self, i: usize) -> Offset {
        self.sealed.get(i).map_or(self.active.base, |s| s.base)
    }

    /// Position to start scanning segment `i` for `offset`, from the sparse
    /// index. An entry that does not point at its record means the index
    /// is stale: it is dropped and the scan starts at the segment header.
    fn index_position(&mut self, i: usize, offset: Offset) -> Result<u64> {
        self.open_sealed(i)?;
        let (entry, file, path) = match self.reader.as_ref().filter(|_| i < self.sealed.len()) {
            Some(r) => (r.index.lookup(r.base, offset), &r.file, &r.path),
            None => (
                self.active.index.lookup(self.active.base, offset),
                &self.active.file,
                &self.active.path,
            ),
        };
        let Some((entry_offset, position)) = entry else {
            return Ok(SEGMENT_HEADER_LEN);
        };
        let mut probe = [0u8; FRAME_HEADER_LEN + RECORD_HEADER_LEN];
        let got = read_full_at(file, path, &mut probe, position)?;
        let points_right = got == probe.len()
            && be_u32(&probe) as usize >= RECORD_HEADER_LEN
            && be_u64(&probe[FRAME_HEADER_LEN + 4..]) == entry_offset.0;
        if points_right {
            return Ok(position);
        }
        log::warn!(
            "stale index entry path={} offset={} position={}; scanning the segment",
            path.display(),
            entry_offset,
            position
        );
        if i < self.sealed.len() {
            // Forces a rebuild the next time the segment is opened.
            let base = self.segment_base(i);
            let _ = std::fs::remove_file(self.dir.join(super::segment::index_file_name(base)));
            self.reader = None;
            self.open_sealed(i)?;
        }
        Ok(SEGMENT_HEADER_LEN)
    }

    /// Reads frames of segment `i` from `*pos`, appending records with
    /// offsets `>= *want` to `out` until the budget, a hole or the segment end.
    fn read_segment(
        &mut self,
        i: usize,
        pos: &mut u64,
        want: &mut Offset,
        max_bytes: usize,
        out: &mut ReadBatch,
    ) -> Result<Stop> {
        self.open_sealed(i)?;
        let (seg_len, base, format) = match self.reader.as_ref().filter(|_| i < self.sealed.len()) {
            Some(r) => (r.len, r.base, r.format),
            None => (self.active.len, self.active.base, self.active.format),
        };
        let mut min_read = 0usize;
        loop {
            if *pos >= seg_len {
                return Ok(Stop::SegmentEnd);
            }
            let budget = max_bytes.saturating_sub(out.bytes.len());
            if out.count > 0 && budget < RECORD_HEADER_LEN {
                return Ok(Stop::Full);
            }
            match self.read_frame_direct(i, base, format, seg_len, pos, want, max_bytes, out)? {
                Direct::Took => continue,
                Direct::Full => return Ok(Stop::Full),
                Direct::No => {}
            }
            let left = usize::try_from(seg_len - *pos).unwrap_or(usize::MAX);
            // The budget plus room for frame headers, so that one read
            // usually fills the batch.
            let raw = (budget + budget / 8 + 64).max(min_read).min(left);
            if self.scratch.len() < raw {
                self.scratch.resize(raw, 0);
            }
            let (file, path) = match self.reader.as_ref().filter(|_| i < self.sealed.len()) {
                Some(r) => (&r.file, &r.path),
                None => (&self.active.file, &self.active.path),
            };
            let got = read_full_at(file, path, &mut self.scratch[..raw], *pos)?;
            if got == 0 {
                return Ok(Stop::SegmentEnd);
            }
            let chunk = &self.scratch[..got];
            let mut at = 0usize;
            let mut corrupt = None;
            while at < chunk.len() {
                match check_frame_fast(&chunk[at..], format) {
                    FrameCheck::Valid(info) => {
                        if info.last_offset < *want {
                            at += info.frame_len;
                            continue;
                        }
                        if info.first_offset > *want {
                            if out.count > 0 || out.hole.is_some() {
                                *pos += at as u64;
                                return Ok(Stop::Hole);
                            }
                            out.hole = Some(*want..info.first_offset);
                            *want = info.first_offset;
                        }
                        let records =
                            &chunk[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + info.records_len];
                        let dense =
                            info.last_offset.0 - info.first_offset.0 + 1 == u64::from(info.count);
                        if info.first_offset == *want
                            && dense
                            && out.bytes.len() + records.len() <= max_bytes
                        {
                            // Fast path: the whole frame, one copy.
                            out.bytes.extend_from_slice(records);
                            out.count += info.count as usize;
                        } else if let Some(stop) = take_records(records, want, max_bytes, out) {
                            *pos += at as u64;
                            return Ok(stop);
                        }
                        *want = info.last_offset.next();
                        out.next_offset = *want;
                        at += info.frame_len;
                    }
                    FrameCheck::Incomplete { frame_len } => {
                        if *pos + (at + frame_len) as u64 > seg_len {
                            corrupt = Some((at, "incomplete record at end of segment"));
                        } else if out.count > 0
                            && out.bytes.len() + frame_len - FRAME_HEADER_LEN > max_bytes
                        {
                            *pos += at as u64;
                            return Ok(Stop::Full);
                        } else if at == 0 {
                            min_read = frame_len;
                        }
                        break;
                    }
                    FrameCheck::Invalid(reason) => {
                        corrupt = Some((at, reason));
                        break;
                    }
                }
            }
            *pos += at as u64;
            if let Some((_, reason)) = corrupt {
                *pos = self.skip_corrupt(i, base, format, *pos, seg_len, *want, reason)?;
            }
        }
    }

    /// Reads the large frame at `*pos` straight into `out` (one `pread` of
    /// its records plus the next frame header, no copy), if it starts
    /// exactly at `*want`, has no hole and fits the budget. `Direct::No`,
    /// with `out` unchanged, when the frame is small or anything is off: the
    /// chunked path then handles it (skipping, holes, corruption reports).
    #[allow(clippy::too_many_arguments)]
    fn read_frame_direct(
        &mut self,
        i: usize,
        base: Offset,
        format: FrameFormat,
        seg_len: u64,
        pos: &mut u64,
        want: &mut Offset,
        max_bytes: usize,
        out: &mut ReadBatch,
    ) -> Result<Direct> {
        let (file, path) = match self.reader.as_ref().filter(|_| i < self.sealed.len()) {
            Some(r) => (&r.file, &r.path),
            None => (&self.active.file, &self.active.path),
        };
        let header = match self.peeked_header.take() {
            Some((b, p, h)) if b == base && p == *pos => h,
            _ => {
                let mut h = [0u8; FRAME_HEADER_LEN];
                if seg_len - *pos < FRAME_HEADER_LEN as u64
                    || read_full_at(file, path, &mut h, *pos)? < FRAME_HEADER_LEN
                {
                    return Ok(Direct::No);
                }
                h
            }
        };
        let len = be_u32(&header[0..4]) as usize;
        let frame_end = *pos + (FRAME_HEADER_LEN + len) as u64;
        if len < DIRECT_READ_MIN_LEN || !format.len_range().contains(&len) || frame_end > seg_len {
            return Ok(Direct::No);
        }
        let records_len = len - format.trailer_len();
        if out.bytes.len() + records_len > max_bytes {
            if out.count == 0 {
                // Smaller budget than the frame: the chunked path hands out
                // part of it.
                return Ok(Direct::No);
            }
            self.peeked_header = Some((base, *pos, header));
            return Ok(Direct::Full);
        }
        let tail = (seg_len - frame_end).min(FRAME_HEADER_LEN as u64) as usize;
        let w = out.bytes.len();
        out.bytes.resize(w + len + tail, 0);
        let got = match read_full_at(
            file,
            path,
            &mut out.bytes[w..],
            *pos + FRAME_HEADER_LEN as u64,
        ) {
            Ok(got) => got,
            Err(e) => {
                out.bytes.truncate(w);
                return Err(e);
            }
        };
        // The trailer and the next frame's header were read along; both are
        // cut off below.
        let info = match check_body_fast(
            out.bytes.get(w..w + len).unwrap_or(&[]),
            be_u32(&header[4..8]),
            format,
        ) {
            FrameCheck::Valid(info) if got == len + tail => info,
            _ => {
                out.bytes.truncate(w);
                return Ok(Direct::No);
            }
        };
        if tail == FRAME_HEADER_LEN {
            let mut next = [0u8; FRAME_HEADER_LEN];
            next.copy_from_slice(&out.bytes[w + len..w + len + FRAME_HEADER_LEN]);
            self.peeked_header = Some((base, frame_end, next));
        }
        out.bytes.truncate(w + info.records_len);
        let dense = info.last_offset.0 - info.first_offset.0 + 1 == u64::from(info.count);
        if info.first_offset != *want || !dense {
            out.bytes.truncate(w);
            return Ok(Direct::No);
        }
        out.count += info.count as usize;
        *want = info.last_offset.next();
        out.next_offset = *want;
        *pos = frame_end;
        Ok(Direct::Took)
    }

    /// Finds where reading resumes after the invalid frame at `position`;
    /// reports each corrupt region once (warn + counters).
    #[allow(clippy::too_many_arguments)]
    fn skip_corrupt(
        &mut self,
        i: usize,
        base: Offset,
        format: FrameFormat,
        position: u64,
        seg_len: u64,
        want: Offset,
        reason: &'static str,
    ) -> Result<u64> {
        if let Some(resume) = self.skips.get(&(base, position)) {
            return Ok(resume.unwrap_or(seg_len));
        }
        let (file, path) = match self.reader.as_ref().filter(|_| i < self.sealed.len()) {
            Some(r) => (&r.file, &r.path),
            None => (&self.active.file, &self.active.path),
        };
        let found = find_next_valid(
            file,
            path,
            position + 1,
            seg_len,
            want,
            format,
            &mut self.scratch,
        )?;
        let resume = found.map(|(p, _)| p);
        let end = resume.unwrap_or(seg_len);
        log::warn!(
            "skipping corrupt region while reading path={} position={} reason={} resume_position={}",
            path.display(),
            position,
            reason,
            end
        );
        self.stats.corrupt_regions_found += 1;
        self.stats.corrupt_bytes_skipped += end - position;
        self.skips.insert((base, position), resume);
        Ok(end)
    }
}
