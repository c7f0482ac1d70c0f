//! The README's first command: `castlog demo` runs two daemons on loopback
//! multicast and publishes, subscribes and replays.

use std::process::Command;

#[test]
fn castlog_demo_publishes_delivers_live_and_replays() {
    let out = Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("demo")
        .output()
        .expect("run castlog demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "castlog demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("demo complete: published 10, delivered live 10, replayed 5"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("  live   demo.prices offset=").count(),
        10,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("  replay demo.prices offset=").count(),
        5,
        "{stdout}"
    );
}
