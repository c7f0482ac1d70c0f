//! Keeping this node's log of every (topic, source) it hears complete.
//!
//! Live records are appended when they are the next offset of the local
//! log. When one arrives past it (the node joined late, was down, or the
//! transport gave up on a range), the log is brought up to date by unicast
//! replay from the source's log (or, when the source does not answer, from
//! any other node that announced itself), and live records past the local
//! end are dropped meanwhile: they come again through the replay. So the
//! local log never has a hole that some node could still fill; a range that
//! no node holds any more is skipped, and subscribers get a gap notice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::log::{self, LogDir};
use crate::proto::{Node, ReplayId, ReplayOutcome};
use crate::wire::{NodeId, Offset, RecordRepr, Records, TopicId};

/// Wait before asking another holder after a failed replay.
const RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Replica {
    /// Highest offset + 1 known to exist at the source.
    source_next: Offset,
    replaying: Option<ReplayId>,
    retry_at: Option<Instant>,
    /// Which holder to try next (index into the holder list).
    attempt: usize,
}

/// Counters for `castlog stats`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReplicationStats {
    pub records_appended_live: u64,
    pub records_appended_replay: u64,
    pub records_dropped_ahead: u64,
    pub replays_started: u64,
    pub replays_failed: u64,
    pub ranges_skipped: u64,
    pub append_errors: u64,
}

#[derive(Debug, Default)]
pub struct Replicator {
    replicas: BTreeMap<(String, NodeId), Replica>,
    by_replay: BTreeMap<ReplayId, (String, NodeId)>,
    /// Unicast addresses of nodes that may hold logs: sources first.
    holders: BTreeMap<NodeId, SocketAddr>,
    stats: ReplicationStats,
}

/// A log that was created by this call (subscriptions pick it up).
pub type NewLog = Option<(String, NodeId, Offset)>;

impl Replicator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> ReplicationStats {
        self.stats.clone()
    }

    /// Where a node can be reached (from SourceUp and ANNOUNCE).
    pub fn learn_holder(&mut self, node: NodeId, addr: SocketAddr) {
        self.holders.insert(node, addr);
    }

    /// Whether a replay for some log is in progress (for tests and stats).
    pub fn replays_in_flight(&self) -> usize {
        self.by_replay.len()
    }

    /// A live record from the transport. Returns the log it created, if new.
    #[allow(clippy::too_many_arguments)]
    pub fn on_deliver(
        &mut self,
        now: Instant,
        now_ms: u64,
        node: &mut Node,
        logs: &mut LogDir,
        topic: &str,
        source: NodeId,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<NewLog, log::Error> {
        let existed = logs.contains(topic, source);
        let log = logs.log(topic, source)?;
        let next = log.next_offset();
        let key_ = (topic.to_owned(), source);
        let replica = self.replicas.entry(key_.clone()).or_default();
        replica.source_next = replica.source_next.max(offset.next());
        if offset == next {
            let rec = RecordRepr {
                topic: TopicId(0),
                offset,
                timestamp_ms,
                key,
                value,
            };
            log.append_replica(now_ms, &rec)
                .inspect_err(|_| self.stats.append_errors += 1)?;
            self.stats.records_appended_live += 1;
        } else if offset > next {
            self.stats.records_dropped_ahead += 1;
            if replica.replaying.is_none() && replica.retry_at.is_none() {
                self.start(now, node, &key_, next);
            }
        }
        Ok(if existed {
            None
        } else {
            let earliest = logs
                .log(topic, source)
                .map(|l| l.earliest_offset())
                .unwrap_or(offset);
            Some((topic.to_owned(), source, earliest))
        })
    }

    /// A source advertised a topic and its next offset: catch up if behind.
    pub fn on_topic_seen(
        &mut self,
        now: Instant,
        node: &mut Node,
        logs: &mut LogDir,
        topic: &str,
        source: NodeId,
        next_offset: Offset,
    ) -> Result<(), log::Error> {
        let local_next = logs.log(topic, source)?.next_offset();
        let key = (topic.to_owned(), source);
        let replica = self.replicas.entry(key.clone()).or_default();
        replica.source_next = replica.source_next.max(next_offset);
        if next_offset > local_next && replica.replaying.is_none() && replica.retry_at.is_none() {
            self.start(now, node, &key, local_next);
        }
        Ok(())
    }

    fn start(&mut self, now: Instant, node: &mut Node, key: &(String, NodeId), from: Offset) {
        let Some(replica) = self.replicas.get_mut(key) else {
            return;
        };
        // The source first; then the other known nodes in turn.
        let mut candidates: Vec<SocketAddr> = Vec::new();
        if let Some(a) = self.holders.get(&key.1) {
            candidates.push(*a);
        }
        candidates.extend(
            self.holders
                .iter()
                .filter(|(n, _)| **n != key.1)
                .map(|(_, a)| *a),
        );
        let Some(addr) = candidates
            .get(replica.attempt % candidates.len().max(1))
            .copied()
        else {
            replica.retry_at = Some(now + RETRY_AFTER);
            return;
        };
        let id = node.request_replay(now, addr, key.1, &key.0, from, Offset(u64::MAX));
        replica.replaying = Some(id);
        replica.retry_at = None;
        self.by_replay.insert(id, key.clone());
        self.stats.replays_started += 1;
        ::log::debug!(
            "replay started topic={} source={} from={} peer={}",
            key.0,
            key.1,
            from,
            addr
        );
    }

    /// Records from a replay: appended in order (duplicates skipped).
    pub fn on_replay_records(
        &mut self,
        now_ms: u64,
        logs: &mut LogDir,
        id: ReplayId,
        records: &[u8],
    ) -> Result<NewLog, log::Error> {
        let Some((topic, source)) = self.by_replay.get(&id).cloned() else {
            return Ok(None);
        };
        let existed = logs.contains(&topic, source);
        let Ok(batch) = Records::count_checked(records) else {
            return Ok(None);
        };
        let log = logs.log(&topic, source)?;
        let n = log
            .append_replica_batch(now_ms, batch)
            .inspect_err(|_| self.stats.append_errors += 1)?;
        self.stats.records_appended_replay += n as u64;
        Ok(if existed {
            None
        } else {
            Some((topic.clone(), source, log.earliest_offset()))
        })
    }

    pub fn on_replay_done(
        &mut self,
        now: Instant,
        node: &mut Node,
        logs: &mut LogDir,
        id: ReplayId,
        outcome: ReplayOutcome,
    ) -> Result<(), log::Error> {
        let Some(key) = self.by_replay.remove(&id) else {
            return Ok(());
        };
        let local_next = logs.log(&key.0, key.1)?.next_offset();
        let Some(replica) = self.replicas.get_mut(&key) else {
            return Ok(());
        };
        replica.replaying = None;
        match outcome {
            ReplayOutcome::Complete { .. } => {
                replica.attempt = 0;
                if replica.source_next > local_next {
                    self.start(now, node, &key, local_next);
                }
            }
            ReplayOutcome::BelowRetention { earliest }
            | ReplayOutcome::Hole { to: earliest, .. } => {
                // No node we asked holds [local_next, earliest): skip it; the
                // first record appended after it records the hole, which
                // subscribers get as a gap notice.
                self.stats.ranges_skipped += 1;
                ::log::info!(
                    "range no longer held topic={} source={} from={} to={}",
                    key.0,
                    key.1,
                    local_next,
                    earliest
                );
                self.start(now, node, &key, earliest.max(local_next));
            }
            ReplayOutcome::UnknownTopic | ReplayOutcome::TimedOut => {
                self.stats.replays_failed += 1;
                replica.attempt += 1;
                replica.retry_at = Some(now + RETRY_AFTER);
            }
        }
        Ok(())
    }

    /// Retries replays that failed.
    pub fn handle_timeout(&mut self, now: Instant, node: &mut Node, logs: &mut LogDir) {
        let due: Vec<(String, NodeId)> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.retry_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Ok(log) = logs.log(&key.0, key.1) else {
                continue;
            };
            let from = log.next_offset();
            if let Some(r) = self.replicas.get_mut(&key) {
                r.retry_at = None;
                if r.source_next <= from {
                    continue;
                }
            }
            self.start(now, node, &key, from);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.replicas.values().filter_map(|r| r.retry_at).min()
    }
}

/// Answers a peer's replay request from the local log.
pub fn serve_replay(
    now: Instant,
    node: &mut Node,
    logs: &mut LogDir,
    serve: &crate::proto::ReplayServe,
    batch: &mut log::ReadBatch,
) {
    use crate::proto::replay_end;
    use crate::wire::ReplayStatus;
    if !logs.contains(&serve.topic, serve.log_node) {
        node.supply_replay_chunk(
            now,
            serve,
            &[],
            replay_end(ReplayStatus::UnknownTopic, serve.from, Offset(0)),
        );
        return;
    }
    let log = match logs.log(&serve.topic, serve.log_node) {
        Ok(l) => l,
        Err(e) => {
            ::log::warn!("replay read failed topic={} error={e}", serve.topic);
            node.supply_replay_chunk(
                now,
                serve,
                &[],
                replay_end(ReplayStatus::Busy, serve.from, Offset(0)),
            );
            return;
        }
    };
    let earliest = log.earliest_offset();
    let tail = log.next_offset();
    let max = (serve.max_bytes as usize).clamp(1024, 4 << 20);
    match log.read_into(serve.from, max, batch) {
        Err(log::Error::BelowRetention { earliest, .. }) => {
            node.supply_replay_chunk(
                now,
                serve,
                &[],
                replay_end(ReplayStatus::BelowRetention, serve.from, earliest),
            );
        }
        Err(e) => {
            ::log::warn!("replay read failed topic={} error={e}", serve.topic);
            node.supply_replay_chunk(
                now,
                serve,
                &[],
                replay_end(ReplayStatus::Busy, serve.from, earliest),
            );
        }
        Ok(()) => {
            // Only records below `to`.
            let mut end = batch.bytes.len();
            let mut next = batch.next_offset;
            if serve.to.0 != u64::MAX {
                if let Ok(records) = Records::new_checked(&batch.bytes, batch.count) {
                    let mut pos = 0;
                    for r in records {
                        if r.offset >= serve.to {
                            end = pos;
                            next = r.offset;
                            break;
                        }
                        pos += r.buffer_len();
                    }
                }
            }
            let status = if next >= tail || next >= serve.to {
                ReplayStatus::ReachedEnd
            } else {
                ReplayStatus::ChunkDone
            };
            let bytes = batch.bytes.get(..end).unwrap_or_default();
            node.supply_replay_chunk(now, serve, bytes, replay_end(status, next, earliest));
        }
    }
}
