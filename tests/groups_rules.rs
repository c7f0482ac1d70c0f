//! Consumer groups (`proto::groups`) as scripted dialogues between the
//! `ConsumerGroups` of two daemons, with the announcement bytes handed over
//! by hand: agreement, expiry, leave, handover from the committed offset,
//! commit sharing, member lists in parts, restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use castlog::proto::groups::*;
use castlog::wire::{AnnounceKind, AnnounceRepr, NodeId, Offset, SessionId};

const T: &str = "orders.eu";

fn cfg(partitions: u32) -> GroupsConfig {
    GroupsConfig {
        partitions: vec![(TopicFilter::parse("orders.*"), partitions)],
        ..GroupsConfig::default()
    }
}

fn spec(group: &str, member: &str) -> MemberSpec {
    MemberSpec {
        group: Arc::from(group),
        member: Arc::from(member),
        patterns: vec![TopicFilter::parse("orders.*")],
        mode: MemberMode::Clustering,
        auto_commit: false,
        start: StartPolicy::Earliest,
    }
}

/// Hands everything `from` wants to announce to `to`; returns the frames.
fn announce(from: &mut ConsumerGroups, to: &mut ConsumerGroups, now: Instant) -> usize {
    let node = from.membership().node();
    let frames = from.take_announcements(1200);
    for ext in &frames {
        let a = AnnounceRepr {
            kind: AnnounceKind::Alive,
            name: "n",
            extensions: ext,
        };
        to.handle_announce(now, node, SessionId(node.0 as u32), a.kind, a.extensions());
    }
    frames.len()
}

fn events(g: &mut ConsumerGroups) -> Vec<GroupEvent> {
    std::iter::from_fn(|| g.poll_event()).collect()
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

#[test]
fn two_daemons_compute_the_same_owner_for_every_partition() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(16));
    let mut b = ConsumerGroups::new(NodeId(2), cfg(16));
    a.join(now, spec("g", "a1")).unwrap();
    a.join(now, spec("g", "a2")).unwrap();
    b.join(now, spec("g", "b1")).unwrap();
    announce(&mut a, &mut b, now);
    announce(&mut b, &mut a, now);
    let owners = a.assignment("g", T);
    assert_eq!(owners, b.assignment("g", T));
    assert_eq!(owners.len(), 16);
    assert!(owners.iter().all(|o| o.is_some()));
    let ea = a.membership().view("g").map(|v| v.epoch);
    let eb = b.membership().view("g").map(|v| v.epoch);
    assert_eq!(ea.map(|e| e.digest), eb.map(|e| e.digest));
    // Each record is delivered by exactly one of the two daemons.
    for o in 0..200u64 {
        let k = key(o % 37);
        let ra = a.route("g", T, NodeId(9), Offset(o), Some(&k));
        let rb = b.route("g", T, NodeId(9), Offset(o), Some(&k));
        let delivered = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Route::Deliver { .. }))
            .count();
        assert_eq!(delivered, 1, "offset {o}: {ra:?} / {rb:?}");
    }
}

#[test]
fn a_daemon_that_stops_announcing_loses_its_members_after_the_expiry() {
    let t0 = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(4));
    let mut b = ConsumerGroups::new(NodeId(2), cfg(4));
    a.join(t0, spec("g", "a1")).unwrap();
    b.join(t0, spec("g", "b1")).unwrap();
    announce(&mut b, &mut a, t0);
    assert_eq!(a.membership().view("g").map(|v| v.members.len()), Some(2));
    let expiry = a.config().member_expiry;
    let deadline = a.poll_timeout().unwrap();
    assert!(deadline <= t0 + expiry);
    a.handle_timeout(t0 + expiry - Duration::from_millis(1));
    assert_eq!(a.membership().view("g").map(|v| v.members.len()), Some(2));
    a.handle_timeout(t0 + expiry);
    assert_eq!(a.membership().view("g").map(|v| v.members.len()), Some(1));
    let owners = a.assignment("g", T);
    assert!(owners
        .iter()
        .all(|o| o.as_ref().is_some_and(|m| m.node == NodeId(1))));
}

#[test]
fn a_clean_leave_removes_the_members_at_once() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(4));
    let mut b = ConsumerGroups::new(NodeId(2), cfg(4));
    a.join(now, spec("g", "a1")).unwrap();
    b.join(now, spec("g", "b1")).unwrap();
    announce(&mut b, &mut a, now);
    let before = a.membership().view("g").map(|v| v.epoch.number).unwrap();
    a.handle_announce(
        now,
        NodeId(2),
        SessionId(2),
        AnnounceKind::Leave,
        AnnounceRepr {
            kind: AnnounceKind::Leave,
            name: "",
            extensions: &[],
        }
        .extensions(),
    );
    let v = a.membership().view("g").unwrap();
    assert_eq!(v.members.len(), 1);
    assert!(v.epoch.number > before);
}

#[test]
fn a_new_owner_starts_from_the_committed_offset_and_catches_up_from_the_log() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(1));
    a.join(now, spec("g", "x")).unwrap();
    let log: Vec<Vec<u8>> = (0..10).map(key).collect();
    for (o, k) in log.iter().enumerate().take(6) {
        let r = a.route("g", T, NodeId(9), Offset(o as u64), Some(k));
        assert!(matches!(r, Route::Deliver { ref member, .. } if &**member == "x"));
    }
    // x processed 0..=3 and committed; y joins; x dies.
    assert_eq!(a.commit(now, "g", "x", T, NodeId(9), Offset(4)), Ok(1));
    a.join(now, spec("g", "y")).unwrap();
    a.leave(now, "g", "x");
    let ev = events(&mut a);
    assert!(ev.contains(&GroupEvent::Revoked {
        group: Arc::from("g"),
        member: Arc::from("x"),
        topic: Arc::from(T),
        source: NodeId(9),
        partition: 0,
        epoch: match ev.iter().find_map(|e| match e {
            GroupEvent::Revoked { epoch, .. } => Some(*epoch),
            _ => None,
        }) {
            Some(e) => e,
            None => panic!("no revoke in {ev:?}"),
        },
    }));
    assert!(ev.iter().any(|e| matches!(e,
        GroupEvent::Assigned { member, from: Offset(4), catch_up: true, .. } if &**member == "y")));
    // Live records are held while y catches up.
    assert!(matches!(
        a.route("g", T, NodeId(9), Offset(6), Some(&log[6])),
        Route::Hold { .. }
    ));
    assert_eq!(a.catch_up_from("g", T, NodeId(9)), Some(Offset(4)));
    let mut got = Vec::new();
    for (o, k) in log.iter().enumerate().take(7).skip(4) {
        if let Route::Deliver { .. } = a.catch_up("g", T, NodeId(9), Offset(o as u64), Some(k)) {
            got.push(o);
        }
    }
    assert_eq!(got, vec![4, 5, 6]);
    assert_eq!(a.catch_up_from("g", T, NodeId(9)), None);
    assert!(matches!(
        a.route("g", T, NodeId(9), Offset(7), Some(&log[7])),
        Route::Deliver { .. }
    ));
}

#[test]
fn a_commit_reaches_the_other_daemon_and_never_moves_back() {
    let t0 = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(1));
    let mut b = ConsumerGroups::new(NodeId(2), cfg(1));
    a.join(t0, spec("g", "x")).unwrap();
    announce(&mut a, &mut b, t0);
    for o in 0..5u64 {
        a.route("g", T, NodeId(9), Offset(o), Some(&key(o)));
    }
    a.commit(t0, "g", "x", T, NodeId(9), Offset(5)).unwrap();
    // The commit waits for its delay, gathering others.
    assert_eq!(announce(&mut a, &mut b, t0), 0);
    let due = a.poll_timeout().unwrap();
    assert_eq!(due, t0 + a.config().commit_announce_delay);
    a.handle_timeout(due);
    assert_eq!(announce(&mut a, &mut b, due), 1);
    assert_eq!(b.committed("g", T, NodeId(9), 0), Some(Offset(5)));
    // An older value (a reordered announcement) does not lower it.
    b.restore_commit(
        CommitKey {
            group: Arc::from("g"),
            topic: Arc::from(T),
            source: NodeId(9),
            partition: 0,
        },
        Offset(2),
    );
    assert_eq!(b.committed("g", T, NodeId(9), 0), Some(Offset(5)));
}

#[test]
fn a_member_list_larger_than_one_frame_goes_in_parts() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(4));
    let mut b = ConsumerGroups::new(NodeId(2), cfg(4));
    for i in 0..60 {
        a.join(
            now,
            spec(
                "a-rather-long-consumer-group-name",
                &format!("member-{i:04}"),
            ),
        )
        .unwrap();
    }
    let frames = a.take_announcements(1200);
    assert!(frames.len() > 1, "{} frames", frames.len());
    assert!(frames.iter().all(|f| f.len() <= 1200));
    // Without the last part nothing changes; with it, all 60 appear.
    let feed = |b: &mut ConsumerGroups, f: &Vec<u8>| {
        let a = AnnounceRepr {
            kind: AnnounceKind::Alive,
            name: "",
            extensions: f,
        };
        b.handle_announce(now, NodeId(1), SessionId(1), a.kind, a.extensions());
    };
    for f in frames.iter().skip(1) {
        feed(&mut b, f);
    }
    assert!(b
        .membership()
        .view("a-rather-long-consumer-group-name")
        .is_none());
    feed(&mut b, &frames[0]);
    let v = b.membership().view("a-rather-long-consumer-group-name");
    assert_eq!(v.map(|v| v.members.len()), Some(60));
}

#[test]
fn a_restarted_daemon_is_believed_although_its_version_starts_over() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(4));
    let mut b = ConsumerGroups::new(NodeId(2), cfg(4));
    for i in 0..3 {
        b.join(now, spec("g", &format!("b{i}"))).unwrap();
    }
    announce(&mut b, &mut a, now);
    assert_eq!(a.membership().view("g").map(|v| v.members.len()), Some(3));
    // Restart: new session, version 1, one member.
    let mut b2 = ConsumerGroups::new(NodeId(2), cfg(4));
    b2.join(now, spec("g", "fresh")).unwrap();
    for ext in b2.take_announcements(1200) {
        let r = AnnounceRepr {
            kind: AnnounceKind::Alive,
            name: "",
            extensions: &ext,
        };
        a.handle_announce(now, NodeId(2), SessionId(77), r.kind, r.extensions());
    }
    let v = a.membership().view("g").unwrap();
    assert_eq!(v.members.len(), 1);
    assert!(v.members.keys().all(|k| &*k.member == "fresh"));
}

#[test]
fn only_members_of_a_group_can_commit_for_it() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(1));
    a.join(now, spec("g", "x")).unwrap();
    assert!(matches!(
        a.commit(now, "g", "y", T, NodeId(9), Offset(1)),
        Err(GroupError::UnknownMember { .. })
    ));
    assert_eq!(a.join(now, spec("", "x")), Err(GroupError::EmptyGroup));
}

#[test]
fn auto_commit_commits_at_delivery() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(1));
    let mut s = spec("g", "x");
    s.auto_commit = true;
    a.join(now, s).unwrap();
    a.route("g", T, NodeId(9), Offset(0), Some(&key(0)));
    a.route("g", T, NodeId(9), Offset(1), Some(&key(1)));
    assert_eq!(a.committed("g", T, NodeId(9), 0), Some(Offset(2)));
    assert_eq!(a.uncommitted("g", "x"), 0);
}

#[test]
fn a_latest_member_without_commits_starts_at_the_live_position() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(1));
    let mut s = spec("g", "x");
    s.start = StartPolicy::Latest;
    a.join(now, s).unwrap();
    let r = a.route("g", T, NodeId(9), Offset(500), Some(&key(0)));
    assert!(matches!(r, Route::Deliver { .. }), "{r:?}");
    assert_eq!(a.catch_up_from("g", T, NodeId(9)), None);
}

#[test]
fn broadcast_members_take_no_partitions_and_keep_their_own_offsets() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(2));
    let mut s = spec("g", "all");
    s.mode = MemberMode::Broadcast;
    a.join(now, s).unwrap();
    assert_eq!(
        a.route("g", T, NodeId(9), Offset(0), Some(&key(0))),
        Route::NotHere
    );
    a.commit(now, "g", "all", T, NodeId(9), Offset(7)).unwrap();
    assert_eq!(
        a.member_committed("g", "all", T, NodeId(9)),
        Some(Offset(7))
    );
    assert!(a.commits().iter().next().is_none());
}

#[test]
fn topic_filters_match_like_netconf_patterns() {
    let p = TopicFilter::parse("md.*");
    assert!(p.matches("md.x") && p.matches("md.x.y"));
    assert!(!p.matches("md") && !p.matches("mdx.y") && !p.matches("md."));
    assert!(TopicFilter::parse("*").matches("anything"));
    assert!(TopicFilter::parse("a.b").matches("a.b") && !TopicFilter::parse("a.b").matches("a.bc"));
}

#[test]
fn a_member_joining_while_nothing_flows_catches_up_on_an_existing_log() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(1));
    a.restore_commit(
        CommitKey {
            group: Arc::from("g"),
            topic: Arc::from(T),
            source: NodeId(9),
            partition: 0,
        },
        Offset(3),
    );
    a.join(now, spec("g", "x")).unwrap();
    a.open_streams(T, NodeId(9), Offset(5));
    assert_eq!(a.catch_up_from("g", T, NodeId(9)), Some(Offset(3)));
    let got: Vec<u64> = (3..5)
        .filter(|o| {
            matches!(
                a.catch_up("g", T, NodeId(9), Offset(*o), Some(&key(*o))),
                Route::Deliver { .. }
            )
        })
        .collect();
    assert_eq!(got, vec![3, 4]);
    assert!(matches!(
        a.route("g", T, NodeId(9), Offset(5), Some(&key(5))),
        Route::Deliver { .. }
    ));
}

#[test]
fn a_paused_member_gets_the_following_records_from_the_log_in_order() {
    let now = Instant::now();
    let mut a = ConsumerGroups::new(NodeId(1), cfg(2));
    a.join(now, spec("g", "x")).unwrap();
    for o in 0..3u64 {
        assert!(matches!(
            a.route("g", T, NodeId(9), Offset(o), Some(&key(o))),
            Route::Deliver { .. }
        ));
    }
    a.pause("g", "x");
    for o in 3..6u64 {
        assert!(matches!(
            a.route("g", T, NodeId(9), Offset(o), Some(&key(o))),
            Route::Hold { .. }
        ));
    }
    assert_eq!(a.catch_up_from("g", T, NodeId(9)), Some(Offset(3)));
    assert_eq!(
        a.catching_up_members("g", T, NodeId(9)),
        vec![Arc::<str>::from("x")]
    );
    let got: Vec<u64> = (0..6u64)
        .filter(|o| {
            matches!(
                a.catch_up("g", T, NodeId(9), Offset(*o), Some(&key(*o))),
                Route::Deliver { .. }
            )
        })
        .collect();
    assert_eq!(got, vec![3, 4, 5]);
    assert!(matches!(
        a.route("g", T, NodeId(9), Offset(6), Some(&key(6))),
        Route::Deliver { .. }
    ));
}
