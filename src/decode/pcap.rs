//! A reader for classic libpcap capture files, as `tcpdump -w` writes them.
//!
//! ```text
//! file header (24 bytes)
//! 0   4  magic       a1b2c3d4 (µs timestamps) or a1b23c4d (ns), written in
//!                    the capturing host's byte order: read back swapped,
//!                    it tells the reader to swap every field
//! 4   2  version_major  2
//! 6   2  version_minor  4
//! 8   4  thiszone    ignored (always 0 in practice)
//! 12  4  sigfigs     ignored
//! 16  4  snaplen     longest captured packet
//! 20  4  linktype    low 16 bits: LINKTYPE_* (1 ethernet, 113 linux sll, ...)
//!
//! per packet: record header (16 bytes), then incl_len bytes of packet
//! 0   4  ts_sec
//! 4   4  ts_usec     or ts_nsec with the nanosecond magic
//! 8   4  incl_len    bytes captured (<= snaplen)
//! 12  4  orig_len    bytes on the wire
//! ```
//!
//! pcapng (`tshark`'s and Wireshark's default) is read by `pcapng.rs`.
//! Every length is checked against the bytes left, so a
//! truncated or garbage file gives a [`DecodeError`], never a panic, and
//! nothing is allocated from a length read out of the file.

use super::DecodeError;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Bytes of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Bytes of each packet's record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// The link layer that starts every packet of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_NULL (0): BSD loopback, a 4-byte address family.
    Null,
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101, and 12 on some systems): a bare IPv4/IPv6 packet.
    Raw,
    /// LINKTYPE_LINUX_SLL (113): Linux "cooked" capture, `tcpdump -i any`.
    LinuxSll,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL2 (276): what newer tcpdump writes for `-i any`.
    LinuxSll2,
}

impl LinkType {
    pub(crate) fn from_code(code: u32) -> Option<LinkType> {
        match code {
            0 => Some(LinkType::Null),
            1 => Some(LinkType::Ethernet),
            12 | 101 => Some(LinkType::Raw),
            113 => Some(LinkType::LinuxSll),
            228 => Some(LinkType::Ipv4),
            229 => Some(LinkType::Ipv6),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }
}

/// One captured packet, borrowing the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// 1-based position in the file, as Wireshark numbers packets.
    pub number: u64,
    pub time_unix_ns: u64,
    /// Bytes the packet had on the wire; more than `data.len()` when the
    /// capture's snaplen cut it.
    pub orig_len: u32,
    pub data: &'a [u8],
    /// The link layer the packet starts with.
    pub link_type: LinkType,
    /// Byte order of the capturing host, for link headers written in host
    /// order (LINKTYPE_NULL's address family).
    pub little_endian: bool,
}

/// Iterates the packets of a classic pcap file. After the first error it
/// yields nothing more.
#[derive(Debug, Clone)]
pub struct PcapReader<'a> {
    rest: &'a [u8],
    offset: usize,
    swapped: bool,
    nanos: bool,
    link_type: LinkType,
    number: u64,
    failed: bool,
}

impl<'a> PcapReader<'a> {
    /// Reads and checks the file header.
    pub fn new(bytes: &'a [u8]) -> Result<PcapReader<'a>, DecodeError> {
        let Some(header) = bytes.get(..FILE_HEADER_LEN) else {
            return Err(DecodeError::TooShort { have: bytes.len() });
        };
        let magic_le = u32_at(header, 0, false);
        let (swapped, nanos) = match (magic_le, magic_le.swap_bytes()) {
            (MAGIC_MICROS, _) => (false, false),
            (MAGIC_NANOS, _) => (false, true),
            (_, MAGIC_MICROS) => (true, false),
            (_, MAGIC_NANOS) => (true, true),
            _ => return Err(DecodeError::BadMagic { found: magic_le }),
        };
        let major = u16_at(header, 4, swapped);
        let minor = u16_at(header, 6, swapped);
        if major != 2 {
            return Err(DecodeError::UnsupportedVersion { major, minor });
        }
        let code = u32_at(header, 20, swapped) & 0xffff;
        let link_type =
            LinkType::from_code(code).ok_or(DecodeError::UnsupportedLinkType { code })?;
        Ok(PcapReader {
            rest: bytes.get(FILE_HEADER_LEN..).unwrap_or(&[]),
            offset: FILE_HEADER_LEN,
            swapped,
            nanos,
            link_type,
            number: 0,
            failed: false,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link_type
    }

    fn read_packet(&mut self) -> Result<Packet<'a>, DecodeError> {
        let number = self.number + 1;
        let Some(record) = self.rest.get(..RECORD_HEADER_LEN) else {
            return Err(DecodeError::TruncatedRecordHeader {
                packet: number,
                offset: self.offset,
                have: self.rest.len(),
            });
        };
        let ts_sec = u64::from(u32_at(record, 0, self.swapped));
        let ts_frac = u64::from(u32_at(record, 4, self.swapped));
        let incl_len = u32_at(record, 8, self.swapped) as usize;
        let orig_len = u32_at(record, 12, self.swapped);
        let data_start = RECORD_HEADER_LEN;
        let available = self.rest.len() - RECORD_HEADER_LEN;
        let Some(data) = data_start
            .checked_add(incl_len)
            .and_then(|end| self.rest.get(data_start..end))
        else {
            return Err(DecodeError::TruncatedPacket {
                packet: number,
                offset: self.offset,
                need: incl_len,
                have: available,
            });
        };
        let frac_ns = if self.nanos {
            ts_frac
        } else {
            ts_frac.saturating_mul(1000)
        };
        let time_unix_ns = ts_sec.saturating_mul(1_000_000_000).saturating_add(frac_ns);
        let consumed = RECORD_HEADER_LEN + incl_len;
        self.rest = self.rest.get(consumed..).unwrap_or(&[]);
        self.offset += consumed;
        self.number = number;
        Ok(Packet {
            number,
            time_unix_ns,
            orig_len,
            data,
            link_type: self.link_type,
            little_endian: !self.swapped,
        })
    }
}

impl<'a> Iterator for PcapReader<'a> {
    type Item = Result<Packet<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let packet = self.read_packet();
        self.failed = packet.is_err();
        Some(packet)
    }
}

fn u16_at(b: &[u8], at: usize, swapped: bool) -> u16 {
    let mut a = [0u8; 2];
    if let Some(src) = b.get(at..at + 2) {
        a.copy_from_slice(src);
    }
    let v = u16::from_le_bytes(a);
    if swapped {
        v.swap_bytes()
    } else {
        v
    }
}

fn u32_at(b: &[u8], at: usize, swapped: bool) -> u32 {
    let mut a = [0u8; 4];
    if let Some(src) = b.get(at..at + 4) {
        a.copy_from_slice(src);
    }
    let v = u32::from_le_bytes(a);
    if swapped {
        v.swap_bytes()
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(magic: u32, big_endian: bool, packets: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend(w32(magic));
        out.extend(w16(2));
        out.extend(w16(4));
        out.extend(w32(0));
        out.extend(w32(0));
        out.extend(w32(65535));
        out.extend(w32(1));
        for (sec, frac, data) in packets {
            out.extend(w32(*sec));
            out.extend(w32(*frac));
            out.extend(w32(data.len() as u32));
            out.extend(w32(data.len() as u32));
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn both_byte_orders_and_both_resolutions_read_the_same_times() {
        for (magic, frac, big) in [
            (MAGIC_MICROS, 250_000, false),
            (MAGIC_MICROS, 250_000, true),
            (MAGIC_NANOS, 250_000_000, false),
            (MAGIC_NANOS, 250_000_000, true),
        ] {
            let bytes = file(magic, big, &[(10, frac, b"abc")]);
            let r = PcapReader::new(&bytes).unwrap();
            assert_eq!(r.link_type(), LinkType::Ethernet);
            let packets: Vec<_> = r.collect::<Result<_, _>>().unwrap();
            assert_eq!(packets.len(), 1);
            assert_eq!(packets[0].time_unix_ns, 10_250_000_000);
            assert_eq!(packets[0].data, b"abc");
        }
    }

    #[test]
    fn file_cut_at_every_length_is_an_error_or_fewer_packets() {
        let bytes = file(MAGIC_MICROS, false, &[(1, 0, b"abcdef"), (2, 0, b"gh")]);
        for len in 0..bytes.len() {
            let got: Result<Vec<_>, _> =
                PcapReader::new(&bytes[..len]).and_then(|r| r.collect::<Result<Vec<_>, _>>());
            // Only a cut exactly between packets reads cleanly (fewer packets).
            if let Ok(p) = got {
                let whole = [FILE_HEADER_LEN, FILE_HEADER_LEN + RECORD_HEADER_LEN + 6];
                assert!(whole.contains(&len) && p.len() < 2, "len {len}");
            }
        }
    }

    #[test]
    fn unknown_magic_is_reported_with_its_value() {
        assert!(matches!(
            PcapReader::new(&[0x42; 32]),
            Err(DecodeError::BadMagic { found: 0x4242_4242 })
        ));
    }
}
