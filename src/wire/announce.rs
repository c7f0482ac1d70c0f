//! ANNOUNCE: a node joins, leaves or is still on a group, so that peers learn
//! of it at once rather than by heartbeat timeout.
//!
//! ```text
//! offset size field       why
//! 0      1    kind        1 join, 2 leave, 3 alive; unknown kinds are kept
//! 1      1    reserved    zero on send, ignored on receive
//! 2      2    name_len    bytes of name
//! 4      ..   name        UTF-8 node name, for operators (the id is in the
//!                         header)
//! ..     ..   extensions  TLVs to the end of the body: type u8, len u16,
//!                         value; receivers skip types they do not know, so
//!                         new facts (addresses, capabilities) need no new
//!                         version
//! ```

use super::codec::{len_u16, Reader, Writer};
use super::{Error, Result};

const FRAME: &str = "announce";
/// Bytes of one extension before its value.
pub const EXTENSION_HEADER_LEN: usize = 3;

/// What the node announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceKind {
    Join,
    Leave,
    Alive,
    Unknown(u8),
}

impl AnnounceKind {
    pub fn from_code(code: u8) -> AnnounceKind {
        match code {
            1 => AnnounceKind::Join,
            2 => AnnounceKind::Leave,
            3 => AnnounceKind::Alive,
            other => AnnounceKind::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            AnnounceKind::Join => 1,
            AnnounceKind::Leave => 2,
            AnnounceKind::Alive => 3,
            AnnounceKind::Unknown(code) => code,
        }
    }
}

/// An ANNOUNCE body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceRepr<'a> {
    pub kind: AnnounceKind,
    pub name: &'a str,
    /// Back-to-back TLVs (checked by `parse` and `emit`); see [`Extensions`].
    pub extensions: &'a [u8],
}

impl<'a> AnnounceRepr<'a> {
    pub fn parse(body: &'a [u8]) -> Result<AnnounceRepr<'a>> {
        let mut r = Reader::new(body);
        let kind = AnnounceKind::from_code(r.u8()?);
        r.skip(1)?;
        let name = r.str_u16(FRAME)?;
        let extensions = r.rest();
        check_extensions(extensions)?;
        Ok(AnnounceRepr {
            kind,
            name,
            extensions,
        })
    }

    /// The extensions, in order.
    pub fn extensions(&self) -> Extensions<'a> {
        Extensions {
            rest: self.extensions,
        }
    }

    pub fn buffer_len(&self) -> usize {
        4 + self.name.len() + self.extensions.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let name_len = len_u16(self.name.len(), FRAME, "name longer than 65535 bytes")?;
        check_extensions(self.extensions)?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u8(self.kind.code());
        w.zeros(1);
        w.u16(name_len);
        w.put(self.name.as_bytes());
        w.put(self.extensions);
        w.finish()
    }
}

/// One TLV extension of an ANNOUNCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

impl<'a> Extension<'a> {
    pub fn buffer_len(&self) -> usize {
        EXTENSION_HEADER_LEN + self.value.len()
    }

    /// Appends the TLV to `out` (to build `AnnounceRepr::extensions`).
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<()> {
        let len = len_u16(self.value.len(), FRAME, "extension longer than 65535 bytes")?;
        out.push(self.kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.value);
        Ok(())
    }
}

/// Iterator over checked extension bytes; stops at the first malformed TLV
/// (only possible for hand-built, unchecked bytes).
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Extensions<'a> {
    type Item = Extension<'a>;

    fn next(&mut self) -> Option<Extension<'a>> {
        let mut r = Reader::new(self.rest);
        let kind = r.u8().ok()?;
        let len = r.u16().ok()?;
        let value = r.take(usize::from(len)).ok()?;
        self.rest = r.rest();
        Some(Extension { kind, value })
    }
}

/// Every TLV must fit exactly: a length that runs past the body means the
/// frame is damaged or misread, so the whole frame is refused.
fn check_extensions(bytes: &[u8]) -> Result<()> {
    let mut r = Reader::new(bytes);
    while r.remaining() > 0 {
        let fits = r
            .u8()
            .and_then(|_| r.u16())
            .and_then(|len| r.take(usize::from(len)));
        if fits.is_err() {
            return Err(Error::Malformed {
                frame: FRAME,
                reason: "extension runs past the end of the frame",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const GOLDEN: [u8; 16] = [
        0x01, // kind: join
        0x00, // reserved
        0x00, 0x05, b'h', b'o', b's', b't', b'1', // name
        0x09, 0x00, 0x02, 0xbe, 0xef, // extension 9 = [be ef]
        0x0a, 0x00, // extension 10 starts...
    ];

    fn exts() -> Vec<u8> {
        let mut v = Vec::new();
        Extension {
            kind: 9,
            value: &[0xbe, 0xef],
        }
        .emit_to_vec(&mut v)
        .unwrap();
        Extension {
            kind: 10,
            value: &[],
        }
        .emit_to_vec(&mut v)
        .unwrap();
        v
    }

    fn golden() -> Vec<u8> {
        let mut g = GOLDEN.to_vec();
        g.push(0x00); // ...with length 0
        g
    }

    #[test]
    fn announce_emits_golden_bytes() {
        let e = exts();
        let repr = AnnounceRepr {
            kind: AnnounceKind::Join,
            name: "host1",
            extensions: &e,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(17));
        assert_eq!(buf, golden());
    }

    #[test]
    fn announce_parses_golden_bytes_and_its_extensions() {
        let g = golden();
        let repr = AnnounceRepr::parse(&g).unwrap();
        assert_eq!((repr.kind, repr.name), (AnnounceKind::Join, "host1"));
        let got: Vec<_> = repr.extensions().collect();
        assert_eq!(
            got,
            vec![
                Extension {
                    kind: 9,
                    value: &[0xbe, 0xef]
                },
                Extension {
                    kind: 10,
                    value: &[]
                }
            ]
        );
    }

    #[test]
    fn announce_truncated_inside_name_or_extension_is_an_error() {
        let g = golden();
        // A cut right after a whole TLV is a valid, shorter ANNOUNCE.
        let valid_cuts = [9, 14, 17];
        for len in 0..g.len() {
            let res = AnnounceRepr::parse(&g[..len]);
            assert_eq!(res.is_ok(), valid_cuts.contains(&len), "len {len}: {res:?}");
        }
    }

    #[test]
    fn announce_emit_refuses_broken_extensions() {
        let repr = AnnounceRepr {
            kind: AnnounceKind::Leave,
            name: "",
            extensions: &[1, 0, 5, 0],
        };
        assert!(matches!(
            repr.emit(&mut [0u8; 64]),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn unknown_announce_kind_is_kept() {
        let mut g = golden();
        g[0] = 0;
        assert_eq!(
            AnnounceRepr::parse(&g).map(|a| a.kind),
            Ok(AnnounceKind::Unknown(0))
        );
        for code in 1..=3u8 {
            assert_eq!(AnnounceKind::from_code(code).code(), code);
        }
    }
}
