//! Real daemons on real (namespace) hosts: three `castlogd` processes on a
//! bridge, one group of each kind, records published on host 1 with the
//! client library; hosts 2 and 3 must deliver all of them, in offset order,
//! once, also with 10% random loss at every receiver, after a late join, and
//! across a kill -9 of the publisher.

mod common;

use std::time::{Duration, Instant};

use castlog::client::{Client, ConsumeMode, Delivery, NodeId, Offset, StartFrom};
use common::lan::Lan;
use common::{collect, lan_netconf, DaemonProc, Kind};

const RECORDS: u64 = 20_000;

/// Timings that make loss recovery quick on a LAN in a test.
const FAST: &str =
    "heartbeat-interval-min = \"1ms\"\nnak-delay-max = \"2ms\"\nnak-retry-interval = \"5ms\"\n";

struct Setup {
    // Daemons before the LAN: they must stop before their hosts vanish.
    daemons: Vec<DaemonProc>,
    lan: Lan,
    _dir: tempfile::TempDir,
}

fn start(kind: Kind, hosts: usize, running: usize) -> Option<Setup> {
    let lan = Lan::new_or_skip(hosts)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemons = (1..=running)
        .map(|i| {
            let nc = lan_netconf(&lan, i, kind, FAST);
            DaemonProc::start(Some(&lan), i, &format!("h{i}"), &nc, dir.path())
        })
        .collect();
    Some(Setup {
        daemons,
        lan,
        _dir: dir,
    })
}

fn subscribe_all(d: &DaemonProc) -> Client {
    let mut c = d.client();
    c.subscribe("*", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .expect("subscribe");
    c
}

/// Publishes values `v{from}..v{to}` on `topic`, one-way and batched, then
/// waits until the daemon has taken them all (ping is a barrier).
fn publish_range(c: &mut Client, topic: &str, from: u64, to: u64) {
    for k in from..to {
        c.publish_oneway(topic, None, format!("v{k}").as_bytes())
            .expect("publish");
    }
    c.flush().expect("flush");
    c.ping().expect("ping");
}

/// Every record of `source` on `topic` from offset `from` to `to`, in order,
/// once, with the value its offset was published with.
fn assert_complete(got: &[Delivery], topic: &str, source: NodeId, from: u64, to: u64, host: &str) {
    let mine: Vec<&Delivery> = got
        .iter()
        .filter(|d| &*d.topic == topic && d.source == source)
        .collect();
    let offsets: Vec<u64> = mine.iter().map(|d| d.offset.0).collect();
    let first_bad = offsets.iter().zip(from..).position(|(o, want)| *o != want);
    assert!(
        first_bad.is_none() && offsets.len() as u64 == to - from,
        "{host}: expected offsets {from}..{to} in order, got {} records, first wrong at index {first_bad:?} (got {:?})",
        offsets.len(),
        first_bad.and_then(|i| offsets.get(i..i + 5)),
    );
    for d in mine {
        assert_eq!(d.value, format!("v{}", d.offset.0).as_bytes(), "{host}");
    }
}

fn node_id_of(d: &DaemonProc) -> NodeId {
    let text = std::fs::read_to_string(d.data_dir.join("node-id")).expect("node-id file");
    NodeId(u64::from_str_radix(text.trim(), 16).expect("hex node id"))
}

fn every_record_reaches_every_host(kind: Kind, loss_pct: u8) {
    let Some(s) = start(kind, 3, 3) else { return };
    if loss_pct > 0 {
        for i in 2..=3 {
            s.lan.set_loss(i, loss_pct).expect("set loss");
        }
    }
    let mut subs: Vec<Client> = s.daemons[1..].iter().map(subscribe_all).collect();
    let mut publisher = s.daemons[0].client();
    publish_range(&mut publisher, "md.prices", 0, RECORDS);
    // With GSO a run of datagrams crosses the bridge as one packet, so the
    // stream is few packets and a host may see none dropped: publish on
    // until the loss rule has hit both.
    let mut total = RECORDS;
    while loss_pct > 0 && (s.lan.dropped(2) == 0 || s.lan.dropped(3) == 0) && total < 20 * RECORDS {
        publish_range(&mut publisher, "md.prices", total, total + RECORDS / 10);
        total += RECORDS / 10;
        std::thread::sleep(Duration::from_millis(20));
    }
    let source = node_id_of(&s.daemons[0]);
    for (k, sub) in subs.iter_mut().enumerate() {
        let got = collect(sub, total as usize, Duration::from_secs(20));
        assert_complete(&got, "md.prices", source, 0, total, &format!("h{}", k + 2));
    }
    if loss_pct > 0 {
        assert!(
            s.lan.dropped(2) > 0 && s.lan.dropped(3) > 0,
            "loss rule dropped nothing"
        );
    }
}

#[test]
fn multicast_group_delivers_every_record_to_every_host_in_order() {
    every_record_reaches_every_host(Kind::Multicast, 0);
}

#[test]
fn broadcast_group_delivers_every_record_to_every_host_in_order() {
    every_record_reaches_every_host(Kind::Broadcast, 0);
}

#[test]
fn unicast_group_delivers_every_record_to_every_host_in_order() {
    every_record_reaches_every_host(Kind::Unicast, 0);
}

#[test]
fn multicast_group_recovers_from_ten_percent_loss_at_every_receiver() {
    every_record_reaches_every_host(Kind::Multicast, 10);
}

#[test]
fn broadcast_group_recovers_from_ten_percent_loss_at_every_receiver() {
    every_record_reaches_every_host(Kind::Broadcast, 10);
}

#[test]
fn unicast_group_recovers_from_ten_percent_loss_at_every_receiver() {
    every_record_reaches_every_host(Kind::Unicast, 10);
}

#[test]
fn two_publishers_into_one_topic_each_deliver_a_complete_ordered_stream() {
    let Some(s) = start(Kind::Multicast, 3, 3) else {
        return;
    };
    let mut sub = subscribe_all(&s.daemons[2]);
    let mut p1 = s.daemons[0].client();
    let mut p2 = s.daemons[1].client();
    let n = 5_000;
    let t = std::thread::scope(|scope| {
        let a = scope.spawn(|| publish_range(&mut p1, "shared", 0, n));
        let b = scope.spawn(|| publish_range(&mut p2, "shared", 0, n));
        a.join().is_ok() && b.join().is_ok()
    });
    assert!(t, "a publisher failed");
    let got = collect(&mut sub, 2 * n as usize, Duration::from_secs(20));
    for d in &s.daemons[..2] {
        assert_complete(&got, "shared", node_id_of(d), 0, n, "h3");
    }
}

#[test]
fn sync_publish_returns_consecutive_offsets_once_every_receiver_acknowledged() {
    let Some(s) = start(Kind::Multicast, 3, 3) else {
        return;
    };
    let mut subs: Vec<Client> = s.daemons[1..].iter().map(subscribe_all).collect();
    let mut p = s.daemons[0].client();
    for k in 0..200u64 {
        let offset = p
            .publish_sync(
                "orders",
                Some(b"k"),
                format!("v{k}").as_bytes(),
                Duration::from_secs(20),
            )
            .expect("sync publish");
        assert_eq!(offset, Offset(k));
    }
    let source = node_id_of(&s.daemons[0]);
    for sub in subs.iter_mut() {
        let got = collect(sub, 200, Duration::from_secs(10));
        assert_complete(&got, "orders", source, 0, 200, "receiver");
    }
}

#[test]
fn late_joining_daemon_replays_from_earliest_then_continues_live() {
    let Some(mut s) = start(Kind::Multicast, 3, 2) else {
        return;
    };
    let mut p = s.daemons[0].client();
    publish_range(&mut p, "md.late", 0, RECORDS);
    let dir = s._dir.path().to_path_buf();
    let nc = lan_netconf(&s.lan, 3, Kind::Multicast, FAST);
    s.daemons
        .push(DaemonProc::start(Some(&s.lan), 3, "h3", &nc, &dir));
    let mut sub = subscribe_all(&s.daemons[2]);
    let mut latest = s.daemons[2].client();
    latest
        .subscribe("md.*", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .expect("subscribe latest");
    // Give the late joiner a heartbeat to learn the topic, then go on live.
    std::thread::sleep(Duration::from_millis(300));
    publish_range(&mut p, "md.late", RECORDS, RECORDS + 1_000);
    let got = collect(&mut sub, RECORDS as usize + 1_000, Duration::from_secs(30));
    let source = node_id_of(&s.daemons[0]);
    assert_complete(&got, "md.late", source, 0, RECORDS + 1_000, "h3");
    // `latest` means new records only, not the history the daemon replayed.
    let got = collect(&mut latest, 1_000, Duration::from_secs(10));
    assert_complete(
        &got,
        "md.late",
        source,
        RECORDS,
        RECORDS + 1_000,
        "h3 latest",
    );
}

#[test]
fn killed_publisher_restarts_with_continuous_offsets_and_nothing_acknowledged_lost() {
    let Some(mut s) = start(Kind::Multicast, 3, 3) else {
        return;
    };
    let mut sub = subscribe_all(&s.daemons[1]);
    let mut acked = Vec::new();
    {
        let mut p = s.daemons[0].client();
        for k in 0..500u64 {
            let o = p
                .publish_sync(
                    "ledger",
                    None,
                    format!("v{k}").as_bytes(),
                    Duration::from_secs(20),
                )
                .expect("sync publish");
            acked.push(o);
        }
    }
    s.daemons[0].kill9();
    s.daemons[0].restart(Some(&s.lan));
    let mut p = s.daemons[0].client();
    for k in 500..1_000u64 {
        let o = p
            .publish_sync(
                "ledger",
                None,
                format!("v{k}").as_bytes(),
                Duration::from_secs(20),
            )
            .expect("sync publish after restart");
        acked.push(o);
    }
    let want: Vec<Offset> = (0..1_000).map(Offset).collect();
    assert_eq!(acked, want, "offsets must continue across the restart");
    let got = collect(&mut sub, 1_000, Duration::from_secs(20));
    let source = node_id_of(&s.daemons[0]);
    assert_complete(&got, "ledger", source, 0, 1_000, "h2");
}

#[test]
fn sigterm_stops_the_daemon_cleanly_with_exit_code_zero() {
    let Some(mut s) = start(Kind::Broadcast, 2, 2) else {
        return;
    };
    let status = s.daemons[1].terminate().expect("exit status");
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&s.daemons[1].log).unwrap_or_default();
    assert!(log.contains("castlogd stopping"), "{log}");
}

#[test]
fn garbage_datagrams_are_counted_and_delivery_continues() {
    let Some(s) = start(Kind::Multicast, 3, 3) else {
        return;
    };
    let mut sub = subscribe_all(&s.daemons[1]);
    let target = s.lan.addr(2);
    // Host 3 blasts random bytes at host 2's listen and group ports.
    let blaster = s
        .lan
        .in_host(3, move || {
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                let until = Instant::now() + Duration::from_secs(2);
                let mut sent = 0u64;
                while Instant::now() < until {
                    let mut buf = [0u8; 200];
                    for b in buf.iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *b = x as u8;
                    }
                    let len = 1 + (x % 200) as usize;
                    let _ = sock.send_to(&buf[..len], (target, common::LISTEN_PORT));
                    let _ = sock.send_to(&buf[..len], ("239.255.42.1", common::GROUP_PORT));
                    sent += 2;
                }
                sent
            })
        })
        .expect("enter host 3");
    let mut p = s.daemons[0].client();
    publish_range(&mut p, "md.noise", 0, 5_000);
    let sent = blaster.join().expect("blaster");
    let got = collect(&mut sub, 5_000, Duration::from_secs(20));
    assert_complete(&got, "md.noise", node_id_of(&s.daemons[0]), 0, 5_000, "h2");
    let stats: serde_json::Value =
        serde_json::from_str(&s.daemons[1].client().stats_json().expect("stats")).expect("json");
    let malformed = stats["proto"]["datagrams_malformed"].as_u64().unwrap_or(0);
    assert!(
        malformed > 0,
        "sent {sent} garbage datagrams, none counted: {stats}"
    );
}

#[test]
fn an_eight_mib_record_arrives_intact() {
    let Some(s) = start(Kind::Multicast, 3, 3) else {
        return;
    };
    let mut subs: Vec<Client> = s.daemons[1..].iter().map(subscribe_all).collect();
    let value: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut p = s.daemons[0].client();
    let offset = p
        .publish_sync("blobs", Some(b"big"), &value, Duration::from_secs(20))
        .expect("sync publish of 8 MiB");
    assert_eq!(offset, Offset(0));
    for sub in subs.iter_mut() {
        let got = collect(sub, 1, Duration::from_secs(20));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key.as_ref(), b"big");
        assert!(got[0].value == value, "8 MiB value differs");
    }
}

#[test]
fn castlogd_exits_with_code_two_and_names_the_bad_netconf_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[node]\nlisten = \"127.0.0.1:0\"\n[group.g]\nkind = \"multicast\"\naddress = \"239.255.9.9:7400\"\nttl = 0\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n",
    )
    .expect("write netconf");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_castlogd"))
        .arg("--netconf")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run castlogd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:6") && stderr.contains("group.g.ttl"),
        "{stderr}"
    );
}

#[test]
fn publishing_faster_than_the_flow_window_holds_records_back_and_loses_none() {
    let Some(lan) = Lan::new_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let tight = format!("{FAST}flow-window = \"64KiB\"\n");
    let daemons: Vec<DaemonProc> = (1..=3)
        .map(|i| {
            let nc = lan_netconf(&lan, i, Kind::Multicast, &tight);
            DaemonProc::start(Some(&lan), i, &format!("h{i}"), &nc, dir.path())
        })
        .collect();
    lan.set_loss(3, 20).expect("set loss");
    let mut subs: Vec<Client> = daemons[1..].iter().map(subscribe_all).collect();
    let mut p = daemons[0].client();
    let n = 4_000u64;
    let pad = "x".repeat(1_000);
    for k in 0..n {
        p.publish_oneway("bulk", None, format!("v{k}{pad}").as_bytes())
            .expect("publish");
    }
    p.flush().expect("flush");
    p.ping().expect("ping");
    let source = node_id_of(&daemons[0]);
    for (k, sub) in subs.iter_mut().enumerate() {
        let got = collect(sub, n as usize, Duration::from_secs(30));
        let offsets: Vec<u64> = got
            .iter()
            .filter(|d| d.source == source)
            .map(|d| d.offset.0)
            .collect();
        assert_eq!(offsets, (0..n).collect::<Vec<_>>(), "h{}", k + 2);
        assert!(got
            .iter()
            .all(|d| d.value.len() == pad.len() + format!("v{}", d.offset.0).len()));
    }
    let stats: serde_json::Value =
        serde_json::from_str(&p.stats_json().expect("stats")).expect("json");
    assert!(
        stats["daemon"]["publishes_backpressured"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the window never shut, so this test proves nothing: {stats}"
    );
    drop(daemons);
}

#[test]
fn an_authenticated_group_delivers_to_key_holders_only() {
    use std::os::unix::fs::PermissionsExt;
    let Some(lan) = Lan::new_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = |name: &str, byte: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, byte.repeat(32)).expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    };
    let good = key("good.key", "ab");
    let wrong = key("wrong.key", "cd");
    let daemons: Vec<DaemonProc> = (1..=3)
        .map(|i| {
            let k = if i == 3 { &wrong } else { &good };
            let extra = format!("{FAST}key-file = \"{}\"\n", k.display());
            let nc = lan_netconf(&lan, i, Kind::Multicast, &extra);
            DaemonProc::start(Some(&lan), i, &format!("h{i}"), &nc, dir.path())
        })
        .collect();
    let mut member = subscribe_all(&daemons[1]);
    let mut outsider = subscribe_all(&daemons[2]);
    let mut p = daemons[0].client();
    publish_range(&mut p, "secret", 0, 2_000);
    let got = collect(&mut member, 2_000, Duration::from_secs(20));
    assert_complete(&got, "secret", node_id_of(&daemons[0]), 0, 2_000, "h2");
    assert!(collect(&mut outsider, 1, Duration::from_millis(500)).is_empty());
    let stats: serde_json::Value =
        serde_json::from_str(&daemons[2].client().stats_json().expect("stats")).expect("json");
    assert!(
        stats["daemon"]["datagrams_unauthenticated"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{stats}"
    );
    drop(daemons);
}

fn daemon_stat(d: &DaemonProc, room: &str, name: &str) -> u64 {
    let Ok(json) = d.client().stats_json() else {
        return 0;
    };
    let stats: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    stats[room][name].as_u64().unwrap_or(0)
}

#[test]
fn a_late_joiner_restarted_during_its_replay_resumes_without_loss_or_duplicates() {
    let Some(mut s) = start(Kind::Multicast, 3, 2) else {
        return;
    };
    let mut p = s.daemons[0].client();
    publish_range(&mut p, "md.resume", 0, RECORDS);
    let dir = s._dir.path().to_path_buf();
    let nc = lan_netconf(&s.lan, 3, Kind::Multicast, FAST);
    s.daemons
        .push(DaemonProc::start(Some(&s.lan), 3, "h3", &nc, &dir));
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon_stat(&s.daemons[2], "daemon", "records_replayed") == 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.daemons[2].kill9();
    s.daemons[2].restart(Some(&s.lan));
    let mut sub = subscribe_all(&s.daemons[2]);
    let got = collect(&mut sub, RECORDS as usize, Duration::from_secs(30));
    assert_complete(
        &got,
        "md.resume",
        node_id_of(&s.daemons[0]),
        0,
        RECORDS,
        "h3",
    );
}

#[test]
fn a_replay_whose_source_dies_is_finished_by_another_node_that_holds_the_log() {
    let Some(mut s) = start(Kind::Multicast, 3, 2) else {
        return;
    };
    let source = node_id_of(&s.daemons[0]);
    // Large records, so that the replay takes long enough to be cut.
    let n = 20_000u64;
    let pad = vec![b'p'; 4_000];
    {
        let mut p = s.daemons[0].client();
        for _ in 0..n {
            p.publish_oneway("md.orphan", None, &pad).expect("publish");
        }
        p.flush().expect("flush");
        p.ping().expect("ping");
    }
    // h2 holds the whole log before the source goes away.
    let mut h2 = subscribe_all(&s.daemons[1]);
    let got = collect(&mut h2, n as usize, Duration::from_secs(30));
    assert_eq!(got.len() as u64, n, "h2 did not get the whole stream");
    let dir = s._dir.path().to_path_buf();
    let nc = lan_netconf(&s.lan, 3, Kind::Multicast, FAST);
    s.daemons
        .push(DaemonProc::start(Some(&s.lan), 3, "h3", &nc, &dir));
    let mut sub = subscribe_all(&s.daemons[2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon_stat(&s.daemons[2], "daemon", "records_replayed") == 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    s.daemons[0].kill9();
    let got = collect(&mut sub, n as usize, Duration::from_secs(40));
    let offsets: Vec<u64> = got
        .iter()
        .filter(|d| d.source == source)
        .map(|d| d.offset.0)
        .collect();
    assert_eq!(offsets, (0..n).collect::<Vec<_>>(), "h3");
}
