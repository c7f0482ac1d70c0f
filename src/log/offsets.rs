//! Consumer groups' committed offsets at rest: one small file per group,
//! replaced whole and atomically (write a temporary file, fsync, rename,
//! fsync the directory), so a crash leaves either the old or the new table,
//! never a mix.
//!
//! ```text
//! data_dir/offsets/<escaped group>.offsets
//!
//! offset size field      why
//! 0      4    magic      "CLOF": refuse a file that is not ours
//! 4      1    version    1; a newer file is refused, not misread
//! 5      3    reserved   zero
//! 8      2    group_len  the group name, so a file is self-describing
//! 10     ..   group      UTF-8
//! ..     4    count      entries that follow
//! ..     ..   entries    count times:
//!   +0   8    source     node whose log the offset is in
//!   +8   4    partition
//!   +12  8    offset     next record the group has to process
//!   +20  2    topic_len
//!   +22  ..   topic      UTF-8
//! ..     4    crc32      of every byte before it (crc32fast)
//! ```
//!
//! A file that fails its checks is reported and skipped: the group then
//! relearns its offsets from the other daemons' announcements (at worst it
//! repeats records, never skips them).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::dir::{escape_topic, unescape_topic};
use super::{Error, Result};
use crate::wire::{NodeId, Offset};

const MAGIC: &[u8; 4] = b"CLOF";
const VERSION: u8 = 1;
const SUFFIX: &str = ".offsets";

/// One committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub source: NodeId,
    pub partition: u32,
    pub offset: Offset,
}

/// The directory of committed-offset files.
#[derive(Debug, Clone)]
pub struct OffsetsStore {
    dir: PathBuf,
}

impl OffsetsStore {
    /// Opens (creating) `dir`.
    pub fn open(dir: &Path) -> Result<OffsetsStore> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
        Ok(OffsetsStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path_for(&self, group: &str) -> Result<PathBuf> {
        Ok(self.dir.join(format!("{}{SUFFIX}", escape_topic(group)?)))
    }

    /// Replaces the file of `group` with `entries`, atomically.
    pub fn save(&self, group: &str, entries: &[CommittedOffset]) -> Result<()> {
        let path = self.path_for(group)?;
        let bytes = encode(group, entries).ok_or_else(|| Error::InvalidTopic {
            topic: group.to_string(),
            reason: "group or topic name longer than 65535 bytes",
        })?;
        let tmp = path.with_extension("offsets.tmp");
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        f.write_all(&bytes)
            .map_err(|e| Error::io(&tmp, "write", e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "rename", e))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            d.sync_all().map_err(|e| Error::io(&self.dir, "fsync", e))?;
        }
        Ok(())
    }

    /// Every group's offsets. Files that fail their checks come back as
    /// errors beside the good ones, for the caller to warn about.
    pub fn load(&self) -> (Vec<(String, Vec<CommittedOffset>)>, Vec<Error>) {
        let mut groups = Vec::new();
        let mut errors = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return (groups, vec![Error::io(&self.dir, "read", e)]),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_str().is_some_and(|s| s.ends_with(SUFFIX)))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(Error::io(&path, "read", e));
                    continue;
                }
            };
            match decode(&bytes) {
                Ok((group, list)) => {
                    let named = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(SUFFIX))
                        .and_then(unescape_topic);
                    if named.as_deref() != Some(group.as_str()) {
                        errors.push(corrupt(&path, 0, "file name does not match its group"));
                        continue;
                    }
                    groups.push((group, list));
                }
                Err((position, reason)) => errors.push(corrupt(&path, position, reason)),
            }
        }
        (groups, errors)
    }
}

fn corrupt(path: &Path, position: u64, reason: &'static str) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        position,
        reason,
    }
}

fn encode(group: &str, entries: &[CommittedOffset]) -> Option<Vec<u8>> {
    let mut b = Vec::with_capacity(64 + entries.len() * 40);
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&u16::try_from(group.len()).ok()?.to_be_bytes());
    b.extend_from_slice(group.as_bytes());
    b.extend_from_slice(&u32::try_from(entries.len()).ok()?.to_be_bytes());
    for e in entries {
        b.extend_from_slice(&e.source.0.to_be_bytes());
        b.extend_from_slice(&e.partition.to_be_bytes());
        b.extend_from_slice(&e.offset.0.to_be_bytes());
        b.extend_from_slice(&u16::try_from(e.topic.len()).ok()?.to_be_bytes());
        b.extend_from_slice(e.topic.as_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    Some(b)
}

type Decoded = (String, Vec<CommittedOffset>);

fn decode(bytes: &[u8]) -> std::result::Result<Decoded, (u64, &'static str)> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .ok_or((0, "shorter than a crc"))?;
    let (body, crc) = bytes.split_at(body_len);
    let stated = u32::from_be_bytes(crc.try_into().map_err(|_| (0, "shorter than a crc"))?);
    if crc32fast::hash(body) != stated {
        return Err((body_len as u64, "crc mismatch"));
    }
    let mut r = Cursor { b: body, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err((0, "bad magic"));
    }
    if r.take(1)? != [VERSION] {
        return Err((4, "unsupported version"));
    }
    r.take(3)?;
    let group = r.string()?;
    let count = r.u32()?;
    let mut list = Vec::new();
    for _ in 0..count {
        let source = NodeId(r.u64()?);
        let partition = r.u32()?;
        let offset = Offset(r.u64()?);
        let topic = r.string()?;
        list.push(CommittedOffset {
            topic,
            source,
            partition,
            offset,
        });
    }
    if r.pos != body.len() {
        return Err((r.pos as u64, "bytes after the last entry"));
    }
    Ok((group, list))
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], (u64, &'static str)> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or((self.pos as u64, "length overflow"))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or((self.pos as u64, "truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], (u64, &'static str)> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> std::result::Result<u32, (u64, &'static str)> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> std::result::Result<u64, (u64, &'static str)> {
        self.array().map(u64::from_be_bytes)
    }
    fn string(&mut self) -> std::result::Result<String, (u64, &'static str)> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        let at = self.pos as u64;
        let s = self.take(len)?;
        String::from_utf8(s.to_vec()).map_err(|_| (at, "name is not utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<CommittedOffset> {
        vec![
            CommittedOffset {
                topic: "orders.eu".into(),
                source: NodeId(7),
                partition: 3,
                offset: Offset(1234),
            },
            CommittedOffset {
                topic: "orders.us".into(),
                source: NodeId(9),
                partition: 0,
                offset: Offset(0),
            },
        ]
    }

    #[test]
    fn saved_offsets_load_back_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetsStore::open(&dir.path().join("offsets")).unwrap();
        store.save("workers", &entries()).unwrap();
        store.save("odd/name with spaces", &entries()[..1]).unwrap();
        store.save("workers", &entries()[1..]).unwrap();
        let (groups, errors) = store.load();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            groups,
            vec![
                ("odd/name with spaces".to_string(), entries()[..1].to_vec()),
                ("workers".to_string(), entries()[1..].to_vec()),
            ]
        );
    }

    #[test]
    fn a_damaged_file_is_reported_and_the_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetsStore::open(dir.path()).unwrap();
        store.save("a", &entries()).unwrap();
        store.save("b", &entries()).unwrap();
        let path = dir.path().join("a.offsets");
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (groups, errors) = store.load();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0, "b");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("crc mismatch"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode("g", &entries()).unwrap();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "len {len}");
        }
        assert!(decode(&bytes).is_ok());
    }
}
