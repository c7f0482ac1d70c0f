//! Reading: `TopicLog::read` from any offset up to a byte budget, CRC-verified,
//! and `Cursor`, a poll-style reader that follows the tail.

use std::io::{IoSliceMut, Read, Seek, SeekFrom};
use std::ops::Range;

use crate::wire::record::{RecordRepr, Records, HEADER_LEN as RECORD_HEADER_LEN};
use crate::wire::Offset;

use super::error::{Error, Result};
use super::segment::{
    be_u32, be_u64, check_body_fast, check_frame_fast, check_split_v2, find_next_valid,
    read_full_at, FrameCheck, FrameFormat, FRAME_HEADER_LEN, FRAME_TRAILER_LEN, SEGMENT_HEADER_LEN,
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
}

/// The batch buffer while a read fills it: `buf[..len]` is what this read
/// produced. Bytes of `buf` past `len` are left from the previous read into
/// the same batch and are overwritten before they count, so a steady replay
/// does not zero-fill its buffer before every `pread` (safe Rust cannot read
/// into uninitialised memory; this reuses initialised memory instead).
struct Fill {
    buf: Vec<u8>,
    len: usize,
}

impl Fill {
    fn len(&self) -> usize {
        self.len
    }

    /// Appends `src`.
    fn push(&mut self, src: &[u8]) {
        let end = self.len + src.len();
        let reuse = self.buf.len().min(end) - self.len.min(self.buf.len());
        let (now, later) = src.split_at(reuse);
        if let Some(dst) = self.buf.get_mut(self.len..self.len + reuse) {
            dst.copy_from_slice(now);
        }
        self.buf.extend_from_slice(later);
        self.len = end;
    }

    /// The `n` bytes after `len`, to read into; they count once `len` moves.
    fn space(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        &mut self.buf[self.len..end]
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
    fill: &mut Fill,
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
        if out.count > 0 && fill.len() + len > max_bytes {
            return Some(Stop::Full);
        }
        fill.push(record);
        out.count += 1;
        *want = repr.offset.next();
        out.next_offset = *want;
    }
    None
}

/// Frames at least this large are read straight into the caller's batch.
const DIRECT_READ_MIN_LEN: usize = 8 << 10;

/// Most frames one vectored read takes (64 KiB frames: 4 MiB).
const MAX_VECTORED_FRAMES: usize = 64;

/// One `readv` at `pos`: the bytes read, fewer than asked only at the end
/// of the file. `cursor` is where the file's position is; it seeks only if
/// that is not `pos` (std has no stable `preadv`).
fn read_vectored_at(
    mut file: &std::fs::File,
    path: &std::path::Path,
    iov: &mut [IoSliceMut<'_>],
    pos: u64,
    cursor: u64,
) -> Result<usize> {
    if cursor != pos {
        file.seek(SeekFrom::Start(pos))
            .map_err(|e| Error::io(path, "seek", e))?;
    }
    loop {
        match file.read_vectored(iov) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, "read", e)),
        }
    }
}

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
    /// the buffer has grown, and no zero-fill of the part already used). On
    /// error the batch is left empty at `from`.
    pub fn read_into(&mut self, from: Offset, max_bytes: usize, out: &mut ReadBatch) -> Result<()> {
        let mut fill = Fill {
            buf: std::mem::take(&mut out.bytes),
            len: 0,
        };
        out.count = 0;
        out.next_offset = from;
        out.hole = None;
        let result = self.read_fill(from, max_bytes, out, &mut fill);
        fill.buf.truncate(fill.len);
        out.bytes = fill.buf;
        if result.is_err() {
            out.bytes.clear();
            out.count = 0;
            out.next_offset = from;
            out.hole = None;
        }
        result
    }

    fn read_fill(
        &mut self,
        from: Offset,
        max_bytes: usize,
        out: &mut ReadBatch,
        fill: &mut Fill,
    ) -> Result<()> {
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
            match self.read_segment(seg, &mut pos, &mut want, max_bytes, out, fill)? {
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
        self.stats.bytes_read += fill.len() as u64;
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
        fill: &mut Fill,
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
            let budget = max_bytes.saturating_sub(fill.len());
            if out.count > 0 && budget < RECORD_HEADER_LEN {
                return Ok(Stop::Full);
            }
            match self
                .read_frame_direct(i, base, format, seg_len, pos, want, max_bytes, out, fill)?
            {
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
                            && fill.len() + records.len() <= max_bytes
                        {
                            // Fast path: the whole frame, one copy.
                            fill.push(records);
                            out.count += info.count as usize;
                        } else if let Some(stop) = take_records(records, want, max_bytes, out, fill)
                        {
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
                            && fill.len() + frame_len - FRAME_HEADER_LEN > max_bytes
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
        fill: &mut Fill,
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
        if fill.len() + records_len > max_bytes {
            if out.count == 0 {
                // Smaller budget than the frame: the chunked path hands out
                // part of it.
                return Ok(Direct::No);
            }
            self.peeked_header = Some((base, *pos, header));
            return Ok(Direct::Full);
        }
        if format == FrameFormat::V2 {
            if let Some(direct) = self
                .read_frames_vectored(i, base, seg_len, header, pos, want, max_bytes, out, fill)?
            {
                return Ok(direct);
            }
        }
        let (file, path) = match self.reader.as_ref().filter(|_| i < self.sealed.len()) {
            Some(r) => (&r.file, &r.path),
            None => (&self.active.file, &self.active.path),
        };
        let tail = (seg_len - frame_end).min(FRAME_HEADER_LEN as u64) as usize;
        let space = fill.space(len + tail);
        let got = read_full_at(file, path, space, *pos + FRAME_HEADER_LEN as u64)?;
        // The trailer and the next frame's header were read along; neither
        // counts (`fill.len` moves past the records only).
        let info = match check_body_fast(
            space.get(..len).unwrap_or(&[]),
            be_u32(&header[4..8]),
            format,
        ) {
            FrameCheck::Valid(info) if got == len + tail => info,
            _ => return Ok(Direct::No),
        };
        if let Some(next) = space
            .get(len..len + FRAME_HEADER_LEN)
            .and_then(|b| <[u8; FRAME_HEADER_LEN]>::try_from(b).ok())
        {
            self.peeked_header = Some((base, frame_end, next));
        }
        let dense = info.last_offset.0 - info.first_offset.0 + 1 == u64::from(info.count);
        if info.first_offset != *want || !dense {
            return Ok(Direct::No);
        }
        fill.len += info.records_len;
        out.count += info.count as usize;
        *want = info.last_offset.next();
        out.next_offset = *want;
        *pos = frame_end;
        Ok(Direct::Took)
    }

    /// Reads the version 2 frame at `*pos` (whose header is `header`) and as
    /// many following ones as the budget takes with one `readv`: records
    /// back to back into the batch, trailers and next headers aside. Where
    /// the later frames start comes from the sparse index, which holds every
    /// frame start once frames are at least `index_interval_bytes` long;
    /// each guessed length is checked against the frame's own header, and
    /// the first frame that does not check out (or is not next in offset
    /// order) ends the batch here: the frames before it count, it and the
    /// rest are read again by the next step. One syscall per batch instead
    /// of one per frame is what keeps replay near the raw read limit.
    /// `None` (nothing read) when only this one frame would be read: the
    /// single-frame `pread` does that in one syscall instead of two.
    #[allow(clippy::too_many_arguments)]
    fn read_frames_vectored(
        &mut self,
        i: usize,
        base: Offset,
        seg_len: u64,
        header: [u8; FRAME_HEADER_LEN],
        pos: &mut u64,
        want: &mut Offset,
        max_bytes: usize,
        out: &mut ReadBatch,
        fill: &mut Fill,
    ) -> Result<Option<Direct>> {
        let (file, path, index, cursor) =
            match self.reader.as_ref().filter(|_| i < self.sealed.len()) {
                Some(r) => (&r.file, &r.path, &r.index, r.cursor),
                None => (
                    &self.active.file,
                    &self.active.path,
                    &self.active.index,
                    self.active.cursor,
                ),
            };
        // The plan: (position, len) of each frame to read.
        let mut plan = [(0u64, 0usize); MAX_VECTORED_FRAMES];
        let first_len = be_u32(&header[0..4]) as usize;
        plan[0] = (*pos, first_len);
        let mut planned = 1usize;
        let mut records_total = first_len - FRAME_TRAILER_LEN;
        let mut next_pos = *pos + (FRAME_HEADER_LEN + first_len) as u64;
        // Guess further frames only where the index resolves single frames:
        // it has entries at this frame's start and right at its end.
        let mut starts = index.positions_after(pos.saturating_sub(1)).peekable();
        let resolved = starts.next() == Some(*pos) && starts.peek() == Some(&next_pos);
        if resolved {
            let _ = starts.next();
            while planned < MAX_VECTORED_FRAMES && next_pos < seg_len {
                let end = starts.next().unwrap_or(seg_len).min(seg_len);
                let Some(len) = end
                    .checked_sub(next_pos + FRAME_HEADER_LEN as u64)
                    .and_then(|l| usize::try_from(l).ok())
                else {
                    break;
                };
                if len < DIRECT_READ_MIN_LEN
                    || !FrameFormat::V2.len_range().contains(&len)
                    || fill.len() + records_total + len - FRAME_TRAILER_LEN > max_bytes
                {
                    break;
                }
                plan[planned] = (next_pos, len);
                planned += 1;
                records_total += len - FRAME_TRAILER_LEN;
                next_pos = end;
            }
        }
        drop(starts);
        if planned < 2 {
            return Ok(None);
        }
        let plan = &plan[..planned];
        // Aside: each frame's trailer and the header after it, if any.
        let mut aside = [[0u8; FRAME_TRAILER_LEN + FRAME_HEADER_LEN]; MAX_VECTORED_FRAMES];
        let aside_len = |k: usize, (p, len): (u64, usize)| -> usize {
            let frame_end = p + (FRAME_HEADER_LEN + len) as u64;
            let next = if k + 1 < planned {
                FRAME_HEADER_LEN
            } else {
                (seg_len - frame_end).min(FRAME_HEADER_LEN as u64) as usize
            };
            FRAME_TRAILER_LEN + next
        };
        let w = fill.len();
        let got = {
            let space = fill.space(records_total);
            let mut iov = Vec::with_capacity(2 * planned);
            let mut rest = space;
            for (k, (&frame, side)) in plan.iter().zip(aside.iter_mut()).enumerate() {
                let (records, later) =
                    std::mem::take(&mut rest).split_at_mut(frame.1 - FRAME_TRAILER_LEN);
                rest = later;
                iov.push(IoSliceMut::new(records));
                iov.push(IoSliceMut::new(&mut side[..aside_len(k, frame)]));
            }
            let at = *pos + FRAME_HEADER_LEN as u64;
            let got = read_vectored_at(file, path, &mut iov, at, cursor);
            // Unknown after an error: the next read seeks.
            let moved = got.as_ref().map_or(u64::MAX, |&n| at + n as u64);
            match self.reader.as_mut().filter(|_| i < self.sealed.len()) {
                Some(r) => r.cursor = moved,
                None => self.active.cursor = moved,
            }
            got?
        };
        let mut header = header;
        let mut at = w;
        let mut done = 0usize;
        let mut took = 0usize;
        for (k, (&(p, len), side)) in plan.iter().zip(aside.iter()).enumerate() {
            let records_len = len - FRAME_TRAILER_LEN;
            let side_len = aside_len(k, (p, len));
            if be_u32(&header[0..4]) as usize != len || got < done + records_len + side_len {
                break;
            }
            let Some(records) = fill.buf.get(at..at + records_len) else {
                break;
            };
            let info =
                match check_split_v2(records, &side[..FRAME_TRAILER_LEN], be_u32(&header[4..8])) {
                    FrameCheck::Valid(info) => info,
                    _ => break,
                };
            let dense = info.last_offset.0 - info.first_offset.0 + 1 == u64::from(info.count);
            if info.first_offset != *want || !dense {
                break;
            }
            at += records_len;
            done += records_len + side_len;
            took += 1;
            out.count += info.count as usize;
            *want = info.last_offset.next();
            out.next_offset = *want;
            *pos = p + (FRAME_HEADER_LEN + len) as u64;
            let mut next = [0u8; FRAME_HEADER_LEN];
            next.copy_from_slice(&side[FRAME_TRAILER_LEN..]);
            if side_len < FRAME_TRAILER_LEN + FRAME_HEADER_LEN {
                break;
            }
            header = next;
            self.peeked_header = Some((base, *pos, header));
        }
        fill.len = at;
        Ok(Some(if took == 0 { Direct::No } else { Direct::Took }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::segment::{encode_header_for, segment_file_name};
    use crate::log::{FsyncPolicy, LogConfig, LogDir, NewRecord};
    use crate::wire::NodeId;

    const NODE: NodeId = NodeId(7);

    fn config(segment_max_bytes: u64) -> LogConfig {
        LogConfig {
            segment_max_bytes,
            fsync: FsyncPolicy::Never,
            retention_ms: None,
            ..LogConfig::default()
        }
    }

    /// Value of the record at `offset`: its length varies, its bytes name it.
    fn value(offset: u64, len: usize) -> Vec<u8> {
        let mut v = offset.to_be_bytes().repeat(len / 8 + 1);
        v.truncate(len);
        v
    }

    /// Appends `batches` of (records, value length); returns the value
    /// length of every offset.
    fn fill(log: &mut TopicLog, batches: &[(usize, usize)]) -> Vec<usize> {
        let mut lens = Vec::new();
        for &(n, len) in batches {
            let first = log.next_offset().0;
            let values: Vec<Vec<u8>> = (0..n as u64).map(|i| value(first + i, len)).collect();
            let batch: Vec<NewRecord<'_>> = values
                .iter()
                .map(|v| NewRecord {
                    timestamp_ms: 1,
                    key: b"k",
                    value: v,
                })
                .collect();
            log.append_batch(0, &batch).unwrap();
            lens.extend(std::iter::repeat_n(len, n));
        }
        lens
    }

    /// Reads everything with a cursor and `budget`; checks each record is the
    /// one for its offset, in order, none missing; returns the stats delta.
    fn read_all_and_check(log: &mut TopicLog, budget: usize, lens: &[usize]) {
        let mut cursor = Cursor::new(log, StartPosition::Earliest);
        let mut expect = 0u64;
        loop {
            let b = cursor.poll(log, budget).unwrap();
            if b.is_empty() {
                break;
            }
            assert!(b.hole.is_none(), "hole {:?}", b.hole);
            assert!(b.bytes.len() <= budget || b.count == 1, "over budget");
            for r in b.records().unwrap() {
                assert_eq!(r.offset.0, expect, "budget {budget}");
                assert_eq!(r.value, value(expect, lens[expect as usize]), "at {expect}");
                expect += 1;
            }
        }
        assert_eq!(expect as usize, lens.len(), "budget {budget}");
    }

    #[test]
    fn replay_of_large_frames_reads_every_record_once_in_order_at_any_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = LogDir::open(tmp.path(), config(256 << 10)).unwrap();
        let log = dir.log("t", NODE).unwrap();
        // 64 KiB frames, a tail frame per batch, small records, one big one.
        let lens = fill(
            log,
            &[(300, 1000), (500, 64), (3, 70_000), (90, 1000), (1000, 50)],
        );
        assert!(log.segment_count() > 1, "sealed and active segments");
        for budget in [1, 9_000, 100_000, 256 << 10, 1 << 20, 8 << 20] {
            read_all_and_check(log, budget, &lens);
        }
        assert_eq!(log.stats().corrupt_regions_found, 0);
    }

    #[test]
    fn frames_smaller_than_the_index_interval_between_large_ones_read_right() {
        // Single appends (small frames) between batches: the index then
        // points past some frame starts, and a guessed frame length is wrong.
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = LogDir::open(tmp.path(), config(4 << 20)).unwrap();
        let log = dir.log("t", NODE).unwrap();
        let mut lens = Vec::new();
        for round in 0..20u64 {
            lens.extend(fill(log, &[(40, 1000)]));
            for _ in 0..(round % 4) {
                lens.extend(fill(log, &[(1, 10)]));
            }
            lens.extend(fill(log, &[(12, 1000)]));
        }
        for budget in [20_000, 256 << 10, 1 << 20] {
            read_all_and_check(log, budget, &lens);
        }
        assert_eq!(log.stats().corrupt_regions_found, 0);
    }

    #[test]
    fn flipped_byte_in_a_frame_of_a_vectored_read_loses_that_frame_only() {
        // In the active segment (found by recovery, so not in the index), and
        // in a sealed one whose index points at the flipped frame: the
        // vectored read takes the frames before it and stops there.
        for segment_max_bytes in [1 << 30, 300_000] {
            flipped_byte_in_segment_zero(segment_max_bytes);
        }
    }

    fn flipped_byte_in_segment_zero(segment_max_bytes: u64) {
        let tmp = tempfile::tempdir().unwrap();
        let seg = {
            let mut dir = LogDir::open(tmp.path(), config(segment_max_bytes)).unwrap();
            let log = dir.log("t", NODE).unwrap();
            // One frame per batch, as a batch never spans segments.
            fill(log, &[(63, 1000); 6]);
            fill(log, &[(22, 1000)]);
            log.path().join(segment_file_name(Offset(0)))
        };
        // Frames of 63 records; flip a byte in the records of the third.
        let mut bytes = std::fs::read(&seg).unwrap();
        let frame = FRAME_HEADER_LEN + 63 * (RECORD_HEADER_LEN + 1 + 1000) + FRAME_TRAILER_LEN;
        bytes[SEGMENT_HEADER_LEN as usize + 2 * frame + 500] ^= 0x20;
        std::fs::write(&seg, &bytes).unwrap();
        let mut dir = LogDir::open(tmp.path(), config(segment_max_bytes)).unwrap();
        let log = dir.log("t", NODE).unwrap();
        // Recovery saw it first (active segment); read past it from offset 0.
        let mut got = Vec::new();
        let mut holes = Vec::new();
        let mut cursor = Cursor::new(log, StartPosition::Earliest);
        loop {
            let b = cursor.poll(log, 1 << 20).unwrap();
            if let Some(h) = &b.hole {
                holes.push(h.clone());
            }
            if b.is_empty() {
                break;
            }
            for r in b.records().unwrap() {
                assert_eq!(r.value, value(r.offset.0, 1000));
                got.push(r.offset.0);
            }
        }
        assert_eq!(log.segment_count() > 1, segment_max_bytes < 1 << 30);
        assert_eq!(holes, vec![Offset(126)..Offset(189)]);
        let expect: Vec<u64> = (0..400).filter(|o| !(126..189).contains(o)).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn version_1_segment_is_read_and_the_next_append_starts_a_version_2_one() {
        let tmp = tempfile::tempdir().unwrap();
        let seg = {
            let mut dir = LogDir::open(tmp.path(), config(1 << 20)).unwrap();
            let log = dir.log("t", NODE).unwrap();
            log.path().join(segment_file_name(Offset(0)))
        };
        // A version 1 segment as an older build wrote it: frames without a
        // trailer, one of one record and one of 200 (large, direct reads).
        let mut bytes = encode_header_for(Offset(0), FrameFormat::V1).to_vec();
        let mut frame = |first: u64, n: u64, len: usize| {
            let mut records = Vec::new();
            for o in first..first + n {
                crate::wire::record::RecordRepr {
                    topic: crate::wire::TopicId(0),
                    offset: Offset(o),
                    timestamp_ms: 1,
                    key: b"k",
                    value: &value(o, len),
                }
                .emit_to_vec(&mut records)
                .unwrap();
            }
            bytes.extend_from_slice(&(records.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&records).to_be_bytes());
            bytes.extend_from_slice(&records);
        };
        frame(0, 1, 10);
        frame(1, 200, 300);
        frame(201, 1, 10);
        std::fs::write(&seg, &bytes).unwrap();
        let mut lens = vec![10];
        lens.extend(std::iter::repeat_n(300, 200));
        lens.push(10);

        let mut dir = LogDir::open(tmp.path(), config(1 << 20)).unwrap();
        let log = dir.log("t", NODE).unwrap();
        assert_eq!(log.next_offset(), Offset(202));
        assert_eq!(log.stats().tails_truncated, 0);
        read_all_and_check(log, 1 << 20, &lens);
        read_all_and_check(log, 5_000, &lens);
        // Appends never go to a version 1 segment.
        lens.extend(fill(log, &[(50, 64)]));
        assert_eq!(log.segment_count(), 2);
        read_all_and_check(log, 1 << 20, &lens);
        drop(dir);
        let head = std::fs::read(&seg).unwrap();
        assert_eq!(&head[4..6], &[0, 1], "the old segment is left as it was");
        let mut dir = LogDir::open(tmp.path(), config(1 << 20)).unwrap();
        let log = dir.log("t", NODE).unwrap();
        read_all_and_check(log, 1 << 20, &lens);
        let new = std::fs::read(log.path().join(segment_file_name(Offset(202)))).unwrap();
        assert_eq!(&new[4..6], &[0, 2]);
    }

    #[test]
    fn empty_version_1_segment_is_rewritten_as_version_2_at_the_first_append() {
        let tmp = tempfile::tempdir().unwrap();
        let seg = {
            let mut dir = LogDir::open(tmp.path(), config(1 << 20)).unwrap();
            let log = dir.log("t", NODE).unwrap();
            log.path().join(segment_file_name(Offset(0)))
        };
        std::fs::write(&seg, encode_header_for(Offset(0), FrameFormat::V1)).unwrap();
        let mut dir = LogDir::open(tmp.path(), config(1 << 20)).unwrap();
        let log = dir.log("t", NODE).unwrap();
        let lens = fill(log, &[(3, 20)]);
        assert_eq!(log.segment_count(), 1);
        read_all_and_check(log, 1 << 20, &lens);
        assert_eq!(&std::fs::read(&seg).unwrap()[4..6], &[0, 2]);
    }
}
