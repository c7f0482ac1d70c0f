//! `decode`: reads a packet capture and shows the castlog frames in it, one
//! line per frame (`castlog decode FILE.pcap`, issue #7).
//!
//! Layers: [`pcap`] (classic libpcap) or [`pcapng`] splits the file into
//! packets; `etherparse` decodes the
//! link layer (Ethernet, Linux cooked SLL/SLL2, loopback, raw IP), IPv4/IPv6
//! and UDP; [`crate::wire`] parses the UDP payload. A payload that does not
//! start with the castlog magic is someone else's UDP: skipped and counted.
//! A payload that starts with the magic but fails the CRC or a body check is
//! shown, with the header fields that could be read and the error. Frames of
//! authenticated groups are shown with their key id; the tag is not checked
//! (the decoder holds no key).
//!
//! This room reads bytes handed to it (and, in [`decode_file`], one file); it
//! keeps no state between calls. It is a tool for people: its output is not
//! an interface the daemon depends on.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod pcap;
pub mod pcapng;
mod summary;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use etherparse::{
    EtherType, LinkSlice, LinuxSllPacketType, NetSlice, SlicedPacket, TransportSlice,
};
use serde::Serialize;
use thiserror::Error;

use crate::wire::{self, auth, Flags, Frame, FrameRepr, HEADER_LEN, MAGIC};
pub use pcap::{LinkType, Packet, PcapReader};
pub use pcapng::PcapngReader;
pub use summary::{BodySummary, RangeSummary, ReplayFragmentSummary, TopicSpan};

/// Why a capture file could not be read. Frames that fail to parse are not
/// errors: they are shown in the output.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("cannot read capture {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a capture file: {have} bytes, a pcap file header has 24")]
    TooShort { have: usize },
    #[error("not a capture file: magic {found:#010x} (expected pcap a1b2c3d4 / a1b23c4d in either byte order, or pcapng 0a0d0d0a)")]
    BadMagic { found: u32 },
    #[error(
        "bad pcapng section at byte {offset}: byte-order magic {found:#010x}, expected 1a2b3c4d"
    )]
    BadByteOrder { offset: usize, found: u32 },
    #[error("bad pcapng block at byte {offset}: length {length} is not a multiple of 4 of at least 12, or does not match its trailer")]
    BadBlockLength { offset: usize, length: usize },
    #[error("capture cut short: pcapng block at byte {offset} needs {need} bytes, {have} left")]
    TruncatedBlock {
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("packet {packet} names interface {interface}, which no interface block described")]
    UnknownInterface { packet: u64, interface: u32 },
    #[error("unsupported capture file version {major}.{minor}: pcap 2.x and pcapng 1.x are read")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error(
        "unsupported link type {code}: capture on an ethernet interface, loopback or `-i any`"
    )]
    UnsupportedLinkType { code: u32 },
    #[error(
        "capture cut short: packet {packet} at byte {offset} has {have} of the 16 header bytes"
    )]
    TruncatedRecordHeader {
        packet: u64,
        offset: usize,
        have: usize,
    },
    #[error("capture cut short: packet {packet} at byte {offset} needs {need} bytes, {have} left")]
    TruncatedPacket {
        packet: u64,
        offset: usize,
        need: usize,
        have: usize,
    },
}

/// Where a datagram was sent: one host, or a group of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    Unicast,
    Multicast,
    /// Limited broadcast (255.255.255.255), or a link-layer broadcast.
    /// A subnet broadcast sent by the capturing host on `-i any` has no
    /// link-layer mark and shows as unicast.
    Broadcast,
}

/// One castlog frame found in a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodedFrame {
    /// 1-based packet number in the file (as Wireshark counts).
    pub packet: u64,
    pub time_unix_ns: u64,
    pub source: SocketAddr,
    /// The group address for multicast and broadcast frames.
    pub destination: SocketAddr,
    pub destination_kind: DestinationKind,
    /// Bytes of the UDP payload.
    pub datagram_len: usize,
    /// Frame type name from the header (`data`, `nak`, ...); `None` when the
    /// payload is too short to have one.
    pub frame_type: Option<&'static str>,
    /// Header flags by name (`repair`, `fragment`, `auth`, or `0x..` bits).
    pub flags: Vec<String>,
    /// Node id in hex, as the daemon logs it.
    pub node: Option<String>,
    /// Session id in hex.
    pub session: Option<String>,
    /// Key id of the auth trailer (authenticated groups); not verified.
    pub auth_key_id: Option<u8>,
    /// The parsed body; `None` when the frame is invalid.
    pub body: Option<BodySummary>,
    /// Why the frame is invalid (bad CRC, truncated, malformed ...).
    pub error: Option<String>,
}

/// What was in a capture besides the frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DecodeStats {
    pub packets_read: u64,
    /// Not UDP over IPv4/IPv6 (ARP, TCP, ICMP, IGMP ...).
    pub packets_skipped: u64,
    /// Link or IP headers that etherparse could not decode (cut by snaplen,
    /// or garbage).
    pub packets_undecodable: u64,
    /// IP fragments: castlog keeps frames within the MTU, so these are not
    /// reassembled.
    pub fragments_skipped: u64,
    /// UDP datagrams that do not start with the castlog magic.
    pub datagrams_foreign: u64,
    pub frames_decoded: u64,
    pub frames_invalid: u64,
    /// UDP packets that held several castlog datagrams back to back: a
    /// capture on a host that sends with UDP GSO sees the run before the
    /// kernel (or the NIC) cuts it; each datagram is decoded on its own.
    pub gso_packets_split: u64,
}

/// Frames and counters of one capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub link_type: LinkType,
    pub frames: Vec<DecodedFrame>,
    pub stats: DecodeStats,
}

/// The castlog frames of a capture (pcap or pcapng) held in memory.
pub fn decode_pcap(bytes: &[u8]) -> Result<Vec<DecodedFrame>, DecodeError> {
    decode_capture(bytes).map(|c| c.frames)
}

/// Reads a pcap file and decodes it (the `castlog decode` entry point).
pub fn decode_file(path: &Path) -> Result<Capture, DecodeError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode_capture(&bytes)
}

/// The castlog frames of a pcap file, with counts of everything skipped.
pub fn decode_capture(bytes: &[u8]) -> Result<Capture, DecodeError> {
    let mut reader = Reader::new(bytes)?;
    let mut link_type = reader.link_type().unwrap_or(LinkType::Ethernet);
    let mut stats = DecodeStats::default();
    let mut frames = Vec::new();
    for packet in reader.by_ref() {
        let packet = packet?;
        if stats.packets_read == 0 {
            link_type = packet.link_type;
        }
        stats.packets_read += 1;
        let Some(udp) = udp_of(&packet, &mut stats) else {
            continue;
        };
        if udp.payload.get(..2) != Some(&MAGIC.to_be_bytes()[..]) {
            stats.datagrams_foreign += 1;
            continue;
        }
        let segment = gso_segment_len(udp.payload);
        if segment < udp.payload.len() {
            stats.gso_packets_split += 1;
        }
        for payload in udp.payload.chunks(segment.max(1)) {
            let frame = decode_datagram(&packet, &Udp { payload, ..udp });
            if frame.error.is_some() {
                stats.frames_invalid += 1;
            } else {
                stats.frames_decoded += 1;
            }
            frames.push(frame);
        }
    }
    Ok(Capture {
        link_type: reader.link_type().unwrap_or(link_type),
        frames,
        stats,
    })
}

/// Classic pcap or pcapng, chosen by the first four bytes.
enum Reader<'a> {
    Pcap(PcapReader<'a>),
    Pcapng(PcapngReader<'a>),
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, DecodeError> {
        if bytes.get(..4) == Some(&pcapng::SECTION_HEADER.to_le_bytes()[..]) {
            PcapngReader::new(bytes).map(Reader::Pcapng)
        } else {
            PcapReader::new(bytes).map(Reader::Pcap)
        }
    }

    /// The capture's link type, when the file says it up front.
    fn link_type(&self) -> Option<LinkType> {
        match self {
            Reader::Pcap(r) => Some(r.link_type()),
            Reader::Pcapng(r) => r.first_link_type(),
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Packet<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Reader::Pcap(r) => r.next(),
            Reader::Pcapng(r) => r.next(),
        }
    }
}

/// A UDP datagram lifted out of a packet.
#[derive(Clone, Copy)]
struct Udp<'a> {
    source: SocketAddr,
    destination: SocketAddr,
    destination_kind: DestinationKind,
    payload: &'a [u8],
}

fn udp_of<'a>(packet: &Packet<'a>, stats: &mut DecodeStats) -> Option<Udp<'a>> {
    let data = packet.data;
    let link_type = packet.link_type;
    let little_endian = packet.little_endian;
    let sliced = match link_type {
        LinkType::Ethernet => SlicedPacket::from_ethernet(data),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(data),
        LinkType::LinuxSll2 => match sll2_split(data) {
            Some((proto, rest)) => SlicedPacket::from_ether_type(EtherType(proto), rest),
            None => {
                stats.packets_undecodable += 1;
                return None;
            }
        },
        LinkType::Null => match data.get(..4).zip(data.get(4..)) {
            Some((family, rest)) if is_ip_family(family, little_endian) => {
                SlicedPacket::from_ip(rest)
            }
            Some(_) => {
                stats.packets_skipped += 1;
                return None;
            }
            None => {
                stats.packets_undecodable += 1;
                return None;
            }
        },
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => SlicedPacket::from_ip(data),
    };
    let Ok(sliced) = sliced else {
        stats.packets_undecodable += 1;
        return None;
    };
    let link_broadcast = match &sliced.link {
        Some(LinkSlice::Ethernet2(eth)) => eth.destination() == [0xff; 6],
        Some(LinkSlice::LinuxSll(sll)) => sll.packet_type() == LinuxSllPacketType::BROADCAST,
        _ => link_type == LinkType::LinuxSll2 && data.get(10) == Some(&1),
    };
    let (src_ip, dst_ip, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
            ip.is_payload_fragmented(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
            ip.is_payload_fragmented(),
        ),
        _ => {
            stats.packets_skipped += 1;
            return None;
        }
    };
    if fragmented {
        stats.fragments_skipped += 1;
        return None;
    }
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        stats.packets_skipped += 1;
        return None;
    };
    let destination_kind = if dst_ip.is_multicast() {
        DestinationKind::Multicast
    } else if link_broadcast || dst_ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        DestinationKind::Broadcast
    } else {
        DestinationKind::Unicast
    };
    Some(Udp {
        source: SocketAddr::new(src_ip, udp.source_port()),
        destination: SocketAddr::new(dst_ip, udp.destination_port()),
        destination_kind,
        payload: udp.payload(),
    })
}

/// LINKTYPE_LINUX_SLL2: protocol (2), reserved (2), ifindex (4), ARPHRD
/// type (2), packet type (1), address length (1), address (8), payload.
fn sll2_split(data: &[u8]) -> Option<(u16, &[u8])> {
    let proto: [u8; 2] = data.get(..2)?.try_into().ok()?;
    let rest = data.get(20..)?;
    Some((u16::from_be_bytes(proto), rest))
}

/// LINKTYPE_NULL's address family, in the capturing host's byte order:
/// AF_INET = 2, AF_INET6 = 10 (Linux), 24, 28 or 30 (BSDs, macOS).
fn is_ip_family(family: &[u8], little_endian: bool) -> bool {
    let mut a = [0u8; 4];
    a.copy_from_slice(family.get(..4).unwrap_or(&[0; 4]));
    let v = if little_endian {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    };
    matches!(v, 2 | 10 | 24 | 28 | 30)
}

/// The length of the first datagram in a UDP payload when the payload is a
/// GSO run (a whole castlog frame, plus its AUTH trailer when sealed,
/// followed by another frame's magic); the payload's length otherwise. GSO
/// cuts a run into equal segments (the last may be shorter), so the first
/// datagram's length is the segment size.
fn gso_segment_len(payload: &[u8]) -> usize {
    if payload.len() < HEADER_LEN {
        return payload.len();
    }
    let header = Frame::new_unchecked(payload);
    let mut first = header.frame_len() as usize;
    if header.flags().contains(Flags::AUTH) {
        first = first.saturating_add(auth::TRAILER_LEN);
    }
    let next_is_frame =
        payload.get(first..first.saturating_add(2)) == Some(&MAGIC.to_be_bytes()[..]);
    if first >= HEADER_LEN && first < payload.len() && next_is_frame {
        first
    } else {
        payload.len()
    }
}

fn decode_datagram(packet: &Packet<'_>, udp: &Udp<'_>) -> DecodedFrame {
    let bytes = udp.payload;
    let header = Frame::new_unchecked(bytes);
    let has_header = bytes.len() >= HEADER_LEN;
    let mut out = DecodedFrame {
        packet: packet.number,
        time_unix_ns: packet.time_unix_ns,
        source: udp.source,
        destination: udp.destination,
        destination_kind: udp.destination_kind,
        datagram_len: bytes.len(),
        frame_type: bytes.get(3).map(|&t| wire::FrameType::from_code(t).name()),
        flags: if bytes.len() >= 6 {
            flag_names(header.flags())
        } else {
            Vec::new()
        },
        node: has_header.then(|| header.node().to_string()),
        session: has_header.then(|| header.session().to_string()),
        auth_key_id: None,
        body: None,
        error: None,
    };
    if packet.orig_len as usize > packet.data.len() {
        out.error = Some(format!(
            "packet cut by the capture's snaplen: {} of {} bytes captured",
            packet.data.len(),
            packet.orig_len
        ));
        return out;
    }
    let mut frame_bytes = bytes;
    if has_header && header.flags().contains(Flags::AUTH) {
        match auth::split(bytes) {
            Ok((frame, key_id, _tag)) => {
                frame_bytes = frame;
                out.auth_key_id = Some(key_id);
            }
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        }
    }
    match FrameRepr::parse(frame_bytes) {
        Ok(repr) => out.body = Some(BodySummary::of(&repr.body)),
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}

/// Writes one line per frame: the text form, or one JSON object per line
/// (`--json`). The caller prints [`DecodeStats`] (its `Display` is one line)
/// to stderr, so that stdout stays one frame per line.
pub fn write_frames(frames: &[DecodedFrame], json: bool, out: &mut dyn Write) -> io::Result<()> {
    for frame in frames {
        if json {
            serde_json::to_writer(&mut *out, frame).map_err(io::Error::other)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{frame}")?;
        }
    }
    out.flush()
}

impl std::fmt::Display for DecodeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "packets_read={} frames_decoded={} frames_invalid={} datagrams_foreign={} packets_skipped={} packets_undecodable={} fragments_skipped={} gso_packets_split={}",
            self.packets_read,
            self.frames_decoded,
            self.frames_invalid,
            self.datagrams_foreign,
            self.packets_skipped,
            self.packets_undecodable,
            self.fragments_skipped,
            self.gso_packets_split
        )
    }
}

fn flag_names(flags: Flags) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = flags;
    for (flag, name) in [
        (Flags::REPAIR, "repair"),
        (Flags::FRAGMENT, "fragment"),
        (Flags::AUTH, "auth"),
    ] {
        if flags.contains(flag) {
            names.push(name.to_string());
            rest = rest.without(flag);
        }
    }
    if rest.0 != 0 {
        names.push(format!("{:#06x}", rest.0));
    }
    names
}

impl std::fmt::Display for DecodedFrame {
    /// One line: `time source > destination (kind) type flags node session
    /// body-or-error len=N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} #{} {} > {}",
            format_time(self.time_unix_ns),
            self.packet,
            self.source,
            self.destination
        )?;
        match self.destination_kind {
            DestinationKind::Unicast => {}
            DestinationKind::Multicast => write!(f, " (multicast)")?,
            DestinationKind::Broadcast => write!(f, " (broadcast)")?,
        }
        write!(f, " {}", self.frame_type.unwrap_or("?"))?;
        if !self.flags.is_empty() {
            write!(f, " [{}]", self.flags.join(","))?;
        }
        if let (Some(node), Some(session)) = (&self.node, &self.session) {
            write!(f, " node={node} session={session}")?;
        }
        if let Some(id) = self.auth_key_id {
            write!(f, " key={id:#04x}(unverified)")?;
        }
        if let Some(body) = &self.body {
            write!(f, " {body}")?;
        }
        write!(f, " len={}", self.datagram_len)?;
        if let Some(err) = &self.error {
            write!(f, " INVALID: {err}")?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC), without a date library: the
/// civil-from-days algorithm of Howard Hinnant's `chrono`-compatible
/// date algorithms.
pub fn format_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_time(1_795_622_400_123_456_789),
            "2026-11-25T16:00:00.123456789Z"
        );
        assert_eq!(
            format_time(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn flags_are_named_and_unknown_bits_kept() {
        assert_eq!(flag_names(Flags(0)), Vec::<String>::new());
        assert_eq!(flag_names(Flags(0x0103)), ["repair", "fragment", "0x0100"]);
    }
}
