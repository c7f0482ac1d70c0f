//! Record batching on the daemon side: `send_record` calls for one
//! subscription, source and topic share a RECORDS frame up to the cap; any
//! other field, any other response and any write attempt start a new one.
//! Checked on the raw byte stream (which frames) and through a `Client`
//! (every record, in order, with its fields).

use castlog::client::{Delivery, SubscriptionId};
use castlog::daemon::ipc::RECORDS_FRAME_BODY_CAP;

use super::*;

/// One frame as seen on the wire: a RECORDS frame's shared fields and
/// count, or any other response.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Records {
        sub_id: u32,
        topic: String,
        source: u64,
        source_name: Option<String>,
        count: usize,
    },
    Other(Response),
}

/// A server on its own poll with one accepted connection (id 0).
struct Bench {
    poll: mio::Poll,
    server: IpcServer,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let poll = mio::Poll::new().unwrap();
        let server = IpcServer::bind(&path, poll.registry(), mio::Token(100)).unwrap();
        Bench {
            poll,
            server,
            _dir: dir,
            path,
        }
    }

    /// Handles readiness for a short while (accepts, writes what waits).
    fn pump(&mut self) {
        let mut events = mio::Events::with_capacity(64);
        let mut out = Vec::new();
        self.poll
            .poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        for event in events.iter() {
            self.server
                .handle_event(self.poll.registry(), event, &mut out);
        }
    }

    fn accept(&mut self) {
        for _ in 0..100 {
            if self.server.connection_count() == 1 {
                return;
            }
            self.pump();
        }
        panic!("the server did not accept the connection");
    }
}

fn value(i: u64) -> Vec<u8> {
    // 41 bytes: with key "k" an entry is 64 bytes, so the cap is exact.
    format!("{i:041}").into_bytes()
}

/// Sends the scenario to connection 0 and returns the records in the order
/// sent and the frames expected on the wire.
fn send_scenario(b: &mut Bench) -> (Vec<Delivery>, Vec<Seen>) {
    let conn: ConnId = 0;
    let mut sent = Vec::new();
    let mut send = |b: &mut Bench,
                    sub_id: u32,
                    topic: &str,
                    source: u64,
                    name: Option<&str>,
                    offset: u64,
                    key: &[u8],
                    value: &[u8]| {
        b.server.send_record(
            conn,
            &DeliveryRef {
                sub_id,
                topic,
                source: NodeId(source),
                source_name: name,
                offset: Offset(offset),
                timestamp_ms: 1_000 + offset,
                key,
                value,
            },
        );
        sent.push(Delivery {
            subscription: SubscriptionId(sub_id),
            topic: topic.into(),
            source: NodeId(source),
            source_name: name.map(Into::into),
            offset: Offset(offset),
            timestamp_ms: 1_000 + offset,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        });
    };
    let records =
        |sub_id: u32, topic: &str, source: u64, name: Option<&str>, count: usize| Seen::Records {
            sub_id,
            topic: topic.into(),
            source,
            source_name: name.map(Into::into),
            count,
        };
    let mut frames = Vec::new();

    // A long run of one subscription: frames as full as the cap allows.
    // Body = kind 1 + header 20 + "md.a" 4 + "h1" 2, then 64 per entry.
    let per_frame = (RECORDS_FRAME_BODY_CAP - 27) / 64;
    let run = 2 * per_frame as u64 + 100;
    for i in 0..run {
        send(b, 1, "md.a", 0xab, Some("h1"), i, b"k", &value(i));
    }
    frames.push(records(1, "md.a", 0xab, Some("h1"), per_frame));
    frames.push(records(1, "md.a", 0xab, Some("h1"), per_frame));
    frames.push(records(1, "md.a", 0xab, Some("h1"), 100));
    // Another topic, then back: each change starts a frame.
    send(b, 1, "md.b", 0xab, Some("h1"), 0, b"k", &value(0));
    frames.push(records(1, "md.b", 0xab, Some("h1"), 1));
    send(b, 1, "md.a", 0xab, Some("h1"), run, b"", &value(run));
    send(
        b,
        1,
        "md.a",
        0xab,
        Some("h1"),
        run + 1,
        b"k",
        &value(run + 1),
    );
    frames.push(records(1, "md.a", 0xab, Some("h1"), 2));
    // Another subscription, source name, source.
    send(b, 2, "md.a", 0xab, Some("h1"), 7, b"k", &value(7));
    frames.push(records(2, "md.a", 0xab, Some("h1"), 1));
    send(b, 2, "md.a", 0xab, None, 8, b"k", &value(8));
    frames.push(records(2, "md.a", 0xab, None, 1));
    send(b, 2, "md.a", 0xcd, None, 9, b"k", &value(9));
    frames.push(records(2, "md.a", 0xcd, None, 1));
    // Another response closes the frame.
    b.server.send(conn, &Response::Pong { nonce: 5 });
    frames.push(Seen::Other(Response::Pong { nonce: 5 }));
    send(b, 2, "md.a", 0xcd, None, 10, b"k", &value(10));
    send(b, 2, "md.a", 0xcd, None, 11, b"k", &value(11));
    frames.push(records(2, "md.a", 0xcd, None, 2));
    // A write attempt closes it too.
    b.server.flush(b.poll.registry());
    send(b, 2, "md.a", 0xcd, None, 12, b"k", &value(12));
    send(b, 2, "md.a", 0xcd, None, 13, b"k", &value(13));
    frames.push(records(2, "md.a", 0xcd, None, 2));
    b.server.send(conn, &Response::Pong { nonce: 6 });
    frames.push(Seen::Other(Response::Pong { nonce: 6 }));
    // A record above the cap gets a frame of its own, and nothing joins it.
    let big = vec![0x5au8; RECORDS_FRAME_BODY_CAP + 10];
    send(b, 2, "md.a", 0xcd, None, 14, b"", &big);
    send(b, 2, "md.a", 0xcd, None, 15, b"k", &value(15));
    frames.push(records(2, "md.a", 0xcd, None, 1));
    frames.push(records(2, "md.a", 0xcd, None, 1));
    b.server.flush(b.poll.registry());
    (sent, frames)
}

#[test]
fn a_run_of_records_shares_frames_and_any_other_field_or_response_starts_a_new_one() {
    let mut b = Bench::new();
    let mut raw = UnixStream::connect(&b.path).unwrap();
    raw.set_nonblocking(true).unwrap();
    b.accept();
    let (sent, expected) = send_scenario(&mut b);
    let stats = b.server.stats().clone();
    assert_eq!(stats.frames_sent, expected.len() as u64);
    assert_eq!(stats.records_sent, sent.len() as u64);

    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let mut records = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut read_total = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < expected.len() && std::time::Instant::now() < deadline {
        match raw.read(&mut chunk) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => {
                read_total += n as u64;
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => b.pump(),
            Err(e) => panic!("read failed: {e}"),
        }
        while let Some(frame) = take_frame(&mut buf).unwrap() {
            match Response::parse(&frame).unwrap() {
                Response::Records(batch) => {
                    seen.push(Seen::Records {
                        sub_id: batch.sub_id,
                        topic: batch.topic.to_string(),
                        source: batch.source.0,
                        source_name: batch.source_name.as_deref().map(Into::into),
                        count: batch.records.len(),
                    });
                    records.extend(batch.records);
                }
                other => seen.push(Seen::Other(other)),
            }
        }
    }
    assert_eq!(seen, expected);
    assert!(buf.is_empty());
    let offsets: Vec<u64> = records.iter().map(|r| r.offset.0).collect();
    let sent_offsets: Vec<u64> = sent.iter().map(|d| d.offset.0).collect();
    assert_eq!(offsets, sent_offsets);
    assert_eq!(b.server.stats().bytes_sent, read_total);
}

#[test]
fn a_client_gets_every_batched_record_in_order_with_its_fields() {
    let mut b = Bench::new();
    let mut client = Client::connect(&b.path).unwrap();
    b.accept();
    let (sent, _) = send_scenario(&mut b);
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < sent.len() && std::time::Instant::now() < deadline {
        // Short waits, so the server's writable events are handled between
        // them (both ends live in this thread).
        match client.next_message(Duration::from_millis(2)).unwrap() {
            Some(Message::Record(d)) => got.push(d),
            Some(other) => panic!("unexpected {other:?}"),
            None => b.pump(),
        }
    }
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "record {i}");
    }
    // The records of a run share one topic allocation.
    assert!(Arc::ptr_eq(&got[0].topic, &got[1].topic));
}

#[test]
fn random_runs_responses_and_partial_writes_arrive_intact_and_in_order() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut b = Bench::new();
    let mut raw = UnixStream::connect(&b.path).unwrap();
    raw.set_nonblocking(true).unwrap();
    b.accept();
    let topics = ["a", "b", "md.long.topic.name"];
    let names = [None, Some("h1"), Some("h2")];
    // Every record and response, in the order queued.
    let mut expected = Vec::new();
    let mut got = Vec::new();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut read_some = |b: &mut Bench, got: &mut Vec<String>, max: usize| {
        let want = 1 + max.min(chunk.len() - 1);
        match raw.read(&mut chunk[..want]) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => b.pump(),
            Err(e) => panic!("read failed: {e}"),
        }
        while let Some(frame) = take_frame(&mut buf).unwrap() {
            match Response::parse(&frame).unwrap() {
                Response::Records(batch) => {
                    for r in batch.records {
                        got.push(format!(
                            "{} {} {} {:?} {} {} {:?} {}",
                            batch.sub_id,
                            batch.topic,
                            batch.source.0,
                            batch.source_name,
                            r.offset.0,
                            r.timestamp_ms,
                            r.key,
                            r.value.len()
                        ));
                    }
                }
                other => got.push(format!("{other:?}")),
            }
        }
    };
    for i in 0..30_000u64 {
        let op = next() % 100;
        if op < 85 {
            // Mostly long runs: change a shared field now and then.
            let r = next();
            let sub_id = u32::from(r % 16 == 0);
            let topic = topics[usize::from(r % 8 == 1)];
            let topic = if r % 64 == 2 { topics[2] } else { topic };
            let source = u64::from(r % 32 == 3);
            let name = names[usize::from(r % 16 == 4) + usize::from(r % 48 == 5)];
            let key: &[u8] = if r % 3 == 0 { b"" } else { b"key" };
            let value_len = if r % 500 == 6 {
                70_000
            } else {
                (r >> 40) as usize % 200
            };
            let value = vec![7u8; value_len];
            b.server.send_record(
                0,
                &DeliveryRef {
                    sub_id,
                    topic,
                    source: NodeId(source),
                    source_name: name,
                    offset: Offset(i),
                    timestamp_ms: i * 2,
                    key,
                    value: &value,
                },
            );
            expected.push(format!(
                "{sub_id} {topic} {source} {:?} {i} {} {:?} {value_len}",
                name.map(Arc::<str>::from),
                i * 2,
                Bytes::copy_from_slice(key)
            ));
        } else if op < 90 {
            b.server.send(0, &Response::Pong { nonce: i });
            expected.push(format!("{:?}", Response::Pong { nonce: i }));
        } else if op < 97 {
            b.server.flush(b.poll.registry());
        } else {
            // A slow reader: the server often writes only part of a frame.
            let max = (next() % 5000) as usize;
            read_some(&mut b, &mut got, max);
        }
    }
    b.server.flush(b.poll.registry());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < expected.len() && std::time::Instant::now() < deadline {
        read_some(&mut b, &mut got, usize::MAX);
    }
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "item {i}");
    }
    let stats = b.server.stats();
    assert!(
        stats.frames_sent < stats.records_sent,
        "runs were batched: {stats:?}"
    );
    assert_eq!(stats.frames_unencodable, 0);
}
