//! A whole datagram: header plus the body its frame type names. This is the
//! entry point for receivers (`FrameRepr::parse`) and senders
//! (`FrameRepr::emit`).

use super::announce::AnnounceRepr;
use super::data::DataRepr;
use super::header::{Flags, Frame, FrameType, HeaderRepr, HEADER_LEN};
use super::heartbeat::HeartbeatRepr;
use super::nak::NakRepr;
use super::ncf::{NcfRepr, UnrecoverableRepr};
use super::replay::{ReplayDataRepr, ReplayEndRepr, ReplayRequestRepr};
use super::status::StatusRepr;
use super::{Error, NodeId, Result, SessionId};

/// A parsed datagram that borrows from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRepr<'a> {
    pub header: HeaderRepr,
    pub body: Body<'a>,
}

/// The body of a frame, by frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    Data(DataRepr<'a>),
    Heartbeat(HeartbeatRepr<'a>),
    Nak(NakRepr),
    Ncf(NcfRepr),
    Unrecoverable(UnrecoverableRepr),
    Status(StatusRepr),
    ReplayRequest(ReplayRequestRepr<'a>),
    ReplayData(ReplayDataRepr<'a>),
    ReplayEnd(ReplayEndRepr),
    Announce(AnnounceRepr<'a>),
    /// A frame type this build does not know: a later revision's. Receivers
    /// count and skip it; it is not an error.
    Unknown {
        frame_type: u8,
        payload: &'a [u8],
    },
}

impl<'a> Body<'a> {
    /// The frame type this body is sent as.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Body::Data(_) => FrameType::Data,
            Body::Heartbeat(_) => FrameType::Heartbeat,
            Body::Nak(_) => FrameType::Nak,
            Body::Ncf(_) => FrameType::Ncf,
            Body::Unrecoverable(_) => FrameType::Unrecoverable,
            Body::Status(_) => FrameType::Status,
            Body::ReplayRequest(_) => FrameType::ReplayRequest,
            Body::ReplayData(_) => FrameType::ReplayData,
            Body::ReplayEnd(_) => FrameType::ReplayEnd,
            Body::Announce(_) => FrameType::Announce,
            Body::Unknown { frame_type, .. } => FrameType::from_code(*frame_type),
        }
    }

    /// Parses `payload` as the body of a frame of type `frame_type`, whose
    /// header carries `flags`.
    pub fn parse(frame_type: FrameType, flags: Flags, payload: &'a [u8]) -> Result<Body<'a>> {
        Ok(match frame_type {
            FrameType::Data => Body::Data(DataRepr::parse(payload, flags)?),
            FrameType::Heartbeat => Body::Heartbeat(HeartbeatRepr::parse(payload)?),
            FrameType::Nak => Body::Nak(NakRepr::parse(payload)?),
            FrameType::Ncf => Body::Ncf(NcfRepr::parse(payload)?),
            FrameType::Unrecoverable => Body::Unrecoverable(UnrecoverableRepr::parse(payload)?),
            FrameType::Status => Body::Status(StatusRepr::parse(payload)?),
            FrameType::ReplayRequest => Body::ReplayRequest(ReplayRequestRepr::parse(payload)?),
            FrameType::ReplayData => Body::ReplayData(ReplayDataRepr::parse(payload, flags)?),
            FrameType::ReplayEnd => Body::ReplayEnd(ReplayEndRepr::parse(payload)?),
            FrameType::Announce => Body::Announce(AnnounceRepr::parse(payload)?),
            FrameType::Unknown(code) => Body::Unknown {
                frame_type: code,
                payload,
            },
        })
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            Body::Data(b) => b.buffer_len(),
            Body::Heartbeat(b) => b.buffer_len(),
            Body::Nak(b) => b.buffer_len(),
            Body::Ncf(b) => b.buffer_len(),
            Body::Unrecoverable(b) => b.buffer_len(),
            Body::Status(b) => b.buffer_len(),
            Body::ReplayRequest(b) => b.buffer_len(),
            Body::ReplayData(b) => b.buffer_len(),
            Body::ReplayEnd(b) => b.buffer_len(),
            Body::Announce(b) => b.buffer_len(),
            Body::Unknown { payload, .. } => payload.len(),
        }
    }

    /// Writes the body into the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        match self {
            Body::Data(b) => b.emit(buf),
            Body::Heartbeat(b) => b.emit(buf),
            Body::Nak(b) => b.emit(buf),
            Body::Ncf(b) => b.emit(buf),
            Body::Unrecoverable(b) => b.emit(buf),
            Body::Status(b) => b.emit(buf),
            Body::ReplayRequest(b) => b.emit(buf),
            Body::ReplayData(b) => b.emit(buf),
            Body::ReplayEnd(b) => b.emit(buf),
            Body::Announce(b) => b.emit(buf),
            Body::Unknown {
                frame_type,
                payload,
            } => {
                if !matches!(FrameType::from_code(*frame_type), FrameType::Unknown(_)) {
                    return Err(Error::Malformed {
                        frame: "unknown",
                        reason: "unknown body with a known frame type code",
                    });
                }
                let have = buf.len();
                let dst = buf.get_mut(..payload.len()).ok_or(Error::BufferTooSmall {
                    need: payload.len(),
                    have,
                })?;
                dst.copy_from_slice(payload);
                Ok(payload.len())
            }
        }
    }
}

impl<'a> FrameRepr<'a> {
    /// A frame whose header matches its body: frame type from the body, and
    /// `FRAGMENT` set exactly when the body is a DATA fragment.
    pub fn new(node: NodeId, session: SessionId, flags: Flags, body: Body<'a>) -> FrameRepr<'a> {
        let header = HeaderRepr {
            frame_type: body.frame_type(),
            flags: header_flags(flags, &body),
            node,
            session,
        };
        FrameRepr { header, body }
    }

    /// Parses and checks a whole datagram: magic, version, lengths, CRC, then
    /// the body named by the frame type. An unknown frame type is
    /// `Body::Unknown`, not an error.
    pub fn parse(datagram: &'a [u8]) -> Result<FrameRepr<'a>> {
        let frame = Frame::new_checked(datagram)?;
        let header = HeaderRepr::parse(&frame);
        // invariant: check() verified header_len <= frame_len == datagram.len()
        let payload = datagram.get(frame.header_len()..).unwrap_or(&[]);
        let body = Body::parse(header.frame_type, header.flags, payload)?;
        Ok(FrameRepr { header, body })
    }

    /// Header plus body: the size of the datagram `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body.buffer_len()
    }

    /// Writes the whole datagram into the start of `buf`: the header (frame
    /// type from the body, `FRAGMENT` from the body), the body, `frame_len`
    /// and the CRC. Returns the bytes written; send exactly those.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let frame_len = self.buffer_len();
        let have = buf.len();
        let dst = buf.get_mut(..frame_len).ok_or(Error::BufferTooSmall {
            need: frame_len,
            have,
        })?;
        let header = HeaderRepr {
            frame_type: self.body.frame_type(),
            flags: header_flags(self.header.flags, &self.body),
            ..self.header
        };
        header.emit(dst, frame_len)?;
        let body_buf = dst.get_mut(HEADER_LEN..).unwrap_or(&mut []);
        let written = self.body.emit(body_buf)?;
        if written != frame_len - HEADER_LEN {
            return Err(Error::BadLength {
                field: "body",
                stated: frame_len - HEADER_LEN,
                actual: written,
            });
        }
        Frame::new_unchecked(dst).fill_checksum();
        Ok(frame_len)
    }

    /// Emits into a fresh vector of exactly `buffer_len()` bytes.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut buf)?;
        Ok(buf)
    }
}

/// `FRAGMENT` is structural: it is set exactly when the body is a DATA
/// fragment, whatever the caller passed.
fn header_flags(flags: Flags, body: &Body<'_>) -> Flags {
    match body {
        Body::Data(d) => flags.without(Flags::FRAGMENT).with(d.flags()),
        Body::ReplayData(d) => flags.without(Flags::FRAGMENT).with(d.flags()),
        _ => flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::announce::AnnounceKind;
    use crate::wire::data::{DataPayload, FragmentRepr};
    use crate::wire::heartbeat::TopicAdvert;
    use crate::wire::nak::SeqRange;
    use crate::wire::replay::ReplayStatus;
    use crate::wire::{Offset, RecordRepr, Seq, TopicId};

    /// A whole DATA datagram, CRC computed independently (Python's
    /// `zlib.crc32` over bytes [0,24) + [28,69)).
    #[rustfmt::skip]
    const GOLDEN_DATA: [u8; 69] = [
        0xca, 0x57, 0x01, 0x01, // magic, version, type DATA
        0x00, 0x01, 0x00, 0x1c, // flags REPAIR, header_len 28
        0x00, 0x00, 0x00, 0x45, // frame_len 69
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // node
        0x0a, 0x0b, 0x0c, 0x0d, // session
        0x97, 0xef, 0xe8, 0x22, // crc32
        0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, // seq 256, 1 record
        0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 1, 0, 0, 0, 2,
        b'k', b'a', b'b',
    ];

    const RECORD: RecordRepr<'static> = RecordRepr {
        topic: TopicId(7),
        offset: Offset(1),
        timestamp_ms: 0x0102,
        key: b"k",
        value: b"ab",
    };

    fn record_bytes() -> Vec<u8> {
        let mut v = Vec::new();
        RECORD.emit_to_vec(&mut v).unwrap();
        v
    }

    fn node() -> NodeId {
        NodeId(0x0102_0304_0506_0708)
    }

    fn session() -> SessionId {
        SessionId(0x0a0b_0c0d)
    }

    /// One body of every frame type, borrowing `recs` for the record batches.
    fn every_body(recs: &[u8]) -> Vec<Body<'_>> {
        let ranges = vec![SeqRange {
            start: Seq(3),
            end: Seq(9),
        }];
        vec![
            Body::Data(DataRepr {
                seq: Seq(256),
                payload: DataPayload::Records {
                    count: 1,
                    bytes: recs,
                },
            }),
            Body::Data(DataRepr {
                seq: Seq(257),
                payload: DataPayload::Fragment(FragmentRepr {
                    total_len: 10,
                    frag_offset: 4,
                    chunk: b"abc",
                }),
            }),
            Body::Heartbeat(HeartbeatRepr {
                next_seq: Seq(10),
                lowest_repairable: Seq(2),
                interval_ms: 100,
                topics: vec![TopicAdvert {
                    topic: TopicId(7),
                    next_offset: Offset(2),
                    name: "md.x",
                }],
            }),
            Body::Nak(NakRepr {
                source: NodeId(5),
                ranges: ranges.clone(),
            }),
            Body::Ncf(NcfRepr {
                ranges: ranges.clone(),
            }),
            Body::Unrecoverable(UnrecoverableRepr {
                lowest_repairable: Seq(9),
                ranges,
            }),
            Body::Status(StatusRepr {
                source: NodeId(5),
                next_expected: Seq(9),
                receive_window: 4096,
            }),
            Body::ReplayRequest(ReplayRequestRepr {
                request_id: 1,
                log_node: NodeId(5),
                from: Offset(0),
                to: Offset(100),
                max_bytes: 65536,
                topic: "md.x",
            }),
            Body::ReplayData(ReplayDataRepr {
                request_id: 1,
                count: 1,
                records: recs,
                fragment: None,
            }),
            Body::ReplayEnd(ReplayEndRepr {
                request_id: 1,
                status: ReplayStatus::ChunkDone,
                next_offset: Offset(2),
                earliest_offset: Offset(0),
            }),
            Body::Announce(AnnounceRepr {
                kind: AnnounceKind::Alive,
                name: "h",
                extensions: &[],
            }),
            Body::Unknown {
                frame_type: 200,
                payload: b"future",
            },
        ]
    }

    #[test]
    fn data_datagram_emits_golden_bytes() {
        let recs = record_bytes();
        let body = every_body(&recs).swap_remove(0);
        let repr = FrameRepr::new(node(), session(), Flags::REPAIR, body);
        let mut buf = [0u8; 100];
        assert_eq!(repr.emit(&mut buf), Ok(69));
        assert_eq!(buf[..69], GOLDEN_DATA);
    }

    #[test]
    fn data_datagram_parses_golden_bytes() {
        let repr = FrameRepr::parse(&GOLDEN_DATA).unwrap();
        assert_eq!(repr.header.frame_type, FrameType::Data);
        assert_eq!(repr.header.flags, Flags::REPAIR);
        assert_eq!((repr.header.node, repr.header.session), (node(), session()));
        let Body::Data(d) = repr.body else {
            panic!("not data: {repr:?}")
        };
        assert_eq!(d.seq, Seq(256));
        assert_eq!(d.records().collect::<Vec<_>>(), vec![RECORD]);
    }

    #[test]
    fn every_frame_type_round_trips() {
        let recs = record_bytes();
        for body in every_body(&recs) {
            let repr = FrameRepr::new(node(), session(), Flags::default(), body);
            let bytes = repr.to_vec().unwrap();
            assert_eq!(bytes.len(), repr.buffer_len());
            assert_eq!(FrameRepr::parse(&bytes), Ok(repr));
        }
    }

    #[test]
    fn every_frame_truncated_at_every_length_is_an_error() {
        let recs = record_bytes();
        for body in every_body(&recs) {
            let bytes = FrameRepr::new(node(), session(), Flags::default(), body)
                .to_vec()
                .unwrap();
            for len in 0..bytes.len() {
                assert!(
                    FrameRepr::parse(&bytes[..len]).is_err(),
                    "{bytes:?} at {len}"
                );
            }
        }
    }

    #[test]
    fn every_frame_with_a_flipped_byte_gives_bad_checksum() {
        let recs = record_bytes();
        for body in every_body(&recs) {
            let bytes = FrameRepr::new(node(), session(), Flags::default(), body)
                .to_vec()
                .unwrap();
            // Magic, version and the two length fields are checked before
            // the CRC and give their own errors; every other byte is covered.
            for i in (3..6).chain(12..bytes.len()) {
                let mut b = bytes.clone();
                b[i] ^= 0x01;
                assert!(
                    matches!(FrameRepr::parse(&b), Err(Error::BadChecksum { .. })),
                    "byte {i} of {bytes:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_frame_type_is_a_body_not_an_error() {
        let repr = FrameRepr::new(
            node(),
            session(),
            Flags::default(),
            Body::Unknown {
                frame_type: 0,
                payload: &[1, 2],
            },
        );
        let bytes = repr.to_vec().unwrap();
        assert_eq!(
            FrameRepr::parse(&bytes).map(|f| f.body),
            Ok(Body::Unknown {
                frame_type: 0,
                payload: &[1, 2]
            })
        );
    }

    #[test]
    fn unknown_body_with_a_known_code_is_refused_on_emit() {
        let body = Body::Unknown {
            frame_type: 1,
            payload: &[],
        };
        let repr = FrameRepr::new(node(), session(), Flags::default(), body);
        assert!(matches!(repr.to_vec(), Err(Error::Malformed { .. })));
    }

    #[test]
    fn emit_derives_frame_type_and_fragment_flag_from_the_body() {
        let recs = record_bytes();
        let body = every_body(&recs).swap_remove(1);
        let mut repr = FrameRepr::new(node(), session(), Flags::REPAIR, body);
        assert_eq!(repr.header.flags, Flags::REPAIR.with(Flags::FRAGMENT));
        repr.header.frame_type = FrameType::Nak;
        repr.header.flags = Flags::REPAIR;
        let bytes = repr.to_vec().unwrap();
        let parsed = FrameRepr::parse(&bytes).unwrap();
        assert_eq!(parsed.header.frame_type, FrameType::Data);
        assert_eq!(parsed.header.flags, Flags::REPAIR.with(Flags::FRAGMENT));
    }

    #[test]
    fn rewrite_flags_marks_an_emitted_fragment_as_repair() {
        let recs = record_bytes();
        let body = every_body(&recs).swap_remove(1);
        let mut bytes = FrameRepr::new(node(), session(), Flags::default(), body)
            .to_vec()
            .unwrap();
        crate::wire::rewrite_flags(&mut bytes, Flags::REPAIR).unwrap();
        let parsed = FrameRepr::parse(&bytes).unwrap();
        assert_eq!(parsed.header.flags, Flags::REPAIR.with(Flags::FRAGMENT));
        assert!(matches!(parsed.body, Body::Data(d) if d.payload.is_fragment()));
    }

    #[test]
    fn emit_into_a_short_buffer_is_an_error() {
        let repr = FrameRepr::parse(&GOLDEN_DATA).unwrap();
        assert_eq!(
            repr.emit(&mut [0u8; 68]),
            Err(Error::BufferTooSmall { need: 69, have: 68 })
        );
    }
}
