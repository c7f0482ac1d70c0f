//! STATUS: a receiver tells a source (unicast) how far it has received, for
//! acknowledgement and flow control.
//!
//! ```text
//! offset size field           why
//! 0      8    source          node whose session this is about (header.node
//!                             is the receiver, header.session the session)
//! 8      8    next_expected   every seq below it was received: the source
//!                             may treat them as acknowledged by this receiver
//! 16     4    receive_window  bytes the receiver will still accept beyond
//!                             next_expected: the source slows down at zero
//! 20     4    reserved        zero on send, ignored on receive
//! ```

use super::codec::{Reader, Writer};
use super::{NodeId, Result, Seq};

/// Bytes of a STATUS body.
pub const STATUS_LEN: usize = 24;

/// A STATUS body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRepr {
    pub source: NodeId,
    pub next_expected: Seq,
    pub receive_window: u32,
}

impl StatusRepr {
    pub fn parse(body: &[u8]) -> Result<StatusRepr> {
        let mut r = Reader::new(body);
        let repr = StatusRepr {
            source: r.node()?,
            next_expected: r.seq()?,
            receive_window: r.u32()?,
        };
        r.skip(4)?;
        r.finish("status length")?;
        Ok(repr)
    }

    pub fn buffer_len(&self) -> usize {
        STATUS_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut w = Writer::new(buf, STATUS_LEN)?;
        w.u64(self.source.0);
        w.u64(self.next_expected.0);
        w.u32(self.receive_window);
        w.zeros(4);
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const GOLDEN: [u8; 24] = [
        0, 0, 0, 0, 0, 0, 0, 0x2a, // source 42
        0, 0, 0, 0, 0, 0, 0x10, 0x00, // next_expected 4096
        0x00, 0x10, 0x00, 0x00, // receive_window 1 MiB
        0, 0, 0, 0, // reserved
    ];

    fn golden_repr() -> StatusRepr {
        StatusRepr {
            source: NodeId(42),
            next_expected: Seq(4096),
            receive_window: 1 << 20,
        }
    }

    #[test]
    fn status_emits_golden_bytes() {
        let mut buf = [0u8; 24];
        assert_eq!(golden_repr().emit(&mut buf), Ok(24));
        assert_eq!(buf, GOLDEN);
    }

    #[test]
    fn status_parses_golden_bytes() {
        assert_eq!(StatusRepr::parse(&GOLDEN), Ok(golden_repr()));
    }

    #[test]
    fn status_reserved_bytes_are_ignored_on_receive() {
        let mut b = GOLDEN;
        b[23] = 0xff;
        assert_eq!(StatusRepr::parse(&b), Ok(golden_repr()));
    }

    #[test]
    fn status_truncated_at_every_length_is_an_error() {
        for len in 0..GOLDEN.len() {
            assert!(StatusRepr::parse(&GOLDEN[..len]).is_err(), "len {len}");
        }
    }
}
