//! Checked big-endian reads and writes of frame bodies: every read past
//! the end is an error and every write is bounded by the computed length, so
//! no input makes the codec panic.

use bytes::Bytes;

use super::{field, malformed, MAX_FRAME_BODY_LEN};
use crate::wire::{Error, Result};

/// Checked reads from a frame body; every read past the end is
/// `Error::Truncated`, never a panic.
pub(super) struct Reader<'a> {
    frame_bytes: &'a Bytes,
    pos: usize,
    /// The frame being parsed, named in UTF-8 errors.
    pub(super) frame: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(frame_bytes: &'a Bytes, pos: usize, frame: &'static str) -> Self {
        Reader {
            frame_bytes,
            pos,
            frame,
        }
    }

    pub(super) fn remaining(&self) -> usize {
        self.frame_bytes.len().saturating_sub(self.pos)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>> {
        let end = self.pos.saturating_add(n);
        if end > self.frame_bytes.len() {
            return Err(Error::Truncated {
                need: end,
                have: self.frame_bytes.len(),
            });
        }
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let range = self.take(N)?;
        let mut a = [0u8; N];
        // invariant: take checked the range against the buffer.
        a.copy_from_slice(&self.frame_bytes[range]);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn slice(&mut self, n: usize) -> Result<Bytes> {
        let range = self.take(n)?;
        Ok(self.frame_bytes.slice(range))
    }

    pub(super) fn string(&mut self, n: usize) -> Result<String> {
        let range = self.take(n)?;
        match std::str::from_utf8(&self.frame_bytes[range]) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(malformed(self.frame, "string is not UTF-8")),
        }
    }

    /// A string of `n` bytes as a shared `Arc<str>`: `last` itself when the
    /// bytes are equal, otherwise a new one that also replaces `last`.
    pub(super) fn shared_str(
        &mut self,
        n: usize,
        last: &mut Option<std::sync::Arc<str>>,
    ) -> Result<std::sync::Arc<str>> {
        let range = self.take(n)?;
        let bytes = &self.frame_bytes[range];
        if let Some(t) = last.as_ref().filter(|t| t.as_bytes() == bytes) {
            return Ok(t.clone());
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                let t: std::sync::Arc<str> = std::sync::Arc::from(s);
                *last = Some(t.clone());
                Ok(t)
            }
            Err(_) => Err(malformed(self.frame, "string is not UTF-8")),
        }
    }

    pub(super) fn str16(&mut self) -> Result<String> {
        let n = usize::from(self.u16()?);
        self.string(n)
    }

    pub(super) fn skip_rest(&mut self) {
        self.pos = self.frame_bytes.len();
    }

    /// A frame with bytes left after its layout is malformed: the two ends
    /// disagree about the format.
    pub(super) fn end(&self) -> Result<()> {
        if self.pos != self.frame_bytes.len() {
            return Err(Error::BadLength {
                field: "ipc frame body",
                stated: self.pos,
                actual: self.frame_bytes.len(),
            });
        }
        Ok(())
    }
}

/// Checked writes of one frame into a slice of exactly the computed length.
pub(super) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    len: usize,
}

impl<'a> Writer<'a> {
    /// Starts a frame of `len` bytes (header included) of kind `kind`.
    pub(super) fn frame(buf: &'a mut [u8], len: usize, kind: u8) -> Result<Writer<'a>> {
        if buf.len() < len {
            return Err(Error::BufferTooSmall {
                need: len,
                have: buf.len(),
            });
        }
        let body_len = len.saturating_sub(field::LENGTH.end);
        if body_len > MAX_FRAME_BODY_LEN {
            return Err(malformed("ipc frame", "frame longer than the maximum"));
        }
        let mut w = Writer { buf, pos: 0, len };
        // invariant: body_len <= MAX_FRAME_BODY_LEN < u32::MAX.
        w.u32(body_len as u32)?;
        w.u8(kind)?;
        Ok(w)
    }

    pub(super) fn bytes(&mut self, b: &[u8]) -> Result<()> {
        let end = self.pos + b.len();
        match self.buf.get_mut(self.pos..end) {
            Some(dst) if end <= self.len => {
                dst.copy_from_slice(b);
                self.pos = end;
                Ok(())
            }
            _ => Err(Error::BufferTooSmall {
                need: end,
                have: self.len,
            }),
        }
    }
    pub(super) fn u8(&mut self, v: u8) -> Result<()> {
        self.bytes(&[v])
    }
    pub(super) fn u16(&mut self, v: u16) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }
    pub(super) fn u32(&mut self, v: u32) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }
    pub(super) fn u64(&mut self, v: u64) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }
    pub(super) fn len16(&mut self, len: usize, reason: &'static str) -> Result<()> {
        let v = u16::try_from(len).map_err(|_| malformed("ipc frame", reason))?;
        self.u16(v)
    }
    pub(super) fn len32(&mut self, len: usize) -> Result<()> {
        let v = u32::try_from(len).map_err(|_| malformed("ipc frame", "value too long"))?;
        self.u32(v)
    }
    pub(super) fn str16(&mut self, s: &str) -> Result<()> {
        self.len16(s.len(), "string longer than 65535 bytes")?;
        self.bytes(s.as_bytes())
    }

    /// Checks that exactly the computed length was written.
    pub(super) fn finish(self) -> Result<usize> {
        if self.pos != self.len {
            return Err(Error::BadLength {
                field: "ipc frame emit",
                stated: self.len,
                actual: self.pos,
            });
        }
        Ok(self.pos)
    }
}
