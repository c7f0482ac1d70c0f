//! A reader for pcapng capture files (what `tshark` and Wireshark write),
//! enough of it for castlog captures.
//!
//! ```text
//! block: type u32, total_len u32, body, total_len u32 (again); 4-byte aligned
//!
//! 0x0a0d0d0a Section Header    byte-order magic 1a2b3c4d (sets the byte order
//!                              of the section), version 1.x, section length,
//!                              options. Starts a section: interfaces reset.
//! 0x00000001 Interface Descr.  linktype u16, reserved u16, snaplen u32,
//!                              options (if_tsresol, code 9: timestamp units)
//! 0x00000006 Enhanced Packet   interface u32, ts_high u32, ts_low u32,
//!                              captured_len u32, orig_len u32, data (padded)
//! 0x00000003 Simple Packet     orig_len u32, data: no interface id (the first
//!                              interface) and no timestamp (time 0)
//! other                        skipped (name resolution, statistics, ...)
//! ```
//!
//! As for classic pcap: every length is checked against the bytes left, so a
//! truncated or garbage file gives a [`DecodeError`], never a panic, and no
//! allocation is sized from the file.

use super::pcap::{LinkType, Packet};
use super::DecodeError;

/// Block type of the Section Header Block, also the file's first 4 bytes.
pub const SECTION_HEADER: u32 = 0x0a0d_0d0a;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const INTERFACE_DESCRIPTION: u32 = 1;
const SIMPLE_PACKET: u32 = 3;
const ENHANCED_PACKET: u32 = 6;
const OPTION_TSRESOL: u16 = 9;
const OPTION_END: u16 = 0;

/// One interface of the current section.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: LinkType,
    snaplen: u32,
    /// Timestamp unit: 10^-n seconds (`decimal`) or 2^-n seconds.
    tsresol: u8,
}

/// Iterates the packets of a pcapng file. After the first error it yields
/// nothing more.
#[derive(Debug, Clone)]
pub struct PcapngReader<'a> {
    bytes: &'a [u8],
    offset: usize,
    little_endian: bool,
    interfaces: Vec<Interface>,
    number: u64,
    failed: bool,
}

impl<'a> PcapngReader<'a> {
    /// Checks that the file starts with a Section Header Block.
    pub fn new(bytes: &'a [u8]) -> Result<PcapngReader<'a>, DecodeError> {
        let mut r = PcapngReader {
            bytes,
            offset: 0,
            little_endian: true,
            interfaces: Vec::new(),
            number: 0,
            failed: false,
        };
        if r.u32_at(0) != Some(SECTION_HEADER) {
            return Err(DecodeError::BadMagic {
                found: r.u32_at(0).unwrap_or(0),
            });
        }
        // Read the first section header now, so a garbage file fails here.
        r.read_block()?;
        Ok(r)
    }

    /// Link type of the first interface, if one was described yet.
    pub fn first_link_type(&self) -> Option<LinkType> {
        self.interfaces.first().map(|i| i.link_type)
    }

    /// Reads blocks until a packet (`Some`) or the end of the file (`None`).
    fn next_packet(&mut self) -> Result<Option<Packet<'a>>, DecodeError> {
        while self.offset < self.bytes.len() {
            if let Some(p) = self.read_block()? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Reads the block at `offset`, advances past it, and returns the
    /// packet it holds, if any.
    fn read_block(&mut self) -> Result<Option<Packet<'a>>, DecodeError> {
        let at = self.offset;
        let rest = self.bytes.get(at..).unwrap_or(&[]);
        if rest.len() < 12 {
            return Err(DecodeError::TruncatedBlock {
                offset: at,
                need: 12,
                have: rest.len(),
            });
        }
        let block_type = self.u32_at(at).unwrap_or(0);
        if block_type == SECTION_HEADER {
            // The byte order is the section's own: read it before the length.
            let magic = self.u32_at(at + 8).unwrap_or(0);
            self.little_endian = match magic {
                BYTE_ORDER_MAGIC => self.little_endian,
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => !self.little_endian,
                found => return Err(DecodeError::BadByteOrder { offset: at, found }),
            };
            self.interfaces.clear();
        }
        let len = self.u32_at(at + 4).unwrap_or(0) as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return Err(DecodeError::BadBlockLength {
                offset: at,
                length: len,
            });
        }
        let Some(block) = rest.get(..len) else {
            return Err(DecodeError::TruncatedBlock {
                offset: at,
                need: len,
                have: rest.len(),
            });
        };
        if self.u32_at(at + len - 4) != Some(len as u32) {
            return Err(DecodeError::BadBlockLength {
                offset: at,
                length: len,
            });
        }
        self.offset = at + len;
        let body = block.get(8..len - 4).unwrap_or(&[]);
        match block_type {
            SECTION_HEADER => {
                let major = self.u16_in(body, 4);
                if major != 1 {
                    return Err(DecodeError::UnsupportedVersion {
                        major,
                        minor: self.u16_in(body, 6),
                    });
                }
                Ok(None)
            }
            INTERFACE_DESCRIPTION => {
                let code = u32::from(self.u16_in(body, 0));
                let link_type =
                    LinkType::from_code(code).ok_or(DecodeError::UnsupportedLinkType { code })?;
                let tsresol = self.tsresol(body.get(8..).unwrap_or(&[]));
                self.interfaces.push(Interface {
                    link_type,
                    snaplen: self.u32_in(body, 4),
                    tsresol,
                });
                Ok(None)
            }
            ENHANCED_PACKET => self.enhanced_packet(at, body).map(Some),
            SIMPLE_PACKET => self.simple_packet(at, body).map(Some),
            _ => Ok(None),
        }
    }

    fn enhanced_packet(&mut self, at: usize, body: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let number = self.number + 1;
        let id = self.u32_in(body, 0);
        let iface = *self
            .interfaces
            .get(id as usize)
            .ok_or(DecodeError::UnknownInterface {
                packet: number,
                interface: id,
            })?;
        let ts = (u64::from(self.u32_in(body, 4)) << 32) | u64::from(self.u32_in(body, 8));
        let captured = self.u32_in(body, 12) as usize;
        let orig_len = self.u32_in(body, 16);
        let data =
            body.get(20..)
                .and_then(|d| d.get(..captured))
                .ok_or(DecodeError::TruncatedPacket {
                    packet: number,
                    offset: at,
                    need: captured,
                    have: body.len().saturating_sub(20),
                })?;
        self.number = number;
        Ok(Packet {
            number,
            time_unix_ns: to_nanos(ts, iface.tsresol),
            orig_len,
            data,
            link_type: iface.link_type,
            little_endian: self.little_endian,
        })
    }

    fn simple_packet(&mut self, at: usize, body: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let number = self.number + 1;
        let iface = *self
            .interfaces
            .first()
            .ok_or(DecodeError::UnknownInterface {
                packet: number,
                interface: 0,
            })?;
        let orig_len = self.u32_in(body, 0);
        let room = body.len().saturating_sub(4);
        let snap = if iface.snaplen == 0 {
            usize::MAX
        } else {
            iface.snaplen as usize
        };
        let captured = (orig_len as usize).min(snap).min(room);
        let data = body
            .get(4..4 + captured)
            .ok_or(DecodeError::TruncatedPacket {
                packet: number,
                offset: at,
                need: captured,
                have: room,
            })?;
        self.number = number;
        Ok(Packet {
            number,
            time_unix_ns: 0,
            orig_len,
            data,
            link_type: iface.link_type,
            little_endian: self.little_endian,
        })
    }

    /// The `if_tsresol` option of an interface; 6 (microseconds) if absent.
    fn tsresol(&self, mut options: &[u8]) -> u8 {
        while let (Some(code), Some(len)) = (self.u16_opt(options, 0), self.u16_opt(options, 2)) {
            if code == OPTION_END {
                break;
            }
            let len = usize::from(len);
            if code == OPTION_TSRESOL && len == 1 {
                return options.get(4).copied().unwrap_or(6);
            }
            let padded = 4 + len.div_ceil(4) * 4;
            match options.get(padded..) {
                Some(rest) => options = rest,
                None => break,
            }
        }
        6
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u32_in(&self, body: &[u8], at: usize) -> u32 {
        let b: [u8; 4] = body
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([0; 4]);
        if self.little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }

    fn u16_opt(&self, body: &[u8], at: usize) -> Option<u16> {
        let b: [u8; 2] = body.get(at..at + 2)?.try_into().ok()?;
        Some(if self.little_endian {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u16_in(&self, body: &[u8], at: usize) -> u16 {
        self.u16_opt(body, at).unwrap_or(0)
    }
}

impl<'a> Iterator for PcapngReader<'a> {
    type Item = Result<Packet<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let packet = self.next_packet().transpose();
        self.failed = matches!(packet, Some(Err(_)));
        packet
    }
}

/// Timestamp in interface units to nanoseconds since the epoch: units of
/// 10^-n s when the high bit of `tsresol` is clear, else 2^-n s.
fn to_nanos(ts: u64, tsresol: u8) -> u64 {
    let n = u32::from(tsresol & 0x7f);
    let ns = if tsresol & 0x80 == 0 {
        if n <= 9 {
            u128::from(ts) * 10u128.pow(9 - n)
        } else {
            u128::from(ts) / 10u128.checked_pow(n - 9).unwrap_or(u128::MAX)
        }
    } else if n < 128 {
        (u128::from(ts) * 1_000_000_000) >> n
    } else {
        0
    };
    u64::try_from(ns).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_units_convert_to_nanoseconds() {
        assert_eq!(to_nanos(1_500_000, 6), 1_500_000_000);
        assert_eq!(to_nanos(1_500_000_000, 9), 1_500_000_000);
        assert_eq!(to_nanos(1 << 20, 0x80 | 20), 1_000_000_000);
        assert_eq!(to_nanos(u64::MAX, 0), u64::MAX);
        assert_eq!(to_nanos(123, 12), 0);
    }
}
