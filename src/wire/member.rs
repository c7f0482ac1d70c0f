//! Consumer-group facts carried as ANNOUNCE extensions (TLVs, see
//! `announce.rs`): which consumer-group members a daemon has, and the
//! offsets those groups committed. No new frame type is needed, and a node
//! that does not know these types skips them.
//!
//! ```text
//! type 1 MEMBER_SET (12 bytes): this frame holds part `part` of `parts`
//!                               of the sender's member list `version`
//! offset size field     why
//! 0      8    version   bumped on every change of the sender's local
//!                       members: parts of different versions never mix
//! 8      2    part      0-based index of this frame's part
//! 10     2    parts     how many parts the list has (>= 1); a receiver
//!                       replaces its copy only when it holds them all
//!
//! type 2 MEMBER: one local member of the sender (after a MEMBER_SET)
//! 0      1    mode          0 clustering, 1 broadcast; others: unknown
//! 1      1    reserved      zero on send, ignored on receive
//! 2      2    pattern_count topic patterns that follow the names
//! 4      8    epoch         the sender's assignment epoch of the group,
//!                           so that epochs converge to the highest
//! 12     2    group_len
//! 14     ..   group         UTF-8 consumer-group name
//! ..     2    member_len
//! ..     ..   member        UTF-8 member id, unique on the sender
//! ..     ..   patterns      pattern_count times: len u16, UTF-8 pattern
//!                           (`name`, `prefix.*` or `*`)
//!
//! type 3 COMMIT: one committed offset (max-merged by receivers)
//! 0      8    source     node whose log the offset is in
//! 8      4    partition
//! 12     8    offset     next record to deliver (Kafka's convention)
//! 20     2    group_len
//! 22     ..   group
//! ..     2    topic_len
//! ..     ..   topic
//! ```
//!
//! Each TLV must be consumed exactly: trailing bytes inside a value refuse
//! the TLV (the sender and receiver disagree on its layout).

use super::codec::{len_u16, Reader, Writer};
use super::{Error, Extension, NodeId, Offset, Result};

const FRAME: &str = "member extension";

/// ANNOUNCE extension type of [`MemberSetRepr`].
pub const EXT_MEMBER_SET: u8 = 1;
/// ANNOUNCE extension type of [`MemberRepr`].
pub const EXT_MEMBER: u8 = 2;
/// ANNOUNCE extension type of [`CommitRepr`].
pub const EXT_COMMIT: u8 = 3;

/// Bytes of a MEMBER_SET value.
pub const MEMBER_SET_LEN: usize = 12;

/// How the members of one consumer group share a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberMode {
    /// Each record goes to one member of the group (by partition).
    Clustering,
    /// Each member gets every record.
    Broadcast,
    /// A code from a newer node; such a member takes no partitions.
    Unknown(u8),
}

impl MemberMode {
    pub fn from_code(code: u8) -> MemberMode {
        match code {
            0 => MemberMode::Clustering,
            1 => MemberMode::Broadcast,
            other => MemberMode::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            MemberMode::Clustering => 0,
            MemberMode::Broadcast => 1,
            MemberMode::Unknown(code) => code,
        }
    }
}

/// MEMBER_SET: which part of which member-list version a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSetRepr {
    pub version: u64,
    pub part: u16,
    pub parts: u16,
}

impl MemberSetRepr {
    pub fn parse(value: &[u8]) -> Result<MemberSetRepr> {
        let mut r = Reader::new(value);
        let version = r.u64()?;
        let part = r.u16()?;
        let parts = r.u16()?;
        r.finish("member_set")?;
        check_parts(part, parts)?;
        Ok(MemberSetRepr {
            version,
            part,
            parts,
        })
    }

    pub fn buffer_len(&self) -> usize {
        MEMBER_SET_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        check_parts(self.part, self.parts)?;
        let mut w = Writer::new(buf, MEMBER_SET_LEN)?;
        w.u64(self.version);
        w.u16(self.part);
        w.u16(self.parts);
        w.finish()
    }

    /// Appends this as a TLV to ANNOUNCE extension bytes.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut value = [0u8; MEMBER_SET_LEN];
        self.emit(&mut value)?;
        Extension {
            kind: EXT_MEMBER_SET,
            value: &value,
        }
        .emit_to_vec(out)
    }
}

/// `part < parts` and `parts >= 1`, or the set could never complete.
fn check_parts(part: u16, parts: u16) -> Result<()> {
    if parts == 0 || part >= parts {
        return Err(Error::Malformed {
            frame: FRAME,
            reason: "member set part is not below its part count",
        });
    }
    Ok(())
}

/// MEMBER: one consumer-group member on the sending node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRepr<'a> {
    pub mode: MemberMode,
    pub epoch: u64,
    pub group: &'a str,
    pub member: &'a str,
    pub patterns: Vec<&'a str>,
}

impl<'a> MemberRepr<'a> {
    pub fn parse(value: &'a [u8]) -> Result<MemberRepr<'a>> {
        let mut r = Reader::new(value);
        let mode = MemberMode::from_code(r.u8()?);
        r.skip(1)?;
        let count = r.u16()?;
        let epoch = r.u64()?;
        let group = r.str_u16(FRAME)?;
        let member = r.str_u16(FRAME)?;
        // Each pattern needs at least its 2-byte length, so `count` cannot
        // make us reserve more than the value could hold.
        let mut patterns = Vec::with_capacity(usize::from(count).min(r.remaining() / 2));
        for _ in 0..count {
            patterns.push(r.str_u16(FRAME)?);
        }
        r.finish("member")?;
        Ok(MemberRepr {
            mode,
            epoch,
            group,
            member,
            patterns,
        })
    }

    pub fn buffer_len(&self) -> usize {
        14 + self.group.len()
            + 2
            + self.member.len()
            + self.patterns.iter().map(|p| 2 + p.len()).sum::<usize>()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let count = len_u16(self.patterns.len(), FRAME, "more than 65535 patterns")?;
        let group_len = len_u16(self.group.len(), FRAME, "group name longer than 65535")?;
        let member_len = len_u16(self.member.len(), FRAME, "member id longer than 65535")?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u8(self.mode.code());
        w.zeros(1);
        w.u16(count);
        w.u64(self.epoch);
        w.u16(group_len);
        w.put(self.group.as_bytes());
        w.u16(member_len);
        w.put(self.member.as_bytes());
        for p in &self.patterns {
            w.u16(len_u16(p.len(), FRAME, "pattern longer than 65535")?);
            w.put(p.as_bytes());
        }
        w.finish()
    }

    /// Appends this as a TLV to ANNOUNCE extension bytes.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut value = vec![0u8; self.buffer_len()];
        self.emit(&mut value)?;
        Extension {
            kind: EXT_MEMBER,
            value: &value,
        }
        .emit_to_vec(out)
    }
}

/// COMMIT: a consumer group's committed offset of one partition of one
/// source's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRepr<'a> {
    pub source: NodeId,
    pub partition: u32,
    pub offset: Offset,
    pub group: &'a str,
    pub topic: &'a str,
}

impl<'a> CommitRepr<'a> {
    pub fn parse(value: &'a [u8]) -> Result<CommitRepr<'a>> {
        let mut r = Reader::new(value);
        let source = r.node()?;
        let partition = r.u32()?;
        let offset = r.offset()?;
        let group = r.str_u16(FRAME)?;
        let topic = r.str_u16(FRAME)?;
        r.finish("commit")?;
        Ok(CommitRepr {
            source,
            partition,
            offset,
            group,
            topic,
        })
    }

    pub fn buffer_len(&self) -> usize {
        24 + self.group.len() + self.topic.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let group_len = len_u16(self.group.len(), FRAME, "group name longer than 65535")?;
        let topic_len = len_u16(self.topic.len(), FRAME, "topic longer than 65535")?;
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.u64(self.source.0);
        w.u32(self.partition);
        w.u64(self.offset.0);
        w.u16(group_len);
        w.put(self.group.as_bytes());
        w.u16(topic_len);
        w.put(self.topic.as_bytes());
        w.finish()
    }

    /// Appends this as a TLV to ANNOUNCE extension bytes.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut value = vec![0u8; self.buffer_len()];
        self.emit(&mut value)?;
        Extension {
            kind: EXT_COMMIT,
            value: &value,
        }
        .emit_to_vec(out)
    }
}

/// One consumer-group extension of an ANNOUNCE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberExt<'a> {
    Set(MemberSetRepr),
    Member(MemberRepr<'a>),
    Commit(CommitRepr<'a>),
}

impl<'a> MemberExt<'a> {
    /// Parses an extension of one of this file's types; `Ok(None)` for any
    /// other type (it belongs to someone else, or to a newer version).
    pub fn parse(ext: Extension<'a>) -> Result<Option<MemberExt<'a>>> {
        Ok(Some(match ext.kind {
            EXT_MEMBER_SET => MemberExt::Set(MemberSetRepr::parse(ext.value)?),
            EXT_MEMBER => MemberExt::Member(MemberRepr::parse(ext.value)?),
            EXT_COMMIT => MemberExt::Commit(CommitRepr::parse(ext.value)?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AnnounceKind, AnnounceRepr};

    #[rustfmt::skip]
    const MEMBER_GOLDEN: [u8; 30] = [
        0x00,                   // mode: clustering
        0x00,                   // reserved
        0x00, 0x02,             // pattern_count
        0, 0, 0, 0, 0, 0, 0, 7, // epoch
        0x00, 0x02, b'g', b'1', // group
        0x00, 0x02, b'm', b'a', // member
        0x00, 0x04, b'm', b'd', b'.', b'*', // pattern 1
        0x00, 0x01, b'*',       // pattern 2
        0xff,                   // (not part of the value: cut below)
    ];

    #[rustfmt::skip]
    const COMMIT_GOLDEN: [u8; 30] = [
        0, 0, 0, 0, 0, 0, 0x03, 0xe9, // source 1001
        0, 0, 0, 5,                   // partition
        0, 0, 0, 0, 0, 0, 0x01, 0x00, // offset 256
        0x00, 0x02, b'g', b'1',       // group
        0x00, 0x04, b'm', b'd', b'.', b'a', // topic
    ];

    fn member() -> MemberRepr<'static> {
        MemberRepr {
            mode: MemberMode::Clustering,
            epoch: 7,
            group: "g1",
            member: "ma",
            patterns: vec!["md.*", "*"],
        }
    }

    fn commit() -> CommitRepr<'static> {
        CommitRepr {
            source: NodeId(1001),
            partition: 5,
            offset: Offset(256),
            group: "g1",
            topic: "md.a",
        }
    }

    #[test]
    fn member_emits_and_parses_golden_bytes() {
        let m = member();
        let mut buf = vec![0u8; m.buffer_len()];
        assert_eq!(m.emit(&mut buf), Ok(29));
        assert_eq!(buf, MEMBER_GOLDEN[..29]);
        assert_eq!(MemberRepr::parse(&MEMBER_GOLDEN[..29]), Ok(m));
    }

    #[test]
    fn commit_emits_and_parses_golden_bytes() {
        let c = commit();
        let mut buf = vec![0u8; c.buffer_len()];
        assert_eq!(c.emit(&mut buf), Ok(30));
        assert_eq!(buf, COMMIT_GOLDEN);
        assert_eq!(CommitRepr::parse(&COMMIT_GOLDEN), Ok(c));
    }

    #[test]
    fn member_set_round_trips_and_refuses_a_part_past_the_count() {
        let s = MemberSetRepr {
            version: 3,
            part: 1,
            parts: 2,
        };
        let mut buf = [0u8; MEMBER_SET_LEN];
        assert_eq!(s.emit(&mut buf), Ok(12));
        assert_eq!(buf, [0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 0, 2]);
        assert_eq!(MemberSetRepr::parse(&buf), Ok(s));
        assert!(MemberSetRepr::parse(&[0, 0, 0, 0, 0, 0, 0, 3, 0, 2, 0, 2]).is_err());
        assert!(MemberSetRepr::parse(&[0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_an_error() {
        for len in 0..29 {
            assert!(
                MemberRepr::parse(&MEMBER_GOLDEN[..len]).is_err(),
                "len {len}"
            );
        }
        assert!(MemberRepr::parse(&MEMBER_GOLDEN).is_err());
        for len in 0..30 {
            assert!(
                CommitRepr::parse(&COMMIT_GOLDEN[..len]).is_err(),
                "len {len}"
            );
        }
        let mut long = COMMIT_GOLDEN.to_vec();
        long.push(0);
        assert!(CommitRepr::parse(&long).is_err());
    }

    #[test]
    fn a_huge_pattern_count_does_not_allocate_or_panic() {
        let mut v = MEMBER_GOLDEN[..29].to_vec();
        v[2] = 0xff;
        v[3] = 0xff;
        assert!(MemberRepr::parse(&v).is_err());
    }

    #[test]
    fn extensions_ride_in_an_announce_and_unknown_types_are_skipped() {
        let mut ext = Vec::new();
        MemberSetRepr {
            version: 1,
            part: 0,
            parts: 1,
        }
        .emit_to_vec(&mut ext)
        .unwrap();
        member().emit_to_vec(&mut ext).unwrap();
        Extension {
            kind: 200,
            value: &[1, 2, 3],
        }
        .emit_to_vec(&mut ext)
        .unwrap();
        commit().emit_to_vec(&mut ext).unwrap();
        let a = AnnounceRepr {
            kind: AnnounceKind::Alive,
            name: "n",
            extensions: &ext,
        };
        let mut buf = vec![0u8; a.buffer_len()];
        a.emit(&mut buf).unwrap();
        let parsed = AnnounceRepr::parse(&buf).unwrap();
        let got: Vec<_> = parsed
            .extensions()
            .filter_map(|e| MemberExt::parse(e).unwrap())
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], MemberExt::Member(member()));
        assert_eq!(got[2], MemberExt::Commit(commit()));
    }

    #[test]
    fn unknown_member_mode_is_kept() {
        assert_eq!(MemberMode::from_code(9), MemberMode::Unknown(9));
        for code in 0..=1u8 {
            assert_eq!(MemberMode::from_code(code).code(), code);
        }
    }
}
