//! The common frame header that starts every datagram, and the CRC32 that
//! covers the whole frame.
//!
//! ```text
//! offset size field        why
//! 0      2    magic        0xCA57: drop stray traffic on the port cheaply
//! 2      1    version      1: an incompatible layout change bumps it
//! 3      1    frame_type   DATA=1 .. ANNOUNCE=10; unknown types are skipped
//! 4      2    flags        REPAIR=1, FRAGMENT=2, AUTH=4; unknown bits kept
//! 6      2    header_len   28 today; receivers skip extra header bytes, so a
//!                          later revision can extend the header compatibly
//! 8      4    frame_len    total bytes of the frame = the datagram length;
//!                          catches truncation by the network stack
//! 12     8    node         node id of the sender of this frame
//! 20     4    session      the session the frame is about
//! 24     4    crc32        crc32fast (IEEE) over [0, 24) then [28, frame_len)
//! ```

use super::codec::{be_at, put_at};
use super::{Error, NodeId, Result, SessionId};

/// First two bytes of every frame.
pub const MAGIC: u16 = 0xCA57;
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes of the header this version writes (`header_len` on send).
pub const HEADER_LEN: usize = 28;

mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 2;
    pub const FRAME_TYPE: usize = 3;
    pub const FLAGS: usize = 4;
    pub const HEADER_LEN: usize = 6;
    pub const FRAME_LEN: usize = 8;
    pub const NODE: usize = 12;
    pub const SESSION: usize = 20;
    pub const CRC: usize = 24;
    pub const CRC_END: usize = 28;
}

/// What a frame's body is. Unknown codes are kept, so that a receiver can
/// count and skip frame types added by a later revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Data,
    Heartbeat,
    Nak,
    Ncf,
    Unrecoverable,
    Status,
    ReplayRequest,
    ReplayData,
    ReplayEnd,
    Announce,
    Unknown(u8),
}

impl FrameType {
    pub fn from_code(code: u8) -> FrameType {
        match code {
            1 => FrameType::Data,
            2 => FrameType::Heartbeat,
            3 => FrameType::Nak,
            4 => FrameType::Ncf,
            5 => FrameType::Unrecoverable,
            6 => FrameType::Status,
            7 => FrameType::ReplayRequest,
            8 => FrameType::ReplayData,
            9 => FrameType::ReplayEnd,
            10 => FrameType::Announce,
            other => FrameType::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            FrameType::Data => 1,
            FrameType::Heartbeat => 2,
            FrameType::Nak => 3,
            FrameType::Ncf => 4,
            FrameType::Unrecoverable => 5,
            FrameType::Status => 6,
            FrameType::ReplayRequest => 7,
            FrameType::ReplayData => 8,
            FrameType::ReplayEnd => 9,
            FrameType::Announce => 10,
            FrameType::Unknown(code) => code,
        }
    }

    /// The name used in `docs/protocol.md`, for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Data => "data",
            FrameType::Heartbeat => "heartbeat",
            FrameType::Nak => "nak",
            FrameType::Ncf => "ncf",
            FrameType::Unrecoverable => "unrecoverable",
            FrameType::Status => "status",
            FrameType::ReplayRequest => "replay_request",
            FrameType::ReplayData => "replay_data",
            FrameType::ReplayEnd => "replay_end",
            FrameType::Announce => "announce",
            FrameType::Unknown(_) => "unknown",
        }
    }
}

impl From<u8> for FrameType {
    fn from(code: u8) -> FrameType {
        FrameType::from_code(code)
    }
}

impl From<FrameType> for u8 {
    fn from(t: FrameType) -> u8 {
        t.code()
    }
}

/// Header flag bits. Bits this build does not know are carried through
/// unchanged rather than rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// The frame is a retransmission answering a NAK (DATA only).
    pub const REPAIR: Flags = Flags(1);
    /// The DATA body holds one fragment of a record, not whole records.
    /// Structural: it selects the body layout, so it is set by the emitter.
    pub const FRAGMENT: Flags = Flags(2);
    /// The datagram carries a group HMAC trailer after `frame_len` (see
    /// `wire::auth`): set by `auth::seal`, checked by `auth::verify`.
    pub const AUTH: Flags = Flags(4);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

/// The header fields a caller chooses. `magic`, `version`, `header_len`,
/// `frame_len` and the CRC are filled in by the emitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderRepr {
    pub frame_type: FrameType,
    pub flags: Flags,
    pub node: NodeId,
    pub session: SessionId,
}

impl HeaderRepr {
    /// Reads the caller-visible fields of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> HeaderRepr {
        HeaderRepr {
            frame_type: frame.frame_type(),
            flags: frame.flags(),
            node: frame.node(),
            session: frame.session(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a header for a frame of `frame_len` bytes into the start of
    /// `buf`, with a zero CRC; call [`Frame::fill_checksum`] once the body is
    /// written.
    pub fn emit(&self, buf: &mut [u8], frame_len: usize) -> Result<()> {
        if buf.len() < frame_len || frame_len < HEADER_LEN {
            return Err(Error::BufferTooSmall {
                need: frame_len.max(HEADER_LEN),
                have: buf.len(),
            });
        }
        let frame_len_u32 = u32::try_from(frame_len).map_err(|_| Error::Malformed {
            frame: "header",
            reason: "frame longer than 4 GiB",
        })?;
        let mut f = Frame::new_unchecked(buf);
        f.set_magic(MAGIC);
        f.set_version(VERSION);
        f.set_frame_type(self.frame_type);
        f.set_flags(self.flags);
        f.set_header_len(HEADER_LEN as u16);
        f.set_frame_len(frame_len_u32);
        f.set_node(self.node);
        f.set_session(self.session);
        f.set_checksum(0);
        Ok(())
    }
}

/// A view over one whole datagram. `new_checked` verifies magic, version,
/// both lengths and the CRC, after which every accessor reads in bounds.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps without checking. Accessors never panic: on a buffer shorter
    /// than the header they read zeros, and `payload` is empty.
    pub fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps and verifies the frame (see [`Frame::check`]).
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Frame::new_unchecked(buffer);
        f.check()?;
        Ok(f)
    }

    /// Checks, in this order: length of the fixed header, magic, version,
    /// `frame_len` equal to the buffer length, `header_len` within
    /// `[HEADER_LEN, frame_len]`, then the CRC. Magic and version come first
    /// so that stray traffic is reported as such, not as a bad checksum.
    pub fn check(&self) -> Result<()> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        if self.magic() != MAGIC {
            return Err(Error::BadMagic {
                found: self.magic(),
                expected: MAGIC,
            });
        }
        if self.version() != VERSION {
            return Err(Error::UnsupportedVersion {
                found: self.version(),
                supported: VERSION,
            });
        }
        let frame_len = self.frame_len() as usize;
        if frame_len > have {
            return Err(Error::Truncated {
                need: frame_len,
                have,
            });
        }
        if frame_len != have {
            return Err(Error::BadLength {
                field: "frame_len",
                stated: frame_len,
                actual: have,
            });
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || header_len > frame_len {
            return Err(Error::BadLength {
                field: "header_len",
                stated: header_len,
                actual: frame_len,
            });
        }
        let computed = self.compute_checksum();
        if computed != self.checksum() {
            return Err(Error::BadChecksum {
                stated: self.checksum(),
                computed,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn magic(&self) -> u16 {
        u16::from_be_bytes(be_at(self.buffer.as_ref(), field::MAGIC))
    }
    pub fn version(&self) -> u8 {
        be_at::<1>(self.buffer.as_ref(), field::VERSION)[0]
    }
    pub fn frame_type(&self) -> FrameType {
        FrameType::from_code(be_at::<1>(self.buffer.as_ref(), field::FRAME_TYPE)[0])
    }
    pub fn flags(&self) -> Flags {
        Flags(u16::from_be_bytes(be_at(
            self.buffer.as_ref(),
            field::FLAGS,
        )))
    }
    pub fn header_len(&self) -> usize {
        usize::from(u16::from_be_bytes(be_at(
            self.buffer.as_ref(),
            field::HEADER_LEN,
        )))
    }
    pub fn frame_len(&self) -> u32 {
        u32::from_be_bytes(be_at(self.buffer.as_ref(), field::FRAME_LEN))
    }
    pub fn node(&self) -> NodeId {
        NodeId(u64::from_be_bytes(be_at(self.buffer.as_ref(), field::NODE)))
    }
    pub fn session(&self) -> SessionId {
        SessionId(u32::from_be_bytes(be_at(
            self.buffer.as_ref(),
            field::SESSION,
        )))
    }
    /// The CRC the frame states.
    pub fn checksum(&self) -> u32 {
        u32::from_be_bytes(be_at(self.buffer.as_ref(), field::CRC))
    }
    /// The CRC the frame's bytes give.
    pub fn compute_checksum(&self) -> u32 {
        checksum(self.buffer.as_ref())
    }
    /// The body: bytes after `header_len` (extra header bytes of a later
    /// revision are skipped here).
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len().max(HEADER_LEN);
        self.buffer.as_ref().get(start..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_magic(&mut self, v: u16) {
        put_at(self.buffer.as_mut(), field::MAGIC, &v.to_be_bytes());
    }
    pub fn set_version(&mut self, v: u8) {
        put_at(self.buffer.as_mut(), field::VERSION, &[v]);
    }
    pub fn set_frame_type(&mut self, t: FrameType) {
        put_at(self.buffer.as_mut(), field::FRAME_TYPE, &[t.code()]);
    }
    pub fn set_flags(&mut self, flags: Flags) {
        put_at(self.buffer.as_mut(), field::FLAGS, &flags.0.to_be_bytes());
    }
    pub fn set_header_len(&mut self, v: u16) {
        put_at(self.buffer.as_mut(), field::HEADER_LEN, &v.to_be_bytes());
    }
    pub fn set_frame_len(&mut self, v: u32) {
        put_at(self.buffer.as_mut(), field::FRAME_LEN, &v.to_be_bytes());
    }
    pub fn set_node(&mut self, node: NodeId) {
        put_at(self.buffer.as_mut(), field::NODE, &node.0.to_be_bytes());
    }
    pub fn set_session(&mut self, session: SessionId) {
        put_at(
            self.buffer.as_mut(),
            field::SESSION,
            &session.0.to_be_bytes(),
        );
    }
    pub fn set_checksum(&mut self, v: u32) {
        put_at(self.buffer.as_mut(), field::CRC, &v.to_be_bytes());
    }
    /// Computes the CRC over the whole buffer and stores it.
    pub fn fill_checksum(&mut self) {
        let crc = self.compute_checksum();
        self.set_checksum(crc);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len().max(HEADER_LEN);
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }
}

/// CRC32 (IEEE, crc32fast) of a frame: bytes `[0, 24)` then `[28, end)`,
/// i.e. everything except the CRC field itself.
pub fn checksum(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(frame.get(..field::CRC).unwrap_or(frame));
    if let Some(rest) = frame.get(field::CRC_END..) {
        h.update(rest);
    }
    h.finalize()
}

/// Sets new flags on an already-emitted frame and recomputes its CRC (used
/// to mark repairs). The frame is checked first, so a corrupt frame is never
/// given a fresh, valid CRC. `FRAGMENT` describes the body layout and cannot
/// be changed without re-encoding the body, so it is kept from the frame
/// whatever `flags` says.
pub fn rewrite_flags(frame: &mut [u8], flags: Flags) -> Result<()> {
    let mut f = Frame::new_checked(frame)?;
    let structural = Flags(f.flags().0 & Flags::FRAGMENT.0);
    f.set_flags(flags.without(Flags::FRAGMENT).with(structural));
    f.fill_checksum();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A HEARTBEAT-typed frame with a 4-byte body, checked by hand.
    fn golden() -> Vec<u8> {
        let mut v = vec![
            0xca, 0x57, // magic
            0x01, // version
            0x02, // frame type: heartbeat
            0x00, 0x01, // flags: REPAIR
            0x00, 0x1c, // header_len 28
            0x00, 0x00, 0x00, 0x20, // frame_len 32
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // node
            0x0a, 0x0b, 0x0c, 0x0d, // session
            0, 0, 0, 0, // crc, filled below
            0xde, 0xad, 0xbe, 0xef, // body
        ];
        let mut h = crc32fast::Hasher::new();
        h.update(&v[..24]);
        h.update(&v[28..]);
        let crc = h.finalize();
        v[24..28].copy_from_slice(&crc.to_be_bytes());
        v
    }

    fn golden_repr() -> HeaderRepr {
        HeaderRepr {
            frame_type: FrameType::Heartbeat,
            flags: Flags::REPAIR,
            node: NodeId(0x0102_0304_0506_0708),
            session: SessionId(0x0a0b_0c0d),
        }
    }

    #[test]
    fn header_emits_golden_bytes() {
        let mut buf = vec![0u8; 32];
        golden_repr().emit(&mut buf, 32).unwrap();
        buf[28..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        Frame::new_unchecked(&mut buf[..]).fill_checksum();
        assert_eq!(buf, golden());
    }

    #[test]
    fn header_parses_golden_bytes() {
        let bytes = golden();
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(HeaderRepr::parse(&f), golden_repr());
        assert_eq!(f.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(f.frame_len(), 32);
        assert_eq!(f.header_len(), 28);
    }

    #[test]
    fn frame_truncated_at_every_length_is_an_error() {
        let bytes = golden();
        for len in 0..bytes.len() {
            assert!(Frame::new_checked(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn frame_with_trailing_bytes_is_a_length_error() {
        let mut bytes = golden();
        bytes.push(0);
        assert_eq!(
            Frame::new_checked(&bytes[..]).err(),
            Some(Error::BadLength {
                field: "frame_len",
                stated: 32,
                actual: 33
            })
        );
    }

    #[test]
    fn flipped_bytes_outside_the_length_fields_give_bad_checksum() {
        let bytes = golden();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let err = Frame::new_checked(&b[..]).err();
            match i {
                0..=1 => assert!(matches!(err, Some(Error::BadMagic { .. }))),
                2 => assert!(matches!(err, Some(Error::UnsupportedVersion { .. }))),
                6..=11 => assert!(err.is_some(), "byte {i}"),
                _ => assert!(
                    matches!(err, Some(Error::BadChecksum { .. })),
                    "byte {i}: {err:?}"
                ),
            }
        }
    }

    #[test]
    fn longer_header_of_a_later_revision_is_skipped() {
        let mut bytes = golden();
        bytes.splice(28..28, [0x99, 0x98]);
        let mut f = Frame::new_unchecked(&mut bytes[..]);
        f.set_header_len(30);
        f.set_frame_len(34);
        f.fill_checksum();
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn header_len_below_28_or_past_the_frame_is_refused() {
        for header_len in [0u16, 27, 33] {
            let mut bytes = golden();
            let mut f = Frame::new_unchecked(&mut bytes[..]);
            f.set_header_len(header_len);
            f.fill_checksum();
            assert!(
                matches!(
                    Frame::new_checked(&bytes[..]),
                    Err(Error::BadLength {
                        field: "header_len",
                        ..
                    })
                ),
                "header_len {header_len}"
            );
        }
    }

    #[test]
    fn rewrite_flags_marks_a_repair_and_keeps_the_crc_valid() {
        let mut bytes = golden();
        rewrite_flags(&mut bytes, Flags::default()).unwrap();
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.flags(), Flags::default());
        rewrite_flags(&mut bytes, Flags::REPAIR).unwrap();
        assert_eq!(bytes, golden());
    }

    #[test]
    fn rewrite_flags_keeps_the_structural_fragment_bit() {
        let mut bytes = golden();
        rewrite_flags(&mut bytes, Flags::FRAGMENT).unwrap();
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert!(!f.flags().contains(Flags::FRAGMENT));
    }

    #[test]
    fn rewrite_flags_refuses_a_corrupt_frame() {
        let mut bytes = golden();
        bytes[30] ^= 1;
        assert!(matches!(
            rewrite_flags(&mut bytes, Flags::REPAIR),
            Err(Error::BadChecksum { .. })
        ));
    }

    #[test]
    fn unknown_flag_bits_and_frame_types_are_kept() {
        assert_eq!(FrameType::from_code(0), FrameType::Unknown(0));
        assert_eq!(FrameType::from_code(200).code(), 200);
        for code in 1..=10u8 {
            assert_eq!(FrameType::from_code(code).code(), code);
            assert!(!matches!(FrameType::from_code(code), FrameType::Unknown(_)));
        }
        let f = Flags(0x8000).with(Flags::REPAIR);
        assert!(f.contains(Flags::REPAIR) && f.contains(Flags(0x8000)));
        assert!(!f.contains(Flags::FRAGMENT));
    }

    #[test]
    fn unchecked_view_of_a_short_buffer_reads_zeros() {
        let f = Frame::new_unchecked(&[0xca][..]);
        assert_eq!(f.magic(), 0);
        assert_eq!(f.payload(), &[] as &[u8]);
    }
}
