//! The log layer of reliability, the daemon's half: serving peers' replay
//! requests from our log, and filling our own log from a source's log when
//! we joined late or lost datagrams past the source's retransmit window.
//!
//! proto decides (it emits `ReplayRead`, `ReplayRecords`, `ReplayDone`, and
//! chunks, retries and orders the exchange); this file only reads and writes
//! the log (quinn's "proto asks, driver acts").
//!
//! Filling a (topic, source) log: while a replay for it runs, live records of
//! that pair are held in memory rather than appended, because a replica log
//! that skipped ahead never takes the skipped offsets back. When the replay
//! ends the held records are appended after it, and anything still missing
//! stays a hole that subscribers see as a gap notice.
//!
//! A log that refuses records (disk full, I/O error) is *stalled*: records of
//! that (topic, source) are dropped rather than appended past the refused
//! one, which would leave a hole the log never takes back, and after a
//! backoff a fill from the log's end fetches them again from the source (or
//! any holder) until the disk takes them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{clock, Daemon};
use crate::log::Appended;
use crate::proto::{ReplayId, ReplayOutcome, ReplayServe};
use crate::wire::{NodeId, Offset, RecordRepr, ReplayStatus, TopicId};

/// Held live records per filling log before the replay is given up on and
/// the hole accepted: bounds memory if the source is slow to answer.
const HELD_MAX: usize = 1 << 18;

/// First wait before a stalled log is filled again; it doubles per refusal
/// up to [`STALL_RETRY_MAX`], so a full disk costs a replay request every
/// few seconds, and space that returns is used within that time.
const STALL_RETRY_FIRST: Duration = Duration::from_millis(100);
const STALL_RETRY_MAX: Duration = Duration::from_secs(2);

/// Replays this node asked for, and the live records held meanwhile.
#[derive(Default)]
pub(super) struct Replays {
    by_id: HashMap<ReplayId, (Arc<str>, NodeId)>,
    filling: HashMap<(Arc<str>, NodeId), Filling>,
    /// Logs that refused records, until a fill after the refusal ends.
    stalled: HashMap<(Arc<str>, NodeId), Stall>,
    /// Logs whose last fill no node answered: filled again when a node
    /// comes up.
    unanswered: HashSet<(Arc<str>, NodeId)>,
}

/// A log that refused records: nothing of it is appended until a fill
/// started at `retry_at` fetches again from where it stopped.
struct Stall {
    retry_at: Instant,
    backoff: Duration,
}

struct Filling {
    id: ReplayId,
    held: Vec<Held>,
    /// Nodes already asked, so a failed replay moves on to the next holder.
    tried: Vec<std::net::SocketAddr>,
}

struct Held {
    offset: Offset,
    timestamp_ms: u64,
    key: Bytes,
    value: Bytes,
}

impl Daemon {
    /// Answers a peer's replay request with one chunk of our log.
    pub(super) fn serve_replay(&mut self, now: Instant, serve: &ReplayServe) {
        use crate::proto::ReplayEnd;
        self.stats.replay_chunks_served += 1;
        if !self.log.contains(&serve.topic, serve.log_node) {
            let end = ReplayEnd {
                status: ReplayStatus::UnknownTopic,
                next_offset: serve.from,
                earliest_offset: Offset(0),
            };
            self.node.supply_replay_chunk(now, serve, &[], end);
            return;
        }
        let log = match self.log.log(&serve.topic, serve.log_node) {
            Ok(log) => log,
            Err(e) => {
                ::log::warn!("replay read failed topic={} error={e}", serve.topic);
                return;
            }
        };
        let earliest = log.earliest_offset();
        let tail = log.next_offset();
        let max = usize::try_from(serve.max_bytes).unwrap_or(usize::MAX);
        let (bytes, next, status) = match log.read(serve.from, max) {
            Ok(batch) => {
                let (len, next) = cut_at(&batch.bytes, batch.count, serve.to, batch.next_offset);
                let status = if next >= serve.to || next >= tail {
                    ReplayStatus::ReachedEnd
                } else {
                    ReplayStatus::ChunkDone
                };
                (
                    batch
                        .bytes
                        .get(..len)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default(),
                    next,
                    status,
                )
            }
            Err(crate::log::Error::BelowRetention { earliest, .. }) => {
                (Vec::new(), earliest, ReplayStatus::BelowRetention)
            }
            Err(e) => {
                ::log::warn!(
                    "replay read failed topic={} from={} error={e}",
                    serve.topic,
                    serve.from
                );
                return;
            }
        };
        let end = ReplayEnd {
            status,
            next_offset: next,
            earliest_offset: earliest,
        };
        self.node.supply_replay_chunk(now, serve, &bytes, end);
    }

    /// A source advertised a topic: if our log of it is behind, fill it.
    pub(super) fn topic_seen(
        &mut self,
        now: Instant,
        source: NodeId,
        topic: &Arc<str>,
        next: Offset,
    ) {
        self.route(topic);
        self.subs.note_topic(topic, source, next);
        let ours = match self.log.log(topic, source) {
            Ok(log) => log.next_offset(),
            Err(_) => return,
        };
        if ours < next {
            self.start_fill(now, source, topic, ours);
        }
    }

    /// Datagrams were lost for good: fill every topic of that source we
    /// hold from our log's end.
    pub(super) fn replay_after_gap(&mut self, now: Instant, source: NodeId) {
        let topics: Vec<String> = self
            .log
            .logs()
            .into_iter()
            .filter(|(_, s)| *s == source)
            .map(|(t, _)| t)
            .collect();
        for topic in topics {
            let topic: Arc<str> = Arc::from(topic);
            let ours = match self.log.log(&topic, source) {
                Ok(log) => log.next_offset(),
                Err(_) => continue,
            };
            self.start_fill(now, source, &topic, ours);
        }
    }

    fn start_fill(&mut self, now: Instant, source: NodeId, topic: &Arc<str>, from: Offset) {
        let key = (topic.clone(), source);
        if self.replays.filling.contains_key(&key) {
            return;
        }
        // A stalled log is filled on its own schedule, not on every
        // heartbeat that shows it behind.
        if self
            .replays
            .stalled
            .get(&key)
            .is_some_and(|s| now < s.retry_at)
        {
            return;
        }
        let Some(peer) = self.replay_candidates(source, &[]).into_iter().next() else {
            return;
        };
        let id = self
            .node
            .request_replay(now, peer, source, topic, from, Offset(u64::MAX));
        ::log::info!("replaying log topic={topic} source={source} from={from} peer={peer}");
        self.stats.replays_started += 1;
        self.replays.by_id.insert(id, key.clone());
        self.replays.filling.insert(
            key,
            Filling {
                id,
                held: Vec::new(),
                tried: vec![peer],
            },
        );
    }

    /// Where to ask for `source`'s log: the source itself while it is live,
    /// then every other node heard (any of them may hold the range), minus
    /// those in `tried` and ourselves.
    fn replay_candidates(
        &self,
        source: NodeId,
        tried: &[std::net::SocketAddr],
    ) -> Vec<std::net::SocketAddr> {
        let ls = &self.loop_state;
        let mut out: Vec<std::net::SocketAddr> = Vec::new();
        let first = ls.sources.get(&source).copied();
        let rest = ls
            .peers
            .iter()
            .filter(|(n, _)| **n != self.node_id)
            .map(|(_, a)| *a);
        for addr in first.into_iter().chain(rest) {
            if addr != self.listen_addr && !tried.contains(&addr) && !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// A log refused records (`error` says why): remember to fill it from
    /// its end after a backoff, and stop the fill that was feeding it, if
    /// any (what it would bring is refused too). Logged once per stall.
    pub(super) fn log_refused(
        &mut self,
        topic: &Arc<str>,
        source: NodeId,
        from: Offset,
        records: usize,
        error: &crate::log::Error,
    ) {
        let now = clock::now();
        self.stats.log_errors += 1;
        self.stats.records_unstored += records as u64;
        let key = (topic.clone(), source);
        let stall = match self.replays.stalled.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                ::log::error!(
                    "log refused received records, refilling when it takes them topic={topic} source={source} from={from} error={error}"
                );
                self.stats.logs_stalled += 1;
                e.insert(Stall {
                    retry_at: now,
                    backoff: STALL_RETRY_FIRST,
                })
            }
        };
        stall.retry_at = now + stall.backoff;
        stall.backoff = (stall.backoff * 2).min(STALL_RETRY_MAX);
        if let Some(f) = self.replays.filling.remove(&key) {
            self.node.cancel_replay(f.id);
            self.replays.by_id.remove(&f.id);
        }
    }

    /// Whether records of this (topic, source) are refused by its log and
    /// wait for a refill (they are dropped, and counted, meanwhile).
    pub(super) fn is_stalled(&self, topic: &Arc<str>, source: NodeId) -> bool {
        !self.replays.stalled.is_empty()
            && self.replays.stalled.contains_key(&(topic.clone(), source))
    }

    /// Starts the fills of stalled logs whose backoff has passed. The next
    /// try is scheduled now, so a fill that cannot start (no holder heard
    /// yet) is tried again later.
    pub(super) fn retry_stalled(&mut self, now: Instant) {
        if self.replays.stalled.is_empty() {
            return;
        }
        let due: Vec<(Arc<str>, NodeId)> = self
            .replays
            .stalled
            .iter()
            .filter(|(k, s)| s.retry_at <= now && !self.replays.filling.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, source) in due {
            let from = self.log.log(&topic, source).map(|l| l.next_offset());
            let Ok(from) = from else {
                if let Some(s) = self.replays.stalled.get_mut(&(topic.clone(), source)) {
                    s.retry_at = now + s.backoff;
                    s.backoff = (s.backoff * 2).min(STALL_RETRY_MAX);
                }
                continue;
            };
            self.stats.log_refills_started += 1;
            self.start_fill(now, source, &topic, from);
            if let Some(s) = self.replays.stalled.get_mut(&(topic, source)) {
                s.retry_at = now + s.backoff;
            }
        }
    }

    /// Whether a replay is filling this (topic, source) log right now.
    pub(super) fn is_filling(&self, topic: &Arc<str>, source: NodeId) -> bool {
        self.replays.filling.contains_key(&(topic.clone(), source))
    }

    /// While a (topic, source) log is being filled, live records wait.
    /// Returns true when the record was held.
    pub(super) fn replay_holds(
        &mut self,
        topic: &Arc<str>,
        source: NodeId,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) -> bool {
        let Some(f) = self.replays.filling.get_mut(&(topic.clone(), source)) else {
            return false;
        };
        if f.held.len() >= HELD_MAX {
            let id = f.id;
            ::log::warn!("replay too slow, accepting a hole topic={topic} source={source}");
            self.node.cancel_replay(id);
            self.finish_fill(id);
            return false;
        }
        f.held.push(Held {
            offset,
            timestamp_ms,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        });
        true
    }

    /// Records from a replay: into the log, then to subscribers.
    pub(super) fn store_replayed(
        &mut self,
        source: NodeId,
        topic: &Arc<str>,
        records: &Bytes,
        count: usize,
    ) {
        let Ok(iter) = crate::wire::Records::new_checked(records, count) else {
            self.stats.replay_records_malformed += 1;
            return;
        };
        let name = self.loop_state.names.get(&source).cloned();
        for r in iter {
            self.stats.records_replayed += 1;
            self.append_and_push(topic, source, name.as_deref(), &r);
        }
    }

    pub(super) fn replay_done(&mut self, now: Instant, id: ReplayId, outcome: ReplayOutcome) {
        ::log::info!("replay finished id={id:?} outcome={outcome:?}");
        let Some((topic, source)) = self.replays.by_id.get(&id).cloned() else {
            return;
        };
        let key = (topic.clone(), source);
        let tried = self
            .replays
            .filling
            .get(&key)
            .map(|f| f.tried.clone())
            .unwrap_or_default();
        if let ReplayOutcome::BelowRetention { earliest } = outcome {
            self.subs.note_retention(&topic, source, earliest);
        }
        let retry = match outcome {
            ReplayOutcome::Complete { .. } => None,
            // The holder deleted the start: what it still has is worth
            // fetching; below `earliest` becomes a gap unless another holds it.
            ReplayOutcome::BelowRetention { earliest } => {
                tried.last().copied().map(|peer| (peer, earliest))
            }
            // No log there, a hole in it, or no answer: ask the next holder
            // from where our log now ends.
            _ => self
                .replay_candidates(source, &tried)
                .into_iter()
                .next()
                .and_then(|peer| {
                    let from = self.log.log(&topic, source).ok()?.next_offset();
                    Some((peer, from))
                }),
        };
        match retry {
            Some((peer, from)) if tried.len() < 8 => {
                let new_id =
                    self.node
                        .request_replay(now, peer, source, &topic, from, Offset(u64::MAX));
                ::log::info!("replaying log topic={topic} source={source} from={from} peer={peer}");
                self.stats.replays_started += 1;
                self.replays.by_id.remove(&id);
                self.replays.by_id.insert(new_id, key.clone());
                if let Some(f) = self.replays.filling.get_mut(&key) {
                    f.id = new_id;
                    if !f.tried.contains(&peer) {
                        f.tried.push(peer);
                    }
                }
            }
            // A stalled log's records are held by its source, which did not
            // serve them this time: try again on the stall's schedule rather
            // than append the held records past a hole.
            _ if !matches!(outcome, ReplayOutcome::Complete { .. })
                && self.replays.stalled.contains_key(&key) =>
            {
                self.replays.by_id.remove(&id);
                self.replays.filling.remove(&key);
            }
            _ => {
                // Nobody answered: nobody said the range is gone either. A
                // restarted source advertises no topic until it publishes
                // again, so nothing else would start this fill again; a
                // node coming up does (see `retry_unanswered`).
                if outcome == ReplayOutcome::TimedOut {
                    ::log::info!(
                        "replay unanswered, waiting for a holder topic={topic} source={source}"
                    );
                    self.replays.unanswered.insert(key);
                }
                self.finish_fill(id);
            }
        }
    }

    /// A node came up (a source, a receiver, an announced peer): it may
    /// hold what an unanswered replay asked for, so ask again from where
    /// each of those logs ends.
    pub(super) fn retry_unanswered(&mut self, now: Instant) {
        if self.replays.unanswered.is_empty() {
            return;
        }
        for (topic, source) in std::mem::take(&mut self.replays.unanswered) {
            let Ok(from) = self.log.log(&topic, source).map(|l| l.next_offset()) else {
                continue;
            };
            self.start_fill(now, source, &topic, from);
        }
    }

    /// Ends a fill: the held live records go into the log after the replay.
    fn finish_fill(&mut self, id: ReplayId) {
        let Some(key) = self.replays.by_id.remove(&id) else {
            return;
        };
        let Some(f) = self.replays.filling.remove(&key) else {
            return;
        };
        // The log took everything the fill brought (a refusal would have
        // removed the fill): it is no longer stalled. Held records it
        // refuses stall it again.
        if self.replays.stalled.remove(&key).is_some() {
            ::log::info!(
                "log takes records again, refilled topic={} source={}",
                key.0,
                key.1
            );
        }
        let (topic, source) = key;
        let name = self.loop_state.names.get(&source).cloned();
        for h in f.held {
            let r = RecordRepr {
                topic: TopicId(0),
                offset: h.offset,
                timestamp_ms: h.timestamp_ms,
                key: &h.key,
                value: &h.value,
            };
            self.append_and_push(&topic, source, name.as_deref(), &r);
        }
    }

    fn append_and_push(
        &mut self,
        topic: &Arc<str>,
        source: NodeId,
        name: Option<&str>,
        r: &RecordRepr<'_>,
    ) {
        if self.is_stalled(topic, source) && !self.is_filling(topic, source) {
            self.stats.records_unstored += 1;
            return;
        }
        let stored = self
            .log
            .log(topic, source)
            .and_then(|log| log.append_replica(clock::wall_ms(), r));
        match stored {
            Ok(Appended::Duplicate) => self.stats.records_duplicate += 1,
            Ok(_) => {
                self.stats.records_stored += 1;
                self.subs.on_records(
                    &mut self.ipc,
                    &mut self.log,
                    topic,
                    source,
                    name,
                    std::slice::from_ref(r),
                );
            }
            Err(e) => self.log_refused(topic, source, r.offset, 1, &e),
        }
    }
}

/// Length of the prefix of `bytes` (back-to-back records) holding only
/// offsets below `to`, and the offset after it.
fn cut_at(bytes: &[u8], count: usize, to: Offset, next: Offset) -> (usize, Offset) {
    let mut pos = 0;
    for _ in 0..count {
        let Some(rest) = bytes.get(pos..) else { break };
        let Ok((r, len)) = RecordRepr::parse_prefix(rest) else {
            break;
        };
        if r.offset >= to {
            return (pos, to);
        }
        pos += len;
    }
    (pos, next)
}
