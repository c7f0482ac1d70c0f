//! Retention by age and by total size (Kafka's `retention.ms` and
//! `retention.bytes`): whole sealed segments are deleted oldest first, never
//! the active one, so the earliest retained offset only moves forward.
//!
//! Age uses the newest record timestamp of a segment (read from its index
//! header, or by scanning the segment if the index is unusable), so a segment
//! goes only when everything in it is old. Size keeps the log at or under
//! `retention_bytes`, the active segment excepted.

use std::fs::File;
use std::path::Path;

use crate::wire::{NodeId, Offset};

use super::error::{Error, Result};
use super::index::{SparseIndex, NO_TIMESTAMP};
use super::recovery::{list_segments, scan_segment};
use super::segment::{index_file_name, segment_file_name, segment_format};
use super::topic_log::{remove_segment_files, TopicLog};
use super::{LogConfig, Stats};

/// What one retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
    /// Logs that lost segments, with their new earliest offset.
    pub logs_trimmed: Vec<(String, NodeId, Offset)>,
}

impl RetentionReport {
    pub(crate) fn merge(&mut self, other: RetentionReport) {
        self.segments_deleted += other.segments_deleted;
        self.bytes_deleted += other.bytes_deleted;
        self.logs_trimmed.extend(other.logs_trimmed);
    }
}

/// How many of the oldest sealed segments to delete. `sealed` holds
/// `(base, len)` oldest first; `max_ts_of(i)` gives segment i's newest
/// record timestamp (asked only while walking from the oldest).
pub(crate) fn plan_deletions(
    sealed: &[(Offset, u64)],
    active_len: u64,
    config: &LogConfig,
    now_ms: u64,
    mut max_ts_of: impl FnMut(usize) -> Result<u64>,
) -> Result<usize> {
    if config.retention_ms.is_none() && config.retention_bytes.is_none() {
        return Ok(0);
    }
    let mut total: u64 = sealed.iter().map(|s| s.1).sum::<u64>() + active_len;
    let mut n = 0;
    for (i, &(_, len)) in sealed.iter().enumerate() {
        let by_size = config.retention_bytes.is_some_and(|limit| total > limit);
        let by_age = match config.retention_ms {
            Some(keep) if !by_size => {
                let ts = max_ts_of(i)?;
                ts == NO_TIMESTAMP || ts.saturating_add(keep) <= now_ms
            }
            _ => false,
        };
        if !(by_size || by_age) {
            break;
        }
        total -= len;
        n += 1;
    }
    Ok(n)
}

/// Newest record timestamp of a sealed segment, from its index header or,
/// if the index is unusable, by scanning the segment.
pub(crate) fn segment_max_ts(
    dir: &Path,
    base: Offset,
    len: u64,
    index_interval: u32,
    scratch: &mut Vec<u8>,
    stats: &mut Stats,
) -> Result<u64> {
    if let Ok(bytes) = std::fs::read(dir.join(index_file_name(base))) {
        if let Ok((_, max_ts)) = SparseIndex::decode(&bytes, base, len) {
            return Ok(max_ts);
        }
    }
    let path = dir.join(segment_file_name(base));
    let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
    let format = segment_format(&file, &path, base, len)?.unwrap_or_else(|(format, _)| format);
    let scan = scan_segment(
        &file,
        &path,
        base,
        len,
        format,
        index_interval,
        scratch,
        stats,
    )?;
    Ok(scan.max_ts)
}

impl TopicLog {
    /// Deletes expired sealed segments of this open log.
    pub fn apply_retention(&mut self, now_ms: u64) -> Result<RetentionReport> {
        let sealed: Vec<(Offset, u64)> = self.sealed.iter().map(|s| (s.base, s.len)).collect();
        let known: Vec<Option<u64>> = self.sealed.iter().map(|s| s.max_ts).collect();
        let (dir, interval) = (self.dir.clone(), self.config.index_interval_bytes);
        let (scratch, stats) = (&mut self.scratch, &mut self.stats);
        let n = plan_deletions(
            &sealed,
            self.active.len,
            &self.config,
            now_ms,
            |i| match known.get(i).copied().flatten() {
                Some(ts) => Ok(ts),
                None => {
                    let (base, len) = sealed.get(i).copied().unwrap_or((Offset(0), 0));
                    segment_max_ts(&dir, base, len, interval, scratch, stats)
                }
            },
        )?;
        let mut report = RetentionReport::default();
        if n == 0 {
            return Ok(report);
        }
        for s in self.sealed.drain(..n) {
            remove_segment_files(&self.dir, s.base);
            report.segments_deleted += 1;
            report.bytes_deleted += s.len;
            if self.reader.as_ref().is_some_and(|r| r.base == s.base) {
                self.reader = None;
            }
        }
        self.skips.retain(|&(base, _), _| {
            base >= self.sealed.first().map_or(self.active.base, |s| s.base)
        });
        self.stats.segments_deleted += report.segments_deleted;
        self.stats.bytes_deleted += report.bytes_deleted;
        let earliest = self.earliest_offset();
        log::info!(
            "retention deleted segments dir={} segments={} bytes={} earliest_offset={}",
            self.dir.display(),
            report.segments_deleted,
            report.bytes_deleted,
            earliest
        );
        report
            .logs_trimmed
            .push((self.topic.clone(), self.source, earliest));
        Ok(report)
    }
}

/// Retention for a log that is not open: works from the directory listing
/// and index headers, without recovering or opening the log.
pub(crate) fn apply_closed(
    dir: &Path,
    topic: &str,
    source: NodeId,
    config: &LogConfig,
    now_ms: u64,
    stats: &mut Stats,
) -> Result<RetentionReport> {
    let mut segments = list_segments(dir)?;
    let mut report = RetentionReport::default();
    let Some((_, active_len)) = segments.pop() else {
        return Ok(report);
    };
    let mut scratch = Vec::new();
    let n = plan_deletions(&segments, active_len, config, now_ms, |i| {
        let (base, len) = segments.get(i).copied().unwrap_or((Offset(0), 0));
        segment_max_ts(
            dir,
            base,
            len,
            config.index_interval_bytes,
            &mut scratch,
            stats,
        )
    })?;
    if n == 0 {
        return Ok(report);
    }
    for &(base, len) in segments.iter().take(n) {
        remove_segment_files(dir, base);
        report.segments_deleted += 1;
        report.bytes_deleted += len;
    }
    let earliest = segments.get(n).map_or_else(
        || {
            list_segments(dir)
                .ok()
                .and_then(|s| s.first().map(|f| f.0))
                .unwrap_or(Offset(0))
        },
        |s| s.0,
    );
    stats.segments_deleted += report.segments_deleted;
    stats.bytes_deleted += report.bytes_deleted;
    log::info!(
        "retention deleted segments dir={} segments={} bytes={} earliest_offset={}",
        dir.display(),
        report.segments_deleted,
        report.bytes_deleted,
        earliest
    );
    report
        .logs_trimmed
        .push((topic.to_string(), source, earliest));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ms: Option<u64>, bytes: Option<u64>) -> LogConfig {
        LogConfig {
            retention_ms: ms,
            retention_bytes: bytes,
            ..LogConfig::default()
        }
    }

    #[test]
    fn age_deletes_oldest_segments_whose_newest_record_is_old() {
        let segs = [(Offset(0), 100), (Offset(10), 100), (Offset(20), 100)];
        let ts = [1_000, 2_000, 3_000];
        let n = plan_deletions(&segs, 50, &cfg(Some(500), None), 2_500, |i| Ok(ts[i])).unwrap();
        assert_eq!(n, 2);
        let n = plan_deletions(&segs, 50, &cfg(Some(500), None), 2_499, |i| Ok(ts[i])).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn size_keeps_log_at_or_under_limit_but_never_the_active_segment() {
        let segs = [(Offset(0), 100), (Offset(10), 100), (Offset(20), 100)];
        let never = |_: usize| -> Result<u64> { Ok(u64::MAX - 1) };
        assert_eq!(
            plan_deletions(&segs, 50, &cfg(None, Some(350)), 0, never).unwrap(),
            0
        );
        assert_eq!(
            plan_deletions(&segs, 50, &cfg(None, Some(349)), 0, never).unwrap(),
            1
        );
        assert_eq!(
            plan_deletions(&segs, 50, &cfg(None, Some(150)), 0, never).unwrap(),
            2
        );
        assert_eq!(
            plan_deletions(&segs, 50, &cfg(None, Some(0)), 0, never).unwrap(),
            3
        );
    }

    #[test]
    fn no_retention_configured_deletes_nothing() {
        let segs = [(Offset(0), 100)];
        assert_eq!(
            plan_deletions(&segs, 50, &cfg(None, None), u64::MAX, |_| Ok(0)).unwrap(),
            0
        );
    }
}
