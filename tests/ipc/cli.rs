//! The `castlog` CLI against the fake daemon.

use super::*;

use super::fake_daemon::FakeDaemon;

fn castlog(daemon_socket: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_castlog"));
    cmd.arg("--socket").arg(daemon_socket);
    cmd.env_remove("CASTLOG_SOCKET");
    cmd
}

fn run_with_stdin(mut cmd: std::process::Command, input: &[u8]) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn cli_pub_sends_one_record_per_stdin_line() {
    let daemon = FakeDaemon::start();
    let mut sub = daemon.client();
    sub.subscribe("cli.a", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "cli.a", "--key", "k1"]);
    let out = run_with_stdin(cmd, b"one\n\ntwo\nthree-no-newline");
    assert!(out.status.success(), "{out:?}");
    let mut values = Vec::new();
    while let Some(Message::Record(r)) = sub.next_message(Duration::from_secs(5)).unwrap() {
        assert_eq!(&r.key[..], b"k1");
        values.push(String::from_utf8(r.value.to_vec()).unwrap());
        if values.len() == 4 {
            break;
        }
    }
    assert_eq!(values, ["one", "", "two", "three-no-newline"]);
}

#[test]
fn cli_pub_sync_prints_offsets_and_fails_on_a_refused_record() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "cli.b", "--mode", "sync", "x", "y"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n");

    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "nope", "v"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no topic rule matches"), "{err}");

    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "slow", "--mode", "sync", "v"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("h2, h3"));

    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "cli.b", "--mode", "oneway", "z"]);
    assert!(cmd.output().unwrap().status.success());
}

#[test]
fn cli_sub_prints_json_lines_and_stops_after_count() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["sub", "cli.*", "--json", "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut publisher = daemon.client();
    // The subscriber starts at "latest": publish until it has seen two.
    let mut i = 0u8;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "castlog sub did not stop"
        );
        publisher
            .publish_oneway("cli.c", Some(b"k"), &[b'v', i])
            .unwrap();
        publisher.publish_oneway("cli.c", None, &[0xff, i]).unwrap();
        publisher.ping().unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let text_record = &lines[0];
    assert_eq!(text_record["topic"], "cli.c");
    assert_eq!(text_record["source"], "00000000000000ab");
    assert_eq!(text_record["source_name"], "h1");
    assert_eq!(text_record["key"], "k");
    assert_eq!(text_record["timestamp"], 1_700_000_000_000u64);
    assert!(text_record["value"].as_str().unwrap().starts_with('v'));
    let binary_record = &lines[1];
    assert_eq!(binary_record["key"], serde_json::Value::Null);
    assert!(binary_record.get("value").is_none());
    assert!(binary_record["value_base64"]
        .as_str()
        .unwrap()
        .starts_with("/w"));
    assert_eq!(
        binary_record["offset"].as_u64().unwrap(),
        text_record["offset"].as_u64().unwrap() + 1
    );
}

#[test]
fn cli_sub_reports_gaps_and_stops_when_idle() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["sub", "gappy", "--json", "--idle-timeout", "0.2"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let gap: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(gap["gap"]["from"], 0);
    assert_eq!(gap["gap"]["to"], 5);
    assert_eq!(gap["gap"]["reason"], "retention");
    assert!(String::from_utf8_lossy(&out.stderr).contains("gap topic=gappy"));
}

#[test]
fn cli_stats_prints_counters_and_exit_code_says_no_daemon() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.arg("stats");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("connections_accepted "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = castlog(&dir.path().join("absent.sock"));
    cmd.args(["pub", "t", "v"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("castlogd is not running"));
}

#[test]
fn cli_check_accepts_every_shipped_netconf_and_refuses_a_bad_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("netconf");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("check")
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nbogus = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("check")
        .arg(&files[0])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:1: node.bogus"), "{err}");
}

#[test]
fn cli_pub_sends_each_line_before_waiting_for_the_next() {
    use std::process::Stdio;
    let daemon = FakeDaemon::start();
    let mut sub = daemon.client();
    sub.subscribe("cli.slow", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "cli.slow", "--mode", "oneway"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in ["first", "second"] {
        // stdin stays open: the record must arrive without more input.
        writeln!(stdin, "{line}").unwrap();
        match sub.next_message(Duration::from_secs(5)).unwrap() {
            Some(Message::Record(r)) => assert_eq!(&r.value[..], line.as_bytes()),
            other => panic!("expected {line}, got {other:?}"),
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
