//! REPLAY_REQUEST, REPLAY_DATA and REPLAY_END: the log layer of reliability.
//! A client asks a node for a topic's records of one source's log by offset;
//! the server answers with REPLAY_DATA frames up to `max_bytes`, then one
//! REPLAY_END saying where to continue. All three are unicast.
//!
//! REPLAY_REQUEST:
//!
//! ```text
//! offset size field       why
//! 0      4    request_id  chosen by the client; echoed in every answer so it
//!                         can match answers to requests and drop stale ones
//! 4      8    log_node    whose records: any node holding a copy may serve
//!                         another source's log
//! 12     8    from        first offset wanted
//! 20     8    to          end offset, exclusive; u64::MAX = to the tail
//! 28     4    max_bytes   record bytes the server may send for this request:
//!                         the client's flow control
//! 32     2    topic_len   bytes of topic
//! 34     ..   topic       UTF-8 topic name (names, not ids: ids are
//!                         session-local and the log outlives sessions)
//! ```
//!
//! REPLAY_DATA:
//!
//! ```text
//! offset size field         why
//! 0      4    request_id    the request this answers
//! 4      2    record_count  records that follow, checked on parse
//! 6      2    reserved      zero on send, ignored on receive
//! 8      ..   records       back to back, in the `record` layout (the log's
//!                           bytes, sent without re-encoding)
//! ```
//!
//! REPLAY_END:
//!
//! ```text
//! offset size field            why
//! 0      4    request_id       the request this ends
//! 4      1    status           0 chunk done, 1 reached end, 2 below
//!                              retention, 3 unknown topic, 4 busy
//! 5      3    reserved         zero on send, ignored on receive
//! 8      8    next_offset      where the client continues
//! 16     8    earliest_offset  earliest offset the server holds, so a client
//!                              below retention knows where the gap ends
//! ```

use super::codec::{len_u16, Reader, Writer};
use super::{Error, Flags, FragmentRepr, NodeId, Offset, Records, Result};

/// `to` value that means "up to the tail of the log".
pub const TO_TAIL: Offset = Offset(u64::MAX);
/// Body bytes before the records of a REPLAY_DATA.
pub const REPLAY_DATA_HEADER_LEN: usize = 8;
/// Bytes of a REPLAY_END body.
pub const REPLAY_END_LEN: usize = 24;

/// A REPLAY_REQUEST body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRequestRepr<'a> {
    pub request_id: u32,
    pub log_node: NodeId,
    pub from: Offset,
    pub to: Offset,
    pub max_bytes: u32,
    pub topic: &'a str,
}

impl<'a> ReplayRequestRepr<'a> {
    pub fn parse(body: &'a [u8]) -> Result<ReplayRequestRepr<'a>> {
        let mut r = Reader::new(body);
        let repr = ReplayRequestRepr {
            request_id: r.u32()?,
            log_node: r.node()?,
            from: r.offset()?,
            to: r.offset()?,
            max_bytes: r.u32()?,
            topic: r.str_u16("replay_request")?,
        };
        r.finish("replay_request topic_len")?;
        repr.check()?;
        Ok(repr)
    }

    fn check(&self) -> Result<()> {
        if self.from > self.to {
            return Err(Error::Malformed {
                frame: "replay_request",
                reason: "from offset above to offset",
            });
        }
        Ok(())
    }

    pub fn buffer_len(&self) -> usize {
        34 + self.topic.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        self.check()?;
        let topic_len = len_u16(
            self.topic.len(),
            "replay_request",
            "topic name longer than 65535 bytes",
        )?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u32(self.request_id);
        w.u64(self.log_node.0);
        w.u64(self.from.0);
        w.u64(self.to.0);
        w.u32(self.max_bytes);
        w.u16(topic_len);
        w.put(self.topic.as_bytes());
        w.finish()
    }
}

/// A piece of one record too large for a datagram, in a REPLAY_DATA frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayFragment<'a> {
    /// The record's offset: pieces can be matched to their record even when
    /// earlier datagrams of the answer were lost.
    pub offset: Offset,
    pub piece: FragmentRepr<'a>,
}

/// A REPLAY_DATA body: records borrowed from the datagram, or (header flag
/// `FRAGMENT`, `record_count` 0) one piece of a record too large for one
/// datagram: after the 8 bytes above, `offset` u64 (the record's), then the
/// DATA fragment layout: `total_len` u32, `frag_offset` u32, the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayDataRepr<'a> {
    pub request_id: u32,
    pub count: u16,
    /// Exactly `count` records (checked by `parse` and `emit`); empty for a
    /// fragment.
    pub records: &'a [u8],
    pub fragment: Option<ReplayFragment<'a>>,
}

impl<'a> ReplayDataRepr<'a> {
    /// Parses a REPLAY_DATA body; the header's `FRAGMENT` flag selects the
    /// layout.
    pub fn parse(body: &'a [u8], flags: Flags) -> Result<ReplayDataRepr<'a>> {
        let mut r = Reader::new(body);
        let request_id = r.u32()?;
        let count = r.u16()?;
        r.skip(2)?;
        if flags.contains(Flags::FRAGMENT) {
            if count != 0 {
                return Err(Error::Malformed {
                    frame: "REPLAY_DATA",
                    reason: "fragment with a nonzero record_count",
                });
            }
            let offset = Offset(r.u64()?);
            let piece = FragmentRepr {
                total_len: r.u32()?,
                frag_offset: r.u32()?,
                chunk: r.rest(),
            };
            piece.check()?;
            let frag = ReplayFragment { offset, piece };
            return Ok(ReplayDataRepr {
                request_id,
                count,
                records: &[],
                fragment: Some(frag),
            });
        }
        let records = r.rest();
        Records::new_checked(records, usize::from(count))?;
        Ok(ReplayDataRepr {
            request_id,
            count,
            records,
            fragment: None,
        })
    }

    /// The records, in log order (none for a fragment).
    pub fn records(&self) -> Records<'a> {
        Records::new_checked(self.records, usize::from(self.count))
            .unwrap_or_else(|_| super::data::no_records())
    }

    /// Header flags this body needs.
    pub fn flags(&self) -> Flags {
        if self.fragment.is_some() {
            Flags::FRAGMENT
        } else {
            Flags::default()
        }
    }

    pub fn buffer_len(&self) -> usize {
        match &self.fragment {
            Some(f) => REPLAY_DATA_HEADER_LEN + 16 + f.piece.chunk.len(),
            None => REPLAY_DATA_HEADER_LEN + self.records.len(),
        }
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u32(self.request_id);
        match &self.fragment {
            Some(f) => {
                f.piece.check()?;
                w.u16(0);
                w.zeros(2);
                w.u64(f.offset.0);
                w.u32(f.piece.total_len);
                w.u32(f.piece.frag_offset);
                w.put(f.piece.chunk);
            }
            None => {
                Records::new_checked(self.records, usize::from(self.count))?;
                w.u16(self.count);
                w.zeros(2);
                w.put(self.records);
            }
        }
        w.finish()
    }
}

/// Why a replay answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    /// `max_bytes` was reached; ask again from `next_offset`.
    ChunkDone,
    /// The server sent everything up to `to` (or its tail).
    ReachedEnd,
    /// `from` is below the earliest retained offset; records between them are
    /// gone from this server.
    BelowRetention,
    /// The server holds no log for this (log_node, topic).
    UnknownTopic,
    /// The server is serving too many replays; retry later.
    Busy,
    Unknown(u8),
}

impl ReplayStatus {
    pub fn from_code(code: u8) -> ReplayStatus {
        match code {
            0 => ReplayStatus::ChunkDone,
            1 => ReplayStatus::ReachedEnd,
            2 => ReplayStatus::BelowRetention,
            3 => ReplayStatus::UnknownTopic,
            4 => ReplayStatus::Busy,
            other => ReplayStatus::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            ReplayStatus::ChunkDone => 0,
            ReplayStatus::ReachedEnd => 1,
            ReplayStatus::BelowRetention => 2,
            ReplayStatus::UnknownTopic => 3,
            ReplayStatus::Busy => 4,
            ReplayStatus::Unknown(code) => code,
        }
    }
}

/// A REPLAY_END body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayEndRepr {
    pub request_id: u32,
    pub status: ReplayStatus,
    pub next_offset: Offset,
    pub earliest_offset: Offset,
}

impl ReplayEndRepr {
    pub fn parse(body: &[u8]) -> Result<ReplayEndRepr> {
        let mut r = Reader::new(body);
        let request_id = r.u32()?;
        let status = ReplayStatus::from_code(r.u8()?);
        r.skip(3)?;
        let repr = ReplayEndRepr {
            request_id,
            status,
            next_offset: r.offset()?,
            earliest_offset: r.offset()?,
        };
        r.finish("replay_end length")?;
        Ok(repr)
    }

    pub fn buffer_len(&self) -> usize {
        REPLAY_END_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut w = Writer::new(buf, REPLAY_END_LEN)?;
        w.u32(self.request_id);
        w.u8(self.status.code());
        w.zeros(3);
        w.u64(self.next_offset.0);
        w.u64(self.earliest_offset.0);
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{RecordRepr, TopicId};

    #[rustfmt::skip]
    const GOLDEN_REQUEST: [u8; 40] = [
        0x00, 0x00, 0x00, 0x07, // request_id 7
        0, 0, 0, 0, 0, 0, 0, 0x2a, // log_node 42
        0, 0, 0, 0, 0, 0, 0, 10, // from 10
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // to: tail
        0x00, 0x01, 0x00, 0x00, // max_bytes 65536
        0x00, 0x06, b'm', b'd', b'.', b'a', b'b', b'c', // topic
    ];

    fn request() -> ReplayRequestRepr<'static> {
        ReplayRequestRepr {
            request_id: 7,
            log_node: NodeId(42),
            from: Offset(10),
            to: TO_TAIL,
            max_bytes: 65536,
            topic: "md.abc",
        }
    }

    #[rustfmt::skip]
    const GOLDEN_DATA: [u8; 36] = [
        0x00, 0x00, 0x00, 0x07, // request_id 7
        0x00, 0x01, // record_count
        0x00, 0x00, // reserved
        0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 2,
        b'h', b'i', // record: topic 3, offset 10, ts 5, no key, value "hi"
    ];

    fn record() -> RecordRepr<'static> {
        RecordRepr {
            topic: TopicId(3),
            offset: Offset(10),
            timestamp_ms: 5,
            key: b"",
            value: b"hi",
        }
    }

    #[rustfmt::skip]
    const GOLDEN_END: [u8; 24] = [
        0x00, 0x00, 0x00, 0x07, // request_id 7
        0x02, // status: below retention
        0x00, 0x00, 0x00, // reserved
        0, 0, 0, 0, 0, 0, 0, 11, // next_offset 11
        0, 0, 0, 0, 0, 0, 0, 20, // earliest_offset 20
    ];

    fn end() -> ReplayEndRepr {
        ReplayEndRepr {
            request_id: 7,
            status: ReplayStatus::BelowRetention,
            next_offset: Offset(11),
            earliest_offset: Offset(20),
        }
    }

    #[test]
    fn replay_request_emits_and_parses_golden_bytes() {
        let mut buf = vec![0u8; request().buffer_len()];
        assert_eq!(request().emit(&mut buf), Ok(40));
        assert_eq!(buf, GOLDEN_REQUEST);
        assert_eq!(ReplayRequestRepr::parse(&GOLDEN_REQUEST), Ok(request()));
    }

    #[test]
    fn replay_data_emits_and_parses_golden_bytes() {
        let mut recs = Vec::new();
        record().emit_to_vec(&mut recs).unwrap();
        let repr = ReplayDataRepr {
            request_id: 7,
            count: 1,
            records: &recs,
            fragment: None,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(36));
        assert_eq!(buf, GOLDEN_DATA);
        let parsed = ReplayDataRepr::parse(&GOLDEN_DATA, Flags::default()).unwrap();
        assert_eq!(parsed, repr);
        assert_eq!(parsed.records().collect::<Vec<_>>(), vec![record()]);
    }

    #[test]
    fn replay_end_emits_and_parses_golden_bytes() {
        let mut buf = [0u8; 24];
        assert_eq!(end().emit(&mut buf), Ok(24));
        assert_eq!(buf, GOLDEN_END);
        assert_eq!(ReplayEndRepr::parse(&GOLDEN_END), Ok(end()));
    }

    #[test]
    fn replay_frames_truncated_at_every_length_are_errors() {
        for len in 0..GOLDEN_REQUEST.len() {
            assert!(
                ReplayRequestRepr::parse(&GOLDEN_REQUEST[..len]).is_err(),
                "len {len}"
            );
        }
        for len in 0..GOLDEN_DATA.len() {
            assert!(
                ReplayDataRepr::parse(&GOLDEN_DATA[..len], Flags::default()).is_err(),
                "len {len}"
            );
        }
        for len in 0..GOLDEN_END.len() {
            assert!(
                ReplayEndRepr::parse(&GOLDEN_END[..len]).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn replay_request_with_from_above_to_is_refused() {
        let bad = ReplayRequestRepr {
            from: Offset(5),
            to: Offset(4),
            ..request()
        };
        assert!(bad.emit(&mut [0u8; 64]).is_err());
        let mut b = GOLDEN_REQUEST;
        b[20..28].copy_from_slice(&9u64.to_be_bytes());
        assert!(matches!(
            ReplayRequestRepr::parse(&b),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn unknown_replay_status_is_kept() {
        let mut b = GOLDEN_END;
        b[4] = 77;
        assert_eq!(
            ReplayEndRepr::parse(&b).map(|e| e.status),
            Ok(ReplayStatus::Unknown(77))
        );
        for code in 0..=4u8 {
            assert_eq!(ReplayStatus::from_code(code).code(), code);
            assert!(!matches!(
                ReplayStatus::from_code(code),
                ReplayStatus::Unknown(_)
            ));
        }
    }

    #[test]
    fn replay_fragment_round_trips_and_checks_its_bounds() {
        let chunk = [7u8; 10];
        let repr = ReplayDataRepr {
            request_id: 3,
            count: 0,
            records: &[],
            fragment: Some(ReplayFragment {
                offset: Offset(42),
                piece: FragmentRepr {
                    total_len: 100,
                    frag_offset: 90,
                    chunk: &chunk,
                },
            }),
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(buf.len()));
        assert_eq!(ReplayDataRepr::parse(&buf, Flags::FRAGMENT), Ok(repr));
        // Without the flag the same bytes are not a valid record batch.
        assert!(ReplayDataRepr::parse(&buf, Flags::default()).is_err());
        // A piece past total_len is refused.
        let bad = ReplayDataRepr {
            fragment: Some(ReplayFragment {
                offset: Offset(42),
                piece: FragmentRepr {
                    total_len: 95,
                    frag_offset: 90,
                    chunk: &chunk,
                },
            }),
            ..repr
        };
        assert!(bad.emit(&mut buf).is_err());
        // Cut inside the fixed part: an error (the chunk's own length is
        // the frame's, which the header's frame_len and CRC protect).
        for len in 0..24 {
            assert!(ReplayDataRepr::parse(&buf[..len], Flags::FRAGMENT).is_err());
        }
    }
}
