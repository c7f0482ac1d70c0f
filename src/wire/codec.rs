//! Bounds-checked big-endian cursors, so that frame parsers never index input
//! bytes directly and frame emitters never write past their buffer.

use super::{Error, NodeId, Offset, Result, Seq, TopicId};

/// Reads fields front to back; every read past the end is `Error::Truncated`
/// with the number of bytes the frame needed up to that field.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated {
            need: usize::MAX,
            have: self.buf.len(),
        })?;
        let bytes = self.buf.get(self.pos..end).ok_or(Error::Truncated {
            need: end,
            have: self.buf.len(),
        })?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn seq(&mut self) -> Result<Seq> {
        self.u64().map(Seq)
    }
    pub(crate) fn offset(&mut self) -> Result<Offset> {
        self.u64().map(Offset)
    }
    pub(crate) fn node(&mut self) -> Result<NodeId> {
        self.u64().map(NodeId)
    }
    pub(crate) fn topic(&mut self) -> Result<TopicId> {
        self.u32().map(TopicId)
    }

    /// Reserved bytes: zero on send, ignored on receive (extension room).
    pub(crate) fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(|_| ())
    }

    /// A `u16` length followed by that many bytes of UTF-8.
    pub(crate) fn str_u16(&mut self, frame: &'static str) -> Result<&'a str> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| Error::Malformed {
            frame,
            reason: "name is not valid utf-8",
        })
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        rest
    }

    /// Bodies have an exact length: trailing bytes mean the sender and the
    /// receiver disagree about the layout, so the frame is refused.
    pub(crate) fn finish(&self, field: &'static str) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(Error::BadLength {
                field,
                stated: self.pos,
                actual: self.buf.len(),
            });
        }
        Ok(())
    }
}

/// Writes fields front to back into a buffer whose size was checked up
/// front; a write that would not fit is recorded and reported by `finish`
/// instead of panicking.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    /// Fails with `BufferTooSmall` unless `buf` holds at least `need` bytes.
    pub(crate) fn new(buf: &'a mut [u8], need: usize) -> Result<Self> {
        if buf.len() < need {
            return Err(Error::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        Ok(Writer {
            buf,
            pos: 0,
            overflow: false,
        })
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.pos = end;
            }
            None => self.overflow = true,
        }
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    pub(crate) fn zeros(&mut self, n: usize) {
        let end = self.pos.saturating_add(n);
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.fill(0);
                self.pos = end;
            }
            None => self.overflow = true,
        }
    }
    /// Bytes written; `BufferTooSmall` if any write did not fit.
    pub(crate) fn finish(self) -> Result<usize> {
        if self.overflow {
            return Err(Error::BufferTooSmall {
                need: self.pos.saturating_add(1),
                have: self.buf.len(),
            });
        }
        Ok(self.pos)
    }
}

/// A length that must fit a `u16` field on the wire.
pub(crate) fn len_u16(len: usize, frame: &'static str, reason: &'static str) -> Result<u16> {
    u16::try_from(len).map_err(|_| Error::Malformed { frame, reason })
}

/// A length that must fit a `u32` field on the wire.
pub(crate) fn len_u32(len: usize, frame: &'static str, reason: &'static str) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Malformed { frame, reason })
}

/// Reads a big-endian integer at `range`, or 0 if the buffer is shorter (only
/// unchecked views can be that short; checked views never are).
pub(crate) fn be_at<const N: usize>(buf: &[u8], start: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(src) = buf.get(start..start.saturating_add(N)) {
        a.copy_from_slice(src);
    }
    a
}

/// Writes `bytes` at `start` if the buffer is long enough.
pub(crate) fn put_at(buf: &mut [u8], start: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(start..start.saturating_add(bytes.len())) {
        dst.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_how_many_bytes_were_needed() {
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.u16(), Ok(1));
        assert_eq!(r.u32(), Err(Error::Truncated { need: 6, have: 3 }));
    }

    #[test]
    fn reader_refuses_trailing_bytes() {
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.u16(), Ok(1));
        assert!(r.finish("test").is_err());
    }

    #[test]
    fn writer_reports_overflow_instead_of_panicking() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf, 3).unwrap();
        w.u16(7);
        w.u16(8);
        assert!(matches!(w.finish(), Err(Error::BufferTooSmall { .. })));
    }
}
