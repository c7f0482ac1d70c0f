//! DATA: one session sequence number, then either a batch of whole records
//! (the common case, packed up to the MTU) or one fragment of a record too
//! large for a datagram (header flag `FRAGMENT`).
//!
//! ```text
//! offset size field          why
//! 0      8    seq            per-session datagram number: gaps reveal loss
//! 8      2    record_count   records in the batch (0 for a fragment), so a
//!                            receiver can validate the batch without a count
//!                            of its own
//! 10     2    reserved       zero on send, ignored on receive
//! 12     ..   records        back to back, in the `record` layout
//!
//! with FRAGMENT set:
//! 12     4    total_len      bytes of the whole encoded record: lets the
//!                            receiver allocate once and know when it is done
//! 16     4    frag_offset    where this chunk goes in the record
//! 20     ..   chunk          frag_offset + len(chunk) <= total_len
//! ```
//!
//! Parsing never allocates: the Repr borrows the datagram, and a batch is
//! validated by walking the record headers in place.

use super::codec::{be_at, len_u32, Reader, Writer};
use super::header::{Flags, HEADER_LEN};
use super::{Error, Records, Result, Seq};

/// Body bytes before the records (seq, record_count, reserved).
pub const DATA_HEADER_LEN: usize = 12;
/// Body bytes after the first 12 and before a fragment's chunk.
pub const FRAGMENT_HEADER_LEN: usize = 8;

const FRAME: &str = "data";

mod field {
    pub const SEQ: usize = 0;
    pub const RECORD_COUNT: usize = 8;
    pub const TOTAL_LEN: usize = 12;
    pub const FRAG_OFFSET: usize = 16;
}

/// Bytes of records that fit in one DATA datagram of `mtu` bytes (UDP
/// payload), for batching.
pub fn records_capacity(mtu: usize) -> usize {
    mtu.saturating_sub(HEADER_LEN + DATA_HEADER_LEN)
}

/// Bytes of chunk that fit in one fragment datagram of `mtu` bytes.
pub fn chunk_capacity(mtu: usize) -> usize {
    mtu.saturating_sub(HEADER_LEN + DATA_HEADER_LEN + FRAGMENT_HEADER_LEN)
}

/// A DATA body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRepr<'a> {
    pub seq: Seq,
    pub payload: DataPayload<'a>,
}

/// Whole records, or one piece of a large record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPayload<'a> {
    /// `bytes` holds exactly `count` records (checked by `parse` and `emit`).
    Records {
        count: u16,
        bytes: &'a [u8],
    },
    Fragment(FragmentRepr<'a>),
}

/// One chunk of a record that did not fit in a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentRepr<'a> {
    /// Length of the whole encoded record (header, key and value).
    pub total_len: u32,
    pub frag_offset: u32,
    pub chunk: &'a [u8],
}

impl<'a> DataPayload<'a> {
    /// The records of a batch; empty for a fragment.
    pub fn records(&self) -> Records<'a> {
        match self {
            DataPayload::Records { count, bytes } => {
                Records::new_checked(bytes, usize::from(*count)).unwrap_or_else(|_| no_records())
            }
            DataPayload::Fragment(_) => no_records(),
        }
    }

    pub fn is_fragment(&self) -> bool {
        matches!(self, DataPayload::Fragment(_))
    }
}

impl<'a> FragmentRepr<'a> {
    /// Whether this chunk is the one that ends the record.
    pub fn is_last(&self) -> bool {
        u64::from(self.frag_offset) + self.chunk.len() as u64 == u64::from(self.total_len)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let end = u64::from(self.frag_offset) + self.chunk.len() as u64;
        if end > u64::from(self.total_len) {
            return Err(Error::BadLength {
                field: "fragment frag_offset + chunk",
                stated: usize::try_from(end).unwrap_or(usize::MAX),
                actual: self.total_len as usize,
            });
        }
        Ok(())
    }
}

impl<'a> DataRepr<'a> {
    /// Parses a DATA body; `flags` are the header's, whose `FRAGMENT` bit
    /// selects the layout.
    pub fn parse(body: &'a [u8], flags: Flags) -> Result<DataRepr<'a>> {
        let mut r = Reader::new(body);
        let seq = r.seq()?;
        let count = r.u16()?;
        r.skip(2)?;
        let payload = if flags.contains(Flags::FRAGMENT) {
            if count != 0 {
                return Err(Error::Malformed {
                    frame: FRAME,
                    reason: "fragment with a nonzero record_count",
                });
            }
            let frag = FragmentRepr {
                total_len: r.u32()?,
                frag_offset: r.u32()?,
                chunk: r.rest(),
            };
            frag.check()?;
            DataPayload::Fragment(frag)
        } else {
            let bytes = r.rest();
            Records::new_checked(bytes, usize::from(count))?;
            DataPayload::Records { count, bytes }
        };
        Ok(DataRepr { seq, payload })
    }

    /// The header flags this body needs (`FRAGMENT` or none).
    pub fn flags(&self) -> Flags {
        if self.payload.is_fragment() {
            Flags::FRAGMENT
        } else {
            Flags::default()
        }
    }

    /// The records of a batch; empty for a fragment.
    pub fn records(&self) -> Records<'a> {
        self.payload.records()
    }

    pub fn buffer_len(&self) -> usize {
        match &self.payload {
            DataPayload::Records { bytes, .. } => DATA_HEADER_LEN + bytes.len(),
            DataPayload::Fragment(f) => DATA_HEADER_LEN + FRAGMENT_HEADER_LEN + f.chunk.len(),
        }
    }

    /// Writes the body into the start of `buf`; returns the bytes written.
    /// Refuses a batch whose bytes are not exactly `count` records and a
    /// fragment that overruns `total_len`, so `emit` never writes what
    /// `parse` would reject.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u64(self.seq.0);
        match &self.payload {
            DataPayload::Records { count, bytes } => {
                Records::new_checked(bytes, usize::from(*count))?;
                w.u16(*count);
                w.zeros(2);
                w.put(bytes);
            }
            DataPayload::Fragment(f) => {
                f.check()?;
                len_u32(f.chunk.len(), FRAME, "chunk longer than 4 GiB")?;
                w.u16(0);
                w.zeros(2);
                w.u32(f.total_len);
                w.u32(f.frag_offset);
                w.put(f.chunk);
            }
        }
        w.finish()
    }
}

/// A checked view over a DATA body, for readers that want one field (the
/// seq, say) without building a Repr.
#[derive(Debug, Clone)]
pub struct DataFrame<T: AsRef<[u8]>> {
    buffer: T,
    fragment: bool,
}

impl<T: AsRef<[u8]>> DataFrame<T> {
    /// Wraps a body without checking; accessors read zeros past its end.
    pub fn new_unchecked(body: T, flags: Flags) -> DataFrame<T> {
        DataFrame {
            buffer: body,
            fragment: flags.contains(Flags::FRAGMENT),
        }
    }

    /// Wraps a body and checks it exactly as [`DataRepr::parse`] does.
    pub fn new_checked(body: T, flags: Flags) -> Result<DataFrame<T>> {
        DataRepr::parse(body.as_ref(), flags)?;
        Ok(DataFrame::new_unchecked(body, flags))
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn is_fragment(&self) -> bool {
        self.fragment
    }
    pub fn seq(&self) -> Seq {
        Seq(u64::from_be_bytes(be_at(self.buffer.as_ref(), field::SEQ)))
    }
    pub fn record_count(&self) -> u16 {
        u16::from_be_bytes(be_at(self.buffer.as_ref(), field::RECORD_COUNT))
    }
    /// The record batch bytes (empty for a fragment).
    pub fn records_bytes(&self) -> &[u8] {
        if self.fragment {
            return &[];
        }
        self.buffer.as_ref().get(DATA_HEADER_LEN..).unwrap_or(&[])
    }
    /// The records of a batch (empty for a fragment).
    pub fn records(&self) -> Records<'_> {
        Records::new_checked(self.records_bytes(), usize::from(self.record_count()))
            .unwrap_or_else(|_| no_records())
    }
    /// A fragment's total record length (0 for a batch).
    pub fn total_len(&self) -> u32 {
        if !self.fragment {
            return 0;
        }
        u32::from_be_bytes(be_at(self.buffer.as_ref(), field::TOTAL_LEN))
    }
    /// A fragment's offset in its record (0 for a batch).
    pub fn frag_offset(&self) -> u32 {
        if !self.fragment {
            return 0;
        }
        u32::from_be_bytes(be_at(self.buffer.as_ref(), field::FRAG_OFFSET))
    }
    /// A fragment's chunk (empty for a batch).
    pub fn chunk(&self) -> &[u8] {
        if !self.fragment {
            return &[];
        }
        self.buffer
            .as_ref()
            .get(DATA_HEADER_LEN + FRAGMENT_HEADER_LEN..)
            .unwrap_or(&[])
    }
}

impl<'a> DataFrame<&'a [u8]> {
    /// The Repr of a checked view, without validating the records again.
    pub fn repr(&self) -> DataRepr<'a> {
        let body: &'a [u8] = self.buffer;
        let seq = Seq(u64::from_be_bytes(be_at(body, field::SEQ)));
        let rest = body.get(DATA_HEADER_LEN..).unwrap_or(&[]);
        let payload = if self.fragment {
            DataPayload::Fragment(FragmentRepr {
                total_len: u32::from_be_bytes(be_at(body, field::TOTAL_LEN)),
                frag_offset: u32::from_be_bytes(be_at(body, field::FRAG_OFFSET)),
                chunk: rest.get(FRAGMENT_HEADER_LEN..).unwrap_or(&[]),
            })
        } else {
            DataPayload::Records {
                count: u16::from_be_bytes(be_at(body, field::RECORD_COUNT)),
                bytes: rest,
            }
        };
        DataRepr { seq, payload }
    }
}

/// An empty batch, returned for a Repr whose fields were set by hand to
/// something `parse` would have refused.
pub(crate) fn no_records() -> Records<'static> {
    // invariant: zero records in zero bytes always validate.
    Records::count_checked(&[]).unwrap_or_else(|_| unreachable!("an empty batch is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Offset, RecordRepr, TopicId};

    fn record(offset: u64, value: &'static [u8]) -> RecordRepr<'static> {
        RecordRepr {
            topic: TopicId(7),
            offset: Offset(offset),
            timestamp_ms: 0x0102,
            key: b"k",
            value,
        }
    }

    fn batch_bytes() -> Vec<u8> {
        let mut out = Vec::new();
        record(1, b"ab").emit_to_vec(&mut out).unwrap();
        record(2, b"c").emit_to_vec(&mut out).unwrap();
        out
    }

    #[rustfmt::skip]
    const GOLDEN_BATCH: [u8; 69] = [
        0, 0, 0, 0, 0, 0, 0x01, 0x00, // seq 256
        0x00, 0x02, // record_count 2
        0x00, 0x00, // reserved
        // record 1
        0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 1, 0, 0, 0, 2,
        b'k', b'a', b'b',
        // record 2
        0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 1, 0, 0, 0, 1,
        b'k', b'c',
    ];

    #[rustfmt::skip]
    const GOLDEN_FRAGMENT: [u8; 23] = [
        0, 0, 0, 0, 0, 0, 0, 9, // seq 9
        0x00, 0x00, // record_count 0
        0x00, 0x00, // reserved
        0x00, 0x01, 0x00, 0x00, // total_len 65536
        0x00, 0x00, 0x10, 0x00, // frag_offset 4096
        b'x', b'y', b'z',
    ];

    fn fragment_repr() -> DataRepr<'static> {
        DataRepr {
            seq: Seq(9),
            payload: DataPayload::Fragment(FragmentRepr {
                total_len: 65536,
                frag_offset: 4096,
                chunk: b"xyz",
            }),
        }
    }

    #[test]
    fn batch_emits_golden_bytes() {
        let bytes = batch_bytes();
        let repr = DataRepr {
            seq: Seq(256),
            payload: DataPayload::Records {
                count: 2,
                bytes: &bytes,
            },
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(69));
        assert_eq!(buf, GOLDEN_BATCH);
    }

    #[test]
    fn batch_parses_golden_bytes() {
        let repr = DataRepr::parse(&GOLDEN_BATCH, Flags::default()).unwrap();
        assert_eq!(repr.seq, Seq(256));
        let recs: Vec<_> = repr.records().collect();
        assert_eq!(recs, vec![record(1, b"ab"), record(2, b"c")]);
        assert_eq!(repr.flags(), Flags::default());
    }

    #[test]
    fn fragment_emits_golden_bytes() {
        let mut buf = [0u8; 23];
        assert_eq!(fragment_repr().emit(&mut buf), Ok(23));
        assert_eq!(buf, GOLDEN_FRAGMENT);
    }

    #[test]
    fn fragment_parses_golden_bytes() {
        assert_eq!(
            DataRepr::parse(&GOLDEN_FRAGMENT, Flags::FRAGMENT),
            Ok(fragment_repr())
        );
        assert_eq!(fragment_repr().flags(), Flags::FRAGMENT);
        assert_eq!(fragment_repr().records().len(), 0);
    }

    #[test]
    fn view_reads_the_same_fields_as_the_repr() {
        let v = DataFrame::new_checked(&GOLDEN_BATCH[..], Flags::default()).unwrap();
        assert_eq!(v.seq(), Seq(256));
        assert_eq!(v.record_count(), 2);
        assert_eq!(v.records().count(), 2);
        assert_eq!(v.chunk(), &[] as &[u8]);
        let f = DataFrame::new_checked(&GOLDEN_FRAGMENT[..], Flags::FRAGMENT).unwrap();
        assert_eq!(
            (f.total_len(), f.frag_offset(), f.chunk()),
            (65536, 4096, &b"xyz"[..])
        );
        assert_eq!(f.repr(), fragment_repr());
    }

    #[test]
    fn data_truncated_at_every_length_is_an_error() {
        for len in 0..GOLDEN_BATCH.len() {
            assert!(
                DataRepr::parse(&GOLDEN_BATCH[..len], Flags::default()).is_err(),
                "len {len}"
            );
        }
        for len in 0..DATA_HEADER_LEN + FRAGMENT_HEADER_LEN {
            assert!(
                DataRepr::parse(&GOLDEN_FRAGMENT[..len], Flags::FRAGMENT).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn batch_with_wrong_record_count_is_refused() {
        let mut b = GOLDEN_BATCH;
        b[9] = 3;
        assert!(DataRepr::parse(&b, Flags::default()).is_err());
        b[9] = 1;
        assert!(DataRepr::parse(&b, Flags::default()).is_err());
    }

    #[test]
    fn fragment_past_total_len_is_refused() {
        let mut b = GOLDEN_FRAGMENT;
        b[12..16].copy_from_slice(&4098u32.to_be_bytes());
        assert!(matches!(
            DataRepr::parse(&b, Flags::FRAGMENT),
            Err(Error::BadLength { .. })
        ));
        b[12..16].copy_from_slice(&4099u32.to_be_bytes());
        let f = DataRepr::parse(&b, Flags::FRAGMENT).unwrap();
        assert!(matches!(f.payload, DataPayload::Fragment(fr) if fr.is_last()));
    }

    #[test]
    fn fragment_with_a_record_count_is_refused() {
        let mut b = GOLDEN_FRAGMENT;
        b[9] = 1;
        assert!(matches!(
            DataRepr::parse(&b, Flags::FRAGMENT),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn emit_refuses_a_batch_that_does_not_match_its_count() {
        let bytes = batch_bytes();
        let repr = DataRepr {
            seq: Seq(1),
            payload: DataPayload::Records {
                count: 3,
                bytes: &bytes,
            },
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert!(repr.emit(&mut buf).is_err());
        assert_eq!(repr.records().len(), 0);
    }

    #[test]
    fn emit_into_a_short_buffer_is_an_error() {
        let mut buf = [0u8; 22];
        assert_eq!(
            fragment_repr().emit(&mut buf),
            Err(Error::BufferTooSmall { need: 23, have: 22 })
        );
    }

    #[test]
    fn capacities_leave_room_for_the_headers() {
        assert_eq!(records_capacity(1400), 1400 - 28 - 12);
        assert_eq!(chunk_capacity(1400), 1400 - 28 - 20);
        assert_eq!(records_capacity(10), 0);
    }
}
