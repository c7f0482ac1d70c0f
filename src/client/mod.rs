//! `client`: the application's side of the local IPC, a blocking API over
//! the daemon's Unix stream socket.
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use castlog::client::{Client, ConsumeMode, Message, StartFrom};
//!
//! # fn main() -> Result<(), castlog::client::Error> {
//! let mut client = Client::connect(Path::new("/tmp/castlog-h1.sock"))?;
//! // Fire and forget, batched: many records per write.
//! client.publish_oneway("md.prices.AAPL", None, b"189.20")?;
//! client.flush()?;
//! // Wait until the record is in the local log and acknowledged by the group.
//! let offset = client.publish_sync("orders", Some(b"o-17"), b"buy 10", Duration::from_secs(5))?;
//! println!("stored at {offset}");
//!
//! client.subscribe("md.*", StartFrom::Earliest, None, ConsumeMode::Broadcast)?;
//! while let Some(Message::Record(r)) = client.next_message(Duration::from_secs(1))? {
//!     println!("{} {} {}", r.topic, r.offset, String::from_utf8_lossy(&r.value));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! **Batching.** Publishes and commits are encoded into an output buffer and
//! written when it passes [`Client::set_auto_flush_bytes`], on
//! [`Client::flush`], or before any call that waits for an answer. One
//! `write` then carries many records, which is what makes the local hop
//! cheap. Consecutive publishes to one topic in one mode also share one
//! PUBLISH frame (up to 64 KiB), so the daemon decodes the topic once per
//! run, not once per record.
//!
//! **No deadlock.** While the client writes, it also reads: every wait polls
//! the socket for both directions, so completions and records that the daemon
//! sends while a large batch goes out are queued here, never left to fill
//! the daemon's buffers.
//!
//! **Ordering.** The daemon handles one connection's requests in order, so a
//! `publish_oneway` followed by [`Client::ping`] is known to have reached the
//! daemon when the ping returns, and records of one (topic, source) arrive in
//! offset order.
//!
//! This module may call `Instant::now()` (deadlines of blocking calls); the
//! daemon's rooms may not.

mod error;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use self::error::Error;
use crate::sys::read_into_spare;
use crate::wire::ipc::{
    take_frame, Commit, Failure, Interned, OpenPublish, PublishMode, PublishRef, Request, Response,
    Subscribe,
};
pub use crate::wire::ipc::{ConsumeMode, GapReason, StartFrom, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use crate::wire::{NodeId, Offset};

/// Output buffered before an automatic flush, unless changed.
pub const DEFAULT_AUTO_FLUSH_BYTES: usize = 256 * 1024;
/// How long `subscribe`, `stats_json` and `ping` wait for the daemon, unless
/// changed with [`Client::set_request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a sync publish waits past its own timeout, so that the
/// daemon's timeout answer (which names the nodes) arrives first.
const SYNC_GRACE: Duration = Duration::from_millis(500);
/// Bytes asked of the kernel per `read`.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Body size up to which publishes join an open PUBLISH frame: 64 B records
/// travel ~800 to a frame, so the daemon parses one header per run; a
/// record above it gets a frame of its own.
const PUBLISH_FRAME_BODY_CAP: usize = 64 * 1024;

/// A subscription of this client; tags each delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u32);

/// The outcome of one async publish.
#[derive(Debug)]
pub struct Completion {
    /// The id `publish_async` returned.
    pub request_id: u64,
    /// The record's offset in the local log, or why it was refused.
    pub result: Result<Offset, Error>,
}

/// One record delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub subscription: SubscriptionId,
    /// Shared by the records of one topic (`&*d.topic` or `d.topic.as_ref()`
    /// for a `&str`): receiving a record allocates nothing for its names.
    pub topic: Arc<str>,
    /// The node whose log gave the record its offset.
    pub source: NodeId,
    /// The source's name, when the daemon knows it (shared likewise).
    pub source_name: Option<Arc<str>>,
    pub offset: Offset,
    /// Milliseconds since the Unix epoch, set by the publisher's daemon
    /// (or by the publisher).
    pub timestamp_ms: u64,
    /// Empty when the record has no key.
    pub key: Bytes,
    pub value: Bytes,
}

/// Offsets `from..to` (end exclusive) of one source's topic that no node
/// holds any more: they will never be delivered. Never a silent hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub subscription: SubscriptionId,
    pub topic: String,
    pub source: NodeId,
    pub from: Offset,
    pub to: Offset,
    pub reason: GapReason,
}

/// What a subscription yields, in offset order per (topic, source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Record(Delivery),
    Gap(Gap),
}

/// A blocking connection to the local daemon. Not thread-safe by design:
/// use one per thread (connections are cheap).
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    wbuf: Vec<u8>,
    wpos: usize,
    /// The PUBLISH frame at the end of `wbuf` that the next publish of the
    /// same topic, mode and timeout (with the next request id) joins; `None`
    /// once anything else is queued or a write is attempted.
    open_publish: Option<OpenPublish>,
    rbuf: BytesMut,
    /// Last topic and source name received, shared by the next records.
    interned: Interned,
    auto_flush_bytes: usize,
    request_timeout: Duration,
    next_request_id: u64,
    next_sub_id: u32,
    next_nonce: u64,
    async_in_flight: usize,
    completions: VecDeque<Completion>,
    messages: VecDeque<Message>,
    sub_replies: HashMap<u32, Result<(), Failure>>,
    /// Consumer group of each subscription that has one (for auto-commit).
    sub_groups: HashMap<u32, String>,
    auto_commit: bool,
    /// The sync publish being waited for, and its answer once it came.
    sync_waiting: Option<u64>,
    sync_result: Option<Result<Offset, Error>>,
    /// Sync publishes given up on: their late answers are dropped.
    abandoned: HashSet<u64>,
    stats_reply: Option<String>,
    last_pong: u64,
    is_closed: bool,
}

impl Client {
    /// Connects to the daemon's socket. An absent socket or a refused
    /// connection is [`Error::DaemonNotRunning`], with a hint.
    pub fn connect(socket: &Path) -> Result<Client, Error> {
        let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::DaemonNotRunning {
                path: socket.to_path_buf(),
                source: e,
            },
            _ => Error::Io(e),
        })?;
        // Non-blocking: every wait goes through poll(2) on both directions.
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream,
            path: socket.to_path_buf(),
            wbuf: Vec::with_capacity(DEFAULT_AUTO_FLUSH_BYTES + 4096),
            wpos: 0,
            open_publish: None,
            rbuf: BytesMut::new(),
            interned: Interned::default(),
            auto_flush_bytes: DEFAULT_AUTO_FLUSH_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            next_request_id: 1,
            next_sub_id: 1,
            next_nonce: 1,
            async_in_flight: 0,
            completions: VecDeque::new(),
            messages: VecDeque::new(),
            sub_replies: HashMap::new(),
            sub_groups: HashMap::new(),
            auto_commit: false,
            sync_waiting: None,
            sync_result: None,
            abandoned: HashSet::new(),
            stats_reply: None,
            last_pong: 0,
            is_closed: false,
        })
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Output buffered before a publish flushes by itself. Larger batches
    /// mean fewer system calls; smaller ones, lower latency for one-way
    /// publishes that are not followed by `flush`. Default: 256 KiB.
    pub fn set_auto_flush_bytes(&mut self, bytes: usize) {
        self.auto_flush_bytes = bytes;
    }

    /// How long `subscribe`, `stats_json` and `ping` wait. Default: 10 s.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// Publishes without any answer, not even on failure. Buffered: the
    /// record leaves on `flush()` or when the buffer fills.
    pub fn publish_oneway(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(), Error> {
        self.queue_publish(0, PublishMode::OneWay, 0, topic, key, value)?;
        self.flush_if_full()
    }

    /// Publishes and returns a request id at once; the outcome (offset or
    /// error) arrives later as a [`Completion`] from `poll_completions` or
    /// `wait_completions`. Buffered like `publish_oneway`.
    pub fn publish_async(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<u64, Error> {
        let id = self.take_request_id();
        self.queue_publish(id, PublishMode::Async, 0, topic, key, value)?;
        self.async_in_flight += 1;
        self.flush_if_full()?;
        Ok(id)
    }

    /// Publishes and waits until the record is in the local log and every
    /// live receiver of its group acknowledged it. On timeout the error names
    /// the nodes that did not ([`Error::Timeout`]). Completions and records
    /// that arrive meanwhile are kept for later calls.
    pub fn publish_sync(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        timeout: Duration,
    ) -> Result<Offset, Error> {
        let id = self.take_request_id();
        let timeout_ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        self.queue_publish(id, PublishMode::Sync, timeout_ms, topic, key, value)?;
        self.sync_waiting = Some(id);
        self.sync_result = None;
        let deadline = Instant::now() + timeout + SYNC_GRACE;
        let answered = self.pump(Some(deadline), |c| c.sync_result.is_some());
        self.sync_waiting = None;
        match answered {
            Ok(true) => self.sync_result.take().unwrap_or(Err(Error::Disconnected)),
            Ok(false) => {
                self.abandoned.insert(id);
                Err(Error::Timeout {
                    waiting_for: Vec::new(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes everything buffered; returns when the kernel took it all.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.pump(None, |c| c.wpos == c.wbuf.len())?;
        Ok(())
    }

    /// Async publishes whose completion has not been handed out yet.
    pub fn pending_completions(&self) -> usize {
        self.async_in_flight + self.completions.len()
    }

    /// The completions that already arrived, without waiting (buffered
    /// output is still written as far as the socket takes it).
    pub fn poll_completions(&mut self) -> Result<Vec<Completion>, Error> {
        self.pump(Some(Instant::now()), |_| false)?;
        Ok(self.completions.drain(..).collect())
    }

    /// Flushes, then waits until at least one completion arrived (or the
    /// timeout passed, or none is pending) and returns all that did.
    pub fn wait_completions(&mut self, timeout: Duration) -> Result<Vec<Completion>, Error> {
        let deadline = Instant::now() + timeout;
        self.pump(Some(deadline), |c| {
            !c.completions.is_empty() || (c.async_in_flight == 0 && c.wpos == c.wbuf.len())
        })?;
        Ok(self.completions.drain(..).collect())
    }

    /// Subscribes to a topic name, `prefix.*` or `*`, starting at `from` in
    /// each source's log. With a `group`, the group's members share (in
    /// `Clustering` mode) or each get (in `Broadcast` mode) the records, and
    /// `StartFrom::Committed` resumes from the group's committed offsets.
    /// Waits for the daemon's answer.
    pub fn subscribe(
        &mut self,
        pattern: &str,
        from: StartFrom,
        group: Option<&str>,
        mode: ConsumeMode,
    ) -> Result<SubscriptionId, Error> {
        check_name("pattern", pattern)?;
        if let Some(g) = group {
            check_name("group name", g)?;
        }
        let sub_id = self.next_sub_id;
        if let Some(g) = group {
            self.sub_groups.insert(sub_id, g.to_owned());
        }
        self.next_sub_id = self.next_sub_id.wrapping_add(1).max(1);
        self.queue(&Request::Subscribe(Subscribe {
            sub_id,
            pattern: pattern.to_owned(),
            from,
            group: group.map(str::to_owned),
            mode,
        }))?;
        let deadline = Instant::now() + self.request_timeout;
        if !self.pump(Some(deadline), |c| c.sub_replies.contains_key(&sub_id))? {
            return Err(Error::Timeout {
                waiting_for: Vec::new(),
            });
        }
        match self.sub_replies.remove(&sub_id) {
            Some(Ok(())) => Ok(SubscriptionId(sub_id)),
            Some(Err(failure)) => Err(failure.into()),
            None => Err(Error::Disconnected),
        }
    }

    /// Ends a subscription; its records still queued here are dropped.
    pub fn unsubscribe(&mut self, subscription: SubscriptionId) -> Result<(), Error> {
        self.queue(&Request::Unsubscribe {
            sub_id: subscription.0,
        })?;
        self.messages.retain(|m| match m {
            Message::Record(d) => d.subscription != subscription,
            Message::Gap(g) => g.subscription != subscription,
        });
        self.flush()
    }

    /// The next record or gap notice of any subscription, waiting up to
    /// `timeout`; `None` when nothing came in time.
    pub fn next_message(&mut self, timeout: Duration) -> Result<Option<Message>, Error> {
        if self.messages.is_empty() {
            let deadline = Instant::now() + timeout;
            self.pump(Some(deadline), |c| !c.messages.is_empty())?;
        }
        let m = self.messages.pop_front();
        self.auto_commit_after(&m)?;
        Ok(m)
    }

    /// A message already received, without waiting or reading the socket.
    pub fn try_next_message(&mut self) -> Option<Message> {
        let m = self.messages.pop_front();
        // A commit that cannot be queued surfaces on the next call that
        // writes; delivery itself is not undone.
        let _ = self.auto_commit_after(&m);
        m
    }

    /// Commits consumer-group records as they are handed out, instead of
    /// waiting for [`Client::commit`]. Off by default: committing after
    /// processing gives at-least-once (a member that dies before its commit
    /// has its records delivered again to the next owner); auto-commit gives
    /// at-most-once for a record whose processing is cut short. Commits are
    /// queued in order with the other requests and written with the next
    /// request or [`Client::flush`].
    pub fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
    }

    fn auto_commit_after(&mut self, m: &Option<Message>) -> Result<(), Error> {
        if !self.auto_commit {
            return Ok(());
        }
        let Some(Message::Record(d)) = m else {
            return Ok(());
        };
        let Some(group) = self.sub_groups.get(&d.subscription.0).cloned() else {
            return Ok(());
        };
        self.queue(&Request::Commit(Commit {
            group,
            topic: d.topic.to_string(),
            source: d.source,
            offset: d.offset.next(),
        }))
    }

    /// Records a consumer group's progress: `offset` is the next record the
    /// group should get from (`topic`, `source`), as in Kafka. Sent after
    /// everything queued before it; the daemon applies requests in order.
    pub fn commit(
        &mut self,
        group: &str,
        topic: &str,
        source: NodeId,
        offset: Offset,
    ) -> Result<(), Error> {
        check_name("group name", group)?;
        check_name("topic", topic)?;
        self.queue(&Request::Commit(Commit {
            group: group.to_owned(),
            topic: topic.to_owned(),
            source,
            offset,
        }))?;
        self.flush()
    }

    /// The daemon's counters as a JSON document.
    pub fn stats_json(&mut self) -> Result<String, Error> {
        self.stats_reply = None;
        self.queue(&Request::Stats)?;
        let deadline = Instant::now() + self.request_timeout;
        if !self.pump(Some(deadline), |c| c.stats_reply.is_some())? {
            return Err(Error::Timeout {
                waiting_for: Vec::new(),
            });
        }
        self.stats_reply.take().ok_or(Error::Disconnected)
    }

    /// A round trip through the daemon: returns once the daemon handled
    /// every request sent before it (a barrier for one-way publishes).
    pub fn ping(&mut self) -> Result<Duration, Error> {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let start = Instant::now();
        self.queue(&Request::Ping { nonce })?;
        if !self.pump(Some(start + self.request_timeout), |c| c.last_pong >= nonce)? {
            return Err(Error::Timeout {
                waiting_for: Vec::new(),
            });
        }
        Ok(start.elapsed())
    }

    fn take_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    fn queue_publish(
        &mut self,
        request_id: u64,
        mode: PublishMode,
        timeout_ms: u32,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(), Error> {
        check_name("topic", topic)?;
        let key = key.unwrap_or(&[]);
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::RecordTooLarge {
                size: value.len() as u64,
                max: MAX_VALUE_LEN as u64,
            });
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge {
                size: key.len() as u64,
                max: MAX_KEY_LEN as u64,
            });
        }
        if self.is_closed {
            return Err(Error::Disconnected);
        }
        let publish = PublishRef {
            request_id,
            mode,
            timeout_ms,
            timestamp_ms: 0,
            topic,
            key,
            value,
        };
        let joined = match self.open_publish.as_mut() {
            // Only a frame none of whose bytes went to the kernel may grow
            // (a write attempt already closes it; this guards the rule).
            Some(open) if self.wpos <= open.start_pos() => {
                open.append(&mut self.wbuf, &publish, PUBLISH_FRAME_BODY_CAP)?
            }
            _ => false,
        };
        if !joined {
            self.open_publish = Some(OpenPublish::start(&mut self.wbuf, &publish)?);
        }
        Ok(())
    }

    fn queue(&mut self, request: &Request) -> Result<(), Error> {
        if self.is_closed {
            return Err(Error::Disconnected);
        }
        // The request follows the publishes: the next publish starts anew.
        self.open_publish = None;
        request.emit_to_vec(&mut self.wbuf)?;
        Ok(())
    }

    fn flush_if_full(&mut self) -> Result<(), Error> {
        if self.wbuf.len() - self.wpos >= self.auto_flush_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// The one waiting loop: writes buffered output, reads and dispatches
    /// whatever arrives, until `done` or the deadline (`None` = no limit).
    /// Returns whether `done` became true.
    fn pump(
        &mut self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&Client) -> bool,
    ) -> Result<bool, Error> {
        loop {
            self.write_some()?;
            if done(self) {
                return Ok(true);
            }
            if self.is_closed {
                return Err(Error::Disconnected);
            }
            let timeout = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // One last non-blocking read, so a poll with a
                        // deadline of "now" still picks up what arrived.
                        self.read_some()?;
                        return Ok(done(self));
                    }
                    Some(d - now)
                }
                None => None,
            };
            let want_write = self.wpos < self.wbuf.len();
            let revents = poll_fd(self.stream.as_raw_fd(), want_write, timeout)?;
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                self.read_some()?;
            }
        }
    }

    /// Writes buffered output until done or the socket is full.
    fn write_some(&mut self) -> Result<(), Error> {
        // What goes to the kernel now must not change afterwards.
        self.open_publish = None;
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => {
                    self.is_closed = true;
                    return Err(Error::Disconnected);
                }
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    self.is_closed = true;
                    return Err(Error::Disconnected);
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            // After a large record, give the memory back.
            self.wbuf
                .shrink_to(self.auto_flush_bytes.max(64 * 1024) * 2);
        }
        Ok(())
    }

    /// Reads what the socket has (without blocking) and dispatches every
    /// whole frame.
    fn read_some(&mut self) -> Result<(), Error> {
        loop {
            match read_into_spare(
                self.stream.as_raw_fd(),
                &mut self.rbuf,
                READ_CHUNK_BYTES,
                READ_CHUNK_BYTES,
            ) {
                Ok(0) => {
                    self.is_closed = true;
                    self.dispatch_frames()?;
                    return Ok(());
                }
                Ok(n) => {
                    self.dispatch_frames()?;
                    // Probably drained (the next poll tells for sure), or
                    // records wait for the caller: hand them out before
                    // reading on, so the frames they share are let go and
                    // `rbuf` reuses its memory instead of faulting in new
                    // pages for every read.
                    if n < READ_CHUNK_BYTES || !self.messages.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.is_closed = true;
                    return Ok(());
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    fn dispatch_frames(&mut self) -> Result<(), Error> {
        let mut largest = 0;
        while let Some(frame) = take_frame(&mut self.rbuf)? {
            largest = largest.max(frame.len());
            let response = Response::parse_interning(&frame, &mut self.interned)?;
            self.dispatch(response);
        }
        if self.rbuf.is_empty() && largest > READ_CHUNK_BYTES * 4 {
            // Let a large record's allocation go with the record.
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    fn dispatch(&mut self, response: Response) {
        match response {
            Response::Published { request_id, offset } => {
                self.complete(request_id, Ok(offset));
            }
            Response::PublishFailed {
                request_id,
                failure,
            } => {
                self.complete(request_id, Err(failure.into()));
            }
            Response::Records(batch) => {
                let subscription = SubscriptionId(batch.sub_id);
                let (topic, source, source_name) = (batch.topic, batch.source, batch.source_name);
                self.messages.extend(batch.records.into_iter().map(|r| {
                    Message::Record(Delivery {
                        subscription,
                        topic: topic.clone(),
                        source,
                        source_name: source_name.clone(),
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key,
                        value: r.value,
                    })
                }));
            }
            Response::Gap(g) => self.messages.push_back(Message::Gap(Gap {
                subscription: SubscriptionId(g.sub_id),
                topic: g.topic,
                source: g.source,
                from: g.from,
                to: g.to,
                reason: g.reason,
            })),
            Response::Subscribed { sub_id } => {
                self.sub_replies.insert(sub_id, Ok(()));
            }
            Response::SubscribeFailed { sub_id, failure } => {
                self.sub_replies.insert(sub_id, Err(failure));
            }
            Response::Stats { json } => self.stats_reply = Some(json),
            Response::Pong { nonce } => self.last_pong = self.last_pong.max(nonce),
        }
    }

    fn complete(&mut self, request_id: u64, result: Result<Offset, Error>) {
        if self.sync_waiting == Some(request_id) {
            self.sync_result = Some(result);
        } else if self.abandoned.remove(&request_id) {
            // A sync publish the caller already gave up on.
        } else {
            self.async_in_flight = self.async_in_flight.saturating_sub(1);
            self.completions
                .push_back(Completion { request_id, result });
        }
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidArgument {
            what,
            reason: "must not be empty",
        });
    }
    if name.len() > usize::from(u16::MAX) {
        return Err(Error::InvalidArgument {
            what,
            reason: "longer than 65535 bytes",
        });
    }
    Ok(())
}

/// Waits until the socket is readable (or writable, when `want_write`), up
/// to `timeout` (`None` = forever); returns poll(2)'s revents (0 on timeout
/// or signal).
fn poll_fd(fd: i32, want_write: bool, timeout: Option<Duration>) -> io::Result<i16> {
    let mut events = libc::POLLIN;
    if want_write {
        events |= libc::POLLOUT;
    }
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let timeout_ms = match timeout {
        // Round up so a short wait does not become a busy loop of zero waits.
        Some(d) => i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
        None => -1,
    };
    // SAFETY: `pfd` is a valid pollfd that outlives the call; nfds is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(pfd.revents)
}
