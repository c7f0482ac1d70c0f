//! The sparse offset index, `{base_offset:020}.idx`: a cache, never the truth.
//!
//! ```text
//! index header (48 bytes, big-endian)
//! offset size field           why
//! 0      4    magic           b"CLIX"
//! 4      2    version         1
//! 6      2    flags           0; reserved
//! 8      8    base_offset     must match the segment
//! 16     8    segment_len     segment size the index was built from; any other
//!                             size means the index is stale
//! 24     8    max_timestamp   largest record timestamp (ms) in the segment;
//!                             u64::MAX if it has no records. Retention by age
//!                             reads it without scanning the segment
//! 32     4    entry_count     number of entries that follow
//! 36     4    entries_crc     crc32 of the entry bytes
//! 40     4    header_crc      crc32 of bytes 0..40
//! 44     4    reserved        0
//!
//! entry (8 bytes), in increasing offset order
//! 0      4    relative_offset record offset - base_offset
//! 4      4    position        byte position of that record's frame in the segment
//! ```
//!
//! An entry is added for the first record written after every
//! `index_interval_bytes` of segment. A lookup returns the last entry at or
//! below the wanted offset; the reader then scans forward. A missing, short,
//! corrupt or stale file is rebuilt from the segment by scanning it.

use crate::wire::Offset;

use super::segment::{be_u16, be_u32, be_u64};

const MAGIC: [u8; 4] = *b"CLIX";
const VERSION: u16 = 1;
pub(crate) const INDEX_HEADER_LEN: usize = 48;
const ENTRY_LEN: usize = 8;
/// `max_timestamp` value for a segment without records.
pub(crate) const NO_TIMESTAMP: u64 = u64::MAX;

/// In-memory sparse index of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    entries: Vec<(u32, u32)>,
}

impl SparseIndex {
    pub fn new() -> SparseIndex {
        SparseIndex::default()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an entry if it fits the 32-bit fields and keeps the order; an
    /// entry that does not fit is left out (lookups then scan a bit further).
    pub fn push(&mut self, base: Offset, offset: Offset, position: u64) {
        let (Some(rel), Ok(pos)) = (
            offset
                .0
                .checked_sub(base.0)
                .and_then(|r| u32::try_from(r).ok()),
            u32::try_from(position),
        ) else {
            return;
        };
        if self
            .entries
            .last()
            .is_some_and(|&(r, p)| r >= rel || p >= pos)
        {
            return;
        }
        self.entries.push((rel, pos));
    }

    /// The last entry at or below `offset`: (its offset, its position).
    pub fn lookup(&self, base: Offset, offset: Offset) -> Option<(Offset, u64)> {
        let rel = offset.0.checked_sub(base.0)?;
        let i = self.entries.partition_point(|&(r, _)| u64::from(r) <= rel);
        let &(r, p) = self.entries.get(i.checked_sub(1)?)?;
        Some((Offset(base.0 + u64::from(r)), u64::from(p)))
    }

    /// Positions of the entries after `position`, in order: where later
    /// frames start (a reader uses them to guess frame lengths before it
    /// reads, and checks every guess against the frame headers).
    pub fn positions_after(&self, position: u64) -> impl Iterator<Item = u64> + '_ {
        let i = self
            .entries
            .partition_point(|&(_, p)| u64::from(p) <= position);
        self.entries
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .map(|&(_, p)| u64::from(p))
    }

    /// Serializes the index file for a segment of `segment_len` bytes.
    pub fn encode(&self, base: Offset, segment_len: u64, max_timestamp: u64) -> Vec<u8> {
        let mut out = vec![0u8; INDEX_HEADER_LEN];
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        let entries_crc = crc32fast::hash(&out[INDEX_HEADER_LEN..]);
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_be_bytes());
        out[8..16].copy_from_slice(&base.0.to_be_bytes());
        out[16..24].copy_from_slice(&segment_len.to_be_bytes());
        out[24..32].copy_from_slice(&max_timestamp.to_be_bytes());
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        out[32..36].copy_from_slice(&count.to_be_bytes());
        out[36..40].copy_from_slice(&entries_crc.to_be_bytes());
        let header_crc = crc32fast::hash(&out[0..40]);
        out[40..44].copy_from_slice(&header_crc.to_be_bytes());
        out
    }

    /// Parses an index file; `Err(reason)` when it cannot be trusted for a
    /// segment starting at `base` that is now `segment_len` bytes long.
    pub fn decode(
        bytes: &[u8],
        base: Offset,
        segment_len: u64,
    ) -> Result<(SparseIndex, u64), &'static str> {
        let h = bytes
            .get(..INDEX_HEADER_LEN)
            .ok_or("index header is short")?;
        if h[0..4] != MAGIC || be_u16(&h[4..6]) != VERSION {
            return Err("index has a bad magic or version");
        }
        if be_u32(&h[40..44]) != crc32fast::hash(&h[0..40]) {
            return Err("index header crc mismatch");
        }
        if be_u64(&h[8..16]) != base.0 {
            return Err("index belongs to another segment");
        }
        if be_u64(&h[16..24]) != segment_len {
            return Err("index is stale: segment length changed");
        }
        let count = be_u32(&h[32..36]) as usize;
        let body = &bytes[INDEX_HEADER_LEN..];
        if body.len() != count.saturating_mul(ENTRY_LEN) {
            return Err("index entry count disagrees with file length");
        }
        if crc32fast::hash(body) != be_u32(&h[36..40]) {
            return Err("index entries crc mismatch");
        }
        let mut index = SparseIndex::new();
        for e in body.chunks_exact(ENTRY_LEN) {
            let (r, p) = (be_u32(&e[0..4]), be_u32(&e[4..8]));
            if index
                .entries
                .last()
                .is_some_and(|&(lr, lp)| lr >= r || lp >= p)
                || u64::from(p) >= segment_len
            {
                return Err("index entries out of order or past the segment end");
            }
            index.entries.push((r, p));
        }
        Ok((index, be_u64(&h[24..32])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseIndex {
        let mut i = SparseIndex::new();
        i.push(Offset(100), Offset(100), 24);
        i.push(Offset(100), Offset(150), 4096);
        i.push(Offset(100), Offset(210), 8200);
        i
    }

    #[test]
    fn lookup_returns_last_entry_at_or_below() {
        let i = sample();
        assert_eq!(i.lookup(Offset(100), Offset(99)), None);
        assert_eq!(i.lookup(Offset(100), Offset(100)), Some((Offset(100), 24)));
        assert_eq!(i.lookup(Offset(100), Offset(149)), Some((Offset(100), 24)));
        assert_eq!(
            i.lookup(Offset(100), Offset(150)),
            Some((Offset(150), 4096))
        );
        assert_eq!(
            i.lookup(Offset(100), Offset(10_000)),
            Some((Offset(210), 8200))
        );
    }

    #[test]
    fn index_file_round_trips() {
        let bytes = sample().encode(Offset(100), 9000, 77);
        assert_eq!(
            SparseIndex::decode(&bytes, Offset(100), 9000),
            Ok((sample(), 77))
        );
    }

    #[test]
    fn stale_short_or_flipped_index_is_refused() {
        let bytes = sample().encode(Offset(100), 9000, 77);
        assert!(SparseIndex::decode(&bytes, Offset(100), 9001).is_err());
        assert!(SparseIndex::decode(&bytes, Offset(0), 9000).is_err());
        for len in 0..bytes.len() {
            assert!(
                SparseIndex::decode(&bytes[..len], Offset(100), 9000).is_err(),
                "len {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            if (44..48).contains(&i) {
                continue; // reserved bytes
            }
            assert!(
                SparseIndex::decode(&bad, Offset(100), 9000).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn entries_that_do_not_fit_or_go_backwards_are_left_out() {
        let mut i = SparseIndex::new();
        i.push(Offset(0), Offset(u64::from(u32::MAX) + 1), 10);
        i.push(Offset(0), Offset(5), 1 << 33);
        i.push(Offset(0), Offset(5), 100);
        i.push(Offset(0), Offset(4), 200);
        assert_eq!(i.len(), 1);
    }
}
