//! Daemons sharing one host, no namespaces needed (runs unprivileged): the
//! loopback multicast setup of the embedded default, and unicast between
//! daemons on different ports of 127.0.0.1. Each test picks its own group
//! address and ports so tests running in parallel never hear each other.

mod common;

use std::time::{Duration, Instant};

use castlog::client::{ConsumeMode, Message, Offset, StartFrom};
use common::DaemonProc;

/// A port block unique to this process and call.
fn ports() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 2_000) as u16 * 10;
    base + NEXT.fetch_add(3, Ordering::Relaxed)
}

fn run_pair(netconf_a: &str, netconf_b: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = DaemonProc::start(None, 0, "a", netconf_a, dir.path());
    let b = DaemonProc::start(None, 0, "b", netconf_b, dir.path());
    let mut sub = b.client();
    sub.subscribe("t.*", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .expect("subscribe");
    let mut p = a.client();
    for k in 0..2_000u64 {
        p.publish_oneway("t.x", None, format!("v{k}").as_bytes())
            .expect("publish");
    }
    p.flush().expect("flush");
    let last = p
        .publish_sync("t.x", None, b"v2000", Duration::from_secs(5))
        .expect("sync publish");
    assert_eq!(last, Offset(2_000));
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while next <= 2_000 && Instant::now() < deadline {
        match sub.next_message(Duration::from_millis(200)).expect("next") {
            Some(Message::Record(d)) => {
                assert_eq!(d.offset, Offset(next));
                assert_eq!(d.value, format!("v{next}").as_bytes());
                next += 1;
            }
            Some(Message::Gap(g)) => panic!("unexpected gap {g:?}"),
            None => {}
        }
    }
    assert_eq!(next, 2_001, "b delivered {next} of 2001 records");
}

#[test]
fn two_daemons_on_one_host_talk_over_loopback_multicast() {
    let port = ports();
    let nc = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\n[group.g]\nkind = \"multicast\"\naddress = \"239.255.77.{}:{port}\"\ninterface = \"127.0.0.1\"\nttl = 1\nloopback = true\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n",
        2 + (port % 250)
    );
    run_pair(&nc, &nc);
}

#[test]
fn two_daemons_on_one_host_talk_over_unicast_on_different_ports() {
    let base = ports();
    let (pa, pb) = (base + 1, base + 2);
    let nc = |me: u16| {
        format!(
            "[node]\nlisten = \"127.0.0.1:0\"\n[group.g]\nkind = \"unicast\"\nport = {me}\npeers = [\"127.0.0.1:{pa}\", \"127.0.0.1:{pb}\"]\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n"
        )
    };
    run_pair(&nc(pa), &nc(pb));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_subscriber_that_never_reads_neither_grows_the_daemon_nor_slows_others() {
    let port = ports();
    let nc = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\n[group.g]\nkind = \"multicast\"\naddress = \"239.255.78.{}:{port}\"\ninterface = \"127.0.0.1\"\nttl = 1\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n",
        2 + (port % 250)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = DaemonProc::start(None, 0, "solo", &nc, dir.path());
    let mut stuck = d.client();
    stuck
        .subscribe("*", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .expect("subscribe");
    let mut reader = d.client();
    reader
        .subscribe("*", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .expect("subscribe");
    let value = vec![b'x'; 4096];
    let n = 80_000u64; // 320 MiB through a subscriber that never reads
    let publisher = std::thread::spawn({
        let mut p = d.client();
        move || {
            for _ in 0..n {
                p.publish_oneway("bulk", None, &value).expect("publish");
            }
            p.flush().expect("flush");
            p.ping().expect("ping");
        }
    });
    let mut got = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < n && Instant::now() < deadline {
        if let Some(Message::Record(r)) = reader
            .next_message(Duration::from_millis(200))
            .expect("next")
        {
            assert_eq!(r.offset, Offset(got));
            got += 1;
        }
    }
    publisher.join().expect("publisher");
    assert_eq!(got, n, "the reading subscriber was held back");
    // What the daemon may hold: the retransmit window (64 MiB by default),
    // records waiting for the flow window (64 MiB), socket and IPC buffers.
    // Far less than the 320 MiB the stuck subscriber was offered: its
    // backlog stayed in the log.
    let rss = rss_kib(d.pid().expect("pid"));
    assert!(
        rss < 192 * 1024,
        "daemon RSS {rss} KiB after a stuck subscriber"
    );
    drop(stuck);
}
