//! The daemon's side of the client IPC: a Unix stream listener and its
//! connections, driven by the daemon's mio event loop.
//!
//! The event loop owns the `mio::Poll`; this server only registers its
//! sockets on the loop's `Registry` and turns readiness into decoded
//! [`Request`]s. It never blocks and never panics on client bytes: a
//! malformed or oversized frame closes that one connection with a warning
//! and a counter, and the loop sees `(conn, Request::Disconnected)`.
//!
//! Tokens: the listener has `listener_token`; connection `id` has
//! `listener_token.0 + 1 + id`. Every token at or above `listener_token` is
//! therefore reserved for this server: give the listener the highest token
//! the loop uses.
//!
//! Reading drains each readable connection until `WouldBlock` (mio is
//! edge-triggered), but at most [`READ_BUDGET_BYTES`] per event, so a fast
//! publisher cannot starve the network sockets; when the budget runs out the
//! connection is re-registered, which re-arms the edge and brings it back in
//! the next poll. While the daemon holds too many records back for the flow
//! window, it pauses reading connections that publish ([`set_paused`]): their
//! next bytes stay in the socket, so the client's writes block, which is
//! the publisher's backpressure (Aeron's `BACK_PRESSURED`, Kafka's full
//! `buffer.memory`); other connections are read as usual. Output is buffered per connection and written by
//! [`IpcServer::flush`] (or on the next writable event): one `write` carries
//! many frames. Records sent to one subscription in a row share one RECORDS
//! frame (up to [`RECORDS_FRAME_BODY_CAP`]): the frame stays open until
//! another response is queued or a write of the connection is attempted.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::sys::read_into_spare;
use crate::wire::ipc::{take_frame, OpenRecords};
pub use crate::wire::ipc::{DeliveryRef, Request, Response};

/// A connection's index; stable while the connection lives, reused after.
pub type ConnId = usize;

/// Most bytes read from one connection per readiness event.
pub const READ_BUDGET_BYTES: usize = 256 * 1024;
/// Output buffer capacity an idle connection keeps.
const IDLE_BUFFER_BYTES: usize = 1024 * 1024;
/// Socket send buffer asked for each client connection (see `accept_all`).
const CONN_SEND_BUFFER_BYTES: usize = 1 << 20;
/// Most a connection's read buffer grows by per read, so that a few records
/// kept alive (waiting for the flow window) never pin much more memory
/// than they hold.
const READ_GROW_BYTES: usize = 64 << 10;
/// Bytes asked of the kernel per `read` call.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Body size up to which records join an open RECORDS frame. Large enough
/// that 64 B records travel ~700 to a frame, small enough that a client
/// sees the first records of a burst without waiting for a huge frame; a
/// record above it gets a frame of its own.
pub const RECORDS_FRAME_BODY_CAP: usize = 64 * 1024;

/// Counters of the IPC server (plain u64, noun_verb); serializable for the
/// daemon's stats document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IpcStats {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    /// Frames decoded from clients (a PUBLISH frame counts once).
    pub frames_received: u64,
    /// Records received from publishers, in PUBLISH frames.
    pub publishes_received: u64,
    pub frames_malformed: u64,
    /// Frames queued for clients (a RECORDS frame counts once).
    pub frames_sent: u64,
    /// Records queued for subscribers, in RECORDS frames.
    pub records_sent: u64,
    pub frames_unencodable: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Times reading publishers was paused by flow-control backlog.
    pub publisher_pauses: u64,
}

/// The client-facing Unix socket and its connections.
#[derive(Debug)]
pub struct IpcServer {
    listener: UnixListener,
    listener_token: Token,
    path: PathBuf,
    /// (device, inode) of the socket file we created, so Drop never removes
    /// a socket that another daemon put at the same path later.
    file_id: Option<(u64, u64)>,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    /// Connections with output queued since the last flush.
    dirty: Vec<ConnId>,
    /// Connections whose write failed: reported as Disconnected on the next
    /// `handle_event` call.
    broken: Vec<ConnId>,
    stats: IpcStats,
    /// Reading publishers is paused (see the module doc).
    paused: bool,
    /// Publishing connections that became readable while paused.
    deferred: Vec<ConnId>,
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    wpos: usize,
    writable_registered: bool,
    in_dirty: bool,
    is_broken: bool,
    /// Has sent a PUBLISH frame: paused with the others while the daemon's
    /// flow-control backlog is too large.
    publishes: bool,
    in_deferred: bool,
    /// Wrote output since the last `trim_buffers`.
    wrote_since_trim: bool,
    /// Topic of the last PUBLISH, shared by the next ones to it.
    last_topic: Option<std::sync::Arc<str>>,
    /// The RECORDS frame at the end of `wbuf` that the next record of the
    /// same subscription, source and topic joins; `None` once anything else
    /// is queued or a write is attempted.
    open_records: Option<OpenRecords>,
}

impl IpcServer {
    /// Creates the socket (removing a stale socket file only if nothing
    /// answers on it; refusing to start if a live daemon owns it), mode 0600,
    /// and registers the listener with `listener_token`.
    pub fn bind(path: &Path, registry: &Registry, listener_token: Token) -> io::Result<IpcServer> {
        remove_stale_socket(path)?;
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create socket directory {}: {e}", parent.display()),
                    )
                })?;
            }
        }
        let mut listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind ipc socket {}: {e}", path.display()),
            )
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let file_id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        ::log::info!("ipc socket listening path={}", path.display());
        Ok(IpcServer {
            listener,
            listener_token,
            path: path.to_path_buf(),
            file_id,
            conns: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            broken: Vec::new(),
            stats: IpcStats::default(),
            paused: false,
            deferred: Vec::new(),
        })
    }

    /// Tokens for connections are `listener_token.0 + 1 + conn id`; this
    /// says whether a token is ours (the listener's or any above it).
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.listener_token.0
    }

    /// Handles readiness for one of our tokens: accepts, reads until
    /// WouldBlock (within the read budget), decodes whole frames into `out`,
    /// writes pending output. A closed or broken connection yields
    /// `(conn, Request::Disconnected)`, exactly once.
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        event: &mio::event::Event,
        out: &mut Vec<(ConnId, Request)>,
    ) {
        self.report_broken(registry, out);
        let token = event.token();
        if token == self.listener_token {
            self.accept_all(registry);
            return;
        }
        let Some(id) = self.conn_id(token) else {
            return;
        };
        if event.is_writable() {
            self.write_pending(registry, id);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            if self.paused && self.defer(id) {
                return;
            }
            self.read_all(registry, id, out);
        }
        self.report_broken(registry, out);
    }

    /// Pauses or resumes reading publishing connections. Resuming reads
    /// every connection that became readable meanwhile (the edge it had
    /// would not come again), so requests appear in `out`.
    pub fn set_paused(
        &mut self,
        registry: &Registry,
        paused: bool,
        out: &mut Vec<(ConnId, Request)>,
    ) {
        if self.paused == paused {
            return;
        }
        self.paused = paused;
        if paused {
            self.stats.publisher_pauses += 1;
            return;
        }
        for id in std::mem::take(&mut self.deferred) {
            if let Some(Some(conn)) = self.conns.get_mut(id) {
                conn.in_deferred = false;
            }
            self.read_all(registry, id, out);
        }
        self.report_broken(registry, out);
    }

    /// Whether reading publishers is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Keeps a publishing connection's read for `set_paused(false)`;
    /// returns false for a connection that is read anyway.
    fn defer(&mut self, id: ConnId) -> bool {
        let Some(Some(conn)) = self.conns.get_mut(id) else {
            return false;
        };
        if !conn.publishes || conn.is_broken {
            return false;
        }
        if !conn.in_deferred {
            conn.in_deferred = true;
            self.deferred.push(id);
        }
        true
    }

    /// Queues a response (buffered; flushed by `flush()` or on writable).
    /// A response to a connection that is gone is dropped: the loop learns
    /// of the disconnect from `handle_event`.
    pub fn send(&mut self, conn: ConnId, response: &Response) {
        self.queue(conn, |wbuf| response.emit_to_vec(wbuf));
    }

    /// Queues a record delivery encoded straight from borrowed slices (no
    /// allocation per record). It joins the connection's open RECORDS frame
    /// when that frame is for the same subscription, source, topic and
    /// source name and stays within [`RECORDS_FRAME_BODY_CAP`]; otherwise it
    /// starts a new frame, which the next records may join.
    pub fn send_record(&mut self, conn: ConnId, delivery: &DeliveryRef<'_>) {
        let Some(Some(c)) = self.conns.get_mut(conn) else {
            return;
        };
        if c.is_broken {
            return;
        }
        let joined = match c.open_records.as_mut() {
            // Only a frame none of whose bytes went to the kernel may grow
            // (a write attempt already closes it; this guards the rule).
            Some(open) if c.wpos <= open.start_pos() => {
                open.append(&mut c.wbuf, delivery, RECORDS_FRAME_BODY_CAP)
            }
            _ => Ok(false),
        };
        let queued = match joined {
            Ok(true) => Ok(()),
            Ok(false) => OpenRecords::start(&mut c.wbuf, delivery).map(|open| {
                c.open_records = Some(open);
                self.stats.frames_sent += 1;
            }),
            Err(e) => Err(e),
        };
        match queued {
            Ok(()) => {
                self.stats.records_sent += 1;
                if !c.in_dirty {
                    c.in_dirty = true;
                    self.dirty.push(conn);
                }
            }
            Err(e) => {
                self.stats.frames_unencodable += 1;
                ::log::warn!("dropping unencodable ipc record conn={conn} error={e}");
            }
        }
    }

    /// Gives back the output buffer of every connection that wrote nothing
    /// since the last call and holds more than an idle one should (a large
    /// record or a burst grew it). Called about once a second.
    pub fn trim_buffers(&mut self) {
        for conn in self.conns.iter_mut().flatten() {
            if !conn.wrote_since_trim && conn.wbuf.is_empty() {
                conn.wbuf.shrink_to(IDLE_BUFFER_BYTES);
            }
            conn.wrote_since_trim = false;
        }
    }

    /// Writes queued output of every connection until done or WouldBlock;
    /// what is left goes out on the connection's next writable event.
    pub fn flush(&mut self, registry: &Registry) {
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            if let Some(Some(conn)) = self.conns.get_mut(id) {
                conn.in_dirty = false;
            }
            self.write_pending(registry, id);
        }
        // Keep the allocation for the next round.
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Bytes queued for a connection and not yet written: the daemon stops
    /// feeding a subscriber past a limit (a slow subscriber then reads from
    /// the log).
    pub fn backlog(&self, conn: ConnId) -> usize {
        match self.conns.get(conn) {
            Some(Some(c)) => c.wbuf.len() - c.wpos,
            _ => 0,
        }
    }

    /// netconf `socket-group`: hands the socket file to group `gid` and opens
    /// it to that group (mode 0660), so its members' programs may connect
    /// without running as the daemon's user. Until this runs the socket is
    /// 0600, so there is no moment when it is more open than configured.
    pub fn share_with_group(&self, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(&self.path, None, Some(gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give ipc socket {} to group {gid}: {e} (the daemon must run as root or be a member of the group)",
                    self.path.display()
                ),
            )
        })?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o660))?;
        ::log::info!(
            "ipc socket shared with group path={} gid={gid} mode=0660",
            self.path.display()
        );
        Ok(())
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    pub fn stats(&self) -> &IpcStats {
        &self.stats
    }

    fn conn_id(&self, token: Token) -> Option<ConnId> {
        let id = token.0.checked_sub(self.listener_token.0)?.checked_sub(1)?;
        matches!(self.conns.get(id), Some(Some(_))).then_some(id)
    }

    fn token(&self, id: ConnId) -> Token {
        Token(self.listener_token.0 + 1 + id)
    }

    fn accept_all(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _addr)) => {
                    // A loop round turns up to a MiB of datagrams into
                    // deliveries; a socket that takes only the default
                    // ~200 KiB per round sends a fast subscriber to the log
                    // (the backlog limit) for good. The kernel caps this at
                    // net.core.wmem_max.
                    let _ = socket2::SockRef::from(&stream)
                        .set_send_buffer_size(CONN_SEND_BUFFER_BYTES);
                    let id = self.free.pop().unwrap_or(self.conns.len());
                    let token = self.token(id);
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        ::log::warn!("cannot register ipc connection error={e}");
                        self.free.push(id);
                        continue;
                    }
                    let conn = Conn {
                        stream,
                        rbuf: BytesMut::new(),
                        wbuf: Vec::new(),
                        wpos: 0,
                        writable_registered: false,
                        in_dirty: false,
                        is_broken: false,
                        publishes: false,
                        in_deferred: false,
                        last_topic: None,
                        open_records: None,
                        wrote_since_trim: false,
                    };
                    if id == self.conns.len() {
                        self.conns.push(Some(conn));
                    } else if let Some(slot) = self.conns.get_mut(id) {
                        *slot = Some(conn);
                    }
                    self.stats.connections_accepted += 1;
                    ::log::debug!("ipc connection accepted conn={id}");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the pending connection stays in the
                    // backlog; the next readiness event retries.
                    ::log::warn!("ipc accept failed error={e}");
                    return;
                }
            }
        }
    }

    fn read_all(&mut self, registry: &Registry, id: ConnId, out: &mut Vec<(ConnId, Request)>) {
        let token = self.token(id);
        let Some(Some(conn)) = self.conns.get_mut(id) else {
            return;
        };
        if conn.is_broken {
            return;
        }
        let mut budget = READ_BUDGET_BYTES;
        let closed = loop {
            if budget == 0 {
                // Re-arm the edge so the rest is read in the next poll round.
                let interest = conn.interest();
                if let Err(e) = registry.reregister(&mut conn.stream, token, interest) {
                    break Some(format!("reregister failed: {e}"));
                }
                break None;
            }
            let want = READ_CHUNK_BYTES.min(budget);
            match read_into_spare(
                conn.stream.as_raw_fd(),
                &mut conn.rbuf,
                want,
                READ_GROW_BYTES,
            ) {
                Ok(0) => break Some(String::new()),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.stats.bytes_received += n as u64;
                    let before = out.len();
                    let decoded = decode_frames(id, conn, out, &mut self.stats);
                    if !conn.publishes {
                        conn.publishes = out[before..]
                            .iter()
                            .any(|(_, r)| matches!(r, Request::Publish(_)));
                    }
                    if let Err(e) = decoded {
                        self.stats.frames_malformed += 1;
                        ::log::warn!(
                            "closing ipc connection on malformed frame conn={id} error={e}"
                        );
                        break Some(String::new());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(format!("read failed: {e}")),
            }
        };
        if let Some(reason) = closed {
            if !reason.is_empty() {
                ::log::debug!("ipc connection lost conn={id} reason={reason}");
            }
            self.close(registry, id);
            out.push((id, Request::Disconnected));
        }
    }

    fn queue(&mut self, id: ConnId, emit: impl FnOnce(&mut Vec<u8>) -> crate::wire::Result<usize>) {
        let Some(Some(conn)) = self.conns.get_mut(id) else {
            return;
        };
        if conn.is_broken {
            return;
        }
        // The response follows the records: the next record starts anew.
        conn.open_records = None;
        match emit(&mut conn.wbuf) {
            Ok(_) => {
                self.stats.frames_sent += 1;
                if !conn.in_dirty {
                    conn.in_dirty = true;
                    self.dirty.push(id);
                }
            }
            Err(e) => {
                self.stats.frames_unencodable += 1;
                ::log::warn!("dropping unencodable ipc response conn={id} error={e}");
            }
        }
    }

    fn write_pending(&mut self, registry: &Registry, id: ConnId) {
        let token = self.token(id);
        let Some(Some(conn)) = self.conns.get_mut(id) else {
            return;
        };
        if conn.is_broken {
            return;
        }
        // What goes to the kernel now must not change afterwards.
        conn.open_records = None;
        while conn.wpos < conn.wbuf.len() {
            match conn.stream.write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => {
                    conn.mark_broken("write returned zero");
                    self.broken.push(id);
                    return;
                }
                Ok(n) => {
                    conn.wpos += n;
                    self.stats.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    conn.mark_broken(&format!("write failed: {e}"));
                    self.broken.push(id);
                    return;
                }
            }
        }
        conn.wrote_since_trim = true;
        if conn.wpos == conn.wbuf.len() {
            // The capacity stays while output keeps coming (`trim_buffers`
            // gives it back once the connection is quiet): growing it again
            // after every drained burst faulted its pages in afresh.
            conn.wbuf.clear();
            conn.wpos = 0;
        } else if conn.wpos > conn.wbuf.len() / 2 {
            // Compact so the buffer does not grow with a slow reader.
            conn.wbuf.drain(..conn.wpos);
            conn.wpos = 0;
        }
        let want_writable = conn.wpos < conn.wbuf.len();
        if want_writable != conn.writable_registered {
            conn.writable_registered = want_writable;
            let interest = conn.interest();
            if let Err(e) = registry.reregister(&mut conn.stream, token, interest) {
                conn.mark_broken(&format!("reregister failed: {e}"));
                self.broken.push(id);
            }
        }
    }

    fn report_broken(&mut self, registry: &Registry, out: &mut Vec<(ConnId, Request)>) {
        while let Some(id) = self.broken.pop() {
            if matches!(self.conns.get(id), Some(Some(_))) {
                self.close(registry, id);
                out.push((id, Request::Disconnected));
            }
        }
    }

    fn close(&mut self, registry: &Registry, id: ConnId) {
        if let Some(slot) = self.conns.get_mut(id) {
            if let Some(mut conn) = slot.take() {
                // The socket closes on drop; deregistering first keeps the
                // registry clean if the fd number is reused at once.
                let _ = registry.deregister(&mut conn.stream);
                self.free.push(id);
                self.stats.connections_closed += 1;
                ::log::debug!("ipc connection closed conn={id}");
            }
        }
    }
}

impl Drop for IpcServer {
    fn drop(&mut self) {
        let still_ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if still_ours.is_some() && still_ours == self.file_id {
            if let Err(e) = std::fs::remove_file(&self.path) {
                ::log::warn!(
                    "cannot remove ipc socket path={} error={e}",
                    self.path.display()
                );
            }
        }
    }
}

impl Conn {
    fn interest(&self) -> Interest {
        if self.writable_registered {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// Stops all I/O on a connection whose write failed. The shutdown also
    /// wakes the loop (the socket turns read-closed), and `broken` makes sure
    /// the disconnect is reported even if no event came.
    fn mark_broken(&mut self, reason: &str) {
        ::log::debug!("ipc connection broken reason={reason}");
        self.is_broken = true;
        self.wbuf = Vec::new();
        self.wpos = 0;
        self.open_records = None;
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Splits every whole frame off `rbuf` and parses it. On a bad frame the
/// frames before it are kept in `out` and the error is returned.
fn decode_frames(
    id: ConnId,
    conn: &mut Conn,
    out: &mut Vec<(ConnId, Request)>,
    stats: &mut IpcStats,
) -> crate::wire::Result<()> {
    let mut largest = 0;
    let rbuf = &mut conn.rbuf;
    while let Some(frame) = take_frame(rbuf)? {
        largest = largest.max(frame.len());
        let request = Request::parse_interning(&frame, &mut conn.last_topic)?;
        if matches!(request, Request::Disconnected) {
            // Unreachable from the wire (parse never yields it); kept as a
            // guard so a client can never fake a disconnect.
            continue;
        }
        stats.frames_received += 1;
        if let Request::Publish(batch) = &request {
            stats.publishes_received += batch.len() as u64;
        }
        out.push((id, request));
    }
    if rbuf.is_empty() && largest > IDLE_BUFFER_BYTES {
        // Let the big allocation go with its last frame instead of keeping
        // it for this connection's small frames.
        *rbuf = BytesMut::new();
    }
    // A big frame in progress: grow once to its full size instead of
    // doubling through many reallocations.
    // (frame_len already refused an out-of-range length.)
    if let Some(total) = peek_total(rbuf) {
        if total > rbuf.capacity() {
            rbuf.reserve(total - rbuf.len());
        }
    }
    Ok(())
}

/// The announced total length of the (incomplete) frame at the start of
/// `buf`, if its length field has arrived.
fn peek_total(buf: &[u8]) -> Option<usize> {
    let len = buf.get(0..4)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(len);
    Some(4 + u32::from_be_bytes(a) as usize)
}

/// Removes a socket file left by a dead daemon; refuses if a live daemon
/// answers on it or if the path is not a socket.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: remove it or choose another --socket",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "a live castlogd already listens on {}: stop it or choose another --socket",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            ::log::info!("removing stale ipc socket path={}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot probe existing socket {}: {e}", path.display()),
        )),
    }
}
