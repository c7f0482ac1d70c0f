//! HEARTBEAT: the source's periodic "I am here, and this is how far I got",
//! which reveals a lost tail (no later DATA would) and carries the topic
//! names receivers need.
//!
//! ```text
//! offset size field              why
//! 0      8    next_seq           highest seq sent + 1: a receiver below it
//!                                has lost the tail and NAKs
//! 8      8    lowest_repairable  oldest seq still in the retransmit window:
//!                                older gaps go straight to log replay
//! 16     4    interval_ms        the sender's current heartbeat interval, so
//!                                receivers time liveness against it
//! 20     2    topic_count        number of adverts that follow
//! 22     2    reserved           zero on send, ignored on receive
//! 24     ..   adverts            per topic, back to back:
//!   +0   4    topic_id           the session-local id used in records
//!   +4   8    next_offset        the topic's next log offset: reveals tail
//!                                loss per topic and lets a late joiner start
//!                                at `latest`
//!   +12  2    name_len           bytes of name
//!   +14  ..   name               UTF-8 topic name
//! ```
//!
//! `lowest_repairable <= next_seq` is checked on parse and on emit.

use super::codec::{len_u16, Reader, Writer};
use super::{Error, Offset, Result, Seq, TopicId};

const FRAME: &str = "heartbeat";
const FIXED_LEN: usize = 24;
/// Bytes of one advert before its name.
pub const ADVERT_HEADER_LEN: usize = 14;

/// A HEARTBEAT body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRepr<'a> {
    pub next_seq: Seq,
    pub lowest_repairable: Seq,
    pub interval_ms: u32,
    pub topics: Vec<TopicAdvert<'a>>,
}

/// One topic the source publishes on this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicAdvert<'a> {
    pub topic: TopicId,
    pub next_offset: Offset,
    pub name: &'a str,
}

impl<'a> TopicAdvert<'a> {
    pub fn buffer_len(&self) -> usize {
        ADVERT_HEADER_LEN + self.name.len()
    }
}

impl<'a> HeartbeatRepr<'a> {
    pub fn parse(body: &'a [u8]) -> Result<HeartbeatRepr<'a>> {
        let mut r = Reader::new(body);
        let next_seq = r.seq()?;
        let lowest_repairable = r.seq()?;
        let interval_ms = r.u32()?;
        let count = r.u16()?;
        r.skip(2)?;
        check_window(next_seq, lowest_repairable)?;
        // Bound the allocation by what the datagram can hold, not the count.
        let fit = body.len().saturating_sub(FIXED_LEN) / ADVERT_HEADER_LEN;
        let mut topics = Vec::with_capacity(usize::from(count).min(fit));
        for _ in 0..count {
            topics.push(TopicAdvert {
                topic: r.topic()?,
                next_offset: r.offset()?,
                name: r.str_u16(FRAME)?,
            });
        }
        r.finish("heartbeat topic_count")?;
        Ok(HeartbeatRepr {
            next_seq,
            lowest_repairable,
            interval_ms,
            topics,
        })
    }

    pub fn buffer_len(&self) -> usize {
        FIXED_LEN
            + self
                .topics
                .iter()
                .map(TopicAdvert::buffer_len)
                .sum::<usize>()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        check_window(self.next_seq, self.lowest_repairable)?;
        let count = len_u16(self.topics.len(), FRAME, "more than 65535 topics")?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u64(self.next_seq.0);
        w.u64(self.lowest_repairable.0);
        w.u32(self.interval_ms);
        w.u16(count);
        w.zeros(2);
        for t in &self.topics {
            let name_len = len_u16(t.name.len(), FRAME, "topic name longer than 65535 bytes")?;
            w.u32(t.topic.0);
            w.u64(t.next_offset.0);
            w.u16(name_len);
            w.put(t.name.as_bytes());
        }
        w.finish()
    }
}

fn check_window(next_seq: Seq, lowest_repairable: Seq) -> Result<()> {
    if lowest_repairable > next_seq {
        return Err(Error::Malformed {
            frame: FRAME,
            reason: "lowest_repairable above next_seq",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const GOLDEN: [u8; 58] = [
        0, 0, 0, 0, 0, 0, 0, 100, // next_seq 100
        0, 0, 0, 0, 0, 0, 0, 40, // lowest_repairable 40
        0x00, 0x00, 0x00, 0xfa, // interval_ms 250
        0x00, 0x02, // topic_count
        0x00, 0x00, // reserved
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 4, b'a', b'.', b'b', b'c', // 1 "a.bc" next 9
        0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xc3, 0xa9, // 2 "é" next 0
    ];

    fn golden_repr() -> HeartbeatRepr<'static> {
        HeartbeatRepr {
            next_seq: Seq(100),
            lowest_repairable: Seq(40),
            interval_ms: 250,
            topics: vec![
                TopicAdvert {
                    topic: TopicId(1),
                    next_offset: Offset(9),
                    name: "a.bc",
                },
                TopicAdvert {
                    topic: TopicId(2),
                    next_offset: Offset(0),
                    name: "é",
                },
            ],
        }
    }

    #[test]
    fn heartbeat_emits_golden_bytes() {
        let repr = golden_repr();
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf), Ok(58));
        assert_eq!(buf, GOLDEN);
    }

    #[test]
    fn heartbeat_parses_golden_bytes() {
        assert_eq!(HeartbeatRepr::parse(&GOLDEN), Ok(golden_repr()));
    }

    #[test]
    fn heartbeat_truncated_at_every_length_is_an_error() {
        for len in 0..GOLDEN.len() {
            assert!(HeartbeatRepr::parse(&GOLDEN[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn heartbeat_with_invalid_utf8_name_is_refused() {
        let mut b = GOLDEN;
        b[57] = 0xff;
        assert_eq!(
            HeartbeatRepr::parse(&b),
            Err(Error::Malformed {
                frame: "heartbeat",
                reason: "name is not valid utf-8"
            })
        );
    }

    #[test]
    fn heartbeat_with_lowest_repairable_above_next_seq_is_refused() {
        let mut b = GOLDEN;
        b[15] = 101;
        assert!(matches!(
            HeartbeatRepr::parse(&b),
            Err(Error::Malformed { .. })
        ));
        let repr = HeartbeatRepr {
            lowest_repairable: Seq(101),
            ..golden_repr()
        };
        assert!(repr.emit(&mut [0u8; 128]).is_err());
    }

    #[test]
    fn heartbeat_with_no_topics_is_24_bytes() {
        let repr = HeartbeatRepr {
            topics: vec![],
            ..golden_repr()
        };
        let mut buf = [0u8; 24];
        assert_eq!(repr.emit(&mut buf), Ok(24));
        assert_eq!(HeartbeatRepr::parse(&buf), Ok(repr));
    }
}
