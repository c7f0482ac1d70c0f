//! NAK: a receiver asks a source to repair the datagrams it is missing.
//!
//! ```text
//! offset size field        why
//! 0      8    source       node whose session is NAKed: header.node is the
//!                          NAKer, header.session the NAKed session, and on a
//!                          shared multicast group other receivers need both
//!                          to suppress their own NAK for the same range
//! 8      2    range_count  number of ranges that follow
//! 10     2    reserved     zero on send, ignored on receive
//! 12     16n  ranges       (start u64, end u64), end exclusive, start < end
//! ```
//!
//! The range list layout (`SeqRange`, 16 bytes each) is shared with NCF and
//! UNRECOVERABLE.

use super::codec::{len_u16, Reader, Writer};
use super::{Error, NodeId, Result, Seq};

/// Bytes of one encoded range.
pub const SEQ_RANGE_LEN: usize = 16;

/// A half-open range of sequence numbers `[start, end)`, never empty on the
/// wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqRange {
    pub start: Seq,
    pub end: Seq,
}

impl SeqRange {
    /// Number of sequence numbers in the range (0 if `end <= start`).
    pub fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn contains(&self, seq: Seq) -> bool {
        self.start <= seq && seq < self.end
    }
}

/// Reads `count` ranges, checking the length before allocating so that a
/// forged count cannot make the parser allocate more than the datagram holds.
pub(crate) fn read_ranges(
    r: &mut Reader<'_>,
    count: u16,
    frame: &'static str,
) -> Result<Vec<SeqRange>> {
    let bytes = r.take(usize::from(count) * SEQ_RANGE_LEN)?;
    let mut inner = Reader::new(bytes);
    let mut ranges = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let range = SeqRange {
            start: inner.seq()?,
            end: inner.seq()?,
        };
        if range.start >= range.end {
            return Err(Error::Malformed {
                frame,
                reason: "empty or inverted seq range",
            });
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// Checks what `read_ranges` would check; returns the count to write.
pub(crate) fn check_ranges(ranges: &[SeqRange], frame: &'static str) -> Result<u16> {
    if ranges.iter().any(|r| r.start >= r.end) {
        return Err(Error::Malformed {
            frame,
            reason: "empty or inverted seq range",
        });
    }
    len_u16(ranges.len(), frame, "more than 65535 ranges")
}

pub(crate) fn write_ranges(w: &mut Writer<'_>, ranges: &[SeqRange]) {
    for r in ranges {
        w.u64(r.start.0);
        w.u64(r.end.0);
    }
}

const FRAME: &str = "nak";
const FIXED_LEN: usize = 12;

/// A NAK body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NakRepr {
    pub source: NodeId,
    pub ranges: Vec<SeqRange>,
}

impl NakRepr {
    pub fn parse(body: &[u8]) -> Result<NakRepr> {
        let mut r = Reader::new(body);
        let source = r.node()?;
        let count = r.u16()?;
        r.skip(2)?;
        let ranges = read_ranges(&mut r, count, FRAME)?;
        r.finish("nak range_count")?;
        Ok(NakRepr { source, ranges })
    }

    pub fn buffer_len(&self) -> usize {
        FIXED_LEN + SEQ_RANGE_LEN * self.ranges.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let count = check_ranges(&self.ranges, FRAME)?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u64(self.source.0);
        w.u16(count);
        w.zeros(2);
        write_ranges(&mut w, &self.ranges);
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const GOLDEN: [u8; 44] = [
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // source
        0x00, 0x02, // range_count
        0x00, 0x00, // reserved
        0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7, // [5, 7)
        0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0x01, 0x01, // [256, 257)
    ];

    fn golden_repr() -> NakRepr {
        NakRepr {
            source: NodeId(0x1122_3344_5566_7788),
            ranges: vec![
                SeqRange {
                    start: Seq(5),
                    end: Seq(7),
                },
                SeqRange {
                    start: Seq(256),
                    end: Seq(257),
                },
            ],
        }
    }

    #[test]
    fn nak_emits_golden_bytes() {
        let repr = golden_repr();
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(44));
        assert_eq!(buf, GOLDEN);
    }

    #[test]
    fn nak_parses_golden_bytes() {
        assert_eq!(NakRepr::parse(&GOLDEN), Ok(golden_repr()));
    }

    #[test]
    fn nak_truncated_at_every_length_is_an_error() {
        for len in 0..GOLDEN.len() {
            assert!(NakRepr::parse(&GOLDEN[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn nak_with_trailing_bytes_is_refused() {
        let mut b = GOLDEN.to_vec();
        b.push(0);
        assert!(matches!(NakRepr::parse(&b), Err(Error::BadLength { .. })));
    }

    #[test]
    fn empty_or_inverted_ranges_are_refused_both_ways() {
        let mut b = GOLDEN;
        b[19] = 7; // start 7 == end 7
        assert!(matches!(NakRepr::parse(&b), Err(Error::Malformed { .. })));
        let bad = NakRepr {
            source: NodeId(1),
            ranges: vec![SeqRange {
                start: Seq(9),
                end: Seq(3),
            }],
        };
        assert!(bad.emit(&mut [0u8; 64]).is_err());
    }

    #[test]
    fn forged_range_count_does_not_allocate_past_the_datagram() {
        let mut b = GOLDEN;
        b[8] = 0xff;
        b[9] = 0xff;
        assert!(matches!(NakRepr::parse(&b), Err(Error::Truncated { .. })));
    }

    #[test]
    fn seq_range_len_and_contains() {
        let r = SeqRange {
            start: Seq(5),
            end: Seq(7),
        };
        assert_eq!(r.len(), 2);
        assert!(r.contains(Seq(6)) && !r.contains(Seq(7)) && !r.contains(Seq(4)));
        assert!(SeqRange {
            start: Seq(7),
            end: Seq(5)
        }
        .is_empty());
    }
}
