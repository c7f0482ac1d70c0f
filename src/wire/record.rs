//! The record layout, shared by DATA, REPLAY_DATA and the on-disk log, so that
//! a replay can send stored bytes without re-encoding them (as Kafka does).
//!
//! ```text
//! offset size field        why
//! 0      4    topic_id     session-local topic id (0 = topic declaration, below)
//! 4      8    offset       position in the source's log for this topic
//! 12     8    timestamp    milliseconds since the Unix epoch, set by the source
//! 20     2    key_len      keys are short routing/partitioning hints
//! 22     4    value_len    values up to 4 GiB minus one (64 MiB enforced above)
//! 26     key_len           key bytes
//! ..     value_len         value bytes
//! ```
//!
//! A record with `topic_id == 0` is a *topic declaration*: its key is the topic
//! name (UTF-8) and its value is the 4-byte big-endian topic id being declared;
//! its offset is the topic's next offset at the time of declaration. Sending it
//! in-band, under a sequence number, makes the name reliable and ordered before
//! the first record that uses the id.

use super::{Error, Offset, Result, TopicId};

/// Bytes before the key.
pub const HEADER_LEN: usize = 26;
/// Topic id reserved for in-band topic declarations.
pub const DECLARATION_TOPIC: TopicId = TopicId(0);

mod field {
    use core::ops::Range;
    pub const TOPIC: Range<usize> = 0..4;
    pub const OFFSET: Range<usize> = 4..12;
    pub const TIMESTAMP: Range<usize> = 12..20;
    pub const KEY_LEN: Range<usize> = 20..22;
    pub const VALUE_LEN: Range<usize> = 22..26;
}

fn be_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_be_bytes(a)
}
fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// A checked view over one record at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Record<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Record<T> {
    /// Checks that the header and the key and value it announces fit in `buffer`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let have = buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        let r = Record { buffer };
        let need = r.total_len_u64();
        if need > have as u64 {
            return Err(Error::Truncated {
                need: usize::try_from(need).unwrap_or(usize::MAX),
                have,
            });
        }
        Ok(r)
    }

    fn total_len_u64(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.key_len()) + u64::from(self.value_len())
    }

    // invariant (all accessors): new_checked verified HEADER_LEN and total_len.
    pub fn topic(&self) -> TopicId {
        TopicId(be_u32(&self.buffer.as_ref()[field::TOPIC]))
    }
    pub fn offset(&self) -> Offset {
        Offset(be_u64(&self.buffer.as_ref()[field::OFFSET]))
    }
    pub fn timestamp_ms(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::TIMESTAMP])
    }
    pub fn key_len(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::KEY_LEN])
    }
    pub fn value_len(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::VALUE_LEN])
    }
    /// Header plus key plus value.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.key_len()) + self.value_len() as usize
    }
    pub fn key(&self) -> &[u8] {
        let start = HEADER_LEN;
        &self.buffer.as_ref()[start..start + usize::from(self.key_len())]
    }
    pub fn value(&self) -> &[u8] {
        let start = HEADER_LEN + usize::from(self.key_len());
        &self.buffer.as_ref()[start..start + self.value_len() as usize]
    }
}

/// A parsed record that borrows its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRepr<'a> {
    pub topic: TopicId,
    pub offset: Offset,
    pub timestamp_ms: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> RecordRepr<'a> {
    /// Parses the record at the start of `bytes`; returns it and its length.
    pub fn parse_prefix(bytes: &'a [u8]) -> Result<(RecordRepr<'a>, usize)> {
        let view = Record::new_checked(bytes)?;
        let len = view.total_len();
        let key_end = HEADER_LEN + usize::from(view.key_len());
        let repr = RecordRepr {
            topic: view.topic(),
            offset: view.offset(),
            timestamp_ms: view.timestamp_ms(),
            // invariant: new_checked verified len <= bytes.len()
            key: &bytes[HEADER_LEN..key_end],
            value: &bytes[key_end..len],
        };
        Ok((repr, len))
    }

    /// Parses a buffer that must hold exactly one record.
    pub fn parse(bytes: &'a [u8]) -> Result<RecordRepr<'a>> {
        let (repr, len) = Self::parse_prefix(bytes)?;
        if len != bytes.len() {
            return Err(Error::BadLength {
                field: "record length",
                stated: len,
                actual: bytes.len(),
            });
        }
        Ok(repr)
    }

    /// Bytes `emit` writes. Callers must keep `key.len() <= u16::MAX` and
    /// `value.len() <= u32::MAX`; `emit` refuses otherwise.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.key.len() + self.value.len()
    }

    /// Writes the record at the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let need = self.buffer_len();
        if buf.len() < need {
            return Err(Error::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        let key_len = u16::try_from(self.key.len()).map_err(|_| Error::Malformed {
            frame: "record",
            reason: "key longer than 65535 bytes",
        })?;
        let value_len = u32::try_from(self.value.len()).map_err(|_| Error::Malformed {
            frame: "record",
            reason: "value longer than 4 GiB",
        })?;
        buf[field::TOPIC].copy_from_slice(&self.topic.0.to_be_bytes());
        buf[field::OFFSET].copy_from_slice(&self.offset.0.to_be_bytes());
        buf[field::TIMESTAMP].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        buf[field::KEY_LEN].copy_from_slice(&key_len.to_be_bytes());
        buf[field::VALUE_LEN].copy_from_slice(&value_len.to_be_bytes());
        let key_end = HEADER_LEN + self.key.len();
        buf[HEADER_LEN..key_end].copy_from_slice(self.key);
        buf[key_end..need].copy_from_slice(self.value);
        Ok(need)
    }

    /// Appends the record to a growable buffer.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        let start = out.len();
        out.resize(start + self.buffer_len(), 0);
        match self.emit(&mut out[start..]) {
            Ok(n) => Ok(n),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// If this is a topic declaration, the declared (id, name).
    pub fn declaration(&self) -> Option<(TopicId, &'a str)> {
        if self.topic != DECLARATION_TOPIC || self.value.len() != 4 {
            return None;
        }
        let name = std::str::from_utf8(self.key).ok()?;
        Some((TopicId(be_u32(self.value)), name))
    }
}

/// An iterator over a batch of back-to-back records that was fully validated
/// by `new_checked`, so iteration itself cannot fail.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Records<'a> {
    /// Checks that `bytes` holds exactly `count` well-formed records.
    pub fn new_checked(bytes: &'a [u8], count: usize) -> Result<Records<'a>> {
        let mut rest = bytes;
        for _ in 0..count {
            let (_, len) = RecordRepr::parse_prefix(rest)?;
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            return Err(Error::BadLength {
                field: "record batch",
                stated: bytes.len() - rest.len(),
                actual: bytes.len(),
            });
        }
        Ok(Records {
            rest: bytes,
            remaining: count,
        })
    }

    /// Counts and validates records until the end of `bytes` (the log's and
    /// REPLAY_DATA's form, where no count is stored).
    pub fn count_checked(bytes: &'a [u8]) -> Result<Records<'a>> {
        let mut rest = bytes;
        let mut count = 0;
        while !rest.is_empty() {
            let (_, len) = RecordRepr::parse_prefix(rest)?;
            rest = &rest[len..];
            count += 1;
        }
        Ok(Records {
            rest: bytes,
            remaining: count,
        })
    }

    pub fn len(&self) -> usize {
        self.remaining
    }
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordRepr<'a>;

    fn next(&mut self) -> Option<RecordRepr<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // invariant: new_checked parsed these very bytes successfully.
        let (repr, len) = RecordRepr::parse_prefix(self.rest).ok()?;
        self.rest = &self.rest[len..];
        self.remaining -= 1;
        Some(repr)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: [u8; 31] = [
        0x00, 0x00, 0x00, 0x07, // topic 7
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, // offset 258
        0x00, 0x00, 0x01, 0x8c, 0x00, 0x00, 0x00, 0x00, // timestamp
        0x00, 0x02, // key_len 2
        0x00, 0x00, 0x00, 0x03, // value_len 3
        b'k', b'1', b'a', b'b', b'c',
    ];

    fn golden_repr() -> RecordRepr<'static> {
        RecordRepr {
            topic: TopicId(7),
            offset: Offset(258),
            timestamp_ms: 0x0000_018c_0000_0000,
            key: b"k1",
            value: b"abc",
        }
    }

    #[test]
    fn record_emits_golden_bytes() {
        let mut buf = [0u8; 31];
        assert_eq!(golden_repr().emit(&mut buf), Ok(31));
        assert_eq!(buf, GOLDEN);
    }

    #[test]
    fn record_parses_golden_bytes() {
        assert_eq!(RecordRepr::parse(&GOLDEN), Ok(golden_repr()));
    }

    #[test]
    fn record_truncated_at_every_length_is_an_error() {
        for len in 0..GOLDEN.len() {
            assert!(RecordRepr::parse(&GOLDEN[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn batch_iterates_every_record() {
        let mut out = Vec::new();
        for i in 0..5u64 {
            let r = RecordRepr {
                offset: Offset(i),
                ..golden_repr()
            };
            r.emit_to_vec(&mut out).unwrap();
        }
        let recs = Records::new_checked(&out, 5).unwrap();
        let offsets: Vec<u64> = recs.map(|r| r.offset.0).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        assert!(Records::new_checked(&out, 4).is_err());
        assert!(Records::new_checked(&out, 6).is_err());
        assert_eq!(Records::count_checked(&out).unwrap().len(), 5);
    }

    #[test]
    fn declaration_round_trips() {
        let id = 9u32.to_be_bytes();
        let r = RecordRepr {
            topic: DECLARATION_TOPIC,
            offset: Offset(0),
            timestamp_ms: 0,
            key: b"md.prices",
            value: &id,
        };
        assert_eq!(r.declaration(), Some((TopicId(9), "md.prices")));
    }
}
