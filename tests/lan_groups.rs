//! Consumer groups across real daemons on namespace hosts: a group with one
//! member on each of 3 hosts shares 30,000 keyed records published on the
//! first host. One member's process dies mid-stream (its connection closes with
//! records processed and not committed), then a whole daemon is killed
//! with its member. The remaining members take over their partitions from
//! the committed offsets, and the union of what the group processed covers
//! every record. A second group on the same topic gets the whole stream.
//! Skipped (passes) where network namespaces cannot be made, unless CI=true.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use castlog::client::{Client, ConsumeMode, Message, NodeId, Offset, StartFrom};
use common::lan::Lan;
use common::{lan_netconf, DaemonProc, Kind};

const RECORDS: u64 = 30_000;
const TOPIC: &str = "orders";
const GROUP: &str = "workers";
const FAST: &str =
    "heartbeat-interval-min = \"1ms\"\nnak-delay-max = \"2ms\"\nnak-retry-interval = \"5ms\"\n";

/// A member: its connection, what it processed, and what it has not
/// committed yet.
struct Member {
    client: Client,
    name: String,
    group: &'static str,
    processed: Vec<u64>,
    uncommitted: Option<(NodeId, Offset)>,
    since_commit: usize,
}

impl Member {
    fn join(d: &DaemonProc, group: &'static str) -> Member {
        let mut client = d.client();
        client
            .subscribe(
                TOPIC,
                StartFrom::Committed,
                Some(group),
                ConsumeMode::Clustering,
            )
            .expect("subscribe with group");
        Member {
            client,
            name: format!("{group} member on {}", d.name),
            group,
            processed: Vec::new(),
            uncommitted: None,
            since_commit: 0,
        }
    }

    /// Takes what has arrived (waiting up to `wait`), processing each record
    /// and committing every 100.
    fn poll(&mut self, wait: Duration) -> usize {
        let mut n = 0;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.next_message(left.max(Duration::from_millis(1))) {
                Ok(Some(Message::Record(d))) => {
                    assert_eq!(d.value, format!("v{}", d.offset.0).as_bytes());
                    self.processed.push(d.offset.0);
                    self.uncommitted = Some((d.source, d.offset.next()));
                    self.since_commit += 1;
                    n += 1;
                    if self.since_commit >= 100 {
                        self.commit();
                    }
                }
                Ok(Some(Message::Gap(g))) => panic!("unexpected gap notice: {g:?}"),
                Ok(None) => return n,
                Err(e) => panic!(
                    "{} lost its connection after {} records: {e:?}",
                    self.name,
                    self.processed.len()
                ),
            }
            if Instant::now() >= deadline {
                return n;
            }
        }
    }

    fn commit(&mut self) {
        if let Some((source, next)) = self.uncommitted.take() {
            self.client
                .commit(self.group, TOPIC, source, next)
                .expect("commit");
        }
        self.since_commit = 0;
    }
}

fn netconf(lan: &Lan, i: usize) -> String {
    // The generated netconf ends with the `[[topic]]` table.
    lan_netconf(lan, i, Kind::Multicast, FAST) + "partitions = 12\n"
}

#[test]
fn a_group_covers_every_record_when_a_member_and_then_a_daemon_die() {
    let Some(lan) = Lan::new_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemons: Vec<DaemonProc> = (1..=3)
        .map(|i| {
            DaemonProc::start(
                Some(&lan),
                i,
                &format!("h{i}"),
                &netconf(&lan, i),
                dir.path(),
            )
        })
        .collect();
    let mut members: Vec<Option<Member>> = daemons
        .iter()
        .map(|d| Some(Member::join(d, GROUP)))
        .collect();
    let mut audit = Member::join(&daemons[1], "audit");
    // Membership settles (announcements at once on a change).
    for m in members.iter_mut().flatten() {
        m.poll(Duration::from_millis(300));
    }
    // What dead members processed (their connections are closed).
    let mut dead: Vec<Vec<u64>> = Vec::new();
    let mut publisher = daemons[0].client();
    let mut published = 0;
    while published < RECORDS {
        for k in published..published + 1_000 {
            let key = format!("k{}", k % 997);
            publisher
                .publish_oneway(TOPIC, Some(key.as_bytes()), format!("v{k}").as_bytes())
                .expect("publish");
        }
        publisher.flush().expect("flush");
        publisher.ping().expect("ping");
        published += 1_000;
        for m in members.iter_mut().flatten() {
            m.poll(Duration::from_millis(20));
        }
        audit.poll(Duration::from_millis(5));
        if published == 10_000 {
            // Member 2's process dies: no final commit.
            if let Some(m) = members[1].take() {
                dead.push(m.processed);
            }
        }
        if published == 20_000 {
            // Daemon 3 dies with its member.
            daemons[2].kill9();
            if let Some(m) = members[2].take() {
                dead.push(m.processed);
            }
        }
    }
    // The survivors drain until nothing comes for 5s (the dead daemon's
    // members expire after 2s).
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(5) {
        let mut n = 0;
        for m in members.iter_mut().flatten() {
            n += m.poll(Duration::from_millis(50));
        }
        n += audit.poll(Duration::from_millis(10));
        if n > 0 {
            idle_since = Instant::now();
        }
    }
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let survivors = members.iter().flatten().map(|m| &m.processed);
    for processed in survivors.chain(dead.iter()) {
        for o in processed {
            *seen.entry(*o).or_default() += 1;
        }
    }
    let missing: Vec<u64> = (0..RECORDS).filter(|o| !seen.contains_key(o)).collect();
    let repeats: u32 = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "processed={} repeats={repeats} missing={} per member={:?}",
        seen.len(),
        missing.len(),
        members
            .iter()
            .flatten()
            .map(|m| m.processed.len())
            .chain(dead.iter().map(Vec::len))
            .collect::<Vec<_>>()
    );
    assert!(
        missing.is_empty(),
        "{} records processed by no member, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let mut audit_seen = audit.processed.clone();
    audit_seen.sort_unstable();
    audit_seen.dedup();
    assert_eq!(
        audit_seen.len() as u64,
        RECORDS,
        "the second group missed records"
    );
}
