//! The source's retransmit window: the last sent DATA frames, bounded in
//! bytes, indexed by sequence number.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::wire::Seq;

#[derive(Debug, Default)]
pub struct RetransmitWindow {
    frames: VecDeque<Bytes>,
    /// Seq of `frames[0]`; also the lowest seq still repairable.
    base: Seq,
    bytes: usize,
}

impl RetransmitWindow {
    pub fn new(first: Seq) -> Self {
        RetransmitWindow {
            frames: VecDeque::new(),
            base: first,
            bytes: 0,
        }
    }

    /// Lowest seq still held (== `end()` when empty).
    pub fn base(&self) -> Seq {
        self.base
    }

    /// One past the highest seq held.
    #[cfg(test)]
    pub fn end(&self) -> Seq {
        Seq(self.base.0 + self.frames.len() as u64)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends the frame for seq `end()`.
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    pub fn get(&self, seq: Seq) -> Option<&Bytes> {
        let idx = seq.0.checked_sub(self.base.0)?;
        self.frames.get(usize::try_from(idx).ok()?)
    }

    /// Drops the oldest frame; returns its size.
    pub fn pop_front(&mut self) -> Option<usize> {
        let f = self.frames.pop_front()?;
        self.bytes -= f.len();
        self.base = self.base.next();
        Some(f.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_indexes_by_seq_and_counts_bytes() {
        let mut w = RetransmitWindow::new(Seq(10));
        w.push(Bytes::from_static(b"abc"));
        w.push(Bytes::from_static(b"de"));
        assert_eq!(w.end(), Seq(12));
        assert_eq!(w.get(Seq(11)).map(|b| b.len()), Some(2));
        assert!(w.get(Seq(9)).is_none());
        assert!(w.get(Seq(12)).is_none());
        assert_eq!(w.bytes(), 5);
        assert_eq!(w.pop_front(), Some(3));
        assert_eq!(w.base(), Seq(11));
        assert!(w.get(Seq(10)).is_none());
    }
}
