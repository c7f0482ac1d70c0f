//! Client subscriptions, served from the local log.
//!
//! Every record a subscriber gets is read from this node's log, never
//! straight from the network: live records are appended first and read
//! back moments later (from the page cache), replayed ranges the same way.
//! So there is one path, no seam between "replay" and "live" where a record
//! could be lost or doubled, order per (topic, source) is the log's order,
//! and a slow subscriber costs memory only up to `max_backlog` (the log
//! absorbs the rest). A range the log does not hold reaches the subscriber
//! as an explicit gap notice.

use std::collections::BTreeMap;

use crate::log::{self, LogDir, ReadBatch};
use crate::netconf::TopicPattern;
use crate::wire::ipc::{DeliveryRef, GapNotice, GapReason, Response, StartFrom};
use crate::wire::{NodeId, Offset, Records};

use super::ipc::{ConnId, IpcServer};

/// Bytes read from a log per cursor per round.
const READ_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug)]
struct Sub {
    pattern: TopicPattern,
    from: StartFrom,
    /// Next offset to deliver per (topic, source) log.
    cursors: BTreeMap<(String, NodeId), Offset>,
}

/// Counters for `castlog stats`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SubStats {
    pub subscriptions: u64,
    pub records_sent: u64,
    pub gaps_sent: u64,
    pub backlog_pauses: u64,
    pub read_errors: u64,
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    subs: BTreeMap<(ConnId, u32), Sub>,
    batch: ReadBatch,
    stats: SubStats,
}

impl Subscriptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> SubStats {
        let mut s = self.stats.clone();
        s.subscriptions = self.subs.len() as u64;
        s
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Adds a subscription with a cursor on every existing log it matches.
    /// `committed` gives a consumer group's committed offset for a log,
    /// when `from` is `Committed` (none: start at the earliest).
    pub fn add(
        &mut self,
        conn: ConnId,
        sub_id: u32,
        pattern: TopicPattern,
        from: StartFrom,
        logs: &mut LogDir,
        committed: &dyn Fn(&str, NodeId) -> Option<Offset>,
    ) {
        let mut sub = Sub {
            pattern,
            from,
            cursors: BTreeMap::new(),
        };
        for (topic, source) in logs.logs() {
            if !sub.pattern.matches(&topic) {
                continue;
            }
            let Ok(log) = logs.log(&topic, source) else {
                continue;
            };
            let start = match from {
                StartFrom::Earliest => log.earliest_offset(),
                StartFrom::Latest => log.next_offset(),
                StartFrom::Offset(o) => o,
                StartFrom::Committed => committed(&topic, source).unwrap_or(log.earliest_offset()),
            };
            sub.cursors.insert((topic, source), start);
        }
        self.subs.insert((conn, sub_id), sub);
    }

    /// A log appeared (a new topic or source): subscriptions that match it
    /// take it from its first record (or from their explicit offset).
    pub fn on_new_log(&mut self, topic: &str, source: NodeId, earliest: Offset) {
        for sub in self.subs.values_mut() {
            if sub.pattern.matches(topic) {
                let start = match sub.from {
                    StartFrom::Offset(o) => o,
                    _ => earliest,
                };
                sub.cursors
                    .entry((topic.to_owned(), source))
                    .or_insert(start);
            }
        }
    }

    pub fn remove(&mut self, conn: ConnId, sub_id: u32) {
        self.subs.remove(&(conn, sub_id));
    }

    pub fn remove_conn(&mut self, conn: ConnId) {
        self.subs.retain(|(c, _), _| *c != conn);
    }

    /// Moves records from the logs to subscribers while their connections
    /// take them. Returns the number of records queued.
    pub fn pump(
        &mut self,
        logs: &mut LogDir,
        ipc: &mut IpcServer,
        names: &BTreeMap<NodeId, String>,
        max_backlog: usize,
    ) -> usize {
        let mut sent = 0;
        for (&(conn, sub_id), sub) in self.subs.iter_mut() {
            for ((topic, source), cursor) in sub.cursors.iter_mut() {
                loop {
                    if ipc.backlog(conn) > max_backlog {
                        self.stats.backlog_pauses += 1;
                        break;
                    }
                    let Ok(log) = logs.log(topic, *source) else {
                        self.stats.read_errors += 1;
                        break;
                    };
                    if *cursor >= log.next_offset() {
                        break;
                    }
                    match log.read_into(*cursor, READ_CHUNK_BYTES, &mut self.batch) {
                        Err(log::Error::BelowRetention { earliest, .. }) => {
                            send_gap(
                                ipc,
                                conn,
                                sub_id,
                                topic,
                                *source,
                                *cursor,
                                earliest,
                                GapReason::Retention,
                            );
                            self.stats.gaps_sent += 1;
                            *cursor = earliest;
                            continue;
                        }
                        Err(e) => {
                            ::log::warn!("subscription read failed topic={topic} source={source} offset={cursor} error={e}");
                            self.stats.read_errors += 1;
                            break;
                        }
                        Ok(()) => {}
                    }
                    if let Some(hole) = self.batch.hole.clone() {
                        if hole.end > *cursor {
                            send_gap(
                                ipc,
                                conn,
                                sub_id,
                                topic,
                                *source,
                                hole.start.max(*cursor),
                                hole.end,
                                GapReason::Unavailable,
                            );
                            self.stats.gaps_sent += 1;
                        }
                    }
                    if self.batch.count == 0 {
                        if self.batch.next_offset > *cursor {
                            *cursor = self.batch.next_offset;
                            continue;
                        }
                        break;
                    }
                    let name = names.get(source).map(String::as_str);
                    if let Ok(records) = Records::new_checked(&self.batch.bytes, self.batch.count) {
                        for r in records {
                            if r.offset < *cursor {
                                continue;
                            }
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
                            sent += 1;
                        }
                    }
                    *cursor = self.batch.next_offset;
                }
            }
        }
        self.stats.records_sent += sent as u64;
        sent
    }
}

#[allow(clippy::too_many_arguments)]
fn send_gap(
    ipc: &mut IpcServer,
    conn: ConnId,
    sub_id: u32,
    topic: &str,
    source: NodeId,
    from: Offset,
    to: Offset,
    reason: GapReason,
) {
    ipc.send(
        conn,
        &Response::Gap(GapNotice {
            sub_id,
            topic: topic.to_owned(),
            source,
            from,
            to,
            reason,
        }),
    );
}
