//! The room boundaries of style.md 3.2, checked mechanically so they do not
//! rot: `wire` and `proto` do no I/O, and only `daemon/clock.rs` and
//! `client/` read the monotonic clock.

use std::fs;
use std::path::{Path, PathBuf};

/// What a sans-IO room must never name: sockets, the event loop, files,
/// clocks and threads all belong to `daemon` (or `client`).
const FORBIDDEN_IN_SANS_IO: &[&str] = &[
    "mio::",
    "socket2::",
    "std::net::UdpSocket",
    "std::fs",
    "Instant::now",
    "SystemTime::now",
    "thread::",
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every `file:line: text` in the files under `dirs` that contains `needle`.
fn hits(dirs: &[&str], needle: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in dirs {
        for file in rust_files(&root.join(dir)) {
            let text = fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                if line.contains(needle) {
                    let rel = file.strip_prefix(root).unwrap_or(&file);
                    out.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn wire_and_proto_do_no_io_and_read_no_clock() {
    let found: Vec<String> = FORBIDDEN_IN_SANS_IO
        .iter()
        .flat_map(|needle| hits(&["src/wire", "src/proto"], needle))
        .collect();
    assert!(
        found.is_empty(),
        "wire and proto are sans-IO (style.md 3.2): move these to daemon, or pass `now`/bytes in:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_daemon_clock_and_client_read_the_monotonic_clock() {
    let found: Vec<String> = hits(&["src", "bin"], "Instant::now")
        .into_iter()
        // The application side may read the clock: the client library and
        // the CLI's client programs (bench, demo).
        .filter(|hit| {
            !(hit.starts_with("src/daemon/clock.rs:")
                || hit.starts_with("src/client/")
                || hit.starts_with("bin/bench.rs:")
                || hit.starts_with("bin/demo.rs:"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "Instant::now belongs in src/daemon/clock.rs (or src/client); call clock::now() instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_scans_the_rooms_it_guards() {
    // Guards against the grep silently passing because a path moved.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["src/wire", "src/proto", "src/daemon"] {
        assert!(
            !rust_files(&root.join(dir)).is_empty(),
            "{dir} has no .rs files: update tests/arch.rs"
        );
    }
    assert!(!hits(&["src/daemon"], "Instant::now").is_empty());
}
