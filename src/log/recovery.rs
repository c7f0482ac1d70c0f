//! Opening a log: list its segments without opening them, recover the last
//! one (truncate a torn tail at the last valid record, fsync, report), and
//! load or rebuild the index of a sealed segment when a reader needs it.
//!
//! Policy, after raft-engine's "tolerate tail corruption": an invalid frame
//! followed by no valid frame is a torn tail and is cut off; an invalid frame
//! followed by valid ones is corruption in the middle, reported with its file
//! and position and skipped, never truncated (that would drop good records).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::wire::{NodeId, Offset};

use super::error::{Error, Result};
use super::index::{SparseIndex, NO_TIMESTAMP};
use super::segment::{
    check_header, encode_header, find_next_valid, index_file_name, parse_segment_name,
    read_full_at, scan_frames, segment_file_name, segment_format, FrameFormat, ScanEnd,
    SEGMENT_HEADER_LEN,
};
use super::topic_log::{
    create_segment, sync_dir, write_index_bytes, ActiveSegment, OpenSealed, SealedSegment, TopicLog,
};
use super::{FsyncPolicy, LogConfig, Stats};

/// What a full scan of one segment found.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    pub index: SparseIndex,
    pub index_next_pos: u64,
    pub records: u64,
    pub last_offset: Option<Offset>,
    pub first_ts: Option<u64>,
    pub max_ts: u64,
    /// An invalid frame with nothing valid after it: (position, reason).
    pub broken_tail: Option<(u64, &'static str)>,
    /// Corrupt regions skipped: (position, where valid frames resume). Handed
    /// to the reader so it does not report them a second time.
    pub skipped: Vec<(u64, u64)>,
}

/// Scans `[SEGMENT_HEADER_LEN, len)` of a segment, skipping (and reporting)
/// corrupt regions that have valid frames after them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_segment(
    file: &File,
    path: &Path,
    base: Offset,
    len: u64,
    format: FrameFormat,
    index_interval: u32,
    scratch: &mut Vec<u8>,
    stats: &mut Stats,
) -> Result<SegmentScan> {
    let interval = u64::from(index_interval.max(1));
    let mut s = SegmentScan {
        index: SparseIndex::new(),
        index_next_pos: SEGMENT_HEADER_LEN,
        records: 0,
        last_offset: None,
        first_ts: None,
        max_ts: NO_TIMESTAMP,
        broken_tail: None,
        skipped: Vec::new(),
    };
    let mut pos = SEGMENT_HEADER_LEN;
    let mut probe = Vec::new();
    loop {
        let end = scan_frames(
            file,
            path,
            pos,
            len,
            s.last_offset,
            format,
            scratch,
            |at, info| {
                if at >= s.index_next_pos {
                    s.index.push(base, info.first_offset, at);
                    s.index_next_pos = at + interval;
                }
                s.records += u64::from(info.count);
                s.last_offset = Some(info.last_offset);
                s.first_ts.get_or_insert(info.first_ts);
                s.max_ts = if s.max_ts == NO_TIMESTAMP {
                    info.max_ts
                } else {
                    s.max_ts.max(info.max_ts)
                };
            },
        )?;
        let ScanEnd::Broken { position, reason } = end else {
            return Ok(s);
        };
        let min_offset = s.last_offset.map_or(base, Offset::next);
        match find_next_valid(
            file,
            path,
            position + 1,
            len,
            min_offset,
            format,
            &mut probe,
        )? {
            Some((resume, _)) => {
                log::warn!(
                    "skipping corrupt region in segment path={} position={} reason={} resume_position={}",
                    path.display(),
                    position,
                    reason,
                    resume
                );
                stats.corrupt_regions_found += 1;
                stats.corrupt_bytes_skipped += resume - position;
                s.skipped.push((position, resume));
                pos = resume;
            }
            None => {
                s.broken_tail = Some((position, reason));
                return Ok(s);
            }
        }
    }
}

impl TopicLog {
    /// Opens the log in `dir`, creating it (and the directory) if it has no
    /// segment. Only the last segment is opened and scanned.
    pub(crate) fn open(
        dir: PathBuf,
        topic: String,
        source: NodeId,
        config: LogConfig,
    ) -> Result<TopicLog> {
        let mut stats = Stats {
            logs_opened: 1,
            ..Stats::default()
        };
        let mut bases = list_segments(&dir)?;
        let mut scratch = Vec::new();
        let mut skips = HashMap::new();
        let active = match bases.pop() {
            Some((base, len)) => recover_active(
                &dir,
                base,
                len,
                &config,
                &mut scratch,
                &mut stats,
                &mut skips,
            )?,
            None => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(&dir, "create directory", e))?;
                if config.fsync != FsyncPolicy::Never {
                    if let Some(parent) = dir.parent() {
                        sync_dir(parent)?;
                    }
                }
                stats.logs_created = 1;
                create_segment(&dir, Offset(0), config.fsync)?
            }
        };
        let sealed = bases
            .into_iter()
            .map(|(base, len)| SealedSegment {
                base,
                len,
                max_ts: None,
            })
            .collect();
        Ok(TopicLog {
            dir,
            topic,
            source,
            config,
            sealed,
            active,
            reader: None,
            read_pos: None,
            writer: Default::default(),
            scratch,
            unsynced: false,
            last_sync_ms: 0,
            poisoned: false,
            peeked_header: None,
            skips,
            stats,
        })
    }

    /// Makes sure `self.reader` holds sealed segment `i`, loading its index
    /// or rebuilding it when missing, short, corrupt or stale.
    pub(crate) fn open_sealed(&mut self, i: usize) -> Result<()> {
        let Some(seg) = self.sealed.get(i) else {
            return Ok(());
        };
        if self.reader.as_ref().is_some_and(|r| r.base == seg.base) {
            return Ok(());
        }
        let base = seg.base;
        let path = self.dir.join(segment_file_name(base));
        let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        let (format, _) = format_or_warn(&file, &path, base, len)?;
        let idx_path = self.dir.join(index_file_name(base));
        let loaded = match std::fs::read(&idx_path) {
            Ok(bytes) => SparseIndex::decode(&bytes, base, len),
            Err(_) => Err("index file missing"),
        };
        let (index, max_ts) = match loaded {
            Ok(ok) => ok,
            Err(reason) => {
                log::warn!(
                    "rebuilding index path={} reason={}",
                    idx_path.display(),
                    reason
                );
                let scan = scan_segment(
                    &file,
                    &path,
                    base,
                    len,
                    format,
                    self.config.index_interval_bytes,
                    &mut self.scratch,
                    &mut self.stats,
                )?;
                if let Some((position, reason)) = scan.broken_tail {
                    log::warn!(
                        "corrupt end of sealed segment path={} position={} reason={} lost_bytes={}",
                        path.display(),
                        position,
                        reason,
                        len - position
                    );
                    self.stats.corrupt_regions_found += 1;
                    self.stats.corrupt_bytes_skipped += len - position;
                }
                for &(position, resume) in &scan.skipped {
                    self.skips.insert((base, position), Some(resume));
                }
                if let Some((position, _)) = scan.broken_tail {
                    self.skips.insert((base, position), None);
                }
                self.stats.indexes_rebuilt += 1;
                write_index_bytes(&self.dir, base, &scan.index.encode(base, len, scan.max_ts));
                (scan.index, scan.max_ts)
            }
        };
        if let Some(s) = self.sealed.get_mut(i) {
            s.len = len;
            s.max_ts = Some(max_ts);
        }
        self.reader = Some(OpenSealed {
            base,
            path,
            file,
            format,
            cursor: 0,
            len,
            index,
        });
        Ok(())
    }
}

/// The `(base, length)` of every `*.seg` in `dir`, oldest first. A missing
/// directory has none.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(Offset, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, "list", e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, "list", e))?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let len = entry
            .metadata()
            .map_err(|e| Error::io(&entry.path(), "stat", e))?
            .len();
        out.push((base, len));
    }
    out.sort_unstable();
    Ok(out)
}

/// Recovers the last segment: checks its header, scans every frame, cuts a
/// torn tail, rebuilds its index in memory.
fn recover_active(
    dir: &Path,
    base: Offset,
    file_len: u64,
    config: &LogConfig,
    scratch: &mut Vec<u8>,
    stats: &mut Stats,
    skips: &mut HashMap<(Offset, u64), Option<u64>>,
) -> Result<ActiveSegment> {
    let path = dir.join(segment_file_name(base));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, "open", e))?;
    if file_len <= SEGMENT_HEADER_LEN {
        // A crash while the segment was being created: no record can be in it.
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        let got = read_full_at(&file, &path, &mut header, 0)?;
        if check_header(&header[..got], base).is_err() {
            file.set_len(0)
                .and_then(|()| file.write_all_at(&encode_header(base), 0))
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(&path, "rewrite header of", e))?;
            log::warn!(
                "rewrote short segment header path={} old_len={}",
                path.display(),
                file_len
            );
            stats.segment_headers_rewritten += 1;
        }
        let format = check_header(&header[..got], base).unwrap_or(FrameFormat::CURRENT);
        return Ok(active_from_scan(
            base,
            path,
            file,
            format,
            SEGMENT_HEADER_LEN,
            None,
        ));
    }
    // The name is the truth for the base; frames carry their own offsets;
    // the first frame tells the version.
    let (format, header_ok) = format_or_warn(&file, &path, base, file_len)?;
    if !header_ok {
        stats.corrupt_regions_found += 1;
    }
    let scan = scan_segment(
        &file,
        &path,
        base,
        file_len,
        format,
        config.index_interval_bytes,
        scratch,
        stats,
    )?;
    stats.records_recovered += scan.records;
    for &(position, resume) in &scan.skipped {
        skips.insert((base, position), Some(resume));
    }
    if let Some((position, reason)) = scan.broken_tail {
        file.set_len(position)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&path, "truncate torn tail of", e))?;
        let dropped = file_len - position;
        log::warn!(
            "truncated torn tail path={} position={} dropped_bytes={} reason={} next_offset={}",
            path.display(),
            position,
            dropped,
            reason,
            scan.last_offset.map_or(base, Offset::next)
        );
        stats.tails_truncated += 1;
        stats.bytes_truncated += dropped;
    }
    Ok(active_from_scan(
        base,
        path,
        file,
        format,
        file_len,
        Some(scan),
    ))
}

fn active_from_scan(
    base: Offset,
    path: PathBuf,
    file: File,
    format: FrameFormat,
    file_len: u64,
    scan: Option<SegmentScan>,
) -> ActiveSegment {
    match scan {
        None => ActiveSegment {
            base,
            path,
            file,
            format,
            cursor: 0,
            len: SEGMENT_HEADER_LEN,
            index: SparseIndex::new(),
            index_next_pos: SEGMENT_HEADER_LEN,
            next: base,
            records: 0,
            first_ts: None,
            max_ts: NO_TIMESTAMP,
        },
        Some(s) => ActiveSegment {
            base,
            path,
            file,
            format,
            cursor: 0,
            len: s.broken_tail.map_or(file_len, |(p, _)| p),
            index: s.index,
            index_next_pos: s.index_next_pos,
            next: s.last_offset.map_or(base, Offset::next),
            records: s.records,
            first_ts: s.first_ts,
            max_ts: s.max_ts,
        },
    }
}

/// The segment's frame format, from its header; a corrupt header is logged
/// and the format is taken from the first frame instead (`false`).
fn format_or_warn(file: &File, path: &Path, base: Offset, len: u64) -> Result<(FrameFormat, bool)> {
    Ok(match segment_format(file, path, base, len)? {
        Ok(format) => (format, true),
        Err((format, reason)) => {
            log::warn!(
                "corrupt segment header path={} reason={} frame_version={}",
                path.display(),
                reason,
                if format == FrameFormat::V1 { 1 } else { 2 }
            );
            (format, false)
        }
    })
}
