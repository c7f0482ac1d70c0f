//! UDP socket setup and batched datagram I/O.
//!
//! Every socket is built with socket2 (reuse flags, buffer sizes, multicast
//! membership and interface, broadcast) and then handed to mio with
//! `mio::net::UdpSocket::from_std`, so the event loop only ever sees ready,
//! non-blocking sockets.
//!
//! A node has one **listen** socket and one **receive** socket per group:
//!
//! - The listen socket is the node's unicast endpoint. *Every* datagram the
//!   node sends leaves through it, so receivers see the listen address as the
//!   source and send their NAKs, STATUS and replay requests straight back to
//!   it. It therefore carries the send-side options for all groups:
//!   `SO_BROADCAST`, `IP_MULTICAST_IF`, `IP_MULTICAST_TTL` and
//!   `IP_MULTICAST_LOOP` (loop on, so several daemons on one host hear each
//!   other, which the loopback default and the tests rely on).
//! - A group socket only receives. Multicast binds `group:port` and joins the
//!   group on the configured interface; broadcast binds the broadcast address
//!   (or `0.0.0.0` when the kernel refuses that); unicast binds the group port
//!   on the node's own address. Multicast and broadcast sockets use
//!   `SO_REUSEADDR` + `SO_REUSEPORT`, so several daemons can share one host
//!   and each gets its own copy of every datagram. Binding the group address
//!   (rather than `0.0.0.0`) keeps two groups on one port apart, and
//!   `IP_MULTICAST_ALL = 0` keeps multicast for groups joined by *other*
//!   sockets out of broadcast and unicast sockets.
//!
//! Unicast sockets (the listen socket and unicast group sockets) bind
//! **exclusively**, without reuse flags. Two sockets sharing a unicast port
//! do not each get a copy: the kernel hands every datagram to one of them
//! (`SO_REUSEPORT` even load-balances), so two daemons configured with the
//! same port would silently split each other's NAKs and data. Failing the
//! second bind with "address in use" is the honest answer. Daemons on one
//! host use port 0 for `listen` (the default) and distinct unicast ports or
//! addresses, as the loopback tests do.
//!
//! Batched I/O (`recv_batch`, `send_batch`) uses `recvmmsg`/`sendmmsg` on
//! Linux, one system call for many datagrams, and falls back to plain
//! `recv_from`/`send_to` elsewhere or when the kernel lacks them.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use log::{debug, info, warn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::Error;

/// Socket buffer sizes to ask the kernel for.
///
/// Large buffers absorb bursts while the event loop is busy with the log; the
/// kernel caps them at `net.core.rmem_max`/`wmem_max` unless the process has
/// `CAP_NET_ADMIN`, in which case `SO_RCVBUFFORCE` lifts the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    /// Default: 8 MiB.
    pub recv_bytes: usize,
    /// Default: 4 MiB.
    pub send_bytes: usize,
}

impl Default for BufferSizes {
    fn default() -> Self {
        BufferSizes {
            recv_bytes: 8 << 20,
            send_bytes: 4 << 20,
        }
    }
}

/// What the kernel actually granted for a socket's buffers, for the startup
/// log and the stats: a silently capped receive buffer is the classic cause
/// of loss under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferGrant {
    pub recv_requested: usize,
    pub recv_granted: usize,
    pub send_requested: usize,
    pub send_granted: usize,
}

/// Send-side multicast settings of the listen socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastSend {
    /// Local interface address multicast leaves on (`IP_MULTICAST_IF`).
    pub interface: Ipv4Addr,
    /// Hop limit; 1 keeps traffic on the local subnet.
    pub ttl: u32,
    /// Whether this host's own sockets hear what it sends. On by default so
    /// that several daemons can share a host.
    pub loopback: bool,
}

/// How a group's receive socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBind {
    /// Bind `group` (a multicast address and port) and join it on `interface`.
    Multicast {
        group: SocketAddrV4,
        interface: Ipv4Addr,
    },
    /// Bind the subnet broadcast address and port.
    Broadcast { address: SocketAddrV4 },
    /// Bind the node's own address on the group's port.
    Unicast { bind: SocketAddr },
}

/// A ready, non-blocking socket and what was granted while building it.
#[derive(Debug)]
pub struct Opened {
    pub socket: mio::net::UdpSocket,
    pub local_addr: SocketAddr,
    pub buffers: BufferGrant,
}

/// Kernel UDP offloads found at startup. Reported in the log and the stats;
/// `gso` means one `sendmsg` can carry many equal-sized datagrams
/// (`UDP_SEGMENT`), `gro` means the kernel may coalesce received ones
/// (`UDP_GRO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    pub gso: bool,
    pub gro: bool,
}

/// Metadata of one datagram filled in by [`recv_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written into the matching buffer.
    pub len: usize,
    pub from: SocketAddr,
    /// The datagram was longer than the buffer and was cut; the caller must
    /// count and drop it rather than parse it.
    pub truncated: bool,
    /// With UDP GRO the kernel may hand over several datagrams of one
    /// sender coalesced in one buffer: every `segment` bytes start a new
    /// datagram (the last may be shorter). Equal to `len` otherwise.
    pub segment: usize,
}

impl RecvMeta {
    /// The datagrams in `buf` (the buffer this meta was filled for), split
    /// at GRO segment boundaries.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        let bytes = buf.get(..self.len).unwrap_or(&[]);
        bytes.chunks(self.segment.max(1))
    }
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            from: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            truncated: false,
            segment: 0,
        }
    }
}

/// One datagram for [`send_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutDatagram<'a> {
    pub dest: SocketAddr,
    pub bytes: &'a [u8],
}

/// Opens the node's listen socket on `addr` (port 0 picks a free port; the
/// result's `local_addr` says which).
pub fn open_listen(
    addr: SocketAddr,
    buffers: BufferSizes,
    multicast: Option<MulticastSend>,
) -> Result<Opened, Error> {
    let socket = new_udp(addr)?;
    set(addr, "SO_BROADCAST", socket.set_broadcast(true))?;
    if let (SocketAddr::V4(_), Some(m)) = (addr, multicast) {
        set(
            addr,
            "IP_MULTICAST_IF",
            socket.set_multicast_if_v4(&m.interface),
        )?;
        set(addr, "IP_MULTICAST_TTL", socket.set_multicast_ttl_v4(m.ttl))?;
        set(
            addr,
            "IP_MULTICAST_LOOP",
            socket.set_multicast_loop_v4(m.loopback),
        )?;
    }
    if addr.is_ipv4() {
        // The listen socket must not pick up group traffic joined elsewhere.
        set(addr, "IP_MULTICAST_ALL", socket.set_multicast_all_v4(false))?;
    }
    let grant = size_buffers(&socket, addr, buffers);
    bind(&socket, addr)?;
    let opened = finish(socket, addr, grant)?;
    info!(
        "listen socket open addr={} recv_buffer_bytes={} send_buffer_bytes={}",
        opened.local_addr, grant.recv_granted, grant.send_granted
    );
    Ok(opened)
}

/// Opens the receive socket of one group.
pub fn open_group(bind_to: GroupBind, buffers: BufferSizes) -> Result<Opened, Error> {
    match bind_to {
        GroupBind::Multicast { group, interface } => {
            let addr = SocketAddr::V4(group);
            let socket = new_udp(addr)?;
            reuse(&socket, addr)?;
            let grant = size_buffers(&socket, addr, buffers);
            bind(&socket, addr)?;
            socket
                .join_multicast_v4(group.ip(), &interface)
                .map_err(|source| Error::JoinMulticast {
                    group: *group.ip(),
                    interface,
                    source,
                })?;
            let opened = finish(socket, addr, grant)?;
            info!(
                "multicast group socket open group={} interface={} recv_buffer_bytes={}",
                group, interface, grant.recv_granted
            );
            Ok(opened)
        }
        GroupBind::Broadcast { address } => {
            let addr = SocketAddr::V4(address);
            let socket = new_udp(addr)?;
            reuse(&socket, addr)?;
            set(addr, "IP_MULTICAST_ALL", socket.set_multicast_all_v4(false))?;
            let grant = size_buffers(&socket, addr, buffers);
            let bound = match bind(&socket, addr) {
                Ok(()) => addr,
                Err(e) => {
                    // Some setups (no such subnet on this host yet, or the
                    // limited broadcast address) refuse binding the broadcast
                    // address itself; the wildcard still receives broadcasts.
                    let any =
                        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, address.port()));
                    warn!("broadcast bind refused, using wildcard addr={addr} error={e}");
                    bind(&socket, any)?;
                    any
                }
            };
            let opened = finish(socket, bound, grant)?;
            info!(
                "broadcast group socket open addr={} recv_buffer_bytes={}",
                opened.local_addr, grant.recv_granted
            );
            Ok(opened)
        }
        GroupBind::Unicast { bind: addr } => {
            // Exclusive bind: see the module doc.
            let socket = new_udp(addr)?;
            if addr.is_ipv4() {
                set(addr, "IP_MULTICAST_ALL", socket.set_multicast_all_v4(false))?;
            }
            let grant = size_buffers(&socket, addr, buffers);
            bind(&socket, addr)?;
            let opened = finish(socket, addr, grant)?;
            info!(
                "unicast group socket open addr={} recv_buffer_bytes={}",
                opened.local_addr, grant.recv_granted
            );
            Ok(opened)
        }
    }
}

/// Probes the kernel for UDP GSO and GRO on a throwaway socket.
pub fn detect_offload() -> Offload {
    let Ok(socket) = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)) else {
        return Offload::default();
    };
    let offload = probe_offload(&socket);
    debug!("udp offload probed gso={} gro={}", offload.gso, offload.gro);
    offload
}

/// Receives up to `min(bufs.len(), out.len())` datagrams in one call,
/// writing datagram `k` into `bufs[k]` and its metadata into `out[k]`.
///
/// Returns how many were received; `Err(WouldBlock)` when none was waiting,
/// exactly like `recv_from`, so the caller drains until `WouldBlock`.
pub fn recv_batch<B: AsMut<[u8]>>(
    socket: &mio::net::UdpSocket,
    bufs: &mut [B],
    out: &mut [RecvMeta],
) -> io::Result<usize> {
    let n = bufs.len().min(out.len()).min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        match mmsg::recv(socket, &mut bufs[..n], &mut out[..n]) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            other => return other,
        }
    }
    recv_plain(socket, &mut bufs[..n], &mut out[..n])
}

/// Sends `datagrams` in as few calls as the platform allows.
///
/// With `gso` set, runs of datagrams to one destination whose sizes are
/// equal (the last of a run may be shorter) leave as one message with a
/// `UDP_SEGMENT` control message: the kernel's path (routing, netfilter, the
/// bridge, the peer's socket with GRO) then runs once per run instead of
/// once per datagram, which is where the time goes on a busy sender. A
/// kernel or device that refuses GSO at send time clears `gso`, and the
/// batch goes again one datagram per message.
///
/// Returns how many datagrams were sent, always a prefix of `datagrams`.
/// `Err` (for example `WouldBlock`) only when not even the first one went
/// out; the caller keeps the unsent rest and retries when the socket is
/// writable.
pub fn send_batch(
    socket: &mio::net::UdpSocket,
    datagrams: &[OutDatagram<'_>],
    gso: &mut bool,
) -> io::Result<usize> {
    let n = datagrams.len().min(MAX_SEND_BATCH);
    if n == 0 {
        return Ok(0);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if *gso {
            match mmsg::send(socket, &datagrams[..n], true) {
                Err(e) if mmsg::is_gso_refusal(&e) => {
                    warn!("udp gso refused at send, sending one datagram per message from now on error={e}");
                    *gso = false;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
                other => return other,
            }
        }
        match mmsg::send(socket, &datagrams[..n], false) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            other => return other,
        }
    }
    send_plain(socket, &datagrams[..n])
}

/// Asks the kernel to coalesce received datagrams on `socket` (`UDP_GRO`);
/// [`recv_batch`] then splits them again (see [`RecvMeta::segment`]).
/// Returns whether the kernel agreed.
pub fn enable_gro(socket: &mio::net::UdpSocket) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        setsockopt_int(socket.as_raw_fd(), libc::SOL_UDP, mmsg::UDP_GRO, 1).is_ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        false
    }
}

/// Most datagrams (or GRO buffers) taken by one `recvmmsg` call; bounds the
/// stack arrays and the work done per round of the event loop.
pub const MAX_BATCH: usize = 64;
/// Most datagrams handed to one `sendmmsg` call: with GSO that is a few
/// full 64 KiB messages.
pub const MAX_SEND_BATCH: usize = 512;

fn new_udp(addr: SocketAddr) -> Result<Socket, Error> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|source| Error::Bind { addr, source })?;
    set(addr, "O_NONBLOCK", socket.set_nonblocking(true))?;
    Ok(socket)
}

fn reuse(socket: &Socket, addr: SocketAddr) -> Result<(), Error> {
    set(addr, "SO_REUSEADDR", socket.set_reuse_address(true))?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    set(addr, "SO_REUSEPORT", socket.set_reuse_port(true))?;
    Ok(())
}

fn bind(socket: &Socket, addr: SocketAddr) -> Result<(), Error> {
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|source| Error::Bind { addr, source })
}

fn set(addr: SocketAddr, option: &'static str, result: io::Result<()>) -> Result<(), Error> {
    result.map_err(|source| Error::SocketOption {
        option,
        addr,
        source,
    })
}

/// Asks for the buffer sizes, forcing past the sysctl cap when privileged,
/// and reads back what was granted. Never fails: a small buffer is a
/// performance problem to report, not a reason not to start.
fn size_buffers(socket: &Socket, addr: SocketAddr, want: BufferSizes) -> BufferGrant {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = force_buffer(socket, libc::SO_RCVBUFFORCE, want.recv_bytes);
        let _ = force_buffer(socket, libc::SO_SNDBUFFORCE, want.send_bytes);
    }
    // Linux reports double the usable size; compare against what we asked.
    let recv_now = socket.recv_buffer_size().unwrap_or(0);
    if recv_now < want.recv_bytes {
        let _ = socket.set_recv_buffer_size(want.recv_bytes);
    }
    let send_now = socket.send_buffer_size().unwrap_or(0);
    if send_now < want.send_bytes {
        let _ = socket.set_send_buffer_size(want.send_bytes);
    }
    let grant = BufferGrant {
        recv_requested: want.recv_bytes,
        recv_granted: socket.recv_buffer_size().unwrap_or(0),
        send_requested: want.send_bytes,
        send_granted: socket.send_buffer_size().unwrap_or(0),
    };
    if grant.recv_granted < grant.recv_requested {
        warn!(
            "socket receive buffer capped addr={} requested_bytes={} granted_bytes={} (raise net.core.rmem_max)",
            addr, grant.recv_requested, grant.recv_granted
        );
    }
    if grant.send_granted < grant.send_requested {
        warn!(
            "socket send buffer capped addr={} requested_bytes={} granted_bytes={} (raise net.core.wmem_max)",
            addr, grant.send_requested, grant.send_granted
        );
    }
    grant
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn force_buffer(socket: &Socket, option: libc::c_int, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(socket.as_raw_fd(), libc::SOL_SOCKET, option, value)
}

fn finish(socket: Socket, addr: SocketAddr, buffers: BufferGrant) -> Result<Opened, Error> {
    let local_addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    let std_socket: std::net::UdpSocket = socket.into();
    Ok(Opened {
        socket: mio::net::UdpSocket::from_std(std_socket),
        local_addr,
        buffers,
    })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn probe_offload(socket: &Socket) -> Offload {
    use std::os::fd::AsRawFd;
    // Not in the libc crate for glibc targets; values from linux/udp.h.
    use mmsg::{UDP_GRO, UDP_SEGMENT};
    let fd = socket.as_raw_fd();
    Offload {
        gso: setsockopt_int(fd, libc::SOL_UDP, UDP_SEGMENT, 1200).is_ok(),
        gro: setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1).is_ok(),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn probe_offload(_socket: &Socket) -> Offload {
    Offload::default()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn setsockopt_int(
    fd: libc::c_int,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn recv_plain<B: AsMut<[u8]>>(
    socket: &mio::net::UdpSocket,
    bufs: &mut [B],
    out: &mut [RecvMeta],
) -> io::Result<usize> {
    let mut got = 0;
    for (buf, meta) in bufs.iter_mut().zip(out.iter_mut()) {
        let buf = buf.as_mut();
        match socket.recv_from(buf) {
            Ok((len, from)) => {
                // recv_from cannot tell truncation apart from an exact fit,
                // so a datagram filling the whole buffer counts as cut.
                *meta = RecvMeta {
                    len,
                    from,
                    truncated: len == buf.len(),
                    segment: len,
                };
                got += 1;
            }
            Err(e) if got > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return if got > 0 { Ok(got) } else { Err(e) },
        }
    }
    Ok(got)
}

fn send_plain(socket: &mio::net::UdpSocket, datagrams: &[OutDatagram<'_>]) -> io::Result<usize> {
    let mut sent = 0;
    for d in datagrams {
        match socket.send_to(d.bytes, d.dest) {
            Ok(_) => sent += 1,
            Err(e) => return if sent > 0 { Ok(sent) } else { Err(e) },
        }
    }
    Ok(sent)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod mmsg {
    //! `recvmmsg`/`sendmmsg` with fixed-size stack arrays of headers, and
    //! the `UDP_SEGMENT`/`UDP_GRO` control messages.

    use std::io;
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;

    use super::{OutDatagram, RecvMeta, MAX_BATCH, MAX_SEND_BATCH};

    // Not in the libc crate for glibc targets; values from linux/udp.h.
    pub(super) const UDP_SEGMENT: libc::c_int = 103;
    pub(super) const UDP_GRO: libc::c_int = 104;
    /// The kernel's `UDP_MAX_SEGMENTS` on older kernels (newer allow 128).
    const MAX_SEGMENTS: usize = 64;
    /// Largest UDP payload of one IPv4 datagram, which bounds a GSO message.
    const MAX_GSO_BYTES: usize = 65_507;

    /// Room for one control message carrying an int, aligned for cmsghdr.
    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    struct CmsgBuf([u8; 32]);

    /// Errors with which a kernel or device refuses GSO for a message.
    pub(super) fn is_gso_refusal(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT)
        )
    }

    /// How many datagrams from the start of `d` can leave as one GSO
    /// message: equal sizes to one destination, a shorter last one allowed.
    fn gso_run(d: &[OutDatagram<'_>]) -> usize {
        let Some(first) = d.first() else {
            return 0;
        };
        let size = first.bytes.len();
        if size == 0 {
            return 1;
        }
        let mut total = 0;
        let mut k = 0;
        while let Some(next) = d.get(k) {
            let len = next.bytes.len();
            if k == MAX_SEGMENTS || next.dest != first.dest || len > size || len == 0 {
                break;
            }
            if total + len > MAX_GSO_BYTES {
                break;
            }
            total += len;
            k += 1;
            if len < size {
                break;
            }
        }
        k.max(1)
    }

    pub(super) fn recv<B: AsMut<[u8]>>(
        socket: &mio::net::UdpSocket,
        bufs: &mut [B],
        out: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let n = bufs.len().min(out.len()).min(MAX_BATCH);
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut addrs: [libc::sockaddr_storage; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut cmsgs = [CmsgBuf([0; 32]); MAX_BATCH];
        for k in 0..n {
            let buf = bufs[k].as_mut();
            iovs[k] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let hdr = &mut msgs[k].msg_hdr;
            hdr.msg_name = (&mut addrs[k] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut iovs[k];
            hdr.msg_iovlen = 1;
            hdr.msg_control = cmsgs[k].0.as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of::<CmsgBuf>() as _;
        }
        // SAFETY: every header points at live buffers, addresses, iovecs and
        // control buffers from this frame, sized as declared; n <= MAX_BATCH.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = usize::try_from(rc).unwrap_or(0).min(n);
        for k in 0..got {
            let msg = &msgs[k];
            // SAFETY: the kernel filled `addrs[k]` and `msg_namelen`.
            let from = unsafe { SockAddr::new(addrs[k], msg.msg_hdr.msg_namelen) }
                .as_socket()
                .unwrap_or(RecvMeta::default().from);
            let len = msg.msg_len as usize;
            // SAFETY: the header's control fields describe `cmsgs[k]`, as
            // filled by the kernel.
            let segment = unsafe { gro_segment(&msg.msg_hdr) }.unwrap_or(len);
            out[k] = RecvMeta {
                len,
                from,
                truncated: msg.msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
                segment,
            };
        }
        Ok(got)
    }

    /// The `UDP_GRO` segment size in a received header's control messages.
    ///
    /// # Safety
    /// `hdr.msg_control`/`msg_controllen` must describe a live buffer that
    /// the kernel filled.
    unsafe fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let cm = &*c;
            if cm.cmsg_level == libc::SOL_UDP && cm.cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok().filter(|v| *v > 0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
        None
    }

    /// Sends `datagrams` (at most [`MAX_SEND_BATCH`]); with `gso`, runs of
    /// equal-sized datagrams to one destination go as one message each.
    /// Returns the datagrams sent.
    pub(super) fn send(
        socket: &mio::net::UdpSocket,
        datagrams: &[OutDatagram<'_>],
        gso: bool,
    ) -> io::Result<usize> {
        let n = datagrams.len().min(MAX_SEND_BATCH);
        let datagrams = &datagrams[..n];
        // Messages: (first datagram, datagram count).
        let mut runs: Vec<(usize, usize)> = Vec::with_capacity(if gso { n / 8 + 1 } else { n });
        let mut k = 0;
        while k < n {
            let len = if gso { gso_run(&datagrams[k..]) } else { 1 };
            runs.push((k, len));
            k += len;
        }
        let addrs: Vec<SockAddr> = runs
            .iter()
            .map(|&(first, _)| SockAddr::from(datagrams[first].dest))
            .collect();
        let iovs: Vec<libc::iovec> = datagrams
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.bytes.as_ptr() as *mut libc::c_void,
                iov_len: d.bytes.len(),
            })
            .collect();
        let mut cmsgs = vec![CmsgBuf([0; 32]); runs.len()];
        // SAFETY: all-zero is a valid value for this plain C struct.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; runs.len()];
        for (m, &(first, count)) in runs.iter().enumerate() {
            let hdr = &mut msgs[m].msg_hdr;
            hdr.msg_name = addrs[m].as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = addrs[m].len();
            hdr.msg_iov = iovs[first..].as_ptr() as *mut libc::iovec;
            hdr.msg_iovlen = count as _;
            if count > 1 {
                let size = datagrams[first].bytes.len();
                hdr.msg_control = cmsgs[m].0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE of an int fits the 32-byte buffer.
                hdr.msg_controllen =
                    unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as _;
                // SAFETY: msg_control points at an aligned buffer of
                // msg_controllen bytes, so the first header is inside it.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size as u16);
                }
            }
        }
        // SAFETY: headers point at `addrs`, `iovs`, `cmsgs` and the caller's
        // byte slices, all alive for the call; the kernel only reads them.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let sent_msgs = usize::try_from(rc).unwrap_or(0).min(runs.len());
        Ok(runs[..sent_msgs].iter().map(|&(_, count)| count).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::clock;
    use std::time::Duration;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    fn wait_recv(socket: &mio::net::UdpSocket, want: usize) -> Vec<(Vec<u8>, RecvMeta)> {
        let mut got = Vec::new();
        let deadline = clock::now() + Duration::from_secs(2);
        let mut bufs = vec![vec![0u8; 2048]; 8];
        let mut metas = [RecvMeta::default(); 8];
        while got.len() < want && clock::now() < deadline {
            match recv_batch(socket, &mut bufs, &mut metas) {
                Ok(n) => {
                    for k in 0..n {
                        got.push((bufs[k][..metas[k].len].to_vec(), metas[k]));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("recv_batch failed: {e}"),
            }
        }
        got
    }

    #[test]
    fn batch_send_and_receive_carry_every_datagram_with_its_source() {
        let a = open_listen(loopback(0), BufferSizes::default(), None).unwrap();
        let b = open_group(
            GroupBind::Unicast { bind: loopback(0) },
            BufferSizes::default(),
        )
        .unwrap();
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + i as usize]).collect();
        let out: Vec<OutDatagram> = payloads
            .iter()
            .map(|p| OutDatagram {
                dest: b.local_addr,
                bytes: p,
            })
            .collect();
        let mut sent = 0;
        while sent < out.len() {
            sent += send_batch(&a.socket, &out[sent..], &mut false).unwrap();
        }
        let got = wait_recv(&b.socket, 20);
        assert_eq!(got.len(), 20);
        for (k, (bytes, meta)) in got.iter().enumerate() {
            assert_eq!(bytes, &payloads[k]);
            assert_eq!(meta.from, a.local_addr);
            assert!(!meta.truncated);
        }
    }

    /// Equal-sized runs leave as GSO messages; a GRO receiver gets them
    /// coalesced and `RecvMeta::datagrams` splits them back, and a plain
    /// receiver gets them one by one: either way every datagram arrives
    /// intact, in order, with its own boundaries.
    #[test]
    fn gso_runs_arrive_as_the_original_datagrams_with_and_without_gro() {
        if !detect_offload().gso {
            eprintln!("kernel has no UDP GSO: nothing to test");
            return;
        }
        let a = open_listen(loopback(0), BufferSizes::default(), None).unwrap();
        for gro in [true, false] {
            let b = open_group(
                GroupBind::Unicast { bind: loopback(0) },
                BufferSizes::default(),
            )
            .unwrap();
            if gro {
                assert!(enable_gro(&b.socket));
            }
            // 150 of 1000 bytes (runs of 64 and a cut at 65507 bytes), then
            // a shorter one closing the run, then odd sizes.
            let mut payloads: Vec<Vec<u8>> = (0..150u32)
                .map(|i| {
                    let mut p = vec![(i % 251) as u8; 1000];
                    p[..4].copy_from_slice(&i.to_be_bytes());
                    p
                })
                .collect();
            payloads.push(vec![0xee; 300]);
            payloads.extend((0..5u8).map(|i| vec![i; 50 + 7 * i as usize]));
            let out: Vec<OutDatagram> = payloads
                .iter()
                .map(|p| OutDatagram {
                    dest: b.local_addr,
                    bytes: p,
                })
                .collect();
            let mut gso = true;
            let mut sent = 0;
            while sent < out.len() {
                sent += send_batch(&a.socket, &out[sent..], &mut gso).unwrap();
            }
            assert!(gso, "loopback refused gso");
            let mut got: Vec<Vec<u8>> = Vec::new();
            let deadline = clock::now() + Duration::from_secs(2);
            let mut bufs = vec![vec![0u8; 65_536]; 8];
            let mut metas = [RecvMeta::default(); 8];
            let mut coalesced = false;
            while got.len() < payloads.len() && clock::now() < deadline {
                match recv_batch(&b.socket, &mut bufs, &mut metas) {
                    Ok(n) => {
                        for k in 0..n {
                            coalesced |= metas[k].segment < metas[k].len;
                            got.extend(metas[k].datagrams(&bufs[k]).map(<[u8]>::to_vec));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("recv_batch failed: {e}"),
                }
            }
            assert_eq!(got, payloads, "gro={gro}");
            // Over loopback a GSO message reaches a GRO socket whole.
            assert_eq!(coalesced, gro, "gro={gro}");
        }
    }

    #[test]
    fn recv_batch_flags_a_datagram_longer_than_its_buffer() {
        let a = open_listen(loopback(0), BufferSizes::default(), None).unwrap();
        let b = open_listen(loopback(0), BufferSizes::default(), None).unwrap();
        a.socket.send_to(&[7u8; 300], b.local_addr).unwrap();
        let deadline = clock::now() + Duration::from_secs(2);
        let mut bufs = vec![vec![0u8; 100]];
        let mut metas = [RecvMeta::default(); 1];
        loop {
            match recv_batch(&b.socket, &mut bufs, &mut metas) {
                Ok(1) => break,
                _ if clock::now() > deadline => panic!("nothing received"),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(metas[0].truncated);
    }

    #[test]
    fn recv_batch_reports_would_block_when_nothing_waits() {
        let a = open_listen(loopback(0), BufferSizes::default(), None).unwrap();
        let mut bufs = vec![vec![0u8; 100]; 2];
        let mut metas = [RecvMeta::default(); 2];
        let err = recv_batch(&a.socket, &mut bufs, &mut metas).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn two_daemons_on_one_host_both_hear_loopback_multicast() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 3), 47_311);
        let bind = GroupBind::Multicast {
            group,
            interface: Ipv4Addr::LOCALHOST,
        };
        let r1 = open_group(bind, BufferSizes::default()).unwrap();
        let r2 = open_group(bind, BufferSizes::default()).unwrap();
        let tx = open_listen(
            loopback(0),
            BufferSizes::default(),
            Some(MulticastSend {
                interface: Ipv4Addr::LOCALHOST,
                ttl: 0,
                loopback: true,
            }),
        )
        .unwrap();
        tx.socket
            .send_to(b"hello group", SocketAddr::V4(group))
            .unwrap();
        for r in [&r1, &r2] {
            let got = wait_recv(&r.socket, 1);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, b"hello group");
            assert_eq!(got[0].1.from, tx.local_addr);
        }
    }

    #[test]
    fn a_second_daemon_on_the_same_unicast_port_fails_loudly() {
        let first = open_group(
            GroupBind::Unicast { bind: loopback(0) },
            BufferSizes::default(),
        )
        .unwrap();
        let second = open_group(
            GroupBind::Unicast {
                bind: first.local_addr,
            },
            BufferSizes::default(),
        );
        let err = second.unwrap_err().to_string();
        assert!(err.contains("cannot bind"), "{err}");
        let listen = open_listen(first.local_addr, BufferSizes::default(), None);
        assert!(listen.is_err());
    }

    #[test]
    fn buffer_grant_reports_nonzero_sizes() {
        let a = open_listen(loopback(0), BufferSizes::default(), None).unwrap();
        assert!(a.buffers.recv_granted > 0);
        assert!(a.buffers.send_granted > 0);
        assert_eq!(a.buffers.recv_requested, 8 << 20);
    }
}
