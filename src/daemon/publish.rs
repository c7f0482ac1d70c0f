//! Publishing: a client's record goes into the local log first (which
//! assigns its offset and makes it durable), then to the protocol. While the
//! group's flow window is shut (the slowest live receiver is too far
//! behind), logged records wait here in order; sync publishes are answered
//! when the group acknowledges their ticket, or fail at their deadline
//! naming the receivers still behind.
//!
//! The log is the buffer: a waiting record keeps its bytes in memory only
//! while the waiting bytes stay under [`STALLED_PAYLOAD_MAX_BYTES`]; past
//! that it is read back from the log when the window opens. So a fast
//! one-way publisher facing slow receivers costs disk reads, not daemon
//! memory, and nothing it published is refused.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ipc::{ConnId, Response};
use super::{clock, Daemon};
use crate::log::NewRecord;
use crate::proto::{GroupId, PublishError, Ticket};
use crate::wire::ipc::{Failure, FailureKind, PublishBatch, PublishMode};
use crate::wire::{Offset, RecordRepr, TopicId};

/// Sync publish timeout when the client sends 0.
const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Records held back per group by flow control before new publishes are
/// refused with `Backpressure` (each costs about 64 bytes without its
/// payload): a last bound for receivers that never catch up.
const STALLED_MAX: usize = 4 << 20;
/// Payload bytes of waiting records kept in memory (all groups); beyond
/// it, waiting records are read back from the log.
pub(super) const STALLED_PAYLOAD_MAX_BYTES: usize = 64 << 20;
/// Waiting payload bytes at which the daemon stops reading publishing
/// clients, and below which it starts again. Reading on while the window is
/// shut would only move records from the client's socket into the log and
/// read them back one by one later; pausing first keeps a fast one-way
/// publisher in memory and the spill above for several publishers at once.
/// Small, because a waiting record costs a queue entry and a second pass,
/// and the client's socket buffer holds the rest for free.
const PAUSE_PUBLISHERS_AT_BYTES: usize = 4 << 20;
const RESUME_PUBLISHERS_AT_BYTES: usize = 1 << 20;
/// The same in records, for small records.
const PAUSE_PUBLISHERS_AT_RECORDS: usize = 16 << 10;
const RESUME_PUBLISHERS_AT_RECORDS: usize = 4 << 10;

/// A record already in the log, waiting for the flow window to send it.
pub(super) struct Stalled {
    topic: Arc<str>,
    offset: Offset,
    /// The record's bytes, or `None` when they are to be read from the log.
    payload: Option<Payload>,
    reply: Option<Reply>,
}

struct Payload {
    timestamp_ms: u64,
    key: Bytes,
    value: Bytes,
}

/// Who is told about a record: connection, request id, mode, sync deadline.
type Reply = (ConnId, u64, PublishMode, Instant);

/// One logged record on its way to the protocol, borrowed (from a PUBLISH
/// frame, or from a waiting record's payload).
struct Outgoing<'a> {
    topic: &'a str,
    offset: Offset,
    timestamp_ms: u64,
    key: &'a [u8],
    value: &'a [u8],
    reply: Option<Reply>,
}

impl Stalled {
    fn payload_len(&self) -> usize {
        self.payload
            .as_ref()
            .map_or(0, |p| p.key.len() + p.value.len())
    }
}

/// A sync publish waiting for the group's acknowledgement.
pub(super) struct PendingSync {
    conn: ConnId,
    request_id: u64,
    offset: Offset,
    deadline: Instant,
}

impl Daemon {
    /// Publishes a run of same-topic PUBLISH frames (in request order): one
    /// log write for all their records (which assigns their offsets), then
    /// each record goes to local subscribers, gets its async answer, and is
    /// handed to the protocol or held while the flow window is shut.
    /// Batching the log write is what keeps a fast publisher from costing one
    /// system call per record; reading the records as slices of their frames
    /// is what keeps it from costing an allocation (or a shared handle) per
    /// record while the window is open.
    pub(super) fn publish_run(&mut self, now: Instant, run: Vec<(ConnId, PublishBatch)>) {
        let Some(topic) = run.first().map(|(_, b)| b.topic.clone()) else {
            return;
        };
        let refuse = |daemon: &mut Daemon,
                      run: &[(ConnId, PublishBatch)],
                      kind: FailureKind,
                      message: String| {
            for (conn, b) in run {
                daemon.stats.publishes_failed += b.len() as u64;
                if b.mode == PublishMode::OneWay {
                    continue;
                }
                for e in b.entries() {
                    let failure = Failure {
                        kind: kind.clone(),
                        message: message.clone(),
                    };
                    daemon.ipc.send(
                        *conn,
                        &Response::PublishFailed {
                            request_id: e.request_id,
                            failure,
                        },
                    );
                }
            }
        };
        let Some(group) = self.route(&topic) else {
            let message = format!("no netconf [[topic]] rule matches topic {topic:?}");
            return refuse(self, &run, FailureKind::UnknownTopicRule, message);
        };
        let allowed = self
            .netconf
            .rule_for(&topic)
            .and_then(|r| r.publishers.as_ref())
            .is_none_or(|names| names.contains(&self.name));
        if !allowed {
            let message = format!(
                "node {} is not among the publishers of topic {topic:?} in the netconf",
                self.name
            );
            return refuse(self, &run, FailureKind::InvalidRequest, message);
        }
        let stalled_len = self.loop_state.stalled.get(&group).map_or(0, VecDeque::len);
        if stalled_len >= STALLED_MAX {
            let message = format!("flow control holds {stalled_len} records for the group; retry");
            return refuse(self, &run, FailureKind::Backpressure, message);
        }
        let now_ms = clock::wall_ms();
        let stamp = |ts: u64| if ts == 0 { now_ms } else { ts };
        let records: Vec<NewRecord<'_>> = run
            .iter()
            .flat_map(|(_, b)| b.entries())
            .map(|e| NewRecord {
                timestamp_ms: stamp(e.timestamp_ms),
                key: e.key,
                value: e.value,
            })
            .collect();
        let appended = self
            .log
            .log(&topic, self.node_id)
            .and_then(|log| log.append_batch(now_ms, &records));
        let first = match appended {
            Ok(range) => range.start,
            Err(e) => {
                ::log::warn!(
                    "publish not stored topic={topic} records={} error={e}",
                    records.len()
                );
                drop(records);
                return refuse(self, &run, FailureKind::Log, e.to_string());
            }
        };
        let name = self.name.clone();
        self.stats.records_published += records.len() as u64;
        // Local subscribers see our own records too.
        let reprs: Vec<RecordRepr<'_>> = records
            .iter()
            .enumerate()
            .map(|(k, r)| RecordRepr {
                topic: TopicId(0),
                offset: Offset(first.0 + k as u64),
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                value: r.value,
            })
            .collect();
        drop(records);
        self.subs.on_records(
            &mut self.ipc,
            &mut self.log,
            &topic,
            self.node_id,
            Some(&name),
            &reprs,
        );
        self.group_records(&topic, self.node_id, Some(&name), &reprs);
        drop(reprs);
        // Only this loop adds to the group's queue: once a record waits,
        // every later one of the run waits behind it.
        let mut waiting = self
            .loop_state
            .stalled
            .get(&group)
            .is_some_and(|q| !q.is_empty());
        let mut offset = first;
        for (conn, b) in &run {
            let timeout = match b.timeout_ms {
                0 => DEFAULT_SYNC_TIMEOUT,
                ms => Duration::from_millis(u64::from(ms)),
            };
            let deadline = now + timeout;
            for (i, e) in b.entries().enumerate() {
                if b.mode == PublishMode::Async {
                    self.ipc.send(
                        *conn,
                        &Response::Published {
                            request_id: e.request_id,
                            offset,
                        },
                    );
                }
                let reply = Some((*conn, e.request_id, b.mode, deadline));
                let timestamp_ms = stamp(e.timestamp_ms);
                let out = Outgoing {
                    topic: &topic,
                    offset,
                    timestamp_ms,
                    key: e.key,
                    value: e.value,
                    reply,
                };
                if waiting || !self.publish_one(now, group, out) {
                    // `i` indexes this batch's entries, so the payload is
                    // there; were it not, the record is read back from the log.
                    let payload = b.payload(i).map(|(key, value)| Payload {
                        timestamp_ms,
                        key,
                        value,
                    });
                    let record = Stalled {
                        topic: topic.clone(),
                        offset,
                        payload,
                        reply,
                    };
                    self.stats.publishes_backpressured += 1;
                    self.stall(group, record, false);
                    waiting = true;
                }
                offset = offset.next();
            }
        }
    }

    /// Queues a record behind the shut window (at the front when it was the
    /// oldest and came back), dropping its bytes past the memory bound.
    fn stall(&mut self, group: GroupId, mut r: Stalled, front: bool) {
        let ls = &mut self.loop_state;
        if ls.stalled_payload_bytes + r.payload_len() > STALLED_PAYLOAD_MAX_BYTES {
            r.payload = None;
            self.stats.publishes_spilled += 1;
        }
        ls.stalled_payload_bytes += r.payload_len();
        if let Some((_, _, PublishMode::Sync, deadline)) = r.reply {
            ls.stalled_sync_deadline = Some(
                ls.stalled_sync_deadline
                    .map_or(deadline, |d| d.min(deadline)),
            );
        }
        let q = ls.stalled.entry(group).or_default();
        if front {
            q.push_front(r);
        } else {
            q.push_back(r);
        }
    }

    /// The record's bytes back from our log, for a record whose payload was
    /// dropped while it waited.
    fn reload(&mut self, topic: &str, offset: Offset) -> Option<Payload> {
        let log = self.log.log(topic, self.node_id).ok()?;
        let batch = log.read(offset, 1).ok()?;
        let records = batch.records().ok()?;
        let r = records.into_iter().find(|r| r.offset == offset)?;
        Some(Payload {
            timestamp_ms: r.timestamp_ms,
            key: Bytes::copy_from_slice(r.key),
            value: Bytes::copy_from_slice(r.value),
        })
    }

    /// Gives one logged record to the protocol; returns it when the flow
    /// window is shut.
    fn send_record(&mut self, now: Instant, group: GroupId, mut r: Stalled) -> Option<Stalled> {
        if !self.node.can_publish(group) {
            self.loop_state.window_closed_at.entry(group).or_insert(now);
            return Some(r);
        }
        if let Some(at) = self.loop_state.window_closed_at.remove(&group) {
            let closed = now.saturating_duration_since(at).as_micros();
            self.stats.flow_window_closed_us += u64::try_from(closed).unwrap_or(u64::MAX);
        }
        if r.payload.is_none() {
            r.payload = self.reload(&r.topic, r.offset);
        }
        let Some(payload) = r.payload.as_ref() else {
            // invariant: the record was appended before it was queued; only
            // retention racing a very long stall can remove it.
            self.stats.log_errors += 1;
            ::log::error!(
                "waiting record vanished from the log topic={} offset={}",
                r.topic,
                r.offset
            );
            return None;
        };
        let out = Outgoing {
            topic: &r.topic,
            offset: r.offset,
            timestamp_ms: payload.timestamp_ms,
            key: &payload.key,
            value: &payload.value,
            reply: r.reply,
        };
        let sent = self.publish_one(now, group, out);
        (!sent).then_some(r)
    }

    /// Gives one logged record to the protocol: false when the flow window
    /// is shut (the caller keeps the record), true when it was sent or
    /// refused (the client was told).
    fn publish_one(&mut self, now: Instant, group: GroupId, r: Outgoing<'_>) -> bool {
        if !self.node.can_publish(group) {
            return false;
        }
        match self.node.publish(
            now,
            group,
            r.topic,
            r.offset,
            r.timestamp_ms,
            r.key,
            r.value,
        ) {
            Ok(ticket) => {
                if let Some((conn, request_id, PublishMode::Sync, deadline)) = r.reply {
                    self.loop_state.syncs.insert(
                        (group, ticket),
                        PendingSync {
                            conn,
                            request_id,
                            offset: r.offset,
                            deadline,
                        },
                    );
                }
                true
            }
            Err(PublishError::Backpressure { .. }) => false,
            Err(e) => {
                // The record is in our log (late joiners can replay it) but
                // the protocol refused it: tell the client.
                self.stats.publishes_failed += 1;
                ::log::warn!(
                    "publish refused by protocol topic={} offset={} error={e}",
                    r.topic,
                    r.offset
                );
                if let Some((conn, request_id, mode, _)) = r.reply {
                    if mode != PublishMode::OneWay {
                        let kind = match e {
                            PublishError::RecordTooLarge { size, max } => {
                                FailureKind::RecordTooLarge {
                                    size: size as u64,
                                    max: max as u64,
                                }
                            }
                            _ => FailureKind::InvalidRequest,
                        };
                        let failure = Failure {
                            kind,
                            message: e.to_string(),
                        };
                        self.ipc.send(
                            conn,
                            &Response::PublishFailed {
                                request_id,
                                failure,
                            },
                        );
                    }
                }
                true
            }
        }
    }

    /// Sends held-back records, oldest first, while the window allows.
    pub(super) fn send_stalled(&mut self, now: Instant) {
        let groups: Vec<GroupId> = self
            .loop_state
            .stalled
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(g, _)| *g)
            .collect();
        for group in groups {
            while let Some(r) = self
                .loop_state
                .stalled
                .get_mut(&group)
                .and_then(VecDeque::pop_front)
            {
                let ls = &mut self.loop_state;
                ls.stalled_payload_bytes = ls.stalled_payload_bytes.saturating_sub(r.payload_len());
                if let Some(back) = self.send_record(now, group, r) {
                    self.stall(group, back, true);
                    break;
                }
            }
        }
    }

    /// Pauses reading publishing clients while the flow-control backlog is
    /// large, and resumes (taking what they sent meanwhile) once it drained.
    pub(super) fn pace_publishers(&mut self) {
        let bytes = self.loop_state.stalled_payload_bytes;
        let records: usize = self.loop_state.stalled.values().map(VecDeque::len).sum();
        let pause = if self.ipc.is_paused() {
            bytes > RESUME_PUBLISHERS_AT_BYTES || records > RESUME_PUBLISHERS_AT_RECORDS
        } else {
            bytes > PAUSE_PUBLISHERS_AT_BYTES || records > PAUSE_PUBLISHERS_AT_RECORDS
        };
        let requests = &mut self.loop_state.requests;
        self.ipc.set_paused(self.poll.registry(), pause, requests);
    }

    /// Answers every sync publish of `group` up to `ticket`.
    pub(super) fn complete_syncs(&mut self, group: GroupId, ticket: Ticket) {
        let done: Vec<(GroupId, Ticket)> = self
            .loop_state
            .syncs
            .range((group, Ticket(0))..=(group, ticket))
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            if let Some(s) = self.loop_state.syncs.remove(&key) {
                self.stats.syncs_acked += 1;
                self.ipc.send(
                    s.conn,
                    &Response::Published {
                        request_id: s.request_id,
                        offset: s.offset,
                    },
                );
            }
        }
    }

    /// Fails sync publishes past their deadline, naming the receivers that
    /// were live (and so had not acknowledged).
    pub(super) fn expire_syncs(&mut self, now: Instant) {
        let late: Vec<(GroupId, Ticket)> = self
            .loop_state
            .syncs
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            let Some(s) = self.loop_state.syncs.remove(&key) else {
                continue;
            };
            self.stats.syncs_timed_out += 1;
            let waiting_for: Vec<String> = self
                .node
                .receivers_behind(key.0, key.1)
                .into_iter()
                .map(|n| match self.loop_state.names.get(&n) {
                    Some(name) => name.to_string(),
                    None => n.to_string(),
                })
                .collect();
            let message = format!(
                "not acknowledged in time by {}",
                if waiting_for.is_empty() {
                    "the group".to_string()
                } else {
                    waiting_for.join(", ")
                }
            );
            let failure = Failure {
                kind: FailureKind::Timeout { waiting_for },
                message,
            };
            self.ipc.send(
                s.conn,
                &Response::PublishFailed {
                    request_id: s.request_id,
                    failure,
                },
            );
        }
        // Stalled sync records whose deadline passed before they were even
        // sent: answer now, keep the record (it is in the log). Scanned only
        // once the earliest such deadline passed: a fast one-way publisher
        // can have a million records waiting, and this runs every round.
        if self
            .loop_state
            .stalled_sync_deadline
            .is_none_or(|d| d > now)
        {
            return;
        }
        let mut earliest: Option<Instant> = None;
        for q in self.loop_state.stalled.values_mut() {
            for r in q.iter_mut() {
                if let Some((conn, request_id, PublishMode::Sync, deadline)) = r.reply {
                    if deadline > now {
                        earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                        continue;
                    }
                    r.reply = None;
                    self.stats.syncs_timed_out += 1;
                    let failure = Failure {
                        kind: FailureKind::Timeout {
                            waiting_for: Vec::new(),
                        },
                        message: "flow control held the record past the timeout".into(),
                    };
                    self.ipc.send(
                        conn,
                        &Response::PublishFailed {
                            request_id,
                            failure,
                        },
                    );
                }
            }
        }
        self.loop_state.stalled_sync_deadline = earliest;
    }

    /// The earliest sync-publish deadline, for the poll timeout.
    pub(super) fn next_sync_deadline(&self) -> Option<Instant> {
        self.loop_state.syncs.values().map(|s| s.deadline).min()
    }

    /// A client went away: its pending answers are dropped (its records
    /// stay in the log and are still sent).
    pub(super) fn forget_publishes_of(&mut self, conn: ConnId) {
        self.loop_state.syncs.retain(|_, s| s.conn != conn);
        for q in self.loop_state.stalled.values_mut() {
            for s in q.iter_mut() {
                if s.reply.is_some_and(|r| r.0 == conn) {
                    s.reply = None;
                }
            }
        }
    }
}
