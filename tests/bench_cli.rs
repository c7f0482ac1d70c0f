//! `castlog bench`, the tool every figure in BENCHMARKS.md comes from, on
//! one host: the castlog roles through two daemons on loopback multicast
//! (publisher into several subscribers; ping/pong), and the raw roles over
//! loopback UDP. Each report must say what happened: every record, in
//! order, once, for each subscriber.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::DaemonProc;

fn ports() -> u16 {
    30_000 + (std::process::id() % 3_000) as u16 * 4
}

fn bench(socket: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_castlog"));
    if let Some(s) = socket {
        c.arg("--socket").arg(s);
    }
    c.arg("bench").args(args).arg("--json");
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    c
}

fn report(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("bench ran");
    assert!(out.status.success(), "bench failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

#[test]
fn publisher_into_three_subscribers_and_ping_pong_through_the_daemons() {
    let port = ports();
    let nc = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\n[group.g]\nkind = \"multicast\"\naddress = \"239.255.78.{}:{port}\"\ninterface = \"127.0.0.1\"\nttl = 1\nloopback = true\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n",
        2 + (port % 250)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let a = DaemonProc::start(None, 0, "a", &nc, dir.path());
    let b = DaemonProc::start(None, 0, "b", &nc, dir.path());

    let sub = bench(
        Some(&b.socket),
        &[
            "--role",
            "subscriber",
            "--subscribers",
            "3",
            "--count",
            "20000",
            "--size",
            "64",
            "--idle-timeout",
            "10",
        ],
    )
    .spawn()
    .expect("spawn subscriber");
    std::thread::sleep(Duration::from_millis(500));
    let publ = bench(
        Some(&a.socket),
        &["--role", "publisher", "--count", "20000", "--size", "64"],
    )
    .spawn()
    .expect("spawn publisher");
    let p = report(publ);
    assert_eq!(p["records"], 20000);
    let s = report(sub);
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["records"], 60000, "{s}");
    assert_eq!(s["missing"], 0);
    assert_eq!(s["duplicates"], 0);
    assert!(s["records_per_sec"].as_f64().unwrap_or(0.0) > 0.0);

    let pong = bench(
        Some(&b.socket),
        &["--role", "pong", "--size", "32", "--idle-timeout", "2"],
    )
    .spawn()
    .expect("spawn pong");
    std::thread::sleep(Duration::from_millis(500));
    let ping = report(
        bench(
            Some(&a.socket),
            &["--role", "ping", "--size", "32", "--count", "200"],
        )
        .spawn()
        .expect("spawn ping"),
    );
    assert_eq!(ping["records"], 200, "{ping}");
    let p50 = ping["p50_us"].as_f64().expect("p50");
    let p99 = ping["p99_us"].as_f64().expect("p99");
    assert!(p50 > 0.0 && p50 <= p99, "{ping}");
    let _ = report(pong);

    // The same with clients that poll instead of blocking.
    let pong = bench(
        Some(&b.socket),
        &[
            "--role",
            "pong",
            "--size",
            "32",
            "--idle-timeout",
            "2",
            "--busy-poll",
        ],
    )
    .spawn()
    .expect("spawn busy-poll pong");
    std::thread::sleep(Duration::from_millis(500));
    let ping = report(
        bench(
            Some(&a.socket),
            &[
                "--role",
                "ping",
                "--size",
                "32",
                "--count",
                "200",
                "--busy-poll",
            ],
        )
        .spawn()
        .expect("spawn busy-poll ping"),
    );
    assert_eq!(ping["records"], 200, "{ping}");
    let p50 = ping["p50_us"].as_f64().expect("p50");
    assert!(
        p50 > 0.0 && p50 <= ping["p99_us"].as_f64().expect("p99"),
        "{ping}"
    );
    let _ = report(pong);
}

#[test]
fn raw_ping_pong_answers_every_ping_blocking_and_busy_polling() {
    for (k, poll) in [None, Some("--busy-poll")].into_iter().enumerate() {
        let bind = format!("127.0.0.1:{}", ports() + 2 + k as u16);
        let mut pong_args = vec![
            "--raw",
            "--role",
            "pong",
            "--bind",
            &bind,
            "--size",
            "32",
            "--idle-timeout",
            "1",
        ];
        let mut ping_args = vec![
            "--raw",
            "--role",
            "ping",
            "--peer",
            &bind,
            "--interface",
            "127.0.0.1",
            "--size",
            "32",
            "--count",
            "300",
        ];
        pong_args.extend(poll);
        ping_args.extend(poll);
        let pong = bench(None, &pong_args).spawn().expect("spawn raw pong");
        std::thread::sleep(Duration::from_millis(300));
        let ping = report(bench(None, &ping_args).spawn().expect("spawn raw ping"));
        assert_eq!(ping["records"], 300, "{ping}");
        let want = if poll.is_some() {
            "busy-poll recv"
        } else {
            "blocking recv"
        };
        assert_eq!(ping["method"], want, "{ping}");
        let pong = report(pong);
        assert!(pong["records"].as_u64().unwrap_or(0) >= 300, "{pong}");
    }
}

#[test]
fn raw_mode_moves_plain_udp_over_the_same_path() {
    let port = ports() + 1;
    let bind = format!("127.0.0.1:{port}");
    let sub = bench(
        None,
        &[
            "--raw",
            "--role",
            "subscriber",
            "--bind",
            &bind,
            "--count",
            "5000",
            "--size",
            "1024",
            "--idle-timeout",
            "2",
        ],
    )
    .spawn()
    .expect("spawn raw subscriber");
    std::thread::sleep(Duration::from_millis(300));
    let p = report(
        bench(
            None,
            &[
                "--raw",
                "--role",
                "publisher",
                "--peer",
                &bind,
                "--interface",
                "127.0.0.1",
                "--count",
                "5000",
                "--size",
                "1024",
                "--rate",
                "200000",
            ],
        )
        .spawn()
        .expect("spawn raw publisher"),
    );
    assert_eq!(p["raw"], true);
    assert_eq!(p["records"], 5000);
    let s = report(sub);
    // Plain UDP on loopback, paced: what arrived is counted, not repaired.
    let got = s["records"].as_u64().expect("records");
    assert!(got > 0 && got <= 5000, "{s}");
    // From the first datagram to the last: paced at 200k/s, 5000 take
    // about 25 ms, never a nanosecond.
    assert!(s["seconds"].as_f64().unwrap_or(0.0) > 0.001, "{s}");
    assert!(s["method"].is_string(), "{s}");
}
