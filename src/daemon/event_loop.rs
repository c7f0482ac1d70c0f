//! The event loop, in mio's shape (style.md 3.2), fixing the example's gaps:
//!
//! 1. timeout = the earliest of `node.poll_timeout()`, sync-publish
//!    deadlines and housekeeping, rounded up; zero while work is left over;
//! 2. `poll`, retrying on `Interrupted` (a signal also lands here);
//! 3. drain every readable socket until `WouldBlock` into
//!    `node.handle_datagram`, at most [`RECV_BUDGET_BYTES`] per socket per
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
use super::publish::{PendingSync, Stalled};
use super::sockets::{self, OutDatagram, RecvMeta, MAX_BATCH, MAX_SEND_BATCH};
use super::{clock, signals, Daemon, Error, GROUP_TOKEN_BASE, LISTEN_TOKEN};
use crate::log::Appended;
use crate::netconf::IdlePolicy;
use crate::proto::{DeliveredRecords, Dest, Event, GroupId, Ticket};
use crate::wire::auth::GroupKeys;
use crate::wire::{NodeId, Offset, RecordRepr, TopicId};

/// Most bytes taken from one socket per loop round. Counted in bytes, not
/// receive calls: one GRO buffer holds up to 64 KiB, and a round's records
/// wait in memory as events until the round ends, so a budget of calls let
/// one round hold tens of MiB (fresh pages, faulted in every round). Small,
/// because a round is also how long a NAK or a repair waits at a daemon
/// (at 1 MiB per round, ~3 ms per leg at 300 MB/s).
const RECV_BUDGET_BYTES: usize = 256 << 10;
/// Record bytes appended to the log in one write at most (published runs,
/// and received runs: a repair at the head of a long reorder buffer
/// releases up to the whole receive window at once, and one write of that
/// would outgrow the log's kept write buffer and re-fault it every time).
const RUN_BYTES: usize = 4 << 20;
/// Largest datagram we receive: the UDP maximum, so nothing valid is cut.
const RECV_BUF_BYTES: usize = 65_536;
/// Longest the loop sleeps, so a shutdown flag set by another thread (tests)
/// is seen promptly even with no traffic.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How often the log is flushed (its fsync policy decides what that costs)
/// and retention is applied.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(50);
const RETENTION_EVERY: Duration = Duration::from_secs(30);
/// netconf `idle = "backoff"`: how long the loop polls after a round with
/// events before it sleeps in the kernel again. Longer than a LAN round
/// trip through two daemons (~100-200 µs here), so the answer to what was
/// just sent finds the loop awake; short enough that sparse traffic costs
/// little CPU (at most this much per burst).
const BACKOFF_POLL: Duration = Duration::from_micros(500);
/// How often quiet client connections give back big output buffers.
const BUFFER_TRIM_EVERY: Duration = Duration::from_secs(1);
/// Peers remembered at most (`LoopState::peers`, and their names).
const MAX_PEERS: usize = 4096;
/// Shortest time between prunes of a full peer table, and how recently a
/// peer must have been heard to survive one.
const PEER_PRUNE_EVERY: Duration = Duration::from_secs(5);

/// One group's receive socket and where its `Dest::Group` sends go.
pub(super) struct GroupIo {
    pub id: GroupId,
    pub name: String,
    pub socket: mio::net::UdpSocket,
    pub dests: Vec<SocketAddr>,
    /// netconf `key-file`: every datagram of the group is sealed with an
    /// HMAC tag and only verified ones reach the protocol (`wire::auth`).
    pub keys: Option<GroupKeys>,
}

/// Datagrams taken from the node and not yet handed to the kernel. The
/// node's frames are `Bytes`, held here as they are: a datagram is copied
/// once, by the kernel (sealed ones once more, to append their tag).
pub(super) struct TxQueue {
    /// (destination, datagram); a group frame appears once per destination,
    /// sharing its bytes.
    entries: Vec<(SocketAddr, Bytes)>,
    sent: usize,
    writable_registered: bool,
    /// Send runs of equal-sized datagrams as UDP GSO messages (netconf
    /// `gso` and the kernel both allow it; cleared if a send refuses it).
    pub gso: bool,
}

impl TxQueue {
    pub fn new(gso: bool) -> TxQueue {
        TxQueue {
            entries: Vec::with_capacity(MAX_SEND_BATCH * 2),
            sent: 0,
            writable_registered: false,
            gso,
        }
    }

    fn is_blocked(&self) -> bool {
        self.sent < self.entries.len()
    }
}

/// Loop bookkeeping that is not protocol state.
#[derive(Default)]
pub(super) struct LoopState {
    listen_readable: bool,
    group_readable: Vec<bool>,
    recv_bufs: Vec<Vec<u8>>,
    recv_meta: Vec<RecvMeta>,
    pub(super) requests: Vec<(ConnId, Request)>,
    pub(super) stalled: HashMap<GroupId, VecDeque<Stalled>>,
    /// Payload bytes held by `stalled` (see `publish.rs`).
    pub(super) stalled_payload_bytes: usize,
    /// Per group, since when a record found the flow window shut (until
    /// one goes through): `Stats::flow_window_closed_us`.
    pub(super) window_closed_at: HashMap<GroupId, Instant>,
    /// No sync record in `stalled` has a deadline before this (it may be
    /// earlier than the real earliest: a scan then finds none and moves it).
    pub(super) stalled_sync_deadline: Option<Instant>,
    /// Events drained from the node, reused between rounds.
    events: Vec<Event>,
    /// Consecutive deliveries of one (topic, source), reused likewise.
    delivered_run: Vec<DeliveredRecords>,
    /// Sync publishes per group by ticket; a ticket that was stalled gets
    /// its entry when it is finally published.
    pub(super) syncs: BTreeMap<(GroupId, Ticket), PendingSync>,
    /// Live sources' listen addresses (SourceUp until SourceDown): the
    /// first place to ask for a replay of their logs.
    pub(super) sources: HashMap<NodeId, SocketAddr>,
    /// Every node heard on any group (announcements, receivers, sources),
    /// until it says goodbye: other places that may hold a log.
    pub(super) peers: HashMap<NodeId, SocketAddr>,
    /// Node names from announcements, for deliveries and timeouts.
    pub(super) names: HashMap<NodeId, Arc<str>>,
    next_log_flush: Option<Instant>,
    next_retention: Option<Instant>,
    next_buffer_trim: Option<Instant>,
    /// When a round last had readiness events (netconf `idle = "backoff"`).
    active_at: Option<Instant>,
    /// Earliest time `peers` may be pruned again (see `note_peer`).
    next_peer_prune: Option<Instant>,
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
            if events.is_empty() && self.is_polling(now) {
                std::thread::yield_now();
            }
            if !events.is_empty() {
                self.loop_state.active_at = Some(clock::now());
            }
            let mut requests = std::mem::take(&mut self.loop_state.requests);
            for event in events.iter() {
                self.dispatch(event, &mut requests);
            }
            self.drain_sockets();
            let now = clock::now();
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
            }
            if !requests.is_empty() {
                // Repairs, NCFs and acknowledgements answer what just came
                // in: they leave before this round's publishes are logged
                // and sent, not a round's worth of work later (a repair
                // waited ~3 ms here at 300 MB/s, and the flow window with
                // it).
                self.flush_transmits();
            }
            self.handle_requests(now, &mut requests);
            self.loop_state.requests = requests;
            self.send_stalled(now);
            self.pace_publishers();
            self.node.flush(now);
            self.flush_outputs(now);
            self.expire_syncs(now);
            self.housekeeping(now);
            self.publish_console(now);
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

    /// netconf `idle`: whether this round polls (and yields) instead of
    /// sleeping in the kernel when there is nothing to do.
    fn is_polling(&self, now: Instant) -> bool {
        match self.netconf.node.idle {
            IdlePolicy::Block | IdlePolicy::Spin => false,
            IdlePolicy::Yield => true,
            IdlePolicy::Backoff => self
                .loop_state
                .active_at
                .is_some_and(|at| now.saturating_duration_since(at) < BACKOFF_POLL),
        }
    }

    fn next_timeout(&self, now: Instant) -> Duration {
        // netconf `idle`: yield and spin never sleep in the kernel, backoff
        // not for a while after work.
        if self.netconf.node.idle == IdlePolicy::Spin || self.is_polling(now) {
            return Duration::ZERO;
        }
        let ls = &self.loop_state;
        if ls.listen_readable
            || !ls.requests.is_empty()
            || ls.group_readable.iter().any(|r| *r)
            || self.subs.is_lagging(&self.ipc)
            || self.group_members.is_lagging()
        {
            return Duration::ZERO;
        }
        let mut deadline = now + MAX_SLEEP;
        if let Some(t) = self.node.poll_timeout() {
            deadline = deadline.min(t);
        }
        if let Some(s) = self.next_sync_deadline() {
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
        while taken < RECV_BUDGET_BYTES {
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
                taken += meta.len.max(1);
                if meta.truncated {
                    self.stats.datagrams_received += 1;
                    self.stats.datagrams_truncated += 1;
                    continue;
                }
                // netconf `allow`: only listed networks may send on a group.
                if let Some(conf) = group.and_then(|k| self.netconf.groups.get(k)) {
                    if !conf.allows(meta.from.ip()) {
                        self.stats.datagrams_received += 1;
                        self.stats.datagrams_denied += 1;
                        continue;
                    }
                }
                if meta.segment < meta.len {
                    self.stats.gro_buffers_received += 1;
                }
                // One buffer may hold several datagrams coalesced by GRO.
                for bytes in meta.datagrams(buf) {
                    self.stats.datagrams_received += 1;
                    let Some(bytes) = authenticate(&self.groups, group, bytes) else {
                        self.stats.datagrams_unauthenticated += 1;
                        continue;
                    };
                    self.node.handle_datagram(now, meta.from, group_id, bytes);
                }
            }
        }
        true
    }

    /// Handles requests in arrival order; consecutive PUBLISH frames to one
    /// topic (of any connections) go to the log as one batch.
    fn handle_requests(&mut self, now: Instant, requests: &mut Vec<(ConnId, Request)>) {
        let mut iter = requests.drain(..).peekable();
        while let Some((conn, request)) = iter.next() {
            let Request::Publish(p) = request else {
                self.handle_request(now, conn, request);
                continue;
            };
            let mut bytes = p.value_bytes();
            let mut run = vec![(conn, p)];
            while bytes < RUN_BYTES {
                let same_topic = match (iter.peek(), run.first()) {
                    (Some((_, Request::Publish(next))), Some((_, first))) => {
                        Arc::ptr_eq(&next.topic, &first.topic) || next.topic == first.topic
                    }
                    _ => false,
                };
                if !same_topic {
                    break;
                }
                if let Some((c, Request::Publish(next))) = iter.next() {
                    bytes += next.value_bytes();
                    run.push((c, next));
                }
            }
            self.publish_run(now, run);
        }
    }

    fn handle_request(&mut self, now: Instant, conn: ConnId, request: Request) {
        match request {
            Request::Publish(p) => self.publish_run(now, vec![(conn, p)]),
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
                self.forget_publishes_of(conn);
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Drains the node's outputs in the contract's order, then serves
    /// subscribers and writes client output.
    ///
    /// Deliveries go before transmits: a received record reaches the log
    /// and its subscribers' sockets first, and the STATUS or NAK it caused
    /// follows, so the acknowledgement traffic is not on the path of a
    /// request-response round trip (one `sendmmsg` less before each
    /// delivery). Published data does not wait either: nothing here is slow.
    fn flush_outputs(&mut self, now: Instant) {
        let mut events = std::mem::take(&mut self.loop_state.events);
        loop {
            events.extend(std::iter::from_fn(|| self.node.poll_event()));
            if events.is_empty() {
                break;
            }
            self.handle_events(now, &mut events);
        }
        self.loop_state.events = events;
        self.ipc.flush(self.poll.registry());
        self.flush_transmits();
        self.subs
            .catch_up(&mut self.ipc, &mut self.log, &self.loop_state.names);
        self.group_flush(now);
        // Group announcements and commits may have queued frames.
        self.flush_transmits();
        self.ipc.flush(self.poll.registry());
    }

    /// Sends transmits until the node has none or the socket would block.
    fn flush_transmits(&mut self) {
        loop {
            if self.tx.is_blocked() {
                let tx = &mut self.tx;
                let datagrams: Vec<OutDatagram<'_>> = tx.entries[tx.sent..]
                    .iter()
                    .map(|(dest, bytes)| OutDatagram { dest: *dest, bytes })
                    .collect();
                match sockets::send_batch(&self.listen, &datagrams, &mut tx.gso) {
                    Ok(n) => {
                        tx.sent += n;
                        self.stats.datagrams_sent += n as u64;
                        self.stats.send_calls += 1;
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
                        if let Some((dest, _)) = tx.entries.get(tx.sent) {
                            ::log::debug!("send failed dest={dest} error={e}");
                        }
                        tx.sent += 1;
                    }
                }
                continue;
            }
            let tx = &mut self.tx;
            tx.entries.clear();
            tx.sent = 0;
            while tx.entries.len() < MAX_SEND_BATCH {
                let Some((dest, frame)) = self.node.poll_transmit() else {
                    break;
                };
                let frame = match sealing_keys(&self.groups, dest) {
                    None => frame,
                    Some(keys) => {
                        let mut sealed = Vec::with_capacity(frame.len() + 64);
                        sealed.extend_from_slice(&frame);
                        if let Err(e) = crate::wire::auth::seal(&mut sealed, keys) {
                            ::log::warn!("cannot seal datagram error={e}");
                            continue;
                        }
                        Bytes::from(sealed)
                    }
                };
                match dest {
                    Dest::Peer(addr) => tx.entries.push((addr, frame)),
                    Dest::Group(g) => {
                        let Some(io) = self.groups.iter().find(|io| io.id == g) else {
                            continue;
                        };
                        for &addr in &io.dests {
                            tx.entries.push((addr, frame.clone()));
                        }
                    }
                }
            }
            if tx.entries.is_empty() {
                self.want_writable(false);
                return;
            }
            // A group with several destinations (unicast peers) queues each
            // datagram once per peer; grouping the batch by destination
            // (stable, so each peer still gets its datagrams in order) turns
            // the interleaving into runs that GSO can send as one message.
            if tx.gso {
                let first = tx.entries[0].0;
                if tx.entries.iter().any(|e| e.0 != first) {
                    tx.entries.sort_by_key(|e| e.0);
                }
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
                records,
                ..
            } => self.store_deliveries(&topic, source, std::slice::from_ref(&records)),
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
                self.note_peer(now, source, addr);
                self.retry_unanswered(now);
            }
            Event::SourceDown {
                group,
                source,
                session,
            } => {
                ::log::info!(
                    "source down group={} source={source} session={session}",
                    self.group_name(group)
                );
                self.loop_state.sources.remove(&source);
            }
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
                self.note_peer(now, receiver, addr);
                self.retry_unanswered(now);
            }
            Event::ReceiverDown { group, receiver } => ::log::info!(
                "receiver down group={} receiver={receiver}",
                self.group_name(group)
            ),
            Event::Acked { group, ticket } => self.complete_syncs(group, ticket),
            Event::Peer {
                group,
                node,
                name,
                addr,
                leaving,
            } => {
                // Daemons with consumer-group members repeat ANNOUNCE alive
                // every 500ms: only news is logged.
                let known = self.loop_state.peers.get(&node) == Some(&addr);
                if leaving {
                    if self.loop_state.peers.remove(&node).is_some() {
                        ::log::info!(
                            "peer left group={} node={node} name={name} addr={addr}",
                            self.group_name(group)
                        );
                    }
                    self.loop_state.names.remove(&node);
                } else if self.note_peer(now, node, addr) {
                    self.loop_state.names.insert(node, name.clone());
                    if !known {
                        ::log::info!(
                            "peer joined group={} node={node} name={name} addr={addr}",
                            self.group_name(group)
                        );
                        self.retry_unanswered(now);
                    }
                }
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

    /// Handles a drained batch of events in order; consecutive deliveries of
    /// one (topic, source) go to the log as one batch.
    fn handle_events(&mut self, now: Instant, events: &mut Vec<Event>) {
        let mut iter = events.drain(..).peekable();
        let mut run = std::mem::take(&mut self.loop_state.delivered_run);
        while let Some(event) = iter.next() {
            let Event::Deliver {
                topic,
                source,
                records,
                ..
            } = event
            else {
                self.handle_event(now, event);
                continue;
            };
            let mut bytes = records.bytes().len();
            run.push(records);
            while let Some(Event::Deliver {
                topic: t,
                source: s,
                ..
            }) = iter.peek()
            {
                // Deliveries of one source's topic share the topic's Arc.
                if bytes >= RUN_BYTES || *s != source || !(Arc::ptr_eq(t, &topic) || *t == topic) {
                    break;
                }
                if let Some(Event::Deliver { records, .. }) = iter.next() {
                    bytes += records.bytes().len();
                    run.push(records);
                }
            }
            self.store_deliveries(&topic, source, &run);
            run.clear();
        }
        self.loop_state.delivered_run = run;
    }

    /// Writes received records of one (topic, source), in delivery order, to
    /// our log with one write, then to matching subscribers.
    pub(super) fn store_deliveries(
        &mut self,
        topic: &Arc<str>,
        source: NodeId,
        run: &[DeliveredRecords],
    ) {
        self.route(topic);
        let records = || run.iter().flat_map(DeliveredRecords::iter);
        if self.is_filling(topic, source) {
            for r in records() {
                self.store_delivery(topic, source, r.offset, r.timestamp_ms, r.key, r.value);
            }
            return;
        }
        let Some(first) = records().next().map(|r| r.offset) else {
            return;
        };
        let count: usize = run.iter().map(DeliveredRecords::len).sum();
        if self.is_stalled(topic, source) {
            self.stats.records_unstored += count as u64;
            return;
        }
        let log = match self.log.log(topic, source) {
            Ok(log) => log,
            Err(e) => {
                self.log_refused(topic, source, first, count, &e);
                return;
            }
        };
        // The log stores a record iff its offset is at or past the log's
        // next offset (older ones are duplicates); mirror that to know which
        // to pass on.
        let mut next = log.next_offset();
        if let Err(e) = log.append_replica_batch(clock::wall_ms(), records()) {
            self.log_refused(topic, source, next.max(first), count, &e);
            return;
        }
        let mut fresh = Vec::with_capacity(count);
        for r in records() {
            if r.offset < next {
                self.stats.records_duplicate += 1;
                continue;
            }
            next = r.offset.next();
            self.stats.records_stored += 1;
            fresh.push(r);
        }
        self.pass_on(topic, source, &fresh);
    }

    /// Hands records just stored in our log to matching subscribers and
    /// consumer-group members.
    fn pass_on(&mut self, topic: &Arc<str>, source: NodeId, records: &[RecordRepr<'_>]) {
        let name = self.loop_state.names.get(&source).cloned();
        self.subs.on_records(
            &mut self.ipc,
            &mut self.log,
            topic,
            source,
            name.as_deref(),
            records,
        );
        self.group_records(topic, source, name.as_deref(), records);
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
        if self.is_stalled(topic, source) {
            self.stats.records_unstored += 1;
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
                self.log_refused(topic, source, offset, 1, &e);
                return;
            }
        }
        self.stats.records_stored += 1;
        self.pass_on(topic, source, &[record]);
    }

    fn housekeeping(&mut self, now: Instant) {
        self.retry_stalled(now);
        let ls = &mut self.loop_state;
        if ls.next_log_flush.is_none_or(|t| t <= now) {
            ls.next_log_flush = Some(now + LOG_FLUSH_EVERY);
            if let Err(e) = self.log.flush(clock::wall_ms()) {
                self.stats.log_errors += 1;
                ::log::error!("log flush failed error={e}");
            }
        }
        let ls = &mut self.loop_state;
        if ls.next_buffer_trim.is_none_or(|t| t <= now) {
            ls.next_buffer_trim = Some(now + BUFFER_TRIM_EVERY);
            self.ipc.trim_buffers();
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

    /// Console: hand the HTTP thread a fresh stats snapshot about once a
    /// second (see `console.rs`; the thread never touches daemon state).
    fn publish_console(&mut self, now: Instant) {
        if self.console.as_ref().is_some_and(|c| c.is_due(now)) {
            let json = self.stats_json();
            if let Some(c) = self.console.as_mut() {
                c.publish(now, clock::wall_ms(), json);
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

    /// Remembers `node` as a peer (a place to ask for replays). The table
    /// is bounded: announcements are one frame each, and made-up node ids
    /// cost nothing to send. When it is full, peers not heard from (as a
    /// source, or as a receiver of our sessions) for [`PEER_PRUNE_EVERY`]
    /// are dropped, at most once per that period; a new peer that still
    /// finds no room is refused and counted.
    fn note_peer(&mut self, now: Instant, node: NodeId, addr: SocketAddr) -> bool {
        let ls = &mut self.loop_state;
        if ls.peers.len() >= MAX_PEERS && !ls.peers.contains_key(&node) {
            if ls.next_peer_prune.is_none_or(|t| t <= now) {
                ls.next_peer_prune = Some(now + PEER_PRUNE_EVERY);
                let heard = |n: &NodeId| {
                    self.node
                        .last_heard(*n)
                        .is_some_and(|t| now.saturating_duration_since(t) < PEER_PRUNE_EVERY)
                };
                let sources = &ls.sources;
                ls.peers.retain(|n, _| sources.contains_key(n) || heard(n));
                let peers = &ls.peers;
                ls.names.retain(|n, _| peers.contains_key(n));
                ::log::warn!(
                    "peer table full, pruned unheard peers left={}",
                    ls.peers.len()
                );
            }
            if ls.peers.len() >= MAX_PEERS {
                self.stats.peers_refused += 1;
                return false;
            }
        }
        ls.peers.insert(node, addr);
        true
    }

    pub(super) fn group_name(&self, group: GroupId) -> &str {
        self.groups
            .iter()
            .find(|g| g.id == group)
            .map_or("?", |g| g.name.as_str())
    }
}

/// The keys that seal a transmit: its group's, or for a unicast transmit to
/// one node (NAK, STATUS, repair, replay: proto does not say which group),
/// the first authenticated group's. Receivers check listen-socket datagrams
/// against every group's keys, so any group's key proves membership.
fn sealing_keys(groups: &[GroupIo], dest: Dest) -> Option<&GroupKeys> {
    match dest {
        Dest::Group(g) => groups.iter().find(|io| io.id == g)?.keys.as_ref(),
        Dest::Peer(_) => groups.iter().find_map(|io| io.keys.as_ref()),
    }
}

/// The frame inside a received datagram, or `None` when it must be dropped.
///
/// On a group socket with keys, only a verified frame passes. On the listen
/// socket (`group` = `None`), a sealed datagram must verify against some
/// group's keys, and an unsealed one passes only while some group has no key
/// (it may belong to that group); with every group keyed it is dropped.
fn authenticate<'a>(groups: &[GroupIo], group: Option<usize>, bytes: &'a [u8]) -> Option<&'a [u8]> {
    use crate::wire::auth::{verify, AuthError};
    match group {
        Some(k) => match groups.get(k)?.keys.as_ref() {
            Some(keys) => verify(bytes, keys).ok(),
            None => Some(bytes),
        },
        None => {
            let mut keyed = groups.iter().filter_map(|io| io.keys.as_ref()).peekable();
            if keyed.peek().is_none() {
                return Some(bytes);
            }
            let all_keyed = groups.iter().all(|io| io.keys.is_some());
            let mut sealed = false;
            for keys in keyed {
                match verify(bytes, keys) {
                    Ok(frame) => return Some(frame),
                    Err(AuthError::NotSealed) => break,
                    Err(_) => sealed = true,
                }
            }
            (!sealed && !all_keyed).then_some(bytes)
        }
    }
}
