//! Client subscriptions: which records go to which connection, in offset
//! order per (topic, source), each once.
//!
//! Every record reaches a subscriber *through the local log*: it is appended
//! first, then pushed. A subscription keeps a cursor (the next offset to
//! deliver) per (topic, source). A record that arrives exactly at a cursor
//! goes out at once (the live path, no disk read); a cursor behind the log's
//! tail (a subscriber starting from `earliest` or an offset, or one whose
//! connection was too backed up to take the live record) is served by
//! [`Subscriptions::catch_up`], which reads the log from the cursor. The
//! seam between catch-up and live therefore has no gap and no duplicate:
//! both advance the same cursor.
//!
//! Holes in the log (offsets it will never hold) and offsets below retention
//! reach the subscriber as explicit gap notices.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ipc::{ConnId, DeliveryRef, IpcServer, Response};
use crate::log::LogDir;
use crate::netconf::TopicPattern;
use crate::wire::ipc::{Commit, Failure, FailureKind, GapNotice, GapReason, StartFrom, Subscribe};
use crate::wire::{NodeId, Offset, RecordRepr};

/// Bytes queued to one connection above which live records wait in the log
/// (and catch-up stops) until the client has read some: a slow subscriber
/// costs disk reads later, never unbounded daemon memory. Above the default
/// `receive-window` (16 MiB): a repair at the head of a full reorder buffer
/// releases all of it at once, and a subscriber that keeps up should take
/// that burst from memory, not from the log (at 8 MiB a third of the
/// records of a 1 KiB stream at 5% loss were read back from the log).
const BACKLOG_LIMIT: usize = 32 << 20;
/// Record bytes read from the log per read, and reads per cursor per
/// catch-up round at most (the backlog limit usually stops it first).
const CATCH_UP_BYTES: usize = 256 << 10;
const CATCH_UP_READS: usize = 16;

#[derive(Default)]
pub(super) struct Subscriptions {
    subs: Vec<Sub>,
    /// Consumer groups' committed offsets (the next record to deliver).
    committed: HashMap<(String, String, NodeId), Offset>,
    /// Where `committed` is kept across restarts (`data-dir/commits.json`).
    commits_path: Option<PathBuf>,
    /// Next offsets sources advertised: where `latest` starts for a log this
    /// daemon is still filling by replay.
    advertised: HashMap<(Arc<str>, NodeId), Offset>,
    /// Per log, the offset below which every node had deleted the records
    /// when we asked (a replay answered "below retention"): holes under it
    /// are reported as retention gaps rather than "unavailable".
    retained_from: HashMap<(Arc<str>, NodeId), Offset>,
}

/// File name of the committed offsets in the data directory.
pub(super) const COMMITS_FILE: &str = "commits.json";

struct Sub {
    conn: ConnId,
    sub_id: u32,
    pattern: TopicPattern,
    from: StartFrom,
    group: Option<String>,
    cursors: HashMap<(Arc<str>, NodeId), Offset>,
    /// Some cursor may be behind its log's tail.
    lagging: bool,
}

impl Subscriptions {
    /// Starts with the committed offsets stored in `data_dir` (none when the
    /// file is missing; a damaged file is reported and ignored, since
    /// consumers then restart from `earliest`, which loses nothing).
    pub fn open(data_dir: &Path) -> Subscriptions {
        let path = data_dir.join(COMMITS_FILE);
        let mut committed = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<Vec<(String, String, u64, u64)>>(&text) {
                Ok(rows) => {
                    for (group, topic, source, offset) in rows {
                        committed.insert((group, topic, NodeId(source)), Offset(offset));
                    }
                }
                Err(e) => ::log::warn!(
                    "ignoring unreadable committed offsets path={} error={e}",
                    path.display()
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => ::log::warn!(
                "ignoring unreadable committed offsets path={} error={e}",
                path.display()
            ),
        }
        Subscriptions {
            subs: Vec::new(),
            committed,
            commits_path: Some(path),
            advertised: HashMap::new(),
            retained_from: HashMap::new(),
        }
    }

    /// Starts a subscription; its cursors for the logs that already exist
    /// are placed now, so `latest` means "from this moment".
    pub fn add(&mut self, conn: ConnId, s: Subscribe, log: &mut LogDir) -> Result<(), Failure> {
        let pattern: TopicPattern = s.pattern.parse().map_err(|reason| Failure {
            kind: FailureKind::InvalidRequest,
            message: format!("bad topic pattern {:?}: {reason}", s.pattern),
        })?;
        if self
            .subs
            .iter()
            .any(|x| x.conn == conn && x.sub_id == s.sub_id)
        {
            return Err(Failure {
                kind: FailureKind::InvalidRequest,
                message: format!("subscription id {} is already in use", s.sub_id),
            });
        }
        let mut sub = Sub {
            conn,
            sub_id: s.sub_id,
            pattern,
            from: s.from,
            group: s.group,
            cursors: HashMap::new(),
            lagging: true,
        };
        for (topic, source) in log.logs() {
            if sub.pattern.matches(&topic) {
                let topic: Arc<str> = Arc::from(topic);
                let start = self.start_for(&sub, &topic, source, log, None);
                sub.cursors.insert((topic, source), start);
            }
        }
        self.subs.push(sub);
        Ok(())
    }

    pub fn remove(&mut self, conn: ConnId, sub_id: u32) {
        self.subs
            .retain(|s| !(s.conn == conn && s.sub_id == sub_id));
    }

    pub fn remove_conn(&mut self, conn: ConnId) {
        self.subs.retain(|s| s.conn != conn);
    }

    /// Stores a consumer group's progress, in memory and in the data dir
    /// (written to a temporary file and renamed, so a crash leaves the old
    /// or the new table, never half of one).
    pub fn commit(&mut self, c: Commit) {
        let key = (c.group, c.topic, c.source);
        let slot = self.committed.entry(key).or_insert(c.offset);
        *slot = (*slot).max(c.offset);
        let Some(path) = &self.commits_path else {
            return;
        };
        let rows: Vec<(&str, &str, u64, u64)> = self
            .committed
            .iter()
            .map(|((g, t, s), o)| (g.as_str(), t.as_str(), s.0, o.0))
            .collect();
        let tmp = path.with_extension("json.tmp");
        let write = serde_json::to_vec(&rows)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = write {
            ::log::warn!(
                "cannot store committed offsets path={} error={e}",
                path.display()
            );
        }
    }

    /// A source advertised a topic whose next offset is `next`: `latest`
    /// subscriptions that do not know this log yet start there, so that the
    /// history a late-joining daemon replays is not taken for new records.
    pub fn note_topic(&mut self, topic: &Arc<str>, source: NodeId, next: Offset) {
        self.advertised.insert((topic.clone(), source), next);
        for sub in self.subs.iter_mut() {
            if sub.from == StartFrom::Latest && sub.pattern.matches(topic) {
                sub.cursors.entry((topic.clone(), source)).or_insert(next);
            }
        }
    }

    /// A replay found `source`'s log of `topic` starting at `earliest`.
    pub fn note_retention(&mut self, topic: &Arc<str>, source: NodeId, earliest: Offset) {
        let slot = self
            .retained_from
            .entry((topic.clone(), source))
            .or_insert(earliest);
        *slot = (*slot).max(earliest);
    }

    /// Whether some subscription may have records to read from the log.
    /// Whether a subscriber is behind and its connection can take more now.
    /// One whose output is full does not count: spinning would not help it,
    /// and its connection's WRITABLE event wakes the loop when it drains.
    pub fn is_lagging(&self, ipc: &IpcServer) -> bool {
        self.subs
            .iter()
            .any(|s| s.lagging && ipc.backlog(s.conn) < BACKLOG_LIMIT)
    }

    /// A run of records of one (topic, source) just written to the log, in
    /// offset order: each subscriber whose cursor is at a record and whose
    /// connection has room gets it live; one that is behind is marked
    /// lagging and served from the log by `catch_up`. The pattern match and
    /// the cursor lookup happen once per subscriber per run, not per record.
    #[allow(clippy::too_many_arguments)]
    pub fn on_records<'r>(
        &mut self,
        ipc: &mut IpcServer,
        log: &mut LogDir,
        topic: &Arc<str>,
        source: NodeId,
        source_name: Option<&str>,
        records: &[RecordRepr<'r>],
    ) {
        let Some(first) = records.first() else {
            return;
        };
        for k in 0..self.subs.len() {
            let Some(sub) = self.subs.get(k) else { break };
            if !sub.pattern.matches(topic) {
                continue;
            }
            let cursor_key = (topic.clone(), source);
            let start = match sub.cursors.get(&cursor_key) {
                Some(c) => *c,
                None => self.start_for(sub, topic, source, log, Some(first.offset)),
            };
            let Some(sub) = self.subs.get_mut(k) else {
                break;
            };
            let cursor = sub.cursors.entry(cursor_key).or_insert(start);
            for r in records {
                if *cursor == r.offset && ipc.backlog(sub.conn) < BACKLOG_LIMIT {
                    ipc.send_record(
                        sub.conn,
                        &DeliveryRef {
                            sub_id: sub.sub_id,
                            topic,
                            source,
                            source_name,
                            offset: r.offset,
                            timestamp_ms: r.timestamp_ms,
                            key: r.key,
                            value: r.value,
                        },
                    );
                    *cursor = r.offset.next();
                } else if *cursor <= r.offset {
                    sub.lagging = true;
                }
            }
        }
    }

    /// Serves lagging cursors from the log, a bounded amount per round.
    pub fn catch_up(
        &mut self,
        ipc: &mut IpcServer,
        log: &mut LogDir,
        names: &HashMap<NodeId, Arc<str>>,
    ) {
        for sub in self.subs.iter_mut() {
            if !sub.lagging {
                continue;
            }
            let mut behind = false;
            let keys: Vec<(Arc<str>, NodeId)> = sub.cursors.keys().cloned().collect();
            for key in keys {
                match catch_up_cursor(sub, &key, ipc, log, names, &self.retained_from) {
                    CatchUp::Done => {}
                    CatchUp::Behind => behind = true,
                    CatchUp::OutputFull => {
                        behind = true;
                        break;
                    }
                }
            }
            sub.lagging = behind;
        }
    }

    /// Where a subscription's cursor starts for a (topic, source) log.
    /// `first_live` is the offset of the record that made the log known to
    /// this subscription, when a record did.
    fn start_for(
        &self,
        sub: &Sub,
        topic: &str,
        source: NodeId,
        log: &mut LogDir,
        first_live: Option<Offset>,
    ) -> Offset {
        let (earliest, next) = match log.log(topic, source) {
            Ok(l) => (l.earliest_offset(), l.next_offset()),
            Err(_) => (Offset(0), Offset(0)),
        };
        match sub.from {
            StartFrom::Earliest => earliest,
            // A log that appears after the subscription started is all new,
            // except history a replay is filling in.
            StartFrom::Latest => {
                let advertised = self
                    .advertised
                    .get(&(Arc::from(topic), source))
                    .copied()
                    .unwrap_or(Offset(0));
                first_live.unwrap_or(next).min(next).max(advertised)
            }
            StartFrom::Offset(o) => o,
            StartFrom::Committed => sub
                .group
                .as_ref()
                .and_then(|g| {
                    self.committed
                        .get(&(g.clone(), topic.to_string(), source))
                        .copied()
                })
                .unwrap_or(earliest),
        }
    }
}

/// How far one cursor got in a catch-up round.
enum CatchUp {
    /// At the log's end (or nothing more can be read now).
    Done,
    /// Still behind: the reads ran out, or retention moved it.
    Behind,
    /// The connection's output is full: stop serving this subscriber.
    OutputFull,
}

/// Reads up to `CATCH_UP_READS` chunks of one (topic, source) log for a
/// lagging subscriber, with a gap notice for any hole. Several reads per
/// round: one read per round fell behind a stream that appends more than
/// that per round, so a subscriber that lagged once stayed on the log.
fn catch_up_cursor(
    sub: &mut Sub,
    key: &(Arc<str>, NodeId),
    ipc: &mut IpcServer,
    log: &mut LogDir,
    names: &HashMap<NodeId, Arc<str>>,
    retained_from: &HashMap<(Arc<str>, NodeId), Offset>,
) -> CatchUp {
    let (topic, source) = key;
    let (conn, sub_id) = (sub.conn, sub.sub_id);
    let name = names.get(source).map(|n| &**n);
    let gap = |ipc: &mut IpcServer, from: Offset, to: Offset, reason: GapReason| {
        ipc.send(
            conn,
            &Response::Gap(GapNotice {
                sub_id,
                topic: topic.to_string(),
                source: *source,
                from,
                to,
                reason,
            }),
        );
    };
    let mut moved_by_retention = false;
    let done = |moved: bool| {
        if moved {
            CatchUp::Behind
        } else {
            CatchUp::Done
        }
    };
    for _ in 0..CATCH_UP_READS {
        if ipc.backlog(conn) >= BACKLOG_LIMIT {
            return CatchUp::OutputFull;
        }
        let Some(cursor) = sub.cursors.get_mut(key) else {
            return done(moved_by_retention);
        };
        let Ok(topic_log) = log.log(topic, *source) else {
            return done(moved_by_retention);
        };
        if *cursor >= topic_log.next_offset() {
            return done(moved_by_retention);
        }
        match topic_log.read(*cursor, CATCH_UP_BYTES) {
            Ok(batch) => {
                if let Some(hole) = &batch.hole {
                    let reason = match retained_from.get(key) {
                        Some(&from) if hole.end <= from => GapReason::Retention,
                        _ => GapReason::Unavailable,
                    };
                    gap(ipc, hole.start, hole.end, reason);
                }
                if let Ok(records) = batch.records() {
                    for r in records {
                        ipc.send_record(
                            conn,
                            &DeliveryRef {
                                sub_id,
                                topic,
                                source: *source,
                                source_name: name,
                                offset: r.offset,
                                timestamp_ms: r.timestamp_ms,
                                key: r.key,
                                value: r.value,
                            },
                        );
                    }
                }
                if batch.next_offset <= *cursor {
                    // Nothing readable past the cursor yet.
                    return done(moved_by_retention);
                }
                *cursor = batch.next_offset;
            }
            Err(crate::log::Error::BelowRetention {
                requested,
                earliest,
            }) => {
                gap(ipc, requested, earliest, GapReason::Retention);
                *cursor = earliest;
                moved_by_retention = true;
            }
            Err(e) => {
                ::log::warn!(
                    "subscriber read failed topic={topic} source={source} offset={} error={e}",
                    *cursor
                );
                return done(moved_by_retention);
            }
        }
    }
    // The reads ran out before the log's end.
    CatchUp::Behind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_patterns_use_the_netconf_rule_syntax() {
        let p: TopicPattern = "md.*".parse().unwrap();
        assert!(p.matches("md.x.y"));
        assert!(!p.matches("md"));
        assert!("a*".parse::<TopicPattern>().is_err());
    }

    #[test]
    fn committed_offsets_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut subs = Subscriptions::open(dir.path());
        subs.commit(Commit {
            group: "g".into(),
            topic: "t".into(),
            source: NodeId(7),
            offset: Offset(42),
        });
        let again = Subscriptions::open(dir.path());
        let key = ("g".to_string(), "t".to_string(), NodeId(7));
        assert_eq!(again.committed.get(&key), Some(&Offset(42)));
    }
}
