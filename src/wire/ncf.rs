//! NCF and UNRECOVERABLE: the source's two answers to NAKs besides the
//! repair itself.
//!
//! NCF (NAK confirmation), multicast to the group by the source as soon as it
//! hears a NAK, so that every other receiver missing the same ranges
//! suppresses its own NAK (PGM's NCF, against NAK implosion):
//!
//! ```text
//! offset size field        why
//! 0      2    range_count  number of ranges that follow
//! 2      2    reserved     zero on send, ignored on receive
//! 4      16n  ranges       (start u64, end u64), end exclusive
//! ```
//!
//! UNRECOVERABLE, sent for NAKed ranges that fell below the retransmit
//! window, so that the receiver stops asking and turns to log replay or
//! reports a gap:
//!
//! ```text
//! offset size field              why
//! 0      8    lowest_repairable  oldest seq the source still holds: the
//!                                receiver can NAK from here on
//! 8      2    range_count        number of ranges that follow
//! 10     2    reserved           zero on send, ignored on receive
//! 12     16n  ranges             the refused ranges, end exclusive
//! ```

use super::codec::{Reader, Writer};
use super::nak::{check_ranges, read_ranges, write_ranges, SeqRange, SEQ_RANGE_LEN};
use super::{Result, Seq};

/// An NCF body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcfRepr {
    pub ranges: Vec<SeqRange>,
}

impl NcfRepr {
    pub fn parse(body: &[u8]) -> Result<NcfRepr> {
        let mut r = Reader::new(body);
        let count = r.u16()?;
        r.skip(2)?;
        let ranges = read_ranges(&mut r, count, "ncf")?;
        r.finish("ncf range_count")?;
        Ok(NcfRepr { ranges })
    }

    pub fn buffer_len(&self) -> usize {
        4 + SEQ_RANGE_LEN * self.ranges.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let count = check_ranges(&self.ranges, "ncf")?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u16(count);
        w.zeros(2);
        write_ranges(&mut w, &self.ranges);
        w.finish()
    }
}

/// An UNRECOVERABLE body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrecoverableRepr {
    pub lowest_repairable: Seq,
    pub ranges: Vec<SeqRange>,
}

impl UnrecoverableRepr {
    pub fn parse(body: &[u8]) -> Result<UnrecoverableRepr> {
        let mut r = Reader::new(body);
        let lowest_repairable = r.seq()?;
        let count = r.u16()?;
        r.skip(2)?;
        let ranges = read_ranges(&mut r, count, "unrecoverable")?;
        r.finish("unrecoverable range_count")?;
        Ok(UnrecoverableRepr {
            lowest_repairable,
            ranges,
        })
    }

    pub fn buffer_len(&self) -> usize {
        12 + SEQ_RANGE_LEN * self.ranges.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let count = check_ranges(&self.ranges, "unrecoverable")?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u64(self.lowest_repairable.0);
        w.u16(count);
        w.zeros(2);
        write_ranges(&mut w, &self.ranges);
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;

    #[rustfmt::skip]
    const GOLDEN_NCF: [u8; 20] = [
        0x00, 0x01, // range_count
        0x00, 0x00, // reserved
        0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7, // [5, 7)
    ];

    #[rustfmt::skip]
    const GOLDEN_UNRECOVERABLE: [u8; 28] = [
        0, 0, 0, 0, 0, 0, 0x03, 0xe8, // lowest_repairable 1000
        0x00, 0x01, // range_count
        0x00, 0x00, // reserved
        0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7, // [5, 7)
    ];

    fn range() -> SeqRange {
        SeqRange {
            start: Seq(5),
            end: Seq(7),
        }
    }

    #[test]
    fn ncf_emits_and_parses_golden_bytes() {
        let repr = NcfRepr {
            ranges: vec![range()],
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(20));
        assert_eq!(buf, GOLDEN_NCF);
        assert_eq!(NcfRepr::parse(&GOLDEN_NCF), Ok(repr));
    }

    #[test]
    fn unrecoverable_emits_and_parses_golden_bytes() {
        let repr = UnrecoverableRepr {
            lowest_repairable: Seq(1000),
            ranges: vec![range()],
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(28));
        assert_eq!(buf, GOLDEN_UNRECOVERABLE);
        assert_eq!(UnrecoverableRepr::parse(&GOLDEN_UNRECOVERABLE), Ok(repr));
    }

    #[test]
    fn ncf_and_unrecoverable_truncated_at_every_length_are_errors() {
        for len in 0..GOLDEN_NCF.len() {
            assert!(NcfRepr::parse(&GOLDEN_NCF[..len]).is_err(), "len {len}");
        }
        for len in 0..GOLDEN_UNRECOVERABLE.len() {
            assert!(
                UnrecoverableRepr::parse(&GOLDEN_UNRECOVERABLE[..len]).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn ncf_with_an_inverted_range_is_refused() {
        let mut b = GOLDEN_NCF;
        b[11] = 9;
        assert!(matches!(NcfRepr::parse(&b), Err(Error::Malformed { .. })));
    }
}
