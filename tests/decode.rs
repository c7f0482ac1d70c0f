//! `castlog decode`: pcap files written by hand from frames that
//! `FrameRepr` emitted (golden lines, JSON, counters, every link type and
//! byte order), truncated and garbage files, and a real capture by tcpdump
//! between two network-namespace hosts.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use castlog::client::{ConsumeMode, Message, StartFrom};
use castlog::decode::DestinationKind;
use common::lan::Lan;
use common::{lan_netconf, DaemonProc, Kind};

use castlog::decode::{decode_capture, decode_pcap, BodySummary, DecodeError, LinkType};
use castlog::wire::auth::{seal, GroupKeys, Key};
use castlog::wire::{
    Body, DataPayload, DataRepr, Flags, FragmentRepr, FrameRepr, HeartbeatRepr, NakRepr, NcfRepr,
    NodeId, Offset, RecordRepr, Seq, SeqRange, SessionId, TopicAdvert, TopicId,
};
use etherparse::PacketBuilder;

const T0_NS: u64 = 1_795_622_400_000_000_000; // 2026-11-25T16:00:00Z
const NODE: NodeId = NodeId(0x00c0_ffee_0000_0001);
const SESSION: SessionId = SessionId(0x1234_5678);
const SOURCE: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
const RECEIVER: ([u8; 4], u16) = ([10, 0, 0, 2], 40001);
const GROUP: ([u8; 4], u16) = ([239, 1, 2, 3], 7400);
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const MAC_MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03];

fn record(topic: u32, offset: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    RecordRepr {
        topic: TopicId(topic),
        offset: Offset(offset),
        timestamp_ms: 1_795_622_400_000,
        key,
        value,
    }
    .emit_to_vec(&mut v)
    .unwrap();
    v
}

fn frame(node: NodeId, flags: Flags, body: Body<'_>) -> Vec<u8> {
    FrameRepr::new(node, SESSION, flags, body).to_vec().unwrap()
}

fn data_frame() -> Vec<u8> {
    let mut recs = record(0, 0, b"md.prices", &7u32.to_be_bytes());
    recs.extend(record(7, 0, b"AAPL", b"189.20"));
    recs.extend(record(7, 1, b"MSFT", b"401.10"));
    frame(
        NODE,
        Flags::default(),
        Body::Data(DataRepr {
            seq: Seq(0),
            payload: DataPayload::Records {
                count: 3,
                bytes: &recs,
            },
        }),
    )
}

/// A UDP datagram in Ethernet/IPv4, as on the wire.
fn eth_udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), dst_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, dst_mac)
        .ipv4(src.0, dst.0, 1)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// The same datagram as Linux cooked capture v1 (`tcpdump -i any -y LINUX_SLL`).
fn sll_udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), packet_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(packet_type.to_be_bytes());
    out.extend(1u16.to_be_bytes()); // ARPHRD_ETHER
    out.extend(6u16.to_be_bytes());
    out.extend(MAC_A);
    out.extend([0, 0]);
    out.extend(0x0800u16.to_be_bytes());
    let b = PacketBuilder::ipv4(src.0, dst.0, 1).udp(src.1, dst.1);
    b.write(&mut out, payload).unwrap();
    out
}

/// A classic pcap file: microseconds and little-endian, or nanoseconds
/// and big-endian.
fn pcap(linktype: u32, nanos_big_endian: bool, packets: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let w32 = |v: u32| {
        if nanos_big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let magic: u32 = if nanos_big_endian {
        0xa1b2_3c4d
    } else {
        0xa1b2_c3d4
    };
    let mut out = Vec::new();
    out.extend(w32(magic));
    let (major, minor) = (2u16, 4u16);
    if nanos_big_endian {
        out.extend(major.to_be_bytes());
        out.extend(minor.to_be_bytes());
    } else {
        out.extend(major.to_le_bytes());
        out.extend(minor.to_le_bytes());
    }
    out.extend(w32(0));
    out.extend(w32(0));
    out.extend(w32(262_144));
    out.extend(w32(linktype));
    for (t, data) in packets {
        out.extend(w32((t / 1_000_000_000) as u32));
        let frac = t % 1_000_000_000;
        out.extend(w32(if nanos_big_endian { frac } else { frac / 1000 } as u32));
        out.extend(w32(data.len() as u32));
        out.extend(w32(data.len() as u32));
        out.extend_from_slice(data);
    }
    out
}

/// The datagrams of the golden capture: (source, destination, dest MAC
/// or SLL packet type, payload).
type Endpoint = ([u8; 4], u16);

fn golden_datagrams() -> Vec<(Endpoint, Endpoint, bool, Vec<u8>)> {
    let keys = GroupKeys::new(Key::new(&[0x11; 32]).unwrap(), None);
    let mut sealed = frame(
        NODE,
        Flags::REPAIR,
        Body::Data(DataRepr {
            seq: Seq(9),
            payload: DataPayload::Fragment(FragmentRepr {
                total_len: 3000,
                frag_offset: 1400,
                chunk: &[0xab; 100],
            }),
        }),
    );
    seal(&mut sealed, &keys).unwrap();
    let mut bad_crc = data_frame();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x20;
    let bcast = ([10, 0, 0, 255], 7400);
    vec![
        (SOURCE, GROUP, false, data_frame()),
        (
            SOURCE,
            GROUP,
            false,
            frame(
                NODE,
                Flags::default(),
                Body::Heartbeat(HeartbeatRepr {
                    next_seq: Seq(1),
                    lowest_repairable: Seq(0),
                    interval_ms: 250,
                    topics: vec![TopicAdvert {
                        topic: TopicId(7),
                        next_offset: Offset(2),
                        name: "md.prices",
                    }],
                }),
            ),
        ),
        (
            RECEIVER,
            SOURCE,
            false,
            frame(
                NodeId(2),
                Flags::default(),
                Body::Nak(NakRepr {
                    source: NODE,
                    ranges: vec![SeqRange {
                        start: Seq(1),
                        end: Seq(3),
                    }],
                }),
            ),
        ),
        (
            SOURCE,
            GROUP,
            false,
            frame(
                NODE,
                Flags::default(),
                Body::Ncf(NcfRepr {
                    ranges: vec![SeqRange {
                        start: Seq(1),
                        end: Seq(3),
                    }],
                }),
            ),
        ),
        (SOURCE, GROUP, false, bad_crc),
        (
            RECEIVER,
            ([10, 0, 0, 53], 53),
            false,
            b"not castlog".to_vec(),
        ),
        (SOURCE, bcast, true, sealed),
    ]
}

fn golden_ethernet_capture() -> Vec<u8> {
    let mut packets: Vec<(u64, Vec<u8>)> = golden_datagrams()
        .into_iter()
        .enumerate()
        .map(|(i, (src, dst, bcast, payload))| {
            let mac = if bcast {
                [0xff; 6]
            } else if dst.0[0] >= 224 {
                MAC_MCAST
            } else {
                MAC_B
            };
            (
                T0_NS + i as u64 * 1_000_000,
                eth_udp(src, dst, mac, &payload),
            )
        })
        .collect();
    // A TCP segment: not UDP, skipped.
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(SOURCE.0, RECEIVER.0, 64)
        .tcp(1, 2, 3, 4);
    let mut tcp = Vec::new();
    b.write(&mut tcp, b"x").unwrap();
    packets.push((T0_NS + 9_000_000, tcp));
    pcap(1, false, &packets)
}

const GOLDEN_LINES: &[&str] = &[
    "2026-11-25T16:00:00.000000000Z #1 10.0.0.1:40000 > 239.1.2.3:7400 (multicast) data node=00c0ffee00000001 session=12345678 seq=0 records=3 topics=[7@0..=1 x2 12B] declare=7:\"md.prices\" len=151",
    "2026-11-25T16:00:00.001000000Z #2 10.0.0.1:40000 > 239.1.2.3:7400 (multicast) heartbeat node=00c0ffee00000001 session=12345678 next_seq=1 lowest_repairable=0 interval=250ms topic=7:\"md.prices\"@2 len=75",
    "2026-11-25T16:00:00.002000000Z #3 10.0.0.2:40001 > 10.0.0.1:40000 nak node=0000000000000002 session=12345678 source=00c0ffee00000001 ranges=[1..3] len=56",
    "2026-11-25T16:00:00.003000000Z #4 10.0.0.1:40000 > 239.1.2.3:7400 (multicast) ncf node=00c0ffee00000001 session=12345678 ranges=[1..3] len=48",
    "2026-11-25T16:00:00.004000000Z #5 10.0.0.1:40000 > 239.1.2.3:7400 (multicast) data node=00c0ffee00000001 session=12345678 len=151 INVALID: checksum mismatch: frame says 0x3f83d7ff, bytes give 0x04edf737",
    "2026-11-25T16:00:00.006000000Z #7 10.0.0.1:40000 > 10.0.0.255:7400 (broadcast) data [repair,fragment,auth] node=00c0ffee00000001 session=12345678 key=0xa3(unverified) seq=9 fragment=1400+100/3000 len=165",
];

#[test]
fn hand_written_capture_decodes_to_golden_lines() {
    let frames = decode_pcap(&golden_ethernet_capture()).unwrap();
    let lines: Vec<String> = frames.iter().map(ToString::to_string).collect();
    for l in &lines {
        eprintln!("{l}");
    }
    assert_eq!(lines.len(), GOLDEN_LINES.len(), "{lines:#?}");
    for (got, want) in lines.iter().zip(GOLDEN_LINES) {
        assert_eq!(got, want);
    }
}

#[test]
fn skipped_packets_are_counted_by_kind() {
    let c = decode_capture(&golden_ethernet_capture()).unwrap();
    assert_eq!(c.link_type, LinkType::Ethernet);
    assert_eq!(c.stats.packets_read, 8);
    assert_eq!(c.stats.frames_decoded, 5);
    assert_eq!(c.stats.frames_invalid, 1);
    assert_eq!(c.stats.datagrams_foreign, 1);
    assert_eq!(c.stats.packets_skipped, 1);
    assert_eq!(c.stats.packets_undecodable, 0);
}

/// A capture taken on a host that sends with UDP GSO holds the run of
/// equal datagrams as one UDP packet; each datagram decodes on its own.
#[test]
fn a_gso_run_in_one_udp_packet_decodes_as_its_datagrams() {
    let one = data_frame();
    let mut run = Vec::new();
    for _ in 0..3 {
        run.extend_from_slice(&one);
    }
    run.extend_from_slice(&one[..one.len() - 1]); // a torn last segment
    let packet = eth_udp(([10, 0, 0, 1], 7500), ([239, 255, 0, 1], 7400), MAC_B, &run);
    let c = decode_capture(&pcap(1, false, &[(1, packet)])).unwrap();
    assert_eq!(c.stats.gso_packets_split, 1);
    assert_eq!(c.stats.frames_decoded, 3);
    assert_eq!(c.stats.frames_invalid, 1);
    assert!(c.frames.iter().all(|f| f.datagram_len <= one.len()));
}

#[test]
fn json_output_carries_the_same_facts() {
    let frames = decode_pcap(&golden_ethernet_capture()).unwrap();
    let v: serde_json::Value = serde_json::to_value(&frames[0]).unwrap();
    assert_eq!(v["source"], "10.0.0.1:40000");
    assert_eq!(v["destination"], "239.1.2.3:7400");
    assert_eq!(v["destination_kind"], "multicast");
    assert_eq!(v["frame_type"], "data");
    assert_eq!(v["node"], "00c0ffee00000001");
    assert_eq!(v["body"]["type"], "data");
    assert_eq!(v["body"]["seq"], 0);
    assert_eq!(v["body"]["topics"][0]["topic"], 7);
    assert_eq!(v["body"]["topics"][0]["first_offset"], 0);
    assert_eq!(v["body"]["topics"][0]["last_offset"], 1);
    assert_eq!(v["body"]["declarations"][0]["name"], "md.prices");
    assert!(v["error"].is_null());
    let bad: serde_json::Value = serde_json::to_value(&frames[4]).unwrap();
    assert!(bad["body"].is_null());
    assert!(bad["error"].as_str().unwrap().contains("checksum"));
    // One JSON object per line, each parseable on its own.
    let mut out = Vec::new();
    castlog::decode::write_frames(&frames, true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), frames.len());
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn cooked_big_endian_nanosecond_capture_gives_the_same_frames() {
    let packets: Vec<(u64, Vec<u8>)> = golden_datagrams()
        .into_iter()
        .enumerate()
        .map(|(i, (src, dst, bcast, payload))| {
            let packet_type = if bcast {
                1
            } else if dst.0[0] >= 224 {
                2
            } else {
                0
            };
            (
                T0_NS + i as u64 * 1_000_000,
                sll_udp(src, dst, packet_type, &payload),
            )
        })
        .collect();
    let sll = decode_capture(&pcap(113, true, &packets)).unwrap();
    assert_eq!(sll.link_type, LinkType::LinuxSll);
    let eth = decode_pcap(&golden_ethernet_capture()).unwrap();
    assert_eq!(sll.frames, eth);
}

/// A pcapng file: section header, one interface (with `if_tsresol` when
/// given), a name-resolution block to be skipped, then one enhanced packet
/// block per packet.
fn pcapng(
    big_endian: bool,
    tsresol: Option<u8>,
    linktype: u16,
    packets: &[(u64, Vec<u8>)],
) -> Vec<u8> {
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
    let block = |out: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = 12 + body.len().div_ceil(4) * 4;
        out.extend(w32(kind));
        out.extend(w32(len as u32));
        out.extend_from_slice(body);
        out.resize(out.len() + (len - 12 - body.len()), 0);
        out.extend(w32(len as u32));
    };
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend(w32(0x1a2b_3c4d));
    shb.extend(w16(1));
    shb.extend(w16(0));
    shb.extend([0xff; 8]);
    block(&mut out, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend(w16(linktype));
    idb.extend(w16(0));
    idb.extend(w32(0));
    if let Some(r) = tsresol {
        idb.extend(w16(9));
        idb.extend(w16(1));
        idb.extend([r, 0, 0, 0]);
        idb.extend([0; 4]);
    }
    block(&mut out, 1, &idb);
    block(&mut out, 4, &[0; 4]);
    let unit_ns: u64 = match tsresol {
        Some(9) => 1,
        _ => 1000,
    };
    for (t, data) in packets {
        let ts = t / unit_ns;
        let mut epb = Vec::new();
        epb.extend(w32(0));
        epb.extend(w32((ts >> 32) as u32));
        epb.extend(w32(ts as u32));
        epb.extend(w32(data.len() as u32));
        epb.extend(w32(data.len() as u32));
        epb.extend_from_slice(data);
        block(&mut out, 6, &epb);
    }
    out
}

#[test]
fn pcapng_in_either_byte_order_gives_the_same_frames_as_pcap() {
    let packets: Vec<(u64, Vec<u8>)> = golden_datagrams()
        .into_iter()
        .enumerate()
        .map(|(i, (src, dst, bcast, payload))| {
            let mac = if bcast {
                [0xff; 6]
            } else if dst.0[0] >= 224 {
                MAC_MCAST
            } else {
                MAC_B
            };
            (
                T0_NS + i as u64 * 1_000_000,
                eth_udp(src, dst, mac, &payload),
            )
        })
        .collect();
    let pcap_frames = decode_pcap(&pcap(1, false, &packets)).unwrap();
    assert_eq!(pcap_frames.len(), 6);
    for (big, resol) in [
        (false, None),
        (true, Some(9)),
        (true, None),
        (false, Some(9)),
    ] {
        let ng = pcapng(big, resol, 1, &packets);
        let c = decode_capture(&ng).unwrap();
        assert_eq!(c.link_type, LinkType::Ethernet);
        assert_eq!(c.frames, pcap_frames, "big_endian={big} tsresol={resol:?}");
        for len in 0..ng.len() {
            if let Ok(frames) = decode_pcap(&ng[..len]) {
                assert!(frames.len() < pcap_frames.len() || len == ng.len());
            }
        }
    }
}

#[test]
fn packet_cut_by_snaplen_is_shown_as_invalid() {
    let mut file = pcap(
        1,
        false,
        &[(T0_NS, eth_udp(SOURCE, GROUP, MAC_MCAST, &data_frame()))],
    );
    // Claim the packet was 10 bytes longer on the wire than captured.
    let orig_len_at = 24 + 12;
    let orig = u32::from_le_bytes(file[orig_len_at..orig_len_at + 4].try_into().unwrap());
    file[orig_len_at..orig_len_at + 4].copy_from_slice(&(orig + 10).to_le_bytes());
    let frames = decode_pcap(&file).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].error.as_deref().unwrap().contains("snaplen"));
}

#[test]
fn capture_cut_at_every_length_gives_an_error_not_a_panic() {
    let file = golden_ethernet_capture();
    let full = decode_pcap(&file).unwrap().len();
    let mut record_ends = vec![24];
    let mut at = 24;
    while at < file.len() {
        let incl = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
        record_ends.push(at);
    }
    for len in 0..file.len() {
        match decode_pcap(&file[..len]) {
            Ok(frames) => assert!(
                record_ends.contains(&len) && frames.len() <= full,
                "len {len} decoded without error"
            ),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.is_empty() && msg.chars().next().unwrap().is_lowercase());
                if len >= 24 {
                    assert!(
                        matches!(
                            e,
                            DecodeError::TruncatedPacket { .. }
                                | DecodeError::TruncatedRecordHeader { .. }
                        ),
                        "len {len}: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn garbage_and_foreign_formats_are_errors() {
    assert!(matches!(
        decode_pcap(b""),
        Err(DecodeError::TooShort { have: 0 })
    ));
    let mut ng = vec![0x0a, 0x0d, 0x0d, 0x0a];
    ng.resize(64, 0);
    assert!(matches!(
        decode_pcap(&ng),
        Err(DecodeError::BadByteOrder {
            offset: 0,
            found: 0
        })
    ));
    assert!(matches!(
        decode_pcap(&[0x42; 100]),
        Err(DecodeError::BadMagic { .. })
    ));
    let mut usb = pcap(1, false, &[]);
    usb[20..24].copy_from_slice(&189u32.to_le_bytes());
    assert!(matches!(
        decode_pcap(&usb),
        Err(DecodeError::UnsupportedLinkType { code: 189 })
    ));
    // Random bytes behind a valid header: any result but a panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..300 {
        let mut file = pcap(if round % 2 == 0 { 1 } else { 113 }, round % 3 == 0, &[]);
        for _ in 0..(round * 7 % 400) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            file.push(x as u8);
        }
        let _ = decode_pcap(&file);
    }
}

// ---------------------------------------------------------------------------
// Real captures between namespace hosts (tests/common/lan.rs).

/// A tcpdump capturing UDP inside a host; stopped (SIGINT, so it finishes
/// the file) on drop.
struct Tcpdump(Child);

impl Tcpdump {
    /// Starts tcpdump in `host` writing UDP packets to `file`; returns once
    /// it is capturing.
    fn start(lan: &Lan, host: usize, args: &[&str], file: &std::path::Path) -> Tcpdump {
        let mut cmd = Command::new("tcpdump");
        // --immediate-mode: no 1 s buffering in the ring, so nothing is still
        // in the kernel when the test stops it. -Z root: write the file as
        // root in the test's temporary directory.
        cmd.args(["--immediate-mode", "-U", "-n", "-Z", "root"])
            .args(args)
            .arg("-w")
            .arg(file)
            .arg("udp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = lan
            .spawn(host, cmd)
            .expect("spawn tcpdump (is it installed?)");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut said = String::new();
        let mut lines = BufReader::new(stderr);
        while !said.contains("listening on") {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("tcpdump exited: {said}");
            }
            said.push_str(&line);
        }
        // Keep draining, so tcpdump's exit report never hits a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
        Tcpdump(child)
    }

    fn stop(mut self) {
        self.interrupt();
    }

    fn interrupt(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.interrupt();
        }
    }
}

/// A two-host LAN and tcpdump, or `None` (skip) when this machine has
/// neither; under `CI=true` a missing piece is a failure.
fn lan_with_tcpdump() -> Option<Lan> {
    let has_tcpdump = Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tcpdump {
        assert!(
            !common::lan::is_ci(),
            "tcpdump is not installed (CI=true, so this is a failure, not a skip)"
        );
        eprintln!("skipping capture test: tcpdump is not installed");
        return None;
    }
    Lan::new_or_skip(2)
}

#[test]
fn real_tcpdump_capture_of_hand_sent_frames_decodes_on_every_link_type() {
    let Some(lan) = lan_with_tcpdump() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let eth_file = dir.path().join("eth.pcap");
    let any_file = dir.path().join("any.pcap");
    let sll_file = dir.path().join("sll.pcap");
    let dumps = vec![
        Tcpdump::start(&lan, 2, &["-i", "eth0"], &eth_file),
        Tcpdump::start(&lan, 2, &["-i", "any"], &any_file),
        Tcpdump::start(&lan, 2, &["-i", "any", "-y", "LINUX_SLL"], &sll_file),
    ];
    let good = data_frame();
    let mut bad = data_frame();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let (me, peer, bcast) = (lan.addr(1), lan.addr(2), lan.broadcast());
    lan.in_host(1, || {
        let sock = UdpSocket::bind((me, 40000)).unwrap();
        sock.set_broadcast(true).unwrap();
        sock.send_to(&good, (peer, 7400)).unwrap();
        sock.send_to(&good, (Ipv4Addr::new(239, 1, 2, 3), 7400))
            .unwrap();
        sock.send_to(&good, (bcast, 7400)).unwrap();
        sock.send_to(&bad, (peer, 7400)).unwrap();
        sock.send_to(b"hello", (peer, 9)).unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    dumps.into_iter().for_each(Tcpdump::stop);
    let source: SocketAddr = SocketAddrV4::new(me, 40000).into();
    for (file, link) in [
        (&eth_file, LinkType::Ethernet),
        (&any_file, LinkType::LinuxSll2),
        (&sll_file, LinkType::LinuxSll),
    ] {
        let c = decode_capture(&std::fs::read(file).unwrap()).unwrap();
        for f in &c.frames {
            eprintln!("{f}");
        }
        assert_eq!(c.link_type, link, "{}", file.display());
        assert_eq!(c.frames.len(), 4, "{}: {:?}", file.display(), c.stats);
        assert_eq!(c.stats.datagrams_foreign, 1);
        assert!(c.frames.iter().all(|f| f.source == source));
        let dests: Vec<SocketAddr> = c.frames.iter().map(|f| f.destination).collect();
        let to = |ip: Ipv4Addr| SocketAddr::from((ip, 7400));
        assert_eq!(
            dests,
            [
                to(peer),
                to(Ipv4Addr::new(239, 1, 2, 3)),
                to(bcast),
                to(peer)
            ]
        );
        let kinds: Vec<DestinationKind> = c.frames.iter().map(|f| f.destination_kind).collect();
        assert_eq!(
            kinds,
            [
                DestinationKind::Unicast,
                DestinationKind::Multicast,
                DestinationKind::Broadcast,
                DestinationKind::Unicast
            ]
        );
        assert!(matches!(
            &c.frames[1].body,
            Some(BodySummary::Data {
                seq: 0,
                records: 3,
                ..
            })
        ));
        assert!(c.frames[3].error.as_deref().unwrap().contains("checksum"));
    }
}

#[test]
fn real_capture_of_two_daemons_shows_every_published_offset() {
    let Some(lan) = lan_with_tcpdump() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("daemons.pcap");
    let dump = Tcpdump::start(&lan, 2, &["-i", "eth0"], &file);
    let daemons: Vec<DaemonProc> = (1..=2)
        .map(|i| {
            let nc = lan_netconf(&lan, i, Kind::Multicast, "");
            DaemonProc::start(Some(&lan), i, &format!("h{i}"), &nc, dir.path())
        })
        .collect();
    let mut sub = daemons[1].client();
    sub.subscribe("*", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut publisher = daemons[0].client();
    for k in 0..200 {
        publisher
            .publish_oneway("md.prices", None, format!("v{k}").as_bytes())
            .unwrap();
    }
    publisher.flush().unwrap();
    publisher.ping().unwrap();
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered < 200 && Instant::now() < deadline {
        if let Some(Message::Record(_)) = sub.next_message(Duration::from_millis(200)).unwrap() {
            delivered += 1;
        }
    }
    assert_eq!(delivered, 200, "the subscriber on host 2 got every record");
    std::thread::sleep(Duration::from_millis(300));
    dump.stop();
    drop(daemons);

    let c = decode_capture(&std::fs::read(&file).unwrap()).unwrap();
    let lines: Vec<String> = c.frames.iter().map(ToString::to_string).collect();
    eprintln!("{}\n{}", lines.join("\n"), c.stats);
    assert_eq!(c.stats.frames_invalid, 0);
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 42, 1), 7400));
    let mut declared = Vec::new();
    let mut offsets = Vec::new();
    let from_h1 = |f: &&castlog::decode::DecodedFrame| f.source.ip() == lan.addr(1);
    for f in c.frames.iter().filter(from_h1) {
        if f.destination != group {
            continue;
        }
        assert_eq!(f.destination_kind, DestinationKind::Multicast);
        if let Some(BodySummary::Data {
            topics,
            declarations,
            ..
        }) = &f.body
        {
            declared.extend(declarations.iter().map(|d| (d.topic, d.name.clone())));
            for s in topics {
                offsets.extend(s.first_offset..=s.last_offset);
            }
        }
    }
    let [(topic, name)] = &declared[..] else {
        panic!("one topic declaration expected, got {declared:?}")
    };
    assert_eq!(name, "md.prices");
    assert!(*topic != 0);
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets, (0..200).collect::<Vec<u64>>());
    assert!(c.frames.iter().any(|f| f.frame_type == Some("heartbeat")));
}

#[test]
fn castlog_decode_prints_one_line_per_frame_and_counts_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("golden.pcap");
    std::fs::write(&file, golden_ethernet_capture()).unwrap();
    let bin = env!("CARGO_BIN_EXE_castlog");
    let out = Command::new(bin).arg("decode").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().collect::<Vec<_>>(), GOLDEN_LINES);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("frames_decoded=5 frames_invalid=1 datagrams_foreign=1"),
        "{err}"
    );

    let out = Command::new(bin)
        .args(["decode", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), GOLDEN_LINES.len());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["packet"].is_u64());
    }

    let out = Command::new(bin)
        .args(["decode", "/nonexistent/capture.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capture.pcap"));
}
