//! The web console in a real browser: a castlogd with `[node] console` set,
//! records published with the castlog CLI, the page loaded in headless
//! Chromium (Debian's `chromium`), its figures compared with
//! `castlog stats --json`, and a screenshot saved under the test's temporary
//! directory (and copied to docs/console.png for the README when
//! CASTLOG_UPDATE_SCREENSHOT=1).
//!
//! Without chromium the test is skipped with a message, except under CI
//! (CI=true), where it fails: .ci/run installs it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The daemon, killed when the test ends however it ends.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// A free TCP port on loopback for the console (netconf wants a fixed one).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// netconf/default.toml with its own multicast group (tests running in
/// parallel, and other daemons on this host, must not hear each other) and
/// the console on.
fn netconf(console: Option<SocketAddr>) -> String {
    let default =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("netconf/default.toml"))
            .expect("read netconf/default.toml");
    let pid = std::process::id();
    let group = format!(
        "239.255.78.{}:{}",
        2 + pid % 250,
        30_000 + (pid % 20_000) as u16
    );
    assert!(default.contains("address = \"239.255.77.1:7400\""));
    assert!(default.contains("listen = \"127.0.0.1:0\"\n"));
    let console = console.map_or(String::new(), |c| format!("console = \"{c}\"\n"));
    default
        .replace(
            "address = \"239.255.77.1:7400\"",
            &format!("address = \"{group}\""),
        )
        .replace(
            "listen = \"127.0.0.1:0\"\n",
            &format!("listen = \"127.0.0.1:0\"\n{console}"),
        )
}

/// A castlogd with its netconf, data, socket and log in `dir`.
fn start_daemon(dir: &Path, name: &str, console: Option<SocketAddr>) -> Daemon {
    std::fs::create_dir_all(dir).expect("create daemon dir");
    let conf = dir.join("netconf.toml");
    std::fs::write(&conf, netconf(console)).expect("write netconf");
    let log = dir.join("castlogd.log");
    let out = std::fs::File::create(&log).expect("create daemon log");
    let err = out.try_clone().expect("clone log handle");
    let child = Command::new(env!("CARGO_BIN_EXE_castlogd"))
        .arg("--netconf")
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(dir.join("castlogd.sock"))
        .arg("--name")
        .arg(name)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn castlogd");
    let daemon = Daemon { child, log };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(dir.join("castlogd.sock").exists()
        && console.is_none_or(|c| TcpStream::connect(c).is_ok()))
    {
        assert!(
            Instant::now() < deadline,
            "castlogd did not come up; its log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

fn castlog(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("--socket")
        .arg(dir.join("castlogd.sock"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn castlog");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write castlog stdin");
    }
    let out = child.wait_with_output().expect("castlog output");
    assert!(
        out.status.success(),
        "castlog {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stats(dir: &Path) -> serde_json::Value {
    let out = castlog(dir, &["stats", "--json"], None);
    serde_json::from_slice(&out.stdout).expect("castlog stats --json is JSON")
}

/// Runs headless chromium with a fresh profile and a time limit.
fn run_chromium(browser: &Path, dir: &Path, profile: &str, args: &[String]) -> Output {
    let child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Containers often have a tiny /dev/shm.
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", dir.join(profile).display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(out) => out.expect("chromium output"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child we spawned, which has
            // not been reaped (the waiting thread is still blocked on it).
            unsafe { libc::kill(id as i32, libc::SIGKILL) };
            panic!("chromium did not finish within 90s");
        }
    }
}

/// The text of the element with `id` in a dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\">"))? + id.len() + 6;
    let rest = dom.get(start..)?;
    rest.get(..rest.find('<')?)
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect console");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    out
}

#[test]
fn console_page_shows_the_same_figures_as_castlog_stats_and_is_screenshotted() {
    let Some(browser) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium is not installed (CI=true): .ci/run installs Debian's chromium");
        }
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("castlog-console-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path();
    let console: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("console address");
    let daemon = start_daemon(dir, "console-test", Some(console));
    // A second node on the same group, so peers and received records show.
    let peer_dir = dir.join("peer");
    let _peer = start_daemon(&peer_dir, "console-peer", None);

    // A consumer group reading orders, for the consumer groups panel.
    let mut auditor = Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("--socket")
        .arg(dir.join("castlogd.sock"))
        .args([
            "sub",
            "orders",
            "--group",
            "auditors",
            "--idle-timeout",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn castlog sub");

    // Publish in a few rounds a second apart, so the chart has a shape.
    let mut published = 0u64;
    for round in 1..=4u64 {
        let lines: String = (0..250 * round).map(|k| format!("tick {k}\n")).collect();
        castlog(dir, &["pub", "md.prices.AAPL"], Some(&lines));
        castlog(
            dir,
            &["pub", "orders", "--mode", "sync", "buy 10", "sell 5"],
            None,
        );
        let lines: String = (0..100 * round).map(|k| format!("quote {k}\n")).collect();
        castlog(&peer_dir, &["pub", "md.prices.MSFT"], Some(&lines));
        published += 250 * round + 2;
        std::thread::sleep(Duration::from_millis(1100));
    }

    // The page shows the snapshot of the last second: wait for it to agree.
    let url = format!("http://{console}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (dom, from_cli) = loop {
        let from_cli = stats(dir);
        let out = run_chromium(
            &browser,
            dir,
            "profile-dom",
            &["--dump-dom".into(), url.clone()],
        );
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        let on_page = element_text(&dom, "c-daemon-records_published");
        let received = element_text(&dom, "c-proto-records_delivered");
        if on_page == Some(&from_cli["daemon"]["records_published"].to_string())
            && received == Some(&from_cli["proto"]["records_delivered"].to_string())
            && from_cli["proto"]["records_delivered"] == 1_000
            && dom.contains("console-peer")
            && dom.contains("auditors")
        {
            break (dom, from_cli);
        }
        assert!(
            Instant::now() < deadline,
            "page shows records_published={on_page:?} records_delivered={received:?}, castlog stats says {} and {} (of 1000 from the peer); dom:\n{dom}\ndaemon log:\n{}",
            from_cli["daemon"]["records_published"],
            from_cli["proto"]["records_delivered"],
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = auditor.wait();
    assert_eq!(from_cli["daemon"]["records_published"], published);
    assert_eq!(
        element_text(&dom, "c-log-records_appended"),
        Some(from_cli["log"]["records_appended"].to_string().as_str())
    );
    assert_eq!(element_text(&dom, "node-name"), Some("console-test"));
    assert!(
        dom.contains("md.prices.AAPL") && dom.contains("orders"),
        "{dom}"
    );
    assert!(dom.contains("Loss and repair") && dom.contains("NAKs sent / received"));

    // The terminal forms: castlog stats as a table, castlog top redrawn.
    let table = String::from_utf8_lossy(&castlog(dir, &["stats"], None).stdout).into_owned();
    assert!(table.starts_with("NODE  name console-test"), "{table}");
    assert!(
        table.contains("\nTOPICS\n") && table.contains("md.prices.AAPL"),
        "{table}"
    );
    let top = castlog(dir, &["top", "--count", "2", "--interval", "0.2"], None);
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    assert_eq!(top.matches("\x1b[H\x1b[2J").count(), 2, "{top}");
    assert!(top.contains("records_published"), "{top}");

    // The other endpoints: JSON as castlog stats --json, Prometheus text.
    let api = http_get(console, "/api/stats");
    let body = api.split("\r\n\r\n").nth(1).unwrap_or("");
    let api: serde_json::Value = serde_json::from_str(body).expect("/api/stats is JSON");
    assert_eq!(api["daemon"]["records_published"], published);
    let metrics = http_get(console, "/metrics");
    assert!(
        metrics.contains(&format!("\ncastlog_daemon_records_published {published}\n")),
        "{metrics}"
    );

    // Traffic while the screenshot is taken, so rates and chart show it.
    let traffic = {
        let dir = dir.to_path_buf();
        let peer_dir = peer_dir.clone();
        std::thread::spawn(move || {
            for round in 0..16u64 {
                let lines: String = (0..100 + 40 * round)
                    .map(|k| format!("tick {k}\n"))
                    .collect();
                castlog(&dir, &["pub", "md.prices.AAPL"], Some(&lines));
                castlog(&dir, &["pub", "orders", "buy 1"], None);
                let lines: String = (0..60 + 20 * round)
                    .map(|k| format!("quote {k}\n"))
                    .collect();
                castlog(&peer_dir, &["pub", "md.prices.MSFT"], Some(&lines));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let png = dir.join("console.png");
    run_chromium(
        &browser,
        dir,
        "profile-shot",
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,900".into(),
            // Let the page's timers fetch a few snapshots before the shot.
            "--virtual-time-budget=2500".into(),
            url,
        ],
    );
    traffic.join().expect("publisher thread");
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "screenshot is {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
    if std::env::var("CASTLOG_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
        std::fs::copy(&png, &docs).expect("copy the screenshot to docs/console.png");
        eprintln!("updated {}", docs.display());
    }
    if std::env::var("CASTLOG_KEEP_TMP").is_ok_and(|v| v == "1") {
        eprintln!("kept {}", tmp.keep().display());
    }
}
