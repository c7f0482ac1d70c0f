//! The event loop, in mio's shape (style.md 3.2), fixing the example's gaps:
//!
//! 1. timeout = the earliest of `node.poll_timeout()`, sync-publish
//!    deadlines and housekeeping, rounded up; zero while work is left over;
//! 2. `poll`, retrying on `Interrupted` (a signal also lands here);
//! 3. drain every readable socket until `WouldBlock` into
//!    `node.handle_datagram`, at most [`RECV_BUDGET`] datagrams per socket per
//!    round so one busy group cannot starve the others or the clients;
//! 4. `handle_timeout` once the node's deadline has passed;
//! 5. client requests (publish = log append, then `node.publish`);
//! 6. flush: `poll_transmit` until `None` (a send that would block is kept
//!    and the listen socket registered for `WRITABLE`, quinn's
//!    buffered-transmit idea), then `poll_event` until `None` (log appends,
//!    subscriber pushes, sync-publish answers), then subscriber catch-up
//!    from the log, then the IPC output.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Interest};

use super::ipc::{ConnId, Request, Response};
use super::sockets::{self, OutDatagram, RecvMeta, MAX_BATCH};
use super::{clock, signals, Daemon, Error, GROUP_TOKEN_BASE, LISTEN_TOKEN};
use crate::log::Appended;
use crate::proto::{Dest, Event, GroupId, PublishError, Ticket};
use crate::wire::ipc::{Failure, FailureKind, Publish, PublishMode};
use crate::wire::{NodeId, Offset, RecordRepr, TopicId};

/// Most datagrams taken from one socket per loop round.
const RECV_BUDGET: usize = 1024;
/// Largest datagram we receive: the UDP maximum, so nothing valid is cut.
const RECV_BUF_BYTES: usize = 65_536;
/// Longest the loop sleeps, so a shutdown flag set by another thread (tests)
/// is seen promptly even with no traffic.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How often the log is flushed (its fsync policy decides what that costs)
/// and retention is applied.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(50);
const RETENTION_EVERY: Duration = Duration::from_secs(30);
/// Sync publish timeout when the client sends 0.
const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishes held back per group by flow control before new ones are
/// refused with `Backpressure`; bounds the daemon's memory when receivers
/// are slow and clients are fast.
const STALLED_MAX: usize = 1 << 20;

/// One group's receive socket and where its `Dest::Group` sends go.
pub(super) struct GroupIo {
    pub id: GroupId,
    pub name: String,
    pub socket: mio::net::UdpSocket,
    pub dests: Vec<SocketAddr>,
}

/// Datagrams taken from the node and not yet handed to the kernel.
pub(super) struct TxQueue {
    scratch: Vec<u8>,
    arena: Vec<u8>,
    /// (destination, start in arena, length)
    entries: Vec<(SocketAddr, usize, usize)>,
    sent: usize,
    writable_registered: bool,
}

impl TxQueue {
    pub fn new() -> TxQueue {
        TxQueue {
            scratch: vec![0; RECV_BUF_BYTES],
            arena: Vec::with_capacity(MAX_BATCH * 1500),
            entries: Vec::with_capacity(MAX_BATCH * 2),
            sent: 0,
            writable_registered: false,
        }
    }

    fn is_blocked(&self) -> bool {
        self.sent < self.entries.len()
    }
}

/// A record already in the log, waiting for the flow window to send it.
struct Stalled {
    topic: Arc<str>,
    offset: Offset,
    timestamp_ms: u64,
    key: Bytes,
    value: Bytes,
    reply: Option<(ConnId, u64, PublishMode, Instant)>,
}

/// A sync publish waiting for the group's acknowledgement.
struct PendingSync {
    conn: ConnId,
    request_id: u64,
    offset: Offset,
    deadline: Instant,
}

/// Loop bookkeeping that is not protocol state.
#[derive(Default)]
pub(super) struct LoopState {
    listen_readable: bool,
    group_readable: Vec<bool>,
    recv_bufs: Vec<Vec<u8>>,
    recv_meta: Vec<RecvMeta>,
    requests: Vec<(ConnId, Request)>,
    stalled: HashMap<GroupId, VecDeque<Stalled>>,
    /// Sync publishes per group by ticket; a ticket that was stalled gets
    /// its entry when it is finally published.
    syncs: BTreeMap<(GroupId, Ticket), PendingSync>,
    /// Sources' listen addresses, from SourceUp, for replay.
    pub(super) sources: HashMap<NodeId, SocketAddr>,
    /// Node names from announcements, for deliveries and timeouts.
    pub(super) names: HashMap<NodeId, Arc<str>>,
    /// Live receivers per group, for a sync timeout's "waiting for".
    receivers: HashMap<GroupId, HashMap<NodeId, SocketAddr>>,
    next_log_flush: Option<Instant>,
    next_retention: Option<Instant>,
}

impl Daemon {
    /// Runs until `shutdown` is set or SIGTERM/SIGINT arrives (see
    /// [`signals::install`]), then says goodbye on every group, flushes the
    /// log and returns.
    pub fn run(&mut self, shutdown: Arc<AtomicBool>) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        self.loop_state.group_readable = vec![false; self.groups.len()];
        self.loop_state.recv_bufs = vec![vec![0u8; RECV_BUF_BYTES]; MAX_BATCH];
        self.loop_state.recv_meta = vec![RecvMeta::default(); MAX_BATCH];
        // Sockets may already hold datagrams from before registration.
        self.loop_state.listen_readable = true;
        self.loop_state.group_readable.fill(true);
        while !(shutdown.load(Ordering::Relaxed) || signals::received()) {
            let now = clock::now();
            let timeout = self.next_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            self.stats.loop_rounds += 1;
            let mut requests = std::mem::take(&mut self.loop_state.requests);
            for event in events.iter() {
                self.dispatch(event, &mut requests);
            }
            self.drain_sockets();
            let now = clock::now();
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
            }
            for (conn, request) in requests.drain(..) {
                self.handle_request(now, conn, request);
            }
            self.loop_state.requests = requests;
            self.send_stalled(now);
            self.node.flush(now);
            self.flush_outputs(now);
            self.expire_syncs(now);
            self.housekeeping(now);
        }
        self.shut_down();
        Ok(())
    }

    fn dispatch(&mut self, event: &mio::event::Event, requests: &mut Vec<(ConnId, Request)>) {
        let token = event.token();
        if token == LISTEN_TOKEN {
            if event.is_readable() {
                self.loop_state.listen_readable = true;
            }
            if event.is_writable() {
                self.tx.writable_registered = true;
            }
        } else if self.ipc.owns(token) {
            self.ipc.handle_event(self.poll.registry(), event, requests);
        } else if let Some(k) = token.0.checked_sub(GROUP_TOKEN_BASE) {
            if let Some(r) = self.loop_state.group_readable.get_mut(k) {
                *r = true;
            }
        }
    }

    fn next_timeout(&self, now: Instant) -> Duration {
        let ls = &self.loop_state;
        if ls.listen_readable
            || ls.group_readable.iter().any(|r| *r)
            || self.subs.is_lagging()
            || self.group_members.is_lagging()
        {
            return Duration::ZERO;
        }
        let mut deadline = now + MAX_SLEEP;
        if let Some(t) = self.node.poll_timeout() {
            deadline = deadline.min(t);
        }
        if let Some(s) = ls.syncs.values().map(|s| s.deadline).min() {
            deadline = deadline.min(s);
        }
        if let Some(t) = ls.next_log_flush {
            deadline = deadline.min(t);
        }
        clock::timeout_until(now, deadline)
    }

    /// Reads every readable socket until `WouldBlock` or its budget.
    fn drain_sockets(&mut self) {
        if self.loop_state.listen_readable {
            let more = self.drain_one(None);
            self.loop_state.listen_readable = more;
        }
        for k in 0..self.groups.len() {
            if self
                .loop_state
                .group_readable
                .get(k)
                .copied()
                .unwrap_or(false)
            {
                let more = self.drain_one(Some(k));
                if let Some(r) = self.loop_state.group_readable.get_mut(k) {
                    *r = more;
                }
            }
        }
    }

    /// Returns whether the socket may still hold datagrams (budget ran out).
    fn drain_one(&mut self, group: Option<usize>) -> bool {
        let mut taken = 0;
        let ls = &mut self.loop_state;
        while taken < RECV_BUDGET {
            let (socket, group_id) = match group {
                None => (&self.listen, None),
                Some(k) => match self.groups.get(k) {
                    Some(g) => (&g.socket, Some(g.id)),
                    None => return false,
                },
            };
            let n = match sockets::recv_batch(socket, &mut ls.recv_bufs, &mut ls.recv_meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (port unreachable from a peer that is down)
                    // surface here on Linux; they are not fatal.
                    self.stats.recv_errors += 1;
                    ::log::debug!("recv failed group={group:?} error={e}");
                    continue;
                }
            };
            if n == 0 {
                return false;
            }
            let now = clock::now();
            for (meta, buf) in ls.recv_meta.iter().zip(ls.recv_bufs.iter()).take(n) {
                taken += 1;
                self.stats.datagrams_received += 1;
                if meta.truncated {
                    self.stats.datagrams_truncated += 1;
                    continue;
                }
                let Some(bytes) = buf.get(..meta.len) else {
                    continue;
                };
                self.node.handle_datagram(now, meta.from, group_id, bytes);
            }
        }
        true
    }

    fn handle_request(&mut self, now: Instant, conn: ConnId, request: Request) {
        match request {
            Request::Publish(p) => self.publish(now, conn, p),
            Request::Subscribe(s) => {
                let sub_id = s.sub_id;
                // Clustering group members are served by `groups`.
                let added = match self.group_subscribe(now, conn, &s) {
                    Ok(true) => Ok(()),
                    Ok(false) => self.subs.add(conn, s, &mut self.log),
                    Err(failure) => Err(failure),
                };
                match added {
                    Ok(()) => self.ipc.send(conn, &Response::Subscribed { sub_id }),
                    Err(failure) => self
                        .ipc
                        .send(conn, &Response::SubscribeFailed { sub_id, failure }),
                }
            }
            Request::Unsubscribe { sub_id } => {
                self.group_unsubscribe(now, conn, Some(sub_id));
                self.subs.remove(conn, sub_id);
            }
            Request::Commit(c) => {
                let by_group = self.group_commit(now, conn, &c);
                if !by_group {
                    self.subs.commit(c);
                }
            }
            Request::Stats => {
                let json = self.stats_json();
                self.ipc.send(conn, &Response::Stats { json });
            }
            Request::Ping { nonce } => self.ipc.send(conn, &Response::Pong { nonce }),
            Request::Disconnected => {
                self.group_unsubscribe(now, conn, None);
                self.subs.remove_conn(conn);
                self.loop_state.syncs.retain(|_, s| s.conn != conn);
                for q in self.loop_state.stalled.values_mut() {
                    for s in q.iter_mut() {
                        if s.reply.is_some_and(|r| r.0 == conn) {
                            s.reply = None;
                        }
                    }
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Appends to the local log (which assigns the offset), then hands the
    /// record to the protocol, or holds it while the flow window is shut.
    fn publish(&mut self, now: Instant, conn: ConnId, p: Publish) {
        let fail = |daemon: &mut Daemon, kind: FailureKind, message: String| {
            daemon.stats.publishes_failed += 1;
            if p.mode != PublishMode::OneWay {
                let failure = Failure { kind, message };
                daemon.ipc.send(
                    conn,
                    &Response::PublishFailed {
                        request_id: p.request_id,
                        failure,
                    },
                );
            }
        };
        let Some(group) = self.route(&p.topic) else {
            let message = format!("no netconf [[topic]] rule matches topic {:?}", p.topic);
            return fail(self, FailureKind::UnknownTopicRule, message);
        };
        let stalled_len = self.loop_state.stalled.get(&group).map_or(0, VecDeque::len);
        if stalled_len >= STALLED_MAX {
            let message = format!("flow control holds {stalled_len} records for the group; retry");
            return fail(self, FailureKind::Backpressure, message);
        }
        let timestamp_ms = if p.timestamp_ms == 0 {
            clock::wall_ms()
        } else {
            p.timestamp_ms
        };
        let now_ms = clock::wall_ms();
        let appended = self
            .log
            .log(&p.topic, self.node_id)
            .and_then(|log| log.append(now_ms, timestamp_ms, &p.key, &p.value));
        let offset = match appended {
            Ok(offset) => offset,
            Err(e) => {
                ::log::warn!("publish not stored topic={} error={e}", p.topic);
                return fail(self, FailureKind::Log, e.to_string());
            }
        };
        self.stats.records_published += 1;
        let topic: Arc<str> = Arc::from(p.topic.as_str());
        // Local subscribers see our own records too.
        let name = self.name.clone();
        self.subs.on_record(
            &mut self.ipc,
            &mut self.log,
            &topic,
            self.node_id,
            Some(&name),
            offset,
            timestamp_ms,
            &p.key,
            &p.value,
        );
        let name = self.name.clone();
        self.group_record(
            &topic,
            self.node_id,
            Some(&name),
            offset,
            timestamp_ms,
            &p.key,
            &p.value,
        );
        if p.mode == PublishMode::Async {
            self.ipc.send(
                conn,
                &Response::Published {
                    request_id: p.request_id,
                    offset,
                },
            );
        }
        let timeout = match p.timeout_ms {
            0 => DEFAULT_SYNC_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let record = Stalled {
            topic,
            offset,
            timestamp_ms,
            key: p.key,
            value: p.value,
            reply: Some((conn, p.request_id, p.mode, now + timeout)),
        };
        let queue = self.loop_state.stalled.entry(group).or_default();
        if queue.is_empty() {
            if let Some(record) = self.send_record(now, group, record) {
                self.loop_state
                    .stalled
                    .entry(group)
                    .or_default()
                    .push_back(record);
            }
        } else {
            queue.push_back(record);
        }
    }

    /// Gives one logged record to the protocol; returns it when the flow
    /// window is shut.
    fn send_record(&mut self, now: Instant, group: GroupId, r: Stalled) -> Option<Stalled> {
        if !self.node.can_publish(group) {
            return Some(r);
        }
        match self.node.publish(
            now,
            group,
            &r.topic,
            r.offset,
            r.timestamp_ms,
            &r.key,
            &r.value,
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
                None
            }
            Err(PublishError::Backpressure { .. }) => {
                self.stats.publishes_backpressured += 1;
                Some(r)
            }
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
                None
            }
        }
    }

    /// Sends held-back records, oldest first, while the window allows.
    fn send_stalled(&mut self, now: Instant) {
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
                if let Some(back) = self.send_record(now, group, r) {
                    if let Some(q) = self.loop_state.stalled.get_mut(&group) {
                        q.push_front(back);
                    }
                    break;
                }
            }
        }
    }

    /// Drains the node's outputs in the contract's order, then serves
    /// subscribers and writes client output.
    fn flush_outputs(&mut self, now: Instant) {
        self.flush_transmits(now);
        while let Some(event) = self.node.poll_event() {
            self.handle_event(now, event);
        }
        // Events (repair requests, replay answers) may have queued more.
        self.flush_transmits(now);
        self.subs
            .catch_up(&mut self.ipc, &mut self.log, &self.loop_state.names);
        self.group_flush(now);
        // Group announcements and commits may have queued frames.
        self.flush_transmits(now);
        self.ipc.flush(self.poll.registry());
    }

    /// Sends transmits until the node has none or the socket would block.
    fn flush_transmits(&mut self, now: Instant) {
        loop {
            if self.tx.is_blocked() {
                let tx = &mut self.tx;
                let datagrams: Vec<OutDatagram<'_>> = tx.entries[tx.sent..]
                    .iter()
                    .filter_map(|&(dest, start, len)| {
                        Some(OutDatagram {
                            dest,
                            bytes: tx.arena.get(start..start + len)?,
                        })
                    })
                    .collect();
                match sockets::send_batch(&self.listen, &datagrams) {
                    Ok(n) => {
                        tx.sent += n;
                        self.stats.datagrams_sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.stats.sends_blocked += 1;
                        self.want_writable(true);
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // One datagram the kernel refused (no route, a
                        // firewall, a peer's ICMP error): count, skip it.
                        self.stats.datagrams_send_failed += 1;
                        if let Some(&(dest, _, _)) = tx.entries.get(tx.sent) {
                            ::log::debug!("send failed dest={dest} error={e}");
                        }
                        tx.sent += 1;
                    }
                }
                continue;
            }
            let tx = &mut self.tx;
            tx.entries.clear();
            tx.arena.clear();
            tx.sent = 0;
            while tx.entries.len() < MAX_BATCH {
                let Some(t) = self.node.poll_transmit(now, &mut tx.scratch) else {
                    break;
                };
                let Some(bytes) = tx.scratch.get(..t.len) else {
                    continue;
                };
                let start = tx.arena.len();
                tx.arena.extend_from_slice(bytes);
                match t.dest {
                    Dest::Peer(addr) => tx.entries.push((addr, start, t.len)),
                    Dest::Group(g) => {
                        let Some(io) = self.groups.iter().find(|io| io.id == g) else {
                            continue;
                        };
                        for &dest in &io.dests {
                            tx.entries.push((dest, start, t.len));
                        }
                    }
                }
            }
            if tx.entries.is_empty() {
                self.want_writable(false);
                return;
            }
        }
    }

    fn want_writable(&mut self, writable: bool) {
        if self.tx.writable_registered == writable {
            return;
        }
        let interest = if writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Err(e) = self
            .poll
            .registry()
            .reregister(&mut self.listen, LISTEN_TOKEN, interest)
        {
            ::log::warn!("cannot reregister listen socket error={e}");
        }
        self.tx.writable_registered = writable;
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Deliver {
                topic,
                source,
                offset,
                timestamp_ms,
                key,
                value,
                ..
            } => self.store_delivery(&topic, source, offset, timestamp_ms, &key, &value),
            Event::Gap {
                group,
                source,
                session,
                seqs,
            } => {
                self.stats.gaps_seen += 1;
                ::log::warn!(
                    "unrecoverable datagrams group={} source={source} session={session} seqs={seqs:?}",
                    self.group_name(group)
                );
                self.replay_after_gap(now, source);
            }
            Event::SourceUp {
                group,
                source,
                session,
                addr,
                replaced,
            } => {
                ::log::info!(
                    "source up group={} source={source} session={session} addr={addr} restarted={}",
                    self.group_name(group),
                    replaced.is_some()
                );
                self.loop_state.sources.insert(source, addr);
            }
            Event::SourceDown {
                group,
                source,
                session,
            } => ::log::info!(
                "source down group={} source={source} session={session}",
                self.group_name(group)
            ),
            Event::TopicSeen {
                source,
                topic,
                next_offset,
                ..
            } => self.topic_seen(now, source, &topic, next_offset),
            Event::ReceiverUp {
                group,
                receiver,
                addr,
            } => {
                ::log::info!(
                    "receiver up group={} receiver={receiver} addr={addr}",
                    self.group_name(group)
                );
                self.loop_state
                    .receivers
                    .entry(group)
                    .or_default()
                    .insert(receiver, addr);
            }
            Event::ReceiverDown { group, receiver } => {
                ::log::info!(
                    "receiver down group={} receiver={receiver}",
                    self.group_name(group)
                );
                if let Some(r) = self.loop_state.receivers.get_mut(&group) {
                    r.remove(&receiver);
                }
            }
            Event::Acked { group, ticket } => self.complete_syncs(group, ticket),
            Event::Peer {
                group,
                node,
                name,
                addr,
                leaving,
            } => {
                ::log::info!(
                    "peer {} group={} node={node} name={name} addr={addr}",
                    if leaving { "left" } else { "joined" },
                    self.group_name(group)
                );
                self.loop_state.names.insert(node, name);
            }
            Event::ReplayRead(serve) => self.serve_replay(now, &serve),
            Event::ReplayRecords {
                source,
                topic,
                records,
                count,
                ..
            } => self.store_replayed(source, &topic, &records, count),
            Event::ReplayDone { id, outcome } => self.replay_done(now, id, outcome),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Writes a received record to our log, then to matching subscribers.
    pub(super) fn store_delivery(
        &mut self,
        topic: &Arc<str>,
        source: NodeId,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) {
        self.route(topic);
        if self.replay_holds(topic, source, offset, timestamp_ms, key, value) {
            return;
        }
        let record = RecordRepr {
            topic: TopicId(0),
            offset,
            timestamp_ms,
            key,
            value,
        };
        let now_ms = clock::wall_ms();
        let stored = self
            .log
            .log(topic, source)
            .and_then(|log| log.append_replica(now_ms, &record));
        match stored {
            Ok(Appended::Duplicate) => {
                self.stats.records_duplicate += 1;
                return;
            }
            Ok(Appended::StoredAfterGap { gap, .. }) => {
                ::log::debug!(
                    "replica log skipped offsets topic={topic} source={source} from={} to={}",
                    gap.start,
                    gap.end
                );
            }
            Ok(Appended::Stored(_)) => {}
            Err(e) => {
                self.stats.log_errors += 1;
                ::log::error!(
                    "cannot store received record topic={topic} source={source} offset={offset} error={e}"
                );
                return;
            }
        }
        self.stats.records_stored += 1;
        let name = self.loop_state.names.get(&source).cloned();
        self.subs.on_record(
            &mut self.ipc,
            &mut self.log,
            topic,
            source,
            name.as_deref(),
            offset,
            timestamp_ms,
            key,
            value,
        );
        self.group_record(
            topic,
            source,
            name.as_deref(),
            offset,
            timestamp_ms,
            key,
            value,
        );
    }

    /// Answers every sync publish of `group` up to `ticket`.
    fn complete_syncs(&mut self, group: GroupId, ticket: Ticket) {
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
    fn expire_syncs(&mut self, now: Instant) {
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
                .loop_state
                .receivers
                .get(&key.0)
                .map(|r| {
                    r.keys()
                        .map(|n| match self.loop_state.names.get(n) {
                            Some(name) => name.to_string(),
                            None => n.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
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
        // sent: answer now, keep the record (it is in the log).
        for q in self.loop_state.stalled.values_mut() {
            for r in q.iter_mut() {
                if let Some((conn, request_id, PublishMode::Sync, deadline)) = r.reply {
                    if deadline <= now {
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
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let ls = &mut self.loop_state;
        if ls.next_log_flush.is_none_or(|t| t <= now) {
            ls.next_log_flush = Some(now + LOG_FLUSH_EVERY);
            if let Err(e) = self.log.flush(clock::wall_ms()) {
                self.stats.log_errors += 1;
                ::log::error!("log flush failed error={e}");
            }
        }
        let ls = &mut self.loop_state;
        if ls.next_retention.is_none_or(|t| t <= now) {
            ls.next_retention = Some(now + RETENTION_EVERY);
            match self.log.apply_retention(clock::wall_ms()) {
                Ok(report) => ::log::debug!("retention applied report={report:?}"),
                Err(e) => ::log::warn!("retention failed error={e}"),
            }
        }
    }

    /// Goodbye on every group (best effort), then the log to disk.
    fn shut_down(&mut self) {
        ::log::info!("castlogd stopping name={}", self.name);
        let now = clock::now();
        self.node.flush(now);
        self.node.leave();
        self.flush_outputs(now);
        self.save_offsets(now, true);
        if let Err(e) = self.log.flush(clock::wall_ms()) {
            ::log::error!("final log flush failed error={e}");
        }
    }

    pub(super) fn group_name(&self, group: GroupId) -> &str {
        self.groups
            .iter()
            .find(|g| g.id == group)
            .map_or("?", |g| g.name.as_str())
    }
}
