//! Faults on real (namespace) hosts, issue 8: a receive buffer overrun by a
//! burst, a full disk on a receiving node, and the node serving a replay
//! killed and restarted mid-replay. In every case the subscriber on the
//! receiving host must end with every record, in offset order, once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use castlog::client::{Client, ConsumeMode, Delivery, NodeId, StartFrom};
use common::lan::Lan;
use common::{collect, lan_netconf, DaemonProc, Kind};

/// Timings that make loss recovery quick on a LAN in a test.
const FAST: &str =
    "heartbeat-interval-min = \"1ms\"\nnak-delay-max = \"2ms\"\nnak-retry-interval = \"5ms\"\n";

fn subscribe_all(d: &DaemonProc) -> Client {
    let mut c = d.client();
    c.subscribe("*", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .expect("subscribe");
    c
}

/// The value of record `k`: its number, then `pad` bytes of padding.
fn value(k: u64, pad: usize) -> Vec<u8> {
    let mut v = format!("v{k}:").into_bytes();
    v.resize(v.len() + pad, b'p');
    v
}

/// Publishes records `from..to` on `topic` one-way, then waits until the
/// daemon has taken them all (ping is a barrier).
fn publish_range(c: &mut Client, topic: &str, from: u64, to: u64, pad: usize) {
    for k in from..to {
        c.publish_oneway(topic, None, &value(k, pad))
            .expect("publish");
    }
    c.flush().expect("flush");
    c.ping().expect("ping");
}

/// `got` is exactly the records `0..to` of `source` on `topic`: in offset
/// order, each once, each with the value it was published with.
fn assert_exactly(got: &[Delivery], topic: &str, source: NodeId, to: u64, pad: usize, what: &str) {
    let offsets: Vec<u64> = got.iter().map(|d| d.offset.0).collect();
    let first_bad = offsets.iter().zip(0..).position(|(o, want)| *o != want);
    assert!(
        first_bad.is_none() && offsets.len() as u64 == to,
        "{what}: expected offsets 0..{to} in order once, got {} records, first wrong at index {first_bad:?} (got {:?})",
        offsets.len(),
        first_bad.and_then(|i| offsets.get(i..(i + 5).min(offsets.len()))),
    );
    for d in got {
        assert!(&*d.topic == topic && d.source == source, "{what}: {d:?}");
        assert_eq!(d.value, value(d.offset.0, pad), "{what}");
    }
}

fn node_id_of(d: &DaemonProc) -> NodeId {
    let text = std::fs::read_to_string(d.data_dir.join("node-id")).expect("node-id file");
    NodeId(u64::from_str_radix(text.trim(), 16).expect("hex node id"))
}

fn stats_of(d: &DaemonProc) -> serde_json::Value {
    let json = d.client().stats_json().expect("stats");
    serde_json::from_str(&json).expect("stats json")
}

fn stat(d: &DaemonProc, room: &str, name: &str) -> u64 {
    stats_of(d)[room][name].as_u64().unwrap_or(0)
}

/// Waits until `cond` holds, or fails with `what` after `timeout`.
fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Host `i`'s netconf, with `extra` group lines for that host only.
fn netconf(lan: &Lan, i: usize, extra: &str) -> String {
    lan_netconf(lan, i, Kind::Multicast, &format!("{FAST}{extra}"))
}

/// The kernel's UDP `RcvbufErrors` counter (datagrams dropped because a
/// socket's receive buffer was full) in host `i`'s namespace.
fn udp_rcvbuf_errors(lan: &Lan, i: usize) -> u64 {
    let out = lan.exec(i, &["cat", "/proc/net/snmp"]).expect("read snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp:\n{text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .expect("RcvbufErrors in /proc/net/snmp")
}

#[test]
fn a_burst_that_overruns_a_small_receive_buffer_is_repaired_and_delivered_once() {
    let Some(lan) = Lan::new_or_skip(2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The smallest receive buffer netconf allows, on the receiver only.
    let mut daemons = vec![
        DaemonProc::start(Some(&lan), 1, "h1", &netconf(&lan, 1, ""), dir.path()),
        DaemonProc::start(
            Some(&lan),
            2,
            "h2",
            &netconf(&lan, 2, "recv-buffer = \"64KiB\"\n"),
            dir.path(),
        ),
    ];
    let mut sub = subscribe_all(&daemons[1]);
    let source = node_id_of(&daemons[0]);
    let before = udp_rcvbuf_errors(&lan, 2);
    let n = 20_000u64;
    let pad = 200;
    let mut p = daemons[0].client();
    // The receiver is paused while the burst arrives, so the kernel must
    // drop whatever exceeds its buffer however fast this machine is (a
    // quiet machine with GRO otherwise keeps up with a veth burst).
    let h2 = i32::try_from(daemons[1].pid().expect("h2 pid")).expect("pid");
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(h2, libc::SIGSTOP) };
    publish_range(&mut p, "burst", 0, n, pad);
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: as above.
    unsafe { libc::kill(h2, libc::SIGCONT) };
    let got = collect(&mut sub, n as usize, Duration::from_secs(20));
    let dropped = udp_rcvbuf_errors(&lan, 2) - before;
    assert!(
        dropped > 0,
        "the receive buffer never overflowed, so this test proves nothing"
    );
    assert_exactly(&got, "burst", source, n, pad, "h2 subscriber");
    assert!(
        collect(&mut sub, 1, Duration::from_millis(300)).is_empty(),
        "a record was delivered twice"
    );
    let naks = stat(&daemons[1], "proto", "naks_sent");
    eprintln!("rcvbuf_errors={dropped} naks_sent={naks}");
    assert!(naks > 0, "losses were not repaired by NAK");
    daemons.clear();
}

/// A tmpfs mounted for one test, unmounted when dropped (also on panic).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Writes `name` until the file system is full; returns the bytes written.
    fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join(name)).expect("create filler");
        let chunk = vec![0u8; 4096];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filler: {e}");
                    break;
                }
            }
        }
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Something still holds it open: detach it now, it goes when freed.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

#[test]
fn a_receiver_whose_disk_fills_reports_it_serves_what_it_has_and_catches_up_when_space_returns() {
    let Some(lan) = Lan::new_or_skip(2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Dropped in reverse order: daemons, then the mount, then the dir.
    let disk = Tmpfs::mount(&dir.path().join("h2-data"), "4m");
    let mut daemons = vec![
        DaemonProc::start(Some(&lan), 1, "h1", &netconf(&lan, 1, ""), dir.path()),
        DaemonProc::start(Some(&lan), 2, "h2", &netconf(&lan, 2, ""), dir.path()),
    ];
    assert_eq!(daemons[1].data_dir, disk.path);
    let source = node_id_of(&daemons[0]);
    let (topic, pad) = ("disk.full", 1_000);
    let (before_full, total) = (500u64, 3_000u64);
    let mut sub = subscribe_all(&daemons[1]);
    let mut p = daemons[0].client();
    publish_range(&mut p, topic, 0, before_full, pad);
    let mut got = collect(&mut sub, before_full as usize, Duration::from_secs(10));
    assert_eq!(got.len() as u64, before_full, "h2 before the disk filled");

    let filler = disk.fill("filler");
    publish_range(&mut p, topic, before_full, total, pad);
    wait_for(Duration::from_secs(10), "h2 to refuse records", || {
        stat(&daemons[1], "daemon", "records_unstored") > 0
    });

    // It says so: counters in `castlog stats --json`, and a log line.
    let out = Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("--socket")
        .arg(&daemons[1].socket)
        .args(["stats", "--json"])
        .output()
        .expect("run castlog stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    assert!(
        stats["daemon"]["logs_stalled"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(stats["daemon"]["log_errors"].as_u64() >= Some(1), "{stats}");
    assert!(
        stats["log"]["appends_failed"].as_u64() >= Some(1),
        "{stats}"
    );
    let log = std::fs::read_to_string(&daemons[1].log).expect("h2 log");
    assert!(
        log.contains("log refused received records") && log.contains("disk full"),
        "{log}"
    );

    // It serves what it has: the live subscriber has a gapless prefix, and a
    // new one replays the same prefix from the log.
    got.extend(collect(
        &mut sub,
        total as usize,
        Duration::from_millis(500),
    ));
    let stored = got.len() as u64;
    assert!(stored < total, "every record fit, the disk never filled");
    assert_exactly(&got, topic, source, stored, pad, "h2 while full");
    let mut late = subscribe_all(&daemons[1]);
    let replayed = collect(&mut late, stored as usize, Duration::from_secs(5));
    assert_exactly(
        &replayed,
        topic,
        source,
        stored,
        pad,
        "h2 replay while full",
    );

    // Space returns while the stream goes on: it fetches what it refused,
    // takes the new records too, none twice.
    std::fs::remove_file(disk.path.join("filler")).expect("remove filler");
    let started = Instant::now();
    let (full_total, total) = (total, total + 500);
    publish_range(&mut p, topic, full_total, total, pad);
    got.extend(collect(
        &mut sub,
        (total - stored) as usize,
        Duration::from_secs(10),
    ));
    eprintln!(
        "filler_bytes={filler} stored_while_full={stored} caught_up_in={:?} unstored={} refills={}",
        started.elapsed(),
        stat(&daemons[1], "daemon", "records_unstored"),
        stat(&daemons[1], "daemon", "log_refills_started"),
    );
    assert_exactly(&got, topic, source, total, pad, "h2 after space returned");
    assert!(
        collect(&mut sub, 1, Duration::from_millis(300)).is_empty(),
        "a record was delivered twice"
    );
    let mut fresh = subscribe_all(&daemons[1]);
    let all = collect(&mut fresh, total as usize + 1, Duration::from_secs(2));
    assert_exactly(
        &all,
        topic,
        source,
        total,
        pad,
        "h2 log after space returned",
    );
    daemons.clear();
    drop(disk);
}

#[test]
fn the_only_node_serving_a_replay_killed_and_restarted_mid_replay_lets_it_resume_without_loss_or_duplicates(
) {
    serving_node_restarts_mid_replay(Duration::ZERO);
}

/// Down longer than a replay keeps asking (25 tries 200ms apart): the
/// replay gives up, and the restarted node's topic advertisement starts it
/// again from where the log ends.
#[test]
fn a_replay_whose_only_server_stays_down_past_its_retries_resumes_when_the_server_returns() {
    serving_node_restarts_mid_replay(Duration::from_secs(6));
}

/// A late joiner (h2) replays a log only h1 holds; h1 is killed with
/// SIGKILL mid-replay and started again (same data dir) after `down`.
fn serving_node_restarts_mid_replay(down: Duration) {
    let Some(lan) = Lan::new_or_skip(2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemons = vec![DaemonProc::start(
        Some(&lan),
        1,
        "h1",
        &netconf(&lan, 1, ""),
        dir.path(),
    )];
    let source = node_id_of(&daemons[0]);
    // Large enough that the replay is still running when the server dies.
    let (topic, n, pad) = ("replay.serving", 20_000u64, 1_000);
    let mut p = daemons[0].client();
    publish_range(&mut p, topic, 0, n, pad);
    drop(p);
    daemons.push(DaemonProc::start(
        Some(&lan),
        2,
        "h2",
        &netconf(&lan, 2, ""),
        dir.path(),
    ));
    let mut sub = subscribe_all(&daemons[1]);
    wait_for(Duration::from_secs(10), "h2's replay to start", || {
        stat(&daemons[1], "daemon", "records_replayed") > 0
    });
    daemons[0].kill9();
    let at_kill = stat(&daemons[1], "daemon", "records_replayed");
    assert!(at_kill < n, "the replay ended before the kill: {at_kill}");
    std::thread::sleep(down);
    daemons[0].restart(Some(&lan));
    let started = Instant::now();
    let got = collect(&mut sub, n as usize, Duration::from_secs(15));
    eprintln!(
        "down={down:?} replayed_at_kill={at_kill} resumed_and_done_in={:?} replays_started={}",
        started.elapsed(),
        stat(&daemons[1], "daemon", "replays_started")
    );
    assert_exactly(&got, topic, source, n, pad, "h2 subscriber");
    assert!(
        collect(&mut sub, 1, Duration::from_millis(300)).is_empty(),
        "a record was delivered twice"
    );
    let mut fresh = subscribe_all(&daemons[1]);
    let all = collect(&mut fresh, n as usize + 1, Duration::from_secs(2));
    assert_exactly(&all, topic, source, n, pad, "h2 log");
    daemons.clear();
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Valid frames (right magic, lengths and CRC) from made-up nodes and
/// sessions: a DATA frame with one record at a small sequence number (so a
/// receiver would start tracking the session and its missing start), an
/// ANNOUNCE join (a new peer), or a NAK for a session of `victim` (unknown,
/// so it can only be refused). The bool says whether it goes to the group.
fn forged_frame(x: &mut u64, victim: castlog::wire::NodeId) -> (bool, Vec<u8>) {
    use castlog::wire::{
        Body, DataPayload, DataRepr, Flags, FrameRepr, NakRepr, NodeId, Offset, RecordRepr, Seq,
        SeqRange, SessionId, TopicId,
    };
    let mut next = || {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    let node = NodeId(next());
    let session = SessionId(next() as u32);
    let r = next();
    if r % 4 == 1 {
        let announce = castlog::wire::AnnounceRepr {
            kind: castlog::wire::AnnounceKind::Join,
            name: "forged",
            extensions: &[],
        };
        let frame = FrameRepr::new(node, session, Flags::default(), Body::Announce(announce));
        return (true, frame.to_vec().expect("emit announce"));
    }
    if r % 4 == 0 {
        let nak = NakRepr {
            source: victim,
            ranges: vec![SeqRange {
                start: Seq(0),
                end: Seq(1 + r % 64),
            }],
        };
        let frame = FrameRepr::new(node, session, Flags::default(), Body::Nak(nak));
        return (false, frame.to_vec().expect("emit nak"));
    }
    let value = [b'f'; 100];
    let record = RecordRepr {
        topic: TopicId(1),
        offset: Offset(r % 1000),
        timestamp_ms: 0,
        key: b"",
        value: &value,
    };
    let mut bytes = vec![0u8; record.buffer_len()];
    record.emit(&mut bytes).expect("emit record");
    let data = DataRepr {
        seq: Seq(1 + r % 100),
        payload: DataPayload::Records {
            count: 1,
            bytes: &bytes,
        },
    };
    let frame = FrameRepr::new(node, session, Flags::default(), Body::Data(data));
    (true, frame.to_vec().expect("emit data"))
}

#[test]
fn a_flood_of_valid_frames_from_unknown_sources_keeps_memory_bounded_and_delivery_going() {
    let Some(lan) = Lan::new_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let daemons: Vec<DaemonProc> = (1..=2)
        .map(|i| {
            DaemonProc::start(
                Some(&lan),
                i,
                &format!("h{i}"),
                &netconf(&lan, i, ""),
                dir.path(),
            )
        })
        .collect();
    let victim = castlog::wire::NodeId(node_id_of(&daemons[1]).0);
    let source = node_id_of(&daemons[0]);
    let mut sub = subscribe_all(&daemons[1]);
    let pid = daemons[1].pid().expect("h2 pid");
    let rss_before = rss_kib(pid);
    let target = lan.addr(2);
    let flood = Duration::from_secs(3);
    let flooder = lan
        .in_host(3, move || {
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
                let mut x: u64 = 0x2545_f491_4f6c_dd1d;
                let until = Instant::now() + flood;
                let mut sent = 0u64;
                while Instant::now() < until {
                    let (to_group, frame) = forged_frame(&mut x, victim);
                    let dest = if to_group {
                        std::net::SocketAddr::from(([239, 255, 42, 1], common::GROUP_PORT))
                    } else {
                        std::net::SocketAddr::from((target, common::LISTEN_PORT))
                    };
                    if sock.send_to(&frame, dest).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .expect("enter host 3");
    let (topic, n, pad) = ("real.stream", 5_000u64, 100);
    let mut p = daemons[0].client();
    publish_range(&mut p, topic, 0, n, pad);
    let sent = flooder.join().expect("flooder");
    let got = collect(&mut sub, n as usize, Duration::from_secs(15));
    let rss_after = rss_kib(pid);
    let stats = stats_of(&daemons[1]);
    eprintln!(
        "forged_sent={sent} rss_before_kib={rss_before} rss_after_kib={rss_after} peers_refused={} sources_up={} sessions_refused={} unknown_dropped={}",
        stats["daemon"]["peers_refused"],
        stats["proto"]["sources_up"], stats["proto"]["sessions_refused"], stats["proto"]["datagrams_unknown_dropped"]
    );
    assert_exactly(&got, topic, source, n, pad, "h2 during the flood");
    assert!(
        stats["proto"]["datagrams_unknown_dropped"].as_u64() > Some(0),
        "forged NAKs were not counted: {stats}"
    );
    assert!(
        stats["daemon"]["peers_refused"].as_u64() > Some(0),
        "forged announcements filled no table: {stats}"
    );
    let refused = stats["proto"]["sessions_refused"].as_u64().unwrap_or(0);
    let tracked = stats["proto"]["sources_up"].as_u64().unwrap_or(0);
    assert!(refused > 0, "the session limit never refused one: {stats}");
    assert!(
        tracked <= castlog::proto::MAX_RECEIVERS as u64 + 1,
        "more sessions than the limit were taken: {tracked}"
    );
    // Before the limit, 15k made-up sessions took 60 MiB (and the loop
    // so long over their timers that `stats` timed out).
    assert!(
        rss_after.saturating_sub(rss_before) < 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(daemons);
}
