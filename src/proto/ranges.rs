//! Turning sets of sequence numbers into ranges, for NAK and NCF frames.

use crate::wire::{Seq, SeqRange};

/// Coalesces ascending, de-duplicated seqs into ranges (end exclusive).
pub fn coalesce(seqs: impl IntoIterator<Item = Seq>) -> Vec<SeqRange> {
    let mut out: Vec<SeqRange> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some(r) if r.end == s => r.end = s.next(),
            _ => out.push(SeqRange {
                start: s,
                end: s.next(),
            }),
        }
    }
    out
}

/// Every seq in the ranges, capped at `limit` seqs so that a hostile frame
/// claiming a range of 2^64 cannot make us loop forever.
pub fn expand(ranges: &[SeqRange], limit: u64) -> impl Iterator<Item = Seq> + '_ {
    ranges
        .iter()
        .flat_map(|r| (r.start.0..r.end.0).map(Seq))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_neighbours() {
        let r = coalesce([1, 2, 3, 7, 9, 10].into_iter().map(Seq));
        let pairs: Vec<(u64, u64)> = r.iter().map(|r| (r.start.0, r.end.0)).collect();
        assert_eq!(pairs, vec![(1, 4), (7, 8), (9, 11)]);
    }

    #[test]
    fn expand_is_bounded() {
        let huge = [SeqRange {
            start: Seq(0),
            end: Seq(u64::MAX),
        }];
        assert_eq!(expand(&huge, 10).count(), 10);
    }
}
