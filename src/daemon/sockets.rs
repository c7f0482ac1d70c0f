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
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            from: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            truncated: false,
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
/// Returns how many were sent, always a prefix of `datagrams`. `Err` (for
/// example `WouldBlock`) only when not even the first one went out; the
/// caller keeps the unsent rest and retries when the socket is writable.
pub fn send_batch(
    socket: &mio::net::UdpSocket,
    datagrams: &[OutDatagram<'_>],
) -> io::Result<usize> {
    let n = datagrams.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        match mmsg::send(socket, &datagrams[..n]) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            other => return other,
        }
    }
    send_plain(socket, &datagrams[..n])
}

/// Most datagrams moved by one `recvmmsg`/`sendmmsg` call; bounds the stack
/// arrays and the work done per round of the event loop.
pub const MAX_BATCH: usize = 64;

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
    const UDP_SEGMENT: libc::c_int = 103;
    const UDP_GRO: libc::c_int = 104;
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
    //! `recvmmsg`/`sendmmsg` with fixed-size stack arrays of headers.

    use std::io;
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;

    use super::{OutDatagram, RecvMeta, MAX_BATCH};

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
        }
        // SAFETY: every header points at live buffers, addresses and iovecs
        // from this frame, sized as declared; n <= MAX_BATCH.
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
            out[k] = RecvMeta {
                len: msg.msg_len as usize,
                from,
                truncated: msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(got)
    }

    pub(super) fn send(
        socket: &mio::net::UdpSocket,
        datagrams: &[OutDatagram<'_>],
    ) -> io::Result<usize> {
        let n = datagrams.len().min(MAX_BATCH);
        let addrs: Vec<SockAddr> = datagrams[..n]
            .iter()
            .map(|d| SockAddr::from(d.dest))
            .collect();
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for k in 0..n {
            iovs[k] = libc::iovec {
                iov_base: datagrams[k].bytes.as_ptr() as *mut libc::c_void,
                iov_len: datagrams[k].bytes.len(),
            };
            let hdr = &mut msgs[k].msg_hdr;
            hdr.msg_name = addrs[k].as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = addrs[k].len();
            hdr.msg_iov = &mut iovs[k];
            hdr.msg_iovlen = 1;
        }
        // SAFETY: headers point at `addrs`, `iovs` and the caller's byte
        // slices, all alive for the call; the kernel only reads them.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(rc).unwrap_or(0))
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
            sent += send_batch(&a.socket, &out[sent..]).unwrap();
        }
        let got = wait_recv(&b.socket, 20);
        assert_eq!(got.len(), 20);
        for (k, (bytes, meta)) in got.iter().enumerate() {
            assert_eq!(bytes, &payloads[k]);
            assert_eq!(meta.from, a.local_addr);
            assert!(!meta.truncated);
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
