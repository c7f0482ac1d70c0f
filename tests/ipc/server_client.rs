//! `Client` against `IpcServer`: batching, typed errors, delivery, backlog,
//! broken connections.

use super::*;

use super::fake_daemon::FakeDaemon;

#[test]
fn async_publishes_in_batches_complete_in_order() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    let n = 20_000u64;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            c.publish_async("md.a", None, format!("v{i}").as_bytes())
                .unwrap(),
        );
    }
    let mut offsets = Vec::new();
    while c.pending_completions() > 0 {
        for done in c.wait_completions(Duration::from_secs(5)).unwrap() {
            assert_eq!(done.request_id, ids[offsets.len()]);
            offsets.push(done.result.unwrap().0);
        }
    }
    assert_eq!(offsets, (0..n).collect::<Vec<_>>());
    drop(c);
    let report = daemon.stop();
    // Batching: consecutive publishes share PUBLISH frames, and the fake
    // daemon saw every record of them.
    let records: usize = report.publish_frames.iter().map(|f| f.count).sum();
    assert_eq!(records as u64, n);
    assert_eq!(report.stats.publishes_received, n);
    assert_eq!(
        report.stats.frames_received,
        report.publish_frames.len() as u64
    );
    assert!(
        report.stats.frames_received < n / 100,
        "{}",
        report.stats.frames_received
    );
    assert_eq!(report.stats.frames_malformed, 0);
    assert!(report.stats.bytes_received > n * 14);
}

#[test]
fn sync_and_oneway_publishes_reach_the_daemon() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    for _ in 0..100 {
        c.publish_oneway("md.b", Some(b"k"), b"v").unwrap();
    }
    c.ping().unwrap();
    let offset = c
        .publish_sync("md.b", None, b"v", Duration::from_secs(5))
        .unwrap();
    assert_eq!(offset, Offset(100));
}

#[test]
fn refusals_arrive_as_typed_errors() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    match c.publish_sync("nope", None, b"v", Duration::from_secs(5)) {
        Err(client::Error::UnknownTopicRule { message }) => assert!(message.contains("nope")),
        other => panic!("expected UnknownTopicRule, got {other:?}"),
    }
    match c.publish_sync("slow", None, b"v", Duration::from_secs(5)) {
        Err(client::Error::Timeout { waiting_for }) => assert_eq!(waiting_for, ["h2", "h3"]),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let id = c.publish_async("nope", None, b"v").unwrap();
    let done = c.wait_completions(Duration::from_secs(5)).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].request_id, id);
    assert!(matches!(
        done[0].result,
        Err(client::Error::UnknownTopicRule { .. })
    ));
    let too_big = vec![0u8; MAX_VALUE_LEN + 1];
    assert!(matches!(
        c.publish_async("md", None, &too_big),
        Err(client::Error::RecordTooLarge { .. })
    ));
    assert!(matches!(
        c.subscribe("bad[", StartFrom::Latest, None, ConsumeMode::Broadcast),
        Err(client::Error::Rejected { .. })
    ));
}

#[test]
fn subscribers_get_records_in_order_and_gap_notices() {
    let daemon = FakeDaemon::start();
    let mut sub = daemon.client();
    let id = sub
        .subscribe(
            "md.*",
            StartFrom::Earliest,
            Some("g"),
            ConsumeMode::Clustering,
        )
        .unwrap();
    let gappy = sub
        .subscribe("gappy", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut publisher = daemon.client();
    let n = 5_000u64;
    for i in 0..n {
        publisher
            .publish_oneway("md.c", Some(b"key"), format!("{i}").as_bytes())
            .unwrap();
    }
    publisher.publish_oneway("other", None, b"x").unwrap();
    publisher.ping().unwrap();

    let mut got = Vec::new();
    let mut gaps = Vec::new();
    while (got.len() as u64) < n {
        match sub.next_message(Duration::from_secs(5)).unwrap() {
            Some(Message::Record(r)) => {
                assert_eq!(r.subscription, id);
                assert_eq!(&*r.topic, "md.c");
                assert_eq!(r.source, NodeId(0xab));
                assert_eq!(r.source_name.as_deref(), Some("h1"));
                assert_eq!(&r.key[..], b"key");
                assert_eq!(r.value, format!("{}", r.offset.0).as_bytes());
                got.push(r.offset.0);
            }
            Some(Message::Gap(g)) => gaps.push(g),
            None => panic!("no record after {} of {n}", got.len()),
        }
    }
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].subscription, gappy);
    assert_eq!((gaps[0].from, gaps[0].to), (Offset(0), Offset(5)));
    assert_eq!(sub.next_message(Duration::from_millis(50)).unwrap(), None);

    sub.commit("g", "md.c", NodeId(0xab), Offset(n)).unwrap();
    sub.ping().unwrap();
    let stats = sub.stats_json().unwrap();
    assert!(stats.contains("connections_accepted"), "{stats}");
    drop(sub);
    drop(publisher);
    std::thread::sleep(Duration::from_millis(50));
    let report = daemon.stop();
    assert_eq!(
        report.commits,
        vec![Commit {
            group: "g".into(),
            topic: "md.c".into(),
            source: NodeId(0xab),
            offset: Offset(n),
        }]
    );
    assert_eq!(report.disconnects, 2);
}

#[test]
fn a_large_record_crosses_intact() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    c.subscribe("big", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .unwrap();
    let value: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let offset = c
        .publish_sync("big", Some(b"k"), &value, Duration::from_secs(10))
        .unwrap();
    match c.next_message(Duration::from_secs(10)).unwrap() {
        Some(Message::Record(r)) => {
            assert_eq!(r.offset, offset);
            assert!(r.value == value[..], "value differs");
        }
        other => panic!("expected the record, got {other:?}"),
    }
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let daemon = FakeDaemon::start();
    let mut good = daemon.client();
    for garbage in [
        hex("ff ff ff ff 01"),
        hex("00 00 00 01 7f"),
        hex("00 00 00 00"),
    ] {
        let mut raw = UnixStream::connect(&daemon.path).unwrap();
        raw.write_all(&garbage).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        // The daemon closes the connection: EOF (or a reset), no answer.
        match raw.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    // A frame cut short by a client that goes away is a plain disconnect.
    let mut raw = UnixStream::connect(&daemon.path).unwrap();
    raw.write_all(&hex("00 00 00 09 06 00 00")).unwrap();
    drop(raw);
    good.ping().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let report = daemon.stop();
    assert_eq!(report.stats.frames_malformed, 3);
    assert_eq!(report.disconnects, 4);
}

#[test]
fn connect_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.sock");
    match Client::connect(&path) {
        Err(e @ client::Error::DaemonNotRunning { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("none.sock") && text.contains("castlogd"),
                "{text}"
            );
        }
        other => panic!("expected DaemonNotRunning, got {other:?}"),
    }
}

#[test]
fn bind_replaces_a_stale_socket_but_not_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // A stale socket file: bound, then its listener dropped.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let poll = mio::Poll::new().unwrap();
    let server = IpcServer::bind(&path, poll.registry(), mio::Token(1)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let err = IpcServer::bind(&path, poll.registry(), mio::Token(50)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(path.exists(), "a refused bind leaves the live socket alone");
    drop(server);
    assert!(!path.exists(), "drop removes the socket file");
    // A regular file at the path is never removed.
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(IpcServer::bind(&path, poll.registry(), mio::Token(1)).is_err());
    assert!(path.exists());
}

#[test]
fn a_slow_subscriber_builds_a_backlog_that_drains_when_it_reads() {
    let daemon = FakeDaemon::start();
    let mut sub = daemon.client();
    sub.subscribe("slow.*", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut publisher = daemon.client();
    let value = vec![7u8; 64 * 1024];
    let n = 200u64; // 12.5 MiB: far more than the socket buffers hold
    for _ in 0..n {
        publisher.publish_oneway("slow.a", None, &value).unwrap();
    }
    publisher.ping().unwrap();
    for expected in 0..n {
        match sub.next_message(Duration::from_secs(5)).unwrap() {
            Some(Message::Record(r)) => {
                assert_eq!(r.offset, Offset(expected));
                assert_eq!(r.value.len(), value.len());
            }
            other => panic!("expected record {expected}, got {other:?}"),
        }
    }
    sub.ping().unwrap();
    let report = daemon.stop();
    assert!(
        report.max_backlog > 1024 * 1024,
        "backlog {}",
        report.max_backlog
    );
    assert_eq!(report.final_backlog, 0);
}

#[test]
fn a_subscriber_that_stops_reading_is_reported_disconnected_on_write_failure() {
    let daemon = FakeDaemon::start();
    let mut raw = UnixStream::connect(&daemon.path).unwrap();
    let mut subscribe = Vec::new();
    Request::Subscribe(Subscribe {
        sub_id: 1,
        pattern: "gone".into(),
        from: StartFrom::Latest,
        group: None,
        mode: ConsumeMode::Broadcast,
    })
    .emit_to_vec(&mut subscribe)
    .unwrap();
    raw.write_all(&subscribe).unwrap();
    let mut reply = [0u8; 9];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(reply, hex("00 00 00 05 85 00 00 00 01")[..]);
    // Our write side stays open, so the daemon sees no EOF: only its next
    // write fails.
    raw.shutdown(std::net::Shutdown::Read).unwrap();
    let mut publisher = daemon.client();
    publisher.publish_oneway("gone", None, b"x").unwrap();
    publisher.ping().unwrap();
    publisher.publish_oneway("gone", None, b"y").unwrap();
    publisher.ping().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let report = daemon.stop();
    assert_eq!(report.disconnects, 1, "{report:?}");
    drop(raw);
}

#[test]
fn a_sync_publish_without_answer_times_out_on_the_client() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    let started = std::time::Instant::now();
    match c.publish_sync("silent", None, b"v", Duration::from_millis(100)) {
        Err(client::Error::Timeout { waiting_for }) => assert!(waiting_for.is_empty()),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // The connection is still usable afterwards.
    assert_eq!(
        c.publish_sync("md.t", None, b"v", Duration::from_secs(5))
            .unwrap(),
        Offset(0)
    );
}

#[test]
fn a_daemon_that_goes_away_is_an_error_not_a_hang() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    c.ping().unwrap();
    let _ = daemon.stop();
    c.set_request_timeout(Duration::from_secs(10));
    let started = std::time::Instant::now();
    assert!(matches!(c.ping(), Err(client::Error::Disconnected)));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        c.publish_async("md", None, b"v"),
        Err(client::Error::Disconnected)
    ));
}
