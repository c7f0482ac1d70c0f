//! PUBLISH batches through real `castlogd` processes on this host (no
//! namespaces, runs unprivileged): the client packs consecutive publishes
//! into one frame, and the daemon still answers every record of it on its
//! own, with its own offset, also when the flow window shuts in the middle
//! of a frame; a refused frame fails each of its records.

mod common;

use std::time::Duration;

use castlog::client::{Client, ConsumeMode, Error, StartFrom};
use common::{collect, DaemonProc};

/// A port block unique to this process and call.
fn ports() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 30_000 + (std::process::id() % 2_000) as u16 * 10;
    base + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One group on loopback multicast that no other test uses; `group_extra`
/// goes into the group table, `topic_extra` into the one topic rule.
fn netconf(port: u16, group_extra: &str, topic_extra: &str) -> String {
    format!(
        "[node]\nlisten = \"127.0.0.1:0\"\n[group.g]\nkind = \"multicast\"\n\
         address = \"239.255.93.{}:{port}\"\ninterface = \"127.0.0.1\"\nttl = 1\n\
         loopback = true\n{group_extra}\n[[topic]]\npattern = \"t.*\"\ngroup = \"g\"\n{topic_extra}",
        2 + (port % 250)
    )
}

fn daemon_stat(c: &mut Client, name: &str) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&c.stats_json().expect("stats")).expect("json");
    stats["daemon"][name].as_u64().unwrap_or(0)
}

/// Waits for every async publish of `c`; returns (request id, result).
fn completions(c: &mut Client) -> Vec<(u64, Result<u64, Error>)> {
    let mut done = Vec::new();
    while c.pending_completions() > 0 {
        let got = c
            .wait_completions(Duration::from_secs(10))
            .expect("completions");
        assert!(!got.is_empty(), "no completion within 10 s");
        done.extend(
            got.into_iter()
                .map(|x| (x.request_id, x.result.map(|o| o.0))),
        );
    }
    done
}

#[test]
fn async_batches_answer_every_record_with_its_offset_while_the_window_shuts_and_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nc = netconf(ports(), "flow-window = \"64KiB\"\n", "");
    let a = DaemonProc::start(None, 0, "a", &nc, dir.path());
    let b = DaemonProc::start(None, 0, "b", &nc, dir.path());
    let mut sub = b.client();
    sub.subscribe("t.*", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .expect("subscribe");
    let mut p = a.client();
    let n = 20_000u64;
    let pad = "x".repeat(300);
    let ids: Vec<u64> = (0..n)
        .map(|k| {
            p.publish_async("t.x", None, format!("v{k}{pad}").as_bytes())
                .expect("publish")
        })
        .collect();
    // A sync publish after the batches: it waits behind the held records.
    let last = p
        .publish_sync("t.x", None, b"last", Duration::from_secs(20))
        .expect("sync publish");
    assert_eq!(last.0, n);
    let done = completions(&mut p);
    let expected: Vec<(u64, Result<u64, Error>)> =
        ids.iter().map(|&id| (id, Ok(id - ids[0]))).collect();
    assert_eq!(done.len(), expected.len());
    for (got, want) in done.iter().zip(&expected) {
        assert_eq!((got.0, got.1.as_ref().ok()), (want.0, want.1.as_ref().ok()));
    }
    let got = collect(&mut sub, n as usize + 1, Duration::from_secs(20));
    let offsets: Vec<u64> = got.iter().map(|d| d.offset.0).collect();
    assert_eq!(offsets, (0..=n).collect::<Vec<_>>());
    assert!(got[..n as usize]
        .iter()
        .all(|d| d.value == format!("v{}{pad}", d.offset.0).as_bytes()));
    assert!(
        daemon_stat(&mut p, "publishes_backpressured") > 0,
        "the window never shut, so this test proves nothing"
    );
}

#[test]
fn a_refused_batch_fails_each_of_its_records_and_one_way_records_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nc = netconf(ports(), "", "publishers = [\"someone-else\"]\n");
    let a = DaemonProc::start(None, 0, "a", &nc, dir.path());
    let mut p = a.client();
    let denied: Vec<u64> = (0..50)
        .map(|_| p.publish_async("t.x", None, b"v").expect("publish"))
        .collect();
    for _ in 0..30 {
        p.publish_oneway("t.x", None, b"v").expect("publish");
    }
    let unknown: Vec<u64> = (0..20)
        .map(|_| p.publish_async("u.x", None, b"v").expect("publish"))
        .collect();
    p.ping().expect("ping");
    let done = completions(&mut p);
    let ids: Vec<u64> = done.iter().map(|d| d.0).collect();
    assert_eq!(ids, [denied.clone(), unknown.clone()].concat());
    for (id, result) in &done {
        if denied.contains(id) {
            assert!(
                matches!(result, Err(Error::Rejected { .. })),
                "{id}: {result:?}"
            );
        } else {
            assert!(
                matches!(result, Err(Error::UnknownTopicRule { .. })),
                "{id}: {result:?}"
            );
        }
    }
    assert_eq!(daemon_stat(&mut p, "publishes_failed"), 100);
    assert_eq!(daemon_stat(&mut p, "records_published"), 0);
}
