//! Back pressure on publishers: while the daemon pauses reading publishing
//! connections, their requests stay in the socket; other connections are
//! read as usual; resuming hands over what waited, in order.

use super::*;

/// Polls the server for a while and returns the requests it decoded.
fn pump(poll: &mut mio::Poll, server: &mut IpcServer) -> Vec<(ConnId, Request)> {
    let mut events = mio::Events::with_capacity(64);
    let mut out = Vec::new();
    for _ in 0..20 {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for event in events.iter() {
            server.handle_event(poll.registry(), event, &mut out);
        }
    }
    out
}

fn publish_frame(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    castlog::wire::ipc::PublishRef {
        request_id: 0,
        mode: PublishMode::OneWay,
        timeout_ms: 0,
        timestamp_ms: 0,
        topic: "md.t",
        key: b"",
        value,
    }
    .emit_to_vec(&mut out)
    .unwrap();
    out
}

fn values(requests: &[(ConnId, Request)]) -> Vec<Vec<u8>> {
    requests
        .iter()
        .flat_map(|(_, r)| match r {
            Request::Publish(b) => b.entries().map(|e| e.value.to_vec()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_paused_publisher_waits_in_its_socket_while_others_are_read_and_resumes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.sock");
    let mut poll = mio::Poll::new().unwrap();
    let mut server = IpcServer::bind(&path, poll.registry(), mio::Token(100)).unwrap();
    let mut publisher = UnixStream::connect(&path).unwrap();
    let mut other = UnixStream::connect(&path).unwrap();

    publisher.write_all(&publish_frame(b"one")).unwrap();
    assert_eq!(values(&pump(&mut poll, &mut server)), [b"one".to_vec()]);

    let mut none = Vec::new();
    server.set_paused(poll.registry(), true, &mut none);
    assert!(server.is_paused() && none.is_empty());
    publisher.write_all(&publish_frame(b"two")).unwrap();
    publisher.write_all(&publish_frame(b"three")).unwrap();
    let mut ping = Vec::new();
    Request::Ping { nonce: 9 }.emit_to_vec(&mut ping).unwrap();
    other.write_all(&ping).unwrap();
    let while_paused = pump(&mut poll, &mut server);
    assert!(values(&while_paused).is_empty(), "{while_paused:?}");
    assert!(
        while_paused
            .iter()
            .any(|(_, r)| matches!(r, Request::Ping { nonce: 9 })),
        "a connection that never published is read while publishers wait"
    );

    let mut resumed = Vec::new();
    server.set_paused(poll.registry(), false, &mut resumed);
    resumed.extend(pump(&mut poll, &mut server));
    assert_eq!(values(&resumed), [b"two".to_vec(), b"three".to_vec()]);
    assert_eq!(server.stats().publisher_pauses, 1);
}
