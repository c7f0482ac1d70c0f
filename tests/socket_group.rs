//! netconf `socket-group` on a real daemon: the IPC socket is handed to the
//! named group with mode 0660 (0600 without the key), and a group the host
//! does not know stops the daemon with an error at the key's line.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::lan::Lan;
use common::{lan_netconf, DaemonProc, Kind};

/// A netconf for host 1 of `lan` with `node_extra` lines in `[node]`.
fn netconf_with(lan: &Lan, node_extra: &str) -> String {
    lan_netconf(lan, 1, Kind::Multicast, "").replacen(
        "[node]\n",
        &format!("[node]\n{node_extra}"),
        1,
    )
}

fn socket_mode_and_gid(d: &DaemonProc) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(&d.socket).expect("socket metadata");
    (meta.permissions().mode() & 0o7777, meta.gid())
}

#[test]
fn a_socket_group_gives_the_socket_to_that_group_with_mode_0660() {
    let Some(lan) = Lan::new_or_skip(1) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // `daemon` (gid 1) is in every Debian base system.
    let by_name = DaemonProc::start(
        Some(&lan),
        1,
        "named",
        &netconf_with(&lan, "socket-group = \"daemon\"\n"),
        dir.path(),
    );
    assert_eq!(socket_mode_and_gid(&by_name), (0o660, 1));
    by_name.client().ping().expect("the owner still connects");
    drop(by_name);

    let by_gid = DaemonProc::start(
        Some(&lan),
        1,
        "numeric",
        &netconf_with(&lan, "socket-group = 4242\n"),
        dir.path(),
    );
    assert_eq!(socket_mode_and_gid(&by_gid), (0o660, 4242));
    drop(by_gid);

    let plain = DaemonProc::start(Some(&lan), 1, "plain", &netconf_with(&lan, ""), dir.path());
    let (mode, _) = socket_mode_and_gid(&plain);
    assert_eq!(mode, 0o600);
}

#[test]
fn a_socket_group_the_host_does_not_know_stops_the_daemon_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[node]\nname = \"h1\"\nsocket-group = \"castlog-no-such-group\"\n\n[group.g]\nkind = \"multicast\"\naddress = \"239.255.42.9:7409\"\ninterface = \"127.0.0.1\"\n\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n",
    )
    .expect("write netconf");
    let socket = dir.path().join("bad.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_castlogd"))
        .arg("--netconf")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("run castlogd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:16: node.socket-group: no group \"castlog-no-such-group\" on this host",
            path.display()
        )),
        "{stderr}"
    );
    assert!(!socket.exists(), "no socket is left behind");
}
