//! `TopicLog`: one (topic, source node) log, its append paths and roll.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::wire::record::RecordRepr;
use crate::wire::record::HEADER_LEN as RECORD_HEADER_LEN;
use crate::wire::{NodeId, Offset};

use super::error::{Error, Result};
use super::index::{SparseIndex, NO_TIMESTAMP};
use super::segment::{
    encode_header, index_file_name, segment_file_name, FrameFormat, FrameWriter, FRAME_HEADER_LEN,
    MAX_RECORD_LEN, SEGMENT_HEADER_LEN,
};
use super::{FsyncPolicy, LogConfig, Stats, SEGMENT_MAX_BYTES_LIMIT};

/// One record to append on the source side (the log assigns the offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    pub timestamp_ms: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// What `append_replica` did with a record from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored at the source's offset, right after the previous record.
    Stored(Offset),
    /// Stored at the source's offset after skipping `gap`, which this log
    /// will never hold (readers get it back as `ReadBatch::hole`).
    StoredAfterGap { offset: Offset, gap: Range<Offset> },
    /// The offset was already stored (or skipped); nothing was written.
    Duplicate,
}

/// A segment that no longer takes appends.
#[derive(Debug, Clone)]
pub(crate) struct SealedSegment {
    pub base: Offset,
    pub len: u64,
    /// Newest record timestamp; `None` until read from the index (lazily).
    pub max_ts: Option<u64>,
}

/// The segment appends go to; always the last one.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub base: Offset,
    pub path: PathBuf,
    pub file: File,
    /// Frame layout of this segment; appends only go to a `CURRENT` one.
    pub format: FrameFormat,
    /// Where `file`'s own position is (only vectored reads move it; writes
    /// are positioned), so a sequential replay needs no seek.
    pub cursor: u64,
    pub len: u64,
    pub index: SparseIndex,
    /// Position from which the next frame gets an index entry.
    pub index_next_pos: u64,
    pub next: Offset,
    pub records: u64,
    pub first_ts: Option<u64>,
    pub max_ts: u64,
}

/// A sealed segment opened for reading (one per log at a time).
#[derive(Debug)]
pub(crate) struct OpenSealed {
    pub base: Offset,
    pub path: PathBuf,
    pub file: File,
    pub format: FrameFormat,
    /// As `ActiveSegment::cursor`.
    pub cursor: u64,
    pub len: u64,
    pub index: SparseIndex,
}

/// Where the previous read stopped, so a sequential reader skips the index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadPos {
    pub next: Offset,
    pub base: Offset,
    pub position: u64,
}

/// The log of one topic from one source node: an ordered list of segments,
/// the last of which is active.
///
/// Not thread-safe by design: the daemon's event loop owns it.
#[derive(Debug)]
pub struct TopicLog {
    pub(crate) dir: PathBuf,
    pub(crate) topic: String,
    pub(crate) source: NodeId,
    pub(crate) config: LogConfig,
    pub(crate) sealed: Vec<SealedSegment>,
    pub(crate) active: ActiveSegment,
    pub(crate) reader: Option<OpenSealed>,
    pub(crate) read_pos: Option<ReadPos>,
    /// Frames of the append in progress; reused so appends do not allocate.
    pub(crate) writer: FrameWriter,
    /// Raw segment bytes for reads and scans; reused.
    pub(crate) scratch: Vec<u8>,
    pub(crate) unsynced: bool,
    pub(crate) last_sync_ms: u64,
    pub(crate) poisoned: bool,
    /// A frame header read ahead by the last direct read: (segment base,
    /// position, header). Saves a syscall on sequential replay.
    pub(crate) peeked_header: Option<(Offset, u64, [u8; FRAME_HEADER_LEN])>,
    /// Corrupt regions already reported: (segment base, position) -> where
    /// reading resumes (`None`: at the segment end).
    pub(crate) skips: HashMap<(Offset, u64), Option<u64>>,
    pub(crate) stats: Stats,
}

impl TopicLog {
    /// The topic this log holds.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The node whose offsets this log keeps.
    pub fn source(&self) -> NodeId {
        self.source
    }

    /// Directory holding this log's segments.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The offset the next source-side append gets (`latest`).
    pub fn next_offset(&self) -> Offset {
        self.active.next
    }

    /// The lowest offset still retained (`earliest`): the base of the oldest
    /// segment. Reads below it fail with `BelowRetention`.
    pub fn earliest_offset(&self) -> Offset {
        self.sealed.first().map_or(self.active.base, |s| s.base)
    }

    /// Bytes in all segments of this log.
    pub fn size_bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.len).sum::<u64>() + self.active.len
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes effect from the next append (roll, fsync) or retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Appends one record at `next_offset()` and returns its offset. The
    /// bytes are handed to the OS with one write before this returns.
    pub fn append(
        &mut self,
        now_ms: u64,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<Offset> {
        let range = self.append_batch(
            now_ms,
            &[NewRecord {
                timestamp_ms,
                key,
                value,
            }],
        )?;
        Ok(range.start)
    }

    /// Appends many records with one write; returns their offsets. All or
    /// none: on error nothing of the batch stays in the log. An empty batch
    /// returns `next..next` and writes nothing.
    pub fn append_batch(
        &mut self,
        now_ms: u64,
        records: &[NewRecord<'_>],
    ) -> Result<Range<Offset>> {
        let first = self.active.next;
        if records.is_empty() {
            return Ok(first..first);
        }
        self.writer.reset();
        let mut offset = first;
        for r in records {
            self.encode(offset, r.timestamp_ms, r.key, r.value)?;
            offset = offset.next();
        }
        self.writer.finish();
        self.commit_write(now_ms)?;
        Ok(first..self.active.next)
    }

    /// Appends a record received from its source, keeping the source's
    /// offset. Below `next_offset()`: a duplicate, ignored. Above: the log
    /// skips ahead and remembers the hole; an empty log simply restarts at
    /// that offset (a late joiner's log starts where it joined). The stored
    /// topic id is 0 whatever `record.topic` says.
    pub fn append_replica(&mut self, now_ms: u64, record: &RecordRepr<'_>) -> Result<Appended> {
        let next = self.active.next;
        if record.offset < next {
            self.stats.records_duplicate += 1;
            return Ok(Appended::Duplicate);
        }
        if record.offset > next && self.is_empty() {
            self.restart_at(record.offset)?;
        }
        let next = self.active.next;
        self.writer.reset();
        self.encode(record.offset, record.timestamp_ms, record.key, record.value)?;
        self.writer.finish();
        self.commit_write(now_ms)?;
        if record.offset > next {
            self.stats.offsets_skipped += record.offset.0 - next.0;
            return Ok(Appended::StoredAfterGap {
                offset: record.offset,
                gap: next..record.offset,
            });
        }
        Ok(Appended::Stored(record.offset))
    }

    /// Appends the replica records of one batch (e.g. one DATA datagram) with
    /// one write. Duplicates are dropped; records must otherwise come in
    /// increasing offset order (a record at or below an earlier one of the
    /// batch counts as a duplicate). Returns how many were stored.
    pub fn append_replica_batch<'a>(
        &mut self,
        now_ms: u64,
        records: impl IntoIterator<Item = RecordRepr<'a>>,
    ) -> Result<usize> {
        self.writer.reset();
        let mut next = self.active.next;
        let mut stored = 0usize;
        let mut duplicates = 0u64;
        for r in records {
            if r.offset < next {
                duplicates += 1;
                continue;
            }
            if stored == 0 && r.offset > next && self.is_empty() {
                self.restart_at(r.offset)?;
            }
            self.encode(r.offset, r.timestamp_ms, r.key, r.value)?;
            next = r.offset.next();
            stored += 1;
        }
        self.writer.finish();
        self.stats.records_duplicate += duplicates;
        if stored == 0 {
            return Ok(0);
        }
        let before = self.active.next;
        self.commit_write(now_ms)?;
        let dense = u64::try_from(stored).unwrap_or(u64::MAX);
        let span = self.active.next.0.saturating_sub(before.0);
        self.stats.offsets_skipped += span.saturating_sub(dense);
        Ok(stored)
    }

    /// Fsyncs if the policy is `Interval` and the interval has passed since
    /// the last fsync (the daemon's timer tick).
    pub fn flush(&mut self, now_ms: u64) -> Result<()> {
        if let FsyncPolicy::Interval(d) = self.config.fsync {
            if self.unsynced && now_ms.saturating_sub(self.last_sync_ms) >= duration_ms(d) {
                self.sync(now_ms)?;
            }
        }
        Ok(())
    }

    /// Fsyncs the active segment now, whatever the policy.
    pub fn sync(&mut self, now_ms: u64) -> Result<()> {
        self.active
            .file
            .sync_data()
            .map_err(|e| Error::io(&self.active.path, "fsync", e))?;
        self.stats.fsyncs += 1;
        self.unsynced = false;
        self.last_sync_ms = now_ms;
        Ok(())
    }

    /// No record in any segment.
    pub(crate) fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.active.records == 0
    }

    /// Adds one record to the frames of the append in progress, refusing
    /// records a segment cannot hold. Inlined into the batch loops: a call
    /// per record showed in profiles of 64-byte appends.
    #[inline(always)]
    fn encode(
        &mut self,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let len = RECORD_HEADER_LEN as u64 + key.len() as u64 + value.len() as u64;
        let too_large = || Error::TooLarge {
            len,
            max: MAX_RECORD_LEN as u64,
        };
        if len > MAX_RECORD_LEN as u64 {
            return Err(too_large());
        }
        self.writer
            .push(offset, timestamp_ms, key, value)
            .map_err(|_| too_large())
    }

    /// Writes `write_buf` (whole frames) at the end of the active segment with
    /// one positioned write, rolling first if needed, then fsyncs per policy.
    /// On any error the segment is cut back and nothing in memory changes.
    fn commit_write(&mut self, now_ms: u64) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned {
                path: self.active.path.clone(),
            });
        }
        let total = self.writer.len() as u64;
        if total > SEGMENT_MAX_BYTES_LIMIT {
            return Err(Error::TooLarge {
                len: total,
                max: SEGMENT_MAX_BYTES_LIMIT,
            });
        }
        let too_big = self.active.len + total > self.config.effective_segment_max_bytes();
        let too_old = self
            .active
            .first_ts
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.segment_max_age_ms);
        let old_format = self.active.format != FrameFormat::CURRENT;
        if self.active.records > 0 && (too_big || too_old || old_format) {
            self.roll(now_ms)?;
        } else if old_format {
            // An empty segment of an older version: write it again as current.
            let base = self.active.base;
            self.active = create_segment(&self.dir, base, self.config.fsync)?;
            self.read_pos = None;
            self.peeked_header = None;
            self.skips.retain(|&(b, _), _| b != base);
        }
        let pos = self.active.len;
        let mut result = self
            .active
            .file
            .write_all_at(self.writer.bytes(), pos)
            .map_err(|e| Error::io(&self.active.path, "write", e));
        let sync_now = match self.config.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(d) => now_ms.saturating_sub(self.last_sync_ms) >= duration_ms(d),
            FsyncPolicy::Never => false,
        };
        if result.is_ok() && sync_now {
            result = self
                .active
                .file
                .sync_data()
                .map_err(|e| Error::io(&self.active.path, "fsync", e));
            self.stats.fsyncs += 1;
            if result.is_ok() {
                self.last_sync_ms = now_ms;
            }
        }
        if let Err(e) = result {
            self.stats.appends_failed += 1;
            if let Err(undo) = self.active.file.set_len(pos) {
                self.poisoned = true;
                log::error!(
                    "cannot cut back failed append path={} position={} error={}",
                    self.active.path.display(),
                    pos,
                    undo
                );
            }
            return Err(e);
        }
        self.unsynced = !sync_now;
        self.index_written_frames(pos);
        Ok(())
    }

    /// Updates the in-memory state for the frames just written at `pos`:
    /// index entries (one per frame at most, so no record is looked at),
    /// offsets, timestamps, counters, from what the writer noted.
    fn index_written_frames(&mut self, pos: u64) {
        let interval = u64::from(self.config.index_interval_bytes.max(1));
        let w = &self.writer;
        let a = &mut self.active;
        for &(at, first) in w.frames() {
            let frame_pos = pos + at as u64;
            if frame_pos >= a.index_next_pos {
                a.index.push(a.base, first, frame_pos);
                a.index_next_pos = frame_pos + interval;
            }
        }
        if let (Some(first_ts), Some(last)) = (w.first_ts, w.last_offset) {
            a.first_ts.get_or_insert(first_ts);
            a.max_ts = if a.max_ts == NO_TIMESTAMP {
                w.max_ts
            } else {
                a.max_ts.max(w.max_ts)
            };
            a.next = last.next();
        }
        let len = w.len() as u64;
        a.records += w.count;
        a.len = pos + len;
        self.stats.records_appended += w.count;
        self.stats.bytes_appended += len;
        self.stats.batches_appended += 1;
    }

    /// Seals the active segment (fsync per policy, write its index) and
    /// starts a new one at `next_offset()`. On error the old one stays active.
    pub(crate) fn roll(&mut self, now_ms: u64) -> Result<()> {
        if self.unsynced && self.config.fsync != FsyncPolicy::Never {
            self.sync(now_ms)?;
        }
        write_index_file(&self.dir, &self.active);
        let new = create_segment(&self.dir, self.active.next, self.config.fsync)?;
        let old = std::mem::replace(&mut self.active, new);
        self.sealed.push(SealedSegment {
            base: old.base,
            len: old.len,
            max_ts: Some(old.max_ts),
        });
        self.unsynced = false;
        self.stats.segments_rolled += 1;
        log::debug!(
            "rolled segment dir={} sealed_base={} new_base={}",
            self.dir.display(),
            old.base,
            self.active.base
        );
        Ok(())
    }

    /// Restarts an empty log at `base` (replica late joiner).
    fn restart_at(&mut self, base: Offset) -> Result<()> {
        let new = create_segment(&self.dir, base, self.config.fsync)?;
        let old = std::mem::replace(&mut self.active, new);
        remove_segment_files(&self.dir, old.base);
        self.read_pos = None;
        self.skips.clear();
        Ok(())
    }
}

impl Drop for TopicLog {
    fn drop(&mut self) {
        if self.unsynced && self.config.fsync != FsyncPolicy::Never {
            if let Err(e) = self.active.file.sync_data() {
                log::warn!(
                    "fsync at close failed path={} error={}",
                    self.active.path.display(),
                    e
                );
            }
        }
    }
}

pub(crate) fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Creates `{base:020}.seg` with its header; fsyncs it and the directory
/// unless the policy is `Never`. Removes the file again on failure.
pub(crate) fn create_segment(
    dir: &Path,
    base: Offset,
    fsync: FsyncPolicy,
) -> Result<ActiveSegment> {
    let path = dir.join(segment_file_name(base));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| Error::io(&path, "create", e))?;
    let header = encode_header(base);
    let mut result = file
        .write_all_at(&header, 0)
        .map_err(|e| Error::io(&path, "write", e));
    if result.is_ok() && fsync != FsyncPolicy::Never {
        result = file
            .sync_data()
            .map_err(|e| Error::io(&path, "fsync", e))
            .and_then(|()| sync_dir(dir));
    }
    if let Err(e) = result {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(ActiveSegment {
        base,
        path,
        file,
        format: FrameFormat::CURRENT,
        cursor: 0,
        len: SEGMENT_HEADER_LEN,
        index: SparseIndex::new(),
        index_next_pos: SEGMENT_HEADER_LEN,
        next: base,
        records: 0,
        first_ts: None,
        max_ts: NO_TIMESTAMP,
    })
}

/// Fsyncs a directory so that file creations and deletions in it survive
/// power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "fsync directory", e))
}

/// Writes the index of a segment being sealed. The index is a cache, so a
/// failure is only logged: readers rebuild a missing index.
pub(crate) fn write_index_file(dir: &Path, seg: &ActiveSegment) {
    let bytes = seg.index.encode(seg.base, seg.len, seg.max_ts);
    write_index_bytes(dir, seg.base, &bytes);
}

pub(crate) fn write_index_bytes(dir: &Path, base: Offset, bytes: &[u8]) {
    let path = dir.join(index_file_name(base));
    if let Err(e) = std::fs::write(&path, bytes) {
        log::warn!("cannot write index path={} error={}", path.display(), e);
        let _ = std::fs::remove_file(&path);
    }
}

/// Deletes a segment and its index (segment first: an index without its
/// segment is ignored and cleaned up later).
pub(crate) fn remove_segment_files(dir: &Path, base: Offset) {
    let seg = dir.join(segment_file_name(base));
    if let Err(e) = std::fs::remove_file(&seg) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("cannot delete segment path={} error={}", seg.display(), e);
        }
    }
    let _ = std::fs::remove_file(dir.join(index_file_name(base)));
}
