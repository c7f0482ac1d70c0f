//! `log`: the segmented, append-only topic log on disk (bytes at rest).
//!
//! One [`TopicLog`] per (topic, source node) lives in a [`LogDir`]:
//!
//! ```text
//! data_dir/topics/<escaped topic>/<source node id, 16 hex digits>/
//!     00000000000000000000.seg   segment: header + frames (see `segment`)
//!     00000000000000000000.idx   sparse offset index, a rebuildable cache (see `index`)
//!     00000000000000004096.seg   the next segment, named by its base offset
//! ```
//!
//! Topic names are escaped: bytes outside `[A-Za-z0-9._-]`, and a leading
//! `.`, become `%XX`, so no name can climb out of `topics/` or collide.
//!
//! Invariants: offsets in a log strictly increase; each append hands its bytes
//! to the OS with one positioned write before it returns, so a killed process
//! never loses a returned offset whatever the fsync policy; the segment and its
//! CRCs are the truth and the index is a cache; a failed append is cut back off
//! the file. The full byte tables and the durability statement per fsync
//! policy are in `docs/log.md`.
//!
//! Time is always a parameter (`now_ms`, milliseconds since the Unix epoch):
//! nothing here reads a clock, so retention and roll are tested with an
//! injected clock.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod dir;
mod error;
mod index;
pub mod offsets;
mod reader;
mod recovery;
mod retention;
mod segment;
mod topic_log;

use std::time::Duration;

pub use dir::{escape_topic, unescape_topic, LogDir};
pub use error::{Error, Result};
pub use reader::{Cursor, ReadBatch, StartPosition};
pub use retention::RetentionReport;
pub use segment::{FRAME_HEADER_LEN, FRAME_TARGET_LEN, MAX_RECORD_LEN, SEGMENT_HEADER_LEN};
pub use topic_log::{Appended, NewRecord, TopicLog};

/// Largest segment (and largest single append) the log accepts: 1 GiB, so
/// that index positions fit their 32-bit field.
pub const SEGMENT_MAX_BYTES_LIMIT: u64 = 1 << 30;

/// When the log asks the OS to put written bytes on stable storage.
///
/// Every policy survives `kill -9` of the process without losing a returned
/// offset (the bytes are in the OS page cache before `append` returns). They
/// differ only on power loss or a kernel crash; see `docs/log.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before every append returns: a returned offset survives
    /// power loss.
    Always,
    /// `fdatasync` at the first append or `flush` at least this long after
    /// the previous one: power loss costs at most about one interval.
    Interval(Duration),
    /// Never: the OS writes back when it likes (Linux: ~30 s); power loss can
    /// cost anything not yet written back.
    Never,
}

/// Per-log settings. `LogDir` takes one default and per-topic overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when an append would make the active one larger.
    /// Default: 128 MiB. Range: 1..=1 GiB (larger values are clamped).
    pub segment_max_bytes: u64,
    /// Roll when the first record of the active segment has a timestamp this
    /// much older than `now_ms` at an append (Kafka's `segment.ms`).
    /// Default: 7 days.
    pub segment_max_age_ms: u64,
    /// Delete whole sealed segments whose newest record timestamp is older
    /// than this (Kafka's `retention.ms`). Default: 7 days. `None`: keep.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is larger than this
    /// (Kafka's `retention.bytes`). Default: `None` (no size limit).
    pub retention_bytes: Option<u64>,
    /// Default: `Interval(1s)`.
    pub fsync: FsyncPolicy,
    /// Bytes of segment between two sparse index entries. Default: 4096.
    /// Range: 1..=u32::MAX.
    pub index_interval_bytes: u32,
    /// Open logs (two file descriptors each at most) before the least
    /// recently used is closed. Read from the `LogDir` default config only.
    /// Default: 1024. Minimum: 1.
    pub max_open_logs: usize,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_max_bytes: 128 << 20,
            segment_max_age_ms: 7 * DAY_MS,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            index_interval_bytes: 4096,
            max_open_logs: 1024,
        }
    }
}

impl LogConfig {
    pub(crate) fn effective_segment_max_bytes(&self) -> u64 {
        self.segment_max_bytes.clamp(1, SEGMENT_MAX_BYTES_LIMIT)
    }
}

macro_rules! stats {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Counters of a log or of a whole `LogDir` (noun_verb, monotonic).
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Stats { $( $(#[$doc])* pub $name: u64, )* }

        impl Stats {
            /// Adds every counter of `other` to `self`.
            pub fn add(&mut self, other: &Stats) {
                $( self.$name += other.$name; )*
            }
        }
    };
}

stats! {
    /// Records written by `append*` (source and replica).
    records_appended,
    /// Bytes written to segments by appends (frames included).
    bytes_appended,
    /// Write calls made by appends (one per append or batch).
    batches_appended,
    /// Appends that returned an error (and were cut back).
    appends_failed,
    /// Replica records ignored because their offset was already stored.
    records_duplicate,
    /// Offsets a replica log skipped over (holes).
    offsets_skipped,
    /// New segments started because the active one was full or old.
    segments_rolled,
    /// Segments deleted by retention.
    segments_deleted,
    /// Bytes deleted by retention.
    bytes_deleted,
    /// Records returned by reads.
    records_read,
    /// Record bytes returned by reads.
    bytes_read,
    /// fdatasync calls on segments.
    fsyncs,
    /// Logs opened (recovered or created).
    logs_opened,
    /// Logs created empty.
    logs_created,
    /// Logs closed (LRU eviction or drop).
    logs_closed,
    /// Valid records found in last segments scanned at open.
    records_recovered,
    /// Torn tails cut off at open.
    tails_truncated,
    /// Bytes cut off torn tails at open.
    bytes_truncated,
    /// Segment headers rewritten because a crash left them short.
    segment_headers_rewritten,
    /// Corrupt regions found in the middle of segments (reported, skipped).
    corrupt_regions_found,
    /// Bytes inside those corrupt regions.
    corrupt_bytes_skipped,
    /// Index files rebuilt because they were missing, short, corrupt or stale.
    indexes_rebuilt,
}
