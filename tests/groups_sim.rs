//! Consumer groups over the seeded lossy-network simulation (`proto::sim`):
//! 3 daemons, members joining and leaving at random times, tens of
//! thousands of keyed records from every daemon.
//!
//! Checked per seed, for the churning group and for a second, stable group
//! on the same topic:
//! - the union of deliveries covers every record (no record skipped);
//! - within one assignment epoch (one membership view) a record goes to at
//!   most one member;
//! - per (source, partition), so per key, a member gets offsets in
//!   increasing order for as long as it owns the partition;
//! - repeats are bounded by the records in flight at each change.
//!
//! Every failure prints its seed and the command that replays it.
//! `GROUPS_SEED=S` runs just seed S; `GROUPS_SEEDS=N` runs N seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use castlog::proto::groups::{
    partition_for, GroupEvent, GroupsConfig, MemberMode, MemberSpec, Route, StartPolicy,
    TopicFilter,
};
use castlog::proto::sim::{Link, Sim};
use castlog::proto::{Event, GroupConfig, NodeId, Offset, Rng};

const TOPIC: &str = "orders.eu";
const PARTITIONS: u32 = 12;
const DAEMONS: usize = 3;
/// Members per daemon in the churning group: 6 in all.
const SLOTS: usize = 2;
const WORKERS: &str = "workers";
const AUDIT: &str = "audit";

struct Params {
    seed: u64,
    /// Cut this daemon off the network for 700ms mid-run: the others
    /// expire its members, it expires theirs.
    isolate: Option<usize>,
    records: usize,
    keys: u64,
    loss: f64,
}

/// (daemon, group, member, source, partition).
type OrderKey = (usize, Arc<str>, Arc<str>, NodeId, u32);

/// One delivery to a member.
#[derive(Debug, Clone)]
struct Delivery {
    group: Arc<str>,
    node: usize,
    member: Arc<str>,
    source: NodeId,
    offset: Offset,
    epoch: (u64, u64),
    at: Instant,
}

#[derive(Default)]
struct MemberState {
    joined: bool,
    /// Last processed offset per source, not committed yet.
    uncommitted: BTreeMap<NodeId, Offset>,
    since_commit: usize,
}

struct World {
    p: Params,
    sim: Sim,
    rng: Rng,
    /// Per daemon, per source: the keys of the topic's log, by offset.
    logs: Vec<BTreeMap<NodeId, Vec<u64>>>,
    /// Every record: (source, offset) -> key.
    records: BTreeMap<(NodeId, Offset), u64>,
    published_at: Vec<Instant>,
    deliveries: Vec<Delivery>,
    members: BTreeMap<(usize, Arc<str>, Arc<str>), MemberState>,
    /// Per (node, member, source, partition): last offset delivered while
    /// owning it (reset on assignment).
    order: BTreeMap<OrderKey, Offset>,
    /// Records delivered but not committed, summed at each rebalance, plus
    /// records published in the settle window around it.
    in_flight_at_changes: u64,
    rebalances: u64,
    /// Whether a daemon is cut off now, and what was published meanwhile:
    /// during a split both sides own every partition, so each such record
    /// may be delivered once on each side.
    isolated: bool,
    published_while_isolated: u64,
    failures: Vec<String>,
}

fn member_name(node: usize, slot: usize) -> Arc<str> {
    Arc::from(format!("m{node}{slot}"))
}

fn spec(group: &str, member: &Arc<str>) -> MemberSpec {
    MemberSpec {
        group: Arc::from(group),
        member: member.clone(),
        patterns: vec![TopicFilter::parse("orders.*")],
        mode: MemberMode::Clustering,
        auto_commit: false,
        start: StartPolicy::Earliest,
    }
}

impl World {
    fn new(p: Params) -> World {
        let start = Instant::now();
        let mut sim = Sim::new(p.seed, start);
        sim.set_default_link(Link {
            loss: p.loss,
            ..Link::default()
        });
        let cfg = GroupsConfig {
            announce_interval: Duration::from_millis(100),
            member_expiry: Duration::from_millis(400),
            partitions: vec![(TopicFilter::parse("orders.*"), PARTITIONS)],
            ..GroupsConfig::default()
        };
        for _ in 0..DAEMONS {
            let i = sim.add_node(GroupConfig::default());
            *sim.node(i).consumers_mut() =
                castlog::proto::groups::ConsumerGroups::new(NodeId(1000 + i as u64), cfg.clone());
        }
        let rng = Rng::from_seed(p.seed ^ 0xc0ffee);
        World {
            p,
            sim,
            rng,
            logs: vec![BTreeMap::new(); DAEMONS],
            records: BTreeMap::new(),
            published_at: Vec::new(),
            deliveries: Vec::new(),
            members: BTreeMap::new(),
            order: BTreeMap::new(),
            in_flight_at_changes: 0,
            rebalances: 0,
            isolated: false,
            published_while_isolated: 0,
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, msg: String) {
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }

    fn join(&mut self, node: usize, group: &str, member: &Arc<str>) {
        let now = self.sim.now();
        let res = self
            .sim
            .node(node)
            .consumers_mut()
            .join(now, spec(group, member));
        assert!(res.is_ok(), "join refused: {res:?}");
        self.members
            .entry((node, Arc::from(group), member.clone()))
            .or_default()
            .joined = true;
        self.sim.pump(node);
        self.process(node);
    }

    /// The member dies: whatever it processed and did not commit is
    /// delivered again to the next owner.
    fn leave(&mut self, node: usize, group: &str, member: &Arc<str>) {
        let now = self.sim.now();
        self.sim
            .node(node)
            .consumers_mut()
            .leave(now, group, member);
        if let Some(m) = self
            .members
            .get_mut(&(node, Arc::from(group), member.clone()))
        {
            m.joined = false;
            m.uncommitted.clear();
            m.since_commit = 0;
        }
        self.sim.pump(node);
        self.process(node);
    }

    fn publish(&mut self, node: usize, key: u64) {
        let now = self.sim.now();
        let source = self.sim.node(node).id();
        let log = self.logs[node].entry(source).or_default();
        let offset = Offset(log.len() as u64);
        log.push(key);
        self.records.insert((source, offset), key);
        self.published_at.push(now);
        if self.isolated {
            self.published_while_isolated += 1;
        }
        let k = format!("key-{key}");
        let res = self.sim.node(node).publish(
            now,
            castlog::proto::sim::GROUP,
            TOPIC,
            offset,
            0,
            k.as_bytes(),
            b"v",
        );
        assert!(res.is_ok(), "seed={} publish refused: {res:?}", self.p.seed);
        // The source's own members get its records from its own log.
        self.route(node, source, offset, key);
    }

    /// Routes one record that is in `node`'s log to its local members.
    fn route(&mut self, node: usize, source: NodeId, offset: Offset, key: u64) {
        let k = format!("key-{key}");
        let groups = self.sim.node(node).consumers().local_groups_for(TOPIC);
        for g in groups {
            let r = self.sim.node(node).consumers_mut().route(
                &g,
                TOPIC,
                source,
                offset,
                Some(k.as_bytes()),
            );
            self.take(node, &g, source, offset, key, r);
        }
    }

    fn take(
        &mut self,
        node: usize,
        group: &Arc<str>,
        source: NodeId,
        offset: Offset,
        key: u64,
        r: Route,
    ) {
        let Route::Deliver {
            member,
            partition,
            epoch,
        } = r
        else {
            return;
        };
        let at = self.sim.now();
        let expected = partition_for(Some(format!("key-{key}").as_bytes()), PARTITIONS, offset.0);
        if expected != partition {
            self.fail(format!(
                "partition {partition} for key {key}, expected {expected}"
            ));
        }
        let okey = (node, group.clone(), member.clone(), source, partition);
        if let Some(last) = self.order.get(&okey) {
            if *last >= offset {
                self.fail(format!(
                    "order: member {member} of {group} got {source:?}/{partition} offset {} after {}",
                    offset.0, last.0
                ));
            }
        }
        self.order.insert(okey, offset);
        self.deliveries.push(Delivery {
            group: group.clone(),
            node,
            member: member.clone(),
            source,
            offset,
            epoch: (epoch.number, epoch.digest),
            at,
        });
        // The member processes the record at once and commits now and then.
        let mkey = (node, group.clone(), member.clone());
        let Some(m) = self.members.get_mut(&mkey) else {
            return;
        };
        m.uncommitted.insert(source, offset);
        m.since_commit += 1;
        if m.since_commit >= 16 {
            self.commit_member(node, group, &member);
        }
    }

    fn commit_member(&mut self, node: usize, group: &Arc<str>, member: &Arc<str>) {
        let mkey = (node, group.clone(), member.clone());
        let Some(m) = self.members.get_mut(&mkey) else {
            return;
        };
        m.since_commit = 0;
        let todo: Vec<(NodeId, Offset)> = std::mem::take(&mut m.uncommitted).into_iter().collect();
        let now = self.sim.now();
        for (source, offset) in todo {
            let res = self.sim.node(node).consumers_mut().commit(
                now,
                group,
                member,
                TOPIC,
                source,
                offset.next(),
            );
            if let Err(e) = res {
                self.fail(format!("commit refused: {e}"));
            }
        }
    }

    /// The daemon's loop body: log and route what arrived, act on the
    /// groups' events, feed catch-ups from the log.
    fn process(&mut self, node: usize) {
        for (_, e) in self.sim.take_events(node) {
            match e {
                Event::Deliver {
                    source,
                    topic,
                    records,
                    ..
                } if &*topic == TOPIC => {
                    for rec in records.iter() {
                        let key: u64 = std::str::from_utf8(rec.key)
                            .ok()
                            .and_then(|k| k.strip_prefix("key-"))
                            .and_then(|k| k.parse().ok())
                            .unwrap_or(u64::MAX);
                        let log = self.logs[node].entry(source).or_default();
                        let len = log.len() as u64;
                        if len != rec.offset.0 {
                            self.fail(format!(
                                "daemon {node} got offset {} of {source:?}, log has {len}",
                                rec.offset.0
                            ));
                            continue;
                        }
                        log.push(key);
                        self.route(node, source, rec.offset, key);
                    }
                }
                Event::Gap { .. } => self.fail(format!("daemon {node}: transport gap {e:?}")),
                _ => {}
            }
        }
        while let Some(ev) = self.sim.node(node).consumers_mut().poll_event() {
            match ev {
                GroupEvent::Assigned {
                    group,
                    member,
                    source,
                    partition,
                    ..
                } => {
                    self.order.remove(&(node, group, member, source, partition));
                }
                GroupEvent::Rebalanced { group, .. } => {
                    // Every change reaches every daemon: count it once.
                    if &*group == WORKERS && node == 0 {
                        self.rebalances += 1;
                        self.in_flight_at_changes += self.in_flight();
                    }
                }
                GroupEvent::Revoked { .. } => {}
            }
        }
        let catching = self.sim.node(node).consumers().catching_up();
        for (group, topic, source, from) in catching {
            let log: Vec<u64> = self.logs[node].get(&source).cloned().unwrap_or_default();
            for (o, key) in log.iter().enumerate().skip(from.0 as usize) {
                let k = format!("key-{key}");
                let offset = Offset(o as u64);
                let r = self.sim.node(node).consumers_mut().catch_up(
                    &group,
                    &topic,
                    source,
                    offset,
                    Some(k.as_bytes()),
                );
                self.take(node, &group, source, offset, *key, r);
            }
        }
        self.sim.pump(node);
    }

    /// Records that may be delivered again after a change: delivered and
    /// not yet committed, plus what was published in the last 30ms (the
    /// commit announcement delay and the transit: commits not yet heard by
    /// the new owner's daemon, and the window in which daemons' views of
    /// the membership differ).
    fn in_flight(&self) -> u64 {
        let uncommitted: u64 = (0..DAEMONS)
            .map(|n| {
                self.members
                    .keys()
                    .filter(|(node, g, _)| *node == n && &**g == WORKERS)
                    .map(|(_, g, m)| self.sim_uncommitted(n, g, m))
                    .sum::<u64>()
            })
            .sum();
        let now = self.sim.now();
        let window = Duration::from_millis(30);
        let recent = self
            .published_at
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(**t) <= window)
            .count() as u64;
        uncommitted + recent
    }

    fn sim_uncommitted(&self, node: usize, group: &Arc<str>, member: &Arc<str>) -> u64 {
        // `consumers()` needs `&mut Sim` through `node()`; count from our
        // own bookkeeping instead: deliveries since the last commit.
        self.members
            .get(&(node, group.clone(), member.clone()))
            .map_or(0, |m| m.since_commit as u64)
    }

    fn set_isolated(&mut self, k: usize, cut: bool) {
        self.isolated = cut;
        let link = Link {
            loss: if cut { 1.0 } else { self.p.loss },
            ..Link::default()
        };
        for n in (0..DAEMONS).filter(|n| *n != k) {
            self.sim.set_link(n, k, link);
            self.sim.set_link(k, n, link);
        }
    }

    fn step(&mut self, d: Duration) {
        self.sim.run_for(d);
        for n in 0..DAEMONS {
            self.process(n);
        }
    }

    fn run(&mut self) {
        for n in 0..DAEMONS {
            for s in 0..SLOTS {
                if self.rng.chance(0.5) || (n == 0 && s == 0) {
                    self.join(n, WORKERS, &member_name(n, s));
                }
            }
        }
        // The stable second group: one member on daemons 1 and 2.
        for n in 1..DAEMONS {
            let m = Arc::from(format!("audit{n}"));
            self.join(n, AUDIT, &m);
        }
        self.step(Duration::from_millis(300));
        let per_ms = 10;
        let mut published = 0;
        while published < self.p.records {
            for _ in 0..per_ms.min(self.p.records - published) {
                let node = self.rng.below(DAEMONS as u64) as usize;
                let key = self.rng.below(self.p.keys);
                self.publish(node, key);
                published += 1;
            }
            for n in 0..DAEMONS {
                let now = self.sim.now();
                self.sim.node(n).flush(now);
                self.sim.pump(n);
            }
            self.step(Duration::from_millis(1));
            if let Some(k) = self.p.isolate {
                if published == self.p.records / 2 {
                    self.set_isolated(k, true);
                }
                if published == self.p.records / 2 + 7000 {
                    self.set_isolated(k, false);
                }
            }
            // Now and then a member's connection backs up: the daemon
            // pauses it and it continues from the log.
            if self.rng.chance(1.0 / 50.0) {
                let n = self.rng.below(DAEMONS as u64) as usize;
                let m = member_name(n, self.rng.below(SLOTS as u64) as usize);
                self.sim.node(n).consumers_mut().pause(WORKERS, &m);
            }
            // About one membership change every 150ms.
            if self.rng.chance(1.0 / 150.0) {
                let n = self.rng.below(DAEMONS as u64) as usize;
                let s = self.rng.below(SLOTS as u64) as usize;
                let m = member_name(n, s);
                let joined = self
                    .members
                    .get(&(n, Arc::from(WORKERS), m.clone()))
                    .is_some_and(|st| st.joined);
                let live = self
                    .members
                    .iter()
                    .filter(|(k, st)| &*k.1 == WORKERS && st.joined)
                    .count();
                if joined && live > 1 {
                    self.leave(n, WORKERS, &m);
                } else if !joined {
                    self.join(n, WORKERS, &m);
                }
            }
        }
        // Members commit what they processed; the group settles.
        for _ in 0..20 {
            let keys: Vec<(usize, Arc<str>, Arc<str>)> = self
                .members
                .iter()
                .filter(|(_, st)| st.joined)
                .map(|(k, _)| k.clone())
                .collect();
            for (n, g, m) in keys {
                self.commit_member(n, &g, &m);
            }
            self.step(Duration::from_millis(50));
        }
    }

    fn check(&mut self) -> Summary {
        let mut s = Summary::default();
        for group in [WORKERS, AUDIT] {
            let mut seen: BTreeMap<(NodeId, Offset), u32> = BTreeMap::new();
            let mut per_epoch: BTreeSet<((NodeId, Offset), (u64, u64))> = BTreeSet::new();
            let mut dup_in_epoch = 0;
            for d in self.deliveries.iter().filter(|d| &*d.group == group) {
                *seen.entry((d.source, d.offset)).or_default() += 1;
                if !per_epoch.insert(((d.source, d.offset), d.epoch)) {
                    dup_in_epoch += 1;
                    if dup_in_epoch < 5 {
                        self.failures.push(format!(
                            "{group}: {:?}/{} delivered twice in epoch {:?} (last to {} on {} at {:?})",
                            d.source, d.offset.0, d.epoch, d.member, d.node, d.at
                        ));
                    }
                }
            }
            let missing: Vec<_> = self
                .records
                .keys()
                .filter(|r| !seen.contains_key(r))
                .take(5)
                .cloned()
                .collect();
            let missing_count = self
                .records
                .keys()
                .filter(|r| !seen.contains_key(r))
                .count();
            if missing_count > 0 {
                self.failures.push(format!(
                    "{group}: {missing_count} records never delivered, e.g. {missing:?}"
                ));
            }
            let delivered: u64 = seen.values().map(|c| u64::from(*c)).sum();
            let repeats = delivered - seen.len() as u64;
            if group == WORKERS {
                s.repeats = repeats;
                s.bound = self.in_flight_at_changes + self.published_while_isolated;
                if repeats > s.bound {
                    self.failures.push(format!(
                        "{group}: {repeats} repeats, more than the {} records in flight at \
                         changes and {} published while split",
                        self.in_flight_at_changes, self.published_while_isolated
                    ));
                }
            } else {
                s.audit_repeats = repeats;
            }
        }
        s.rebalances = self.rebalances;
        for n in 0..DAEMONS {
            let st = self.sim.node(n).consumers().stats().clone();
            s.caught_up += st.records_caught_up;
            s.revoked += st.partitions_revoked;
            s.merged += st.commits_merged;
        }
        s.records = self.records.len();
        s
    }
}

#[derive(Debug, Default)]
struct Summary {
    records: usize,
    rebalances: u64,
    repeats: u64,
    bound: u64,
    audit_repeats: u64,
    caught_up: u64,
    revoked: u64,
    merged: u64,
}

fn run_seed(p: Params) -> Summary {
    let seed = p.seed;
    let mut w = World::new(p);
    w.run();
    let s = w.check();
    if !w.failures.is_empty() {
        panic!(
            "seed={seed}: {} failure(s):\n  {}\nreplay: GROUPS_SEED={seed} cargo test --test groups_sim",
            w.failures.len(),
            w.failures.join("\n  ")
        );
    }
    s
}

fn seeds(default: &[u64]) -> Vec<u64> {
    if let Some(s) = std::env::var("GROUPS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    if let Some(n) = std::env::var("GROUPS_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        return (1..=n).collect();
    }
    default.to_vec()
}

#[test]
fn every_record_reaches_one_member_per_epoch_while_members_come_and_go() {
    for seed in seeds(&[7]) {
        let s = run_seed(Params {
            seed,
            isolate: Some(2),
            records: 50_000,
            keys: 1_000,
            loss: 0.01,
        });
        eprintln!("seed={seed} {s:?}");
        assert!(
            s.rebalances >= 6,
            "seed={seed}: too few changes to test: {s:?}"
        );
        assert!(
            s.caught_up > 0 && s.revoked > 0 && s.merged > 0,
            "seed={seed}: handover paths not exercised: {s:?}"
        );
    }
}

#[test]
fn short_runs_hold_the_guarantees_over_many_seeds() {
    for seed in seeds(&[1, 2, 3, 4, 5, 6]) {
        run_seed(Params {
            seed,
            isolate: None,
            records: 4_000,
            keys: 50,
            loss: 0.03,
        });
    }
}
