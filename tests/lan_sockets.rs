//! The daemon's socket setup across real hosts: raw datagrams sent from one
//! namespace host's listen socket reach the group sockets of the others over
//! multicast, broadcast and unicast, and nftables loss really drops some.
//! Sends use UDP GSO and group sockets GRO where the kernel has them, as the
//! daemon does, so the runs of equal datagrams cross the bridge coalesced
//! and must come out as the original datagrams.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use castlog::daemon::sockets::{
    self, BufferSizes, GroupBind, MulticastSend, Opened, OutDatagram, RecvMeta,
};
use common::lan::Lan;

fn listen_on(lan: &Lan, i: usize) -> Opened {
    let ip = lan.addr(i);
    lan.in_host(i, || {
        sockets::open_listen(
            SocketAddr::V4(SocketAddrV4::new(ip, 0)),
            BufferSizes::default(),
            Some(MulticastSend {
                interface: ip,
                ttl: 1,
                loopback: true,
            }),
        )
    })
    .expect("enter host namespace")
    .expect("open listen socket")
}

fn group_on(lan: &Lan, i: usize, bind: GroupBind) -> Opened {
    let opened = lan
        .in_host(i, || sockets::open_group(bind, BufferSizes::default()))
        .expect("enter host namespace")
        .expect("open group socket");
    sockets::enable_gro(&opened.socket);
    opened
}

/// Sends `count` numbered datagrams, a batch at a time, paced so that the
/// receivers' buffers are never the reason anything is missing; with `gso`
/// (when the kernel has it) each batch leaves as one GSO message.
fn send_numbered(from: &Opened, dest: SocketAddr, count: u32) {
    send_numbered_with(from, dest, count, sockets::detect_offload().gso)
}

fn send_numbered_with(from: &Opened, dest: SocketAddr, count: u32, gso: bool) {
    let payloads: Vec<[u8; 4]> = (0..count).map(|k| k.to_be_bytes()).collect();
    for chunk in payloads.chunks(16) {
        let out: Vec<OutDatagram> = chunk
            .iter()
            .map(|p| OutDatagram { dest, bytes: p })
            .collect();
        let mut sent = 0;
        let mut gso = gso;
        while sent < out.len() {
            match sockets::send_batch(&from.socket, &out[sent..], &mut gso) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("send_batch to {dest} failed: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Receives until `want` datagrams arrived or nothing came for `quiet`.
fn receive(on: &Opened, want: usize, quiet: Duration) -> Vec<(u32, SocketAddr)> {
    let mut got = Vec::new();
    let mut bufs = vec![vec![0u8; 65_536]; 32];
    let mut metas = [RecvMeta::default(); 32];
    let mut last = Instant::now();
    while got.len() < want && last.elapsed() < quiet {
        match sockets::recv_batch(&on.socket, &mut bufs, &mut metas) {
            Ok(n) => {
                last = Instant::now();
                for k in 0..n {
                    for b in metas[k].datagrams(&bufs[k]) {
                        let id = u32::from_be_bytes(b.try_into().expect("4-byte payload"));
                        got.push((id, metas[k].from));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("recv_batch failed: {e}"),
        }
    }
    got
}

fn assert_all_from(got: &[(u32, SocketAddr)], count: u32, source: SocketAddr) {
    let ids: Vec<u32> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (0..count).collect::<Vec<_>>());
    assert!(got.iter().all(|(_, from)| *from == source));
}

#[test]
fn multicast_from_one_host_reaches_every_other_host_with_the_listen_address_as_source() {
    let Some(lan) = Lan::new_or_skip(3) else {
        return;
    };
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 1, 1), 7400);
    let tx = listen_on(&lan, 1);
    let rx: Vec<Opened> = (2..=3)
        .map(|i| {
            group_on(
                &lan,
                i,
                GroupBind::Multicast {
                    group,
                    interface: lan.addr(i),
                },
            )
        })
        .collect();
    send_numbered(&tx, SocketAddr::V4(group), 200);
    for r in &rx {
        assert_all_from(&receive(r, 200, Duration::from_secs(2)), 200, tx.local_addr);
    }
}

#[test]
fn broadcast_from_one_host_reaches_every_other_host() {
    let Some(lan) = Lan::new_or_skip(3) else {
        return;
    };
    let address = SocketAddrV4::new(lan.broadcast(), 7401);
    let tx = listen_on(&lan, 1);
    let rx: Vec<Opened> = (2..=3)
        .map(|i| group_on(&lan, i, GroupBind::Broadcast { address }))
        .collect();
    send_numbered(&tx, SocketAddr::V4(address), 200);
    for r in &rx {
        assert_all_from(&receive(r, 200, Duration::from_secs(2)), 200, tx.local_addr);
    }
}

#[test]
fn unicast_reaches_only_the_addressed_host() {
    let Some(lan) = Lan::new_or_skip(3) else {
        return;
    };
    let tx = listen_on(&lan, 1);
    let bind = |i| GroupBind::Unicast {
        bind: SocketAddr::V4(SocketAddrV4::new(lan.addr(i), 7402)),
    };
    let r2 = group_on(&lan, 2, bind(2));
    let r3 = group_on(&lan, 3, bind(3));
    send_numbered(&tx, r2.local_addr, 200);
    assert_all_from(
        &receive(&r2, 200, Duration::from_secs(2)),
        200,
        tx.local_addr,
    );
    assert!(receive(&r3, 1, Duration::from_millis(300)).is_empty());
}

#[test]
fn nak_sent_to_the_source_address_comes_back_to_the_listen_socket() {
    let Some(lan) = Lan::new_or_skip(2) else {
        return;
    };
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 1, 2), 7403);
    let tx = listen_on(&lan, 1);
    let rx_listen = listen_on(&lan, 2);
    let rx_group = group_on(
        &lan,
        2,
        GroupBind::Multicast {
            group,
            interface: lan.addr(2),
        },
    );
    send_numbered(&tx, SocketAddr::V4(group), 1);
    let got = receive(&rx_group, 1, Duration::from_secs(2));
    assert_eq!(got.len(), 1);
    // The receiver answers the datagram's source, as a NAK would.
    send_numbered(&rx_listen, got[0].1, 1);
    let back = receive(&tx, 1, Duration::from_secs(2));
    assert_eq!(back, vec![(0, rx_listen.local_addr)]);
}

#[test]
fn loss_injection_drops_some_but_not_all_datagrams() {
    let Some(lan) = Lan::new_or_skip(2) else {
        return;
    };
    let tx = listen_on(&lan, 1);
    let rx = group_on(
        &lan,
        2,
        GroupBind::Unicast {
            bind: SocketAddr::V4(SocketAddrV4::new(lan.addr(2), 7404)),
        },
    );
    lan.set_loss(2, 30).expect("set loss");
    // One datagram per packet: nftables drops a GSO message whole (it
    // crosses the bridge as one packet), which would make the loss bursty.
    send_numbered_with(&tx, rx.local_addr, 1000, false);
    let got = receive(&rx, 1000, Duration::from_millis(500)).len();
    // 30% of 1000: the chance of falling outside 550..=850 is negligible.
    assert!(
        (550..=850).contains(&got),
        "received {got} of 1000 at 30% loss"
    );
    assert_eq!(lan.dropped(2), 1000 - got as u64);
    lan.set_loss(2, 0).expect("clear loss");
    send_numbered(&tx, rx.local_addr, 100);
    assert_eq!(receive(&rx, 100, Duration::from_secs(2)).len(), 100);
}

#[test]
fn dropping_a_lan_removes_its_namespaces_and_bridge() {
    let Some(lan) = Lan::new_or_skip(2) else {
        return;
    };
    let names = [lan.netns(1), lan.netns(2)];
    drop(lan);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.split_whitespace().any(|w| w == n), "{n} still exists");
    }
}

#[test]
fn a_panicking_test_still_removes_its_lan() {
    if Lan::new_or_skip(1).is_none() {
        return;
    }
    let name = std::panic::catch_unwind(|| {
        let lan = Lan::new(1).expect("lan");
        let name = lan.netns(1);
        panic!("{name}");
    })
    .expect_err("closure panics");
    let name = name
        .downcast_ref::<String>()
        .expect("panic message")
        .clone();
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
}

#[test]
fn spawn_runs_the_command_inside_the_host_keeping_its_stdio() {
    let Some(lan) = Lan::new_or_skip(2) else {
        return;
    };
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .stdout(std::process::Stdio::piped());
    let out = lan
        .spawn(2, cmd)
        .expect("spawn")
        .wait_with_output()
        .expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}/24", lan.addr(2))), "{text}");
}
