//! Consumer groups without a broker: membership, assignment, committed
//! offsets and gap-free handover, as a sans-IO state machine.
//!
//! # How it works
//!
//! - **Membership.** Each daemon registers its local members (group, member
//!   id, topic patterns, mode) and announces its whole member list in
//!   ANNOUNCE extensions (`wire::member`): periodically
//!   (`announce_interval`) and at once on a change. It learns the other
//!   daemons' lists the same way, and drops the members of a daemon not
//!   heard for `member_expiry` (or at once on its ANNOUNCE leave).
//! - **Assignment.** Every record has a partition ([`partition_for`]: stable
//!   hash of the key, or round robin by offset without one). The owner of
//!   (group, topic, partition) is chosen by rendezvous hashing over the
//!   sorted live clustering members of the group subscribed to the topic
//!   ([`rendezvous_owner`]). Every daemon computes the same owner from the
//!   same membership; there is no coordinator. A group's [`Epoch`] is bumped
//!   on every change of its membership view.
//! - **Committed offsets** per (group, topic, source, partition) are raised
//!   by local commits, announced to the other daemons and max-merged (an
//!   offset only moves forward). A member that gains a partition starts
//!   from its committed offset: the daemon feeds the log from there through
//!   [`ConsumerGroups::catch_up`] until it meets the live stream, so no
//!   record of the partition is skipped.
//!
//! # The call contract (the daemon's side)
//!
//! - Register members with [`ConsumerGroups::join`] / `leave`.
//! - For every record that reaches the node live (in offset order per
//!   source and topic), *after appending it to the log*, call
//!   [`ConsumerGroups::route`] once per consumer group that has local
//!   members ([`ConsumerGroups::local_groups_for`]).
//!   [`Route::Deliver`] names the local member that gets it.
//! - After [`GroupEvent::Assigned`] with `catch_up: true` (or whenever
//!   [`ConsumerGroups::catch_up_from`] is `Some`), read that source's topic
//!   log from there in offset order and feed each record to
//!   [`ConsumerGroups::catch_up`] until the log end.
//! - Commits: [`ConsumerGroups::commit`] with the next offset to deliver.
//! - Drain [`ConsumerGroups::poll_event`] after every input.
//!
//! The guarantees (at least once, never a skipped record, exactly when a
//! record is delivered twice) are stated in `docs/consumer-groups.md`.

mod assign;
mod commits;
mod membership;
mod route;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use crate::wire::member::MemberMode;
pub use assign::{partition_for, rendezvous_owner, rendezvous_score, stable_hash};
pub use commits::{CommitKey, CommitTable, PENDING_MAX};
pub use membership::{GroupMembership, GroupView, MemberInfo};

use crate::wire::announce::EXTENSION_HEADER_LEN;
use crate::wire::member::{CommitRepr, MemberExt, MemberRepr, MemberSetRepr, MEMBER_SET_LEN};
use crate::wire::{AnnounceKind, Extensions, NodeId, Offset, SessionId};
use commits::Pending;
use route::{Change, Cursor, Stream, StreamTable};

/// A member anywhere: the daemon it is on and its id there. Ordered by
/// node, then id: the sorted member list every daemon agrees on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberKey {
    pub node: NodeId,
    pub member: Arc<str>,
}

/// An assignment epoch of one group: `number` only grows (Lamport-style:
/// above every epoch heard), `digest` names the membership view it was
/// computed from, so that two daemons can tell whether they agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Epoch {
    pub number: u64,
    pub digest: u64,
}

/// A topic pattern as netconf and the CLI write them: `md.prices.AAPL`
/// (exact), `md.*` (every topic below `md.`, not `md` itself) or `*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFilter {
    text: Arc<str>,
}

impl TopicFilter {
    pub fn parse(text: &str) -> TopicFilter {
        TopicFilter {
            text: Arc::from(text),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, topic: &str) -> bool {
        if &*self.text == "*" {
            return true;
        }
        match self.text.strip_suffix(".*") {
            Some(prefix) => topic
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| !rest.is_empty()),
            None => *self.text == *topic,
        }
    }
}

/// Where a member starts on a partition its group has no committed offset
/// for (Kafka's `auto.offset.reset`). A committed offset always wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartPolicy {
    /// From the oldest record in the log: nothing is skipped. Default.
    #[default]
    Earliest,
    /// From the records that arrive after the assignment.
    Latest,
    /// From this offset of every source's log of the topic.
    At(Offset),
}

/// A local member, as the daemon registers it.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub group: Arc<str>,
    /// Unique among this daemon's members of the group.
    pub member: Arc<str>,
    pub patterns: Vec<TopicFilter>,
    pub mode: MemberMode,
    /// Commit each record as soon as it is delivered. Off by default:
    /// a record delivered but not yet processed when the member dies would
    /// otherwise count as done (at most once for that record).
    pub auto_commit: bool,
    pub start: StartPolicy,
}

/// Consumer-group settings. Every field has a default fit for a LAN.
#[derive(Clone, Debug)]
pub struct GroupsConfig {
    /// How often a daemon repeats its member list. Default: 500ms.
    pub announce_interval: Duration,
    /// Silence after which a daemon's members are dropped (a rebalance).
    /// Default: 2s (4 intervals: one lost announcement is not a leave).
    pub member_expiry: Duration,
    /// Commits are gathered this long before they are announced.
    /// Default: 20ms.
    pub commit_announce_delay: Duration,
    /// Committed offsets re-announced per periodic announcement, rotating
    /// through the table (repairs lost announcements, teaches restarted
    /// daemons). Default: 64.
    pub commit_refresh_entries: usize,
    /// Partitions per topic: the first matching rule wins; no match is 1.
    /// The daemon copies netconf's `partitions` of its topic rules here.
    pub partitions: Vec<(TopicFilter, u32)>,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            announce_interval: Duration::from_millis(500),
            member_expiry: Duration::from_secs(2),
            commit_announce_delay: Duration::from_millis(20),
            commit_refresh_entries: 64,
            partitions: Vec::new(),
        }
    }
}

impl GroupsConfig {
    pub fn partitions_for(&self, topic: &str) -> u32 {
        self.partitions
            .iter()
            .find(|(f, _)| f.matches(topic))
            .map_or(1, |(_, n)| (*n).max(1))
    }
}

/// What to do with one routed record for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Deliver it to this local member now.
    Deliver {
        member: Arc<str>,
        partition: u32,
        epoch: Epoch,
    },
    /// A local member owns the partition but is catching up from the log:
    /// do not deliver it now; the catch-up feed will.
    Hold { member: Arc<str>, partition: u32 },
    /// Another daemon's member owns the partition, or nobody does.
    Elsewhere {
        partition: u32,
        owner: Option<MemberKey>,
    },
    /// Already delivered or committed for this group.
    Duplicate,
    /// This daemon has no member of the group that takes the topic.
    NotHere,
}

/// What the groups tell the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// A group's membership view changed.
    Rebalanced {
        group: Arc<str>,
        epoch: Epoch,
        members: usize,
    },
    /// A local member now owns a partition, starting at `from` (the
    /// group's committed offset, or the start policy's). With `catch_up`,
    /// records from `from` are in the log already: feed them through
    /// [`ConsumerGroups::catch_up`].
    Assigned {
        group: Arc<str>,
        member: Arc<str>,
        topic: Arc<str>,
        source: NodeId,
        partition: u32,
        from: Offset,
        catch_up: bool,
        epoch: Epoch,
    },
    /// A local member no longer owns a partition.
    Revoked {
        group: Arc<str>,
        member: Arc<str>,
        topic: Arc<str>,
        source: NodeId,
        partition: u32,
        epoch: Epoch,
    },
}

/// Why a group call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error(
        "no member {member:?} of group {group:?} on this node; subscribe with the group first"
    )]
    UnknownMember { group: String, member: String },
    #[error("group name is empty; name the group or subscribe without one")]
    EmptyGroup,
}

/// Counters (noun then verb).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    pub announcements_sent: u64,
    pub announcements_received: u64,
    pub member_tlvs_malformed: u64,
    pub rebalances_done: u64,
    pub partitions_assigned: u64,
    pub partitions_revoked: u64,
    pub records_routed: u64,
    pub records_delivered: u64,
    pub records_held: u64,
    pub records_caught_up: u64,
    pub catch_up_gaps_skipped: u64,
    pub commits_applied: u64,
    pub commits_merged: u64,
    pub pending_forgotten: u64,
}

pub use route::StreamKey;

/// A partition's cursor when a local member owns it, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorReport {
    pub member: Arc<str>,
    /// Every record of the partition below it was delivered.
    pub next: Offset,
    /// Taking live records (else catching up from the log).
    pub live: bool,
}

/// One partition's local cursor, if a local member owns it.
pub type LocalCursor = Option<CursorReport>;
type LocalKey = (Arc<str>, Arc<str>);

struct LocalMember {
    auto_commit: bool,
    start: StartPolicy,
    pending: Pending,
    /// Broadcast members' own progress per (topic, source), not shared.
    own_commits: BTreeMap<(Arc<str>, NodeId), Offset>,
}

/// All consumer-group state of one daemon.
pub struct ConsumerGroups {
    membership: GroupMembership,
    commits: CommitTable,
    streams: StreamTable,
    locals: BTreeMap<LocalKey, LocalMember>,
    events: VecDeque<GroupEvent>,
    stats: GroupStats,
    next_periodic: Option<Instant>,
    commit_due: Option<Instant>,
    announce_members: bool,
    announce_commits: bool,
    refresh_cursor: Option<CommitKey>,
}

impl ConsumerGroups {
    pub fn new(node: NodeId, cfg: GroupsConfig) -> ConsumerGroups {
        ConsumerGroups {
            membership: GroupMembership::new(node, cfg),
            commits: CommitTable::default(),
            streams: StreamTable::default(),
            locals: BTreeMap::new(),
            events: VecDeque::new(),
            stats: GroupStats::default(),
            next_periodic: None,
            commit_due: None,
            announce_members: false,
            announce_commits: false,
            refresh_cursor: None,
        }
    }

    pub fn config(&self) -> &GroupsConfig {
        self.membership.config()
    }

    /// Registers (or re-registers) a local member and rebalances.
    pub fn join(&mut self, now: Instant, spec: MemberSpec) -> Result<(), GroupError> {
        if spec.group.is_empty() {
            return Err(GroupError::EmptyGroup);
        }
        let key = (spec.group.clone(), spec.member.clone());
        self.locals.entry(key).or_insert_with(|| LocalMember {
            auto_commit: spec.auto_commit,
            start: spec.start,
            pending: Pending::default(),
            own_commits: BTreeMap::new(),
        });
        let info = MemberInfo {
            mode: spec.mode,
            patterns: spec.patterns,
        };
        let changed = self.membership.join(spec.group, spec.member, info);
        self.member_list_changed(now);
        self.rebalance(&changed);
        Ok(())
    }

    /// Unregisters a local member (unsubscribe or disconnect).
    pub fn leave(&mut self, now: Instant, group: &str, member: &str) {
        self.locals
            .retain(|(g, m), _| !(g.as_ref() == group && m.as_ref() == member));
        let changed = self.membership.leave(group, member);
        self.member_list_changed(now);
        self.rebalance(&changed);
    }

    fn member_list_changed(&mut self, now: Instant) {
        self.announce_members = true;
        if self.next_periodic.is_none() {
            self.next_periodic = Some(now + self.config().announce_interval);
        }
    }

    /// Consumer groups with a local member whose patterns take `topic`.
    pub fn local_groups_for(&self, topic: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        let node = self.membership.node();
        for (g, view) in self.membership.views() {
            let mine = view
                .members
                .iter()
                .any(|(k, info)| k.node == node && info.patterns.iter().any(|p| p.matches(topic)));
            if mine {
                out.push(g.clone());
            }
        }
        out
    }

    /// Routes one live record for `group` (see the call contract). Call it
    /// once per record and group, in offset order per (source, topic).
    pub fn route(
        &mut self,
        group: &str,
        topic: &str,
        source: NodeId,
        offset: Offset,
        key: Option<&[u8]>,
    ) -> Route {
        if self.streams.find(group, topic, source).is_none() {
            let skey: StreamKey = (Arc::from(group), Arc::from(topic), source);
            if !self.open_stream(&skey, offset) {
                return Route::NotHere;
            }
        }
        let Some((skey, stream)) = self.streams.find_mut(group, topic, source) else {
            return Route::NotHere;
        };
        if offset < stream.fed {
            return Route::Duplicate;
        }
        self.stats.records_routed += 1;
        stream.fed = offset.next();
        let partition = partition_for(key, stream.partitions, offset.0);
        let epoch = stream.epoch;
        let Some(part) = stream.part_mut(partition) else {
            return Route::NotHere;
        };
        let owner = part.owner.clone();
        match part.cursor.as_mut() {
            None => Route::Elsewhere { partition, owner },
            Some(c) if !c.live => {
                self.stats.records_held += 1;
                Route::Hold {
                    member: c.member.clone(),
                    partition,
                }
            }
            Some(c) if offset < c.next => Route::Duplicate,
            Some(c) => {
                c.next = offset.next();
                let member = c.member.clone();
                self.delivered(&skey, member, partition, offset, epoch)
            }
        }
    }

    /// Tells the groups of a log that exists already (at start, or when a
    /// member joins while no record flows): `next` is the offset the log will
    /// give next. Streams of local groups that take `topic` open there, so
    /// their members catch up from the committed offsets without waiting for
    /// a live record.
    pub fn open_streams(&mut self, topic: &str, source: NodeId, next: Offset) {
        for group in self.local_groups_for(topic) {
            let skey: StreamKey = (group, Arc::from(topic), source);
            if !self.streams.contains(&skey) {
                self.open_stream(&skey, next);
            }
        }
    }

    /// Feeds one record read from the log for a catch-up, in offset order
    /// from [`catch_up_from`](Self::catch_up_from). Delivers it if a
    /// catching-up member owns its partition; moves every catching-up
    /// cursor of the stream past it (the feed is contiguous, so no record
    /// of their partitions lies between).
    pub fn catch_up(
        &mut self,
        group: &str,
        topic: &str,
        source: NodeId,
        offset: Offset,
        key: Option<&[u8]>,
    ) -> Route {
        let Some((skey, stream)) = self.streams.find_mut(group, topic, source) else {
            return Route::NotHere;
        };
        let partition = partition_for(key, stream.partitions, offset.0);
        let fed = stream.fed;
        let epoch = stream.epoch;
        let mut deliver_to = None;
        for (p, part) in (0u32..).zip(stream.parts.iter_mut()) {
            let Some(c) = part.cursor.as_mut().filter(|c| !c.live) else {
                continue;
            };
            if c.next > offset {
                continue;
            }
            if c.next < offset {
                // The log lacks offsets (below retention, or a reported
                // gap): counted here, reported to the user by the log.
                self.stats.catch_up_gaps_skipped += 1;
            }
            if p == partition {
                deliver_to = Some(c.member.clone());
            }
            c.next = offset.next();
            if c.next >= fed {
                c.live = true;
            }
        }
        match deliver_to {
            Some(member) => {
                self.stats.records_caught_up += 1;
                self.delivered(&skey, member, partition, offset, epoch)
            }
            None => Route::Duplicate,
        }
    }

    /// Stops live delivery to a member (its connection is backed up): its
    /// live cursors become catching-up ones at the same position, so the
    /// records that follow are held and later read from the log, in order.
    pub fn pause(&mut self, group: &str, member: &str) {
        for stream in self.streams.group_mut(group) {
            let fed = stream.fed;
            for part in stream.parts.iter_mut() {
                if let Some(c) = part
                    .cursor
                    .as_mut()
                    .filter(|c| c.live && &*c.member == member)
                {
                    // A live cursor has seen every record routed so far.
                    c.next = c.next.max(fed);
                    c.live = false;
                }
            }
        }
    }

    /// Members catching up on a stream (to see whether they can take more).
    pub fn catching_up_members(&self, group: &str, topic: &str, source: NodeId) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .streams
            .find(group, topic, source)
            .map(|s| {
                s.parts
                    .iter()
                    .filter_map(|p| p.cursor.as_ref())
                    .filter(|c| !c.live)
                    .map(|c| c.member.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    /// Where the log feed of a stream must start, if a local member of
    /// `group` is catching up on it.
    pub fn catch_up_from(&self, group: &str, topic: &str, source: NodeId) -> Option<Offset> {
        self.streams
            .find(group, topic, source)
            .and_then(|s| s.catch_up_from())
    }

    /// Every stream with a member catching up: (group, topic, source, from).
    pub fn catching_up(&self) -> Vec<(Arc<str>, Arc<str>, NodeId, Offset)> {
        self.streams
            .iter()
            .filter_map(|((g, t, s), st)| st.catch_up_from().map(|o| (g, t, s, o)))
            .collect()
    }

    fn delivered(
        &mut self,
        skey: &StreamKey,
        member: Arc<str>,
        partition: u32,
        offset: Offset,
        epoch: Epoch,
    ) -> Route {
        self.stats.records_delivered += 1;
        let (group, topic, source) = skey;
        if let Some(local) = self.locals.get_mut(&(group.clone(), member.clone())) {
            if local.auto_commit {
                let key = CommitKey {
                    group: group.clone(),
                    topic: topic.clone(),
                    source: *source,
                    partition,
                };
                if self.commits.advance(key, offset.next(), true) {
                    self.stats.commits_applied += 1;
                }
            } else if local.pending.push(topic, *source, offset, partition) {
                self.stats.pending_forgotten += 1;
            }
        }
        Route::Deliver {
            member,
            partition,
            epoch,
        }
    }

    /// Creates the stream of a record's (group, topic, source) if a local
    /// member of the group takes the topic; assigns its partitions.
    fn open_stream(&mut self, skey: &StreamKey, offset: Offset) -> bool {
        let (group, topic, _) = skey;
        let Some(view) = self.membership.view(group) else {
            return false;
        };
        let candidates = view.candidates(topic);
        let node = self.membership.node();
        if !candidates.iter().any(|m| m.node == node) {
            return false;
        }
        let partitions = self.config().partitions_for(topic);
        let mut stream = Stream::new(partitions, offset, view.epoch);
        let changes = stream.reassign(group, topic, &candidates, node, view.epoch);
        self.streams.insert(skey.clone(), stream);
        self.apply_changes(skey, changes);
        true
    }

    fn rebalance(&mut self, changed: &[Arc<str>]) {
        let node = self.membership.node();
        for g in changed {
            let view = self.membership.view(g).cloned().unwrap_or_default();
            self.stats.rebalances_done += 1;
            self.events.push_back(GroupEvent::Rebalanced {
                group: g.clone(),
                epoch: view.epoch,
                members: view.members.len(),
            });
            let keys: Vec<StreamKey> = self.streams.keys_of(g);
            for skey in keys {
                let candidates = view.candidates(&skey.1);
                let Some(stream) = self.streams.get_mut(&skey) else {
                    continue;
                };
                let changes = stream.reassign(&skey.0, &skey.1, &candidates, node, view.epoch);
                self.apply_changes(&skey, changes);
                if !candidates.iter().any(|m| m.node == node) {
                    self.streams.remove(&skey);
                }
            }
        }
    }

    fn apply_changes(&mut self, skey: &StreamKey, changes: Vec<Change>) {
        let (group, topic, source) = skey;
        let Some(stream) = self.streams.get_mut(skey) else {
            return;
        };
        let epoch = stream.epoch;
        for change in changes {
            match change {
                Change::Lost { partition, member } => {
                    self.stats.partitions_revoked += 1;
                    self.events.push_back(GroupEvent::Revoked {
                        group: group.clone(),
                        member,
                        topic: topic.clone(),
                        source: *source,
                        partition,
                        epoch,
                    });
                }
                Change::Gained { partition, member } => {
                    let ckey = CommitKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        source: *source,
                        partition,
                    };
                    let policy = self
                        .locals
                        .get(&(group.clone(), member.clone()))
                        .map_or(StartPolicy::Earliest, |l| l.start);
                    let from = match (self.commits.get(&ckey), policy) {
                        (Some(c), _) => c,
                        (None, StartPolicy::Earliest) => Offset(0),
                        (None, StartPolicy::Latest) => stream.fed,
                        (None, StartPolicy::At(o)) => o,
                    };
                    let live = from >= stream.fed;
                    if let Some(part) = stream.part_mut(partition) {
                        part.cursor = Some(Cursor {
                            member: member.clone(),
                            next: from,
                            live,
                        });
                    }
                    self.stats.partitions_assigned += 1;
                    self.events.push_back(GroupEvent::Assigned {
                        group: group.clone(),
                        member,
                        topic: topic.clone(),
                        source: *source,
                        partition,
                        from,
                        catch_up: !live,
                        epoch,
                    });
                }
            }
        }
    }

    /// A local member's commit: `next` is the next offset to deliver of
    /// (topic, source); it covers the records delivered to the member up to
    /// the one at `next - 1`. Returns how many partitions' offsets moved.
    pub fn commit(
        &mut self,
        now: Instant,
        group: &str,
        member: &str,
        topic: &str,
        source: NodeId,
        next: Offset,
    ) -> Result<usize, GroupError> {
        let unknown = || GroupError::UnknownMember {
            group: group.to_string(),
            member: member.to_string(),
        };
        let mode = self
            .membership
            .local_member(group, member)
            .map(|i| i.mode)
            .ok_or_else(unknown)?;
        let local = self
            .locals
            .get_mut(&(Arc::from(group), Arc::from(member)))
            .ok_or_else(unknown)?;
        if mode != MemberMode::Clustering {
            let slot = local
                .own_commits
                .entry((Arc::from(topic), source))
                .or_insert(Offset(0));
            *slot = (*slot).max(next);
            return Ok(1);
        }
        let resolved = local.pending.resolve(topic, source, next);
        let mut moved = 0;
        for (partition, offset) in resolved {
            let key = CommitKey {
                group: Arc::from(group),
                topic: Arc::from(topic),
                source,
                partition,
            };
            if self.commits.advance(key, offset, true) {
                moved += 1;
                self.stats.commits_applied += 1;
            }
        }
        if moved > 0 && self.commit_due.is_none() {
            self.commit_due = Some(now + self.config().commit_announce_delay);
        }
        Ok(moved)
    }

    /// A broadcast member's own committed offset of (topic, source).
    pub fn member_committed(
        &self,
        group: &str,
        member: &str,
        topic: &str,
        source: NodeId,
    ) -> Option<Offset> {
        self.locals
            .get(&(Arc::from(group), Arc::from(member)))
            .and_then(|l| l.own_commits.get(&(Arc::from(topic), source)).copied())
    }

    /// Records delivered to a local member and not committed yet.
    pub fn uncommitted(&self, group: &str, member: &str) -> usize {
        self.locals
            .get(&(Arc::from(group), Arc::from(member)))
            .map_or(0, |l| l.pending.len())
    }

    /// The group's committed offset of one partition.
    pub fn committed(
        &self,
        group: &str,
        topic: &str,
        source: NodeId,
        partition: u32,
    ) -> Option<Offset> {
        self.commits.get(&CommitKey {
            group: Arc::from(group),
            topic: Arc::from(topic),
            source,
            partition,
        })
    }

    /// The whole committed-offset table (for `castlog groups` and the
    /// daemon's offsets store).
    pub fn commits(&self) -> &CommitTable {
        &self.commits
    }

    /// Loads committed offsets kept on disk (max-merged; not announced
    /// until asked for by the periodic refresh).
    pub fn restore_commit(&mut self, key: CommitKey, offset: Offset) {
        self.commits.advance(key, offset, false);
    }

    pub fn membership(&self) -> &GroupMembership {
        &self.membership
    }

    /// Owner of every partition of `topic` in `group` under the current
    /// view, for reports.
    pub fn assignment(&self, group: &str, topic: &str) -> Vec<Option<MemberKey>> {
        let candidates = self
            .membership
            .view(group)
            .map(|v| v.candidates(topic))
            .unwrap_or_default();
        (0..self.config().partitions_for(topic))
            .map(|p| rendezvous_owner(group, topic, p, &candidates).cloned())
            .collect()
    }

    /// Streams this daemon routes: (group, topic, source), partitions,
    /// epoch, and the local cursor of each partition.
    pub fn streams(&self) -> impl Iterator<Item = (StreamKey, u32, Epoch, Vec<LocalCursor>)> + '_ {
        self.streams.iter().map(|(k, s)| {
            let cursors = s
                .parts
                .iter()
                .map(|p| {
                    p.cursor.as_ref().map(|c| CursorReport {
                        member: c.member.clone(),
                        next: c.next,
                        live: c.live,
                    })
                })
                .collect();
            (k, s.partitions, s.epoch, cursors)
        })
    }

    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }

    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// One ANNOUNCE from `node` (its header session, kind and extensions).
    pub fn handle_announce(
        &mut self,
        now: Instant,
        node: NodeId,
        session: SessionId,
        kind: AnnounceKind,
        extensions: Extensions<'_>,
    ) {
        if kind == AnnounceKind::Leave {
            let changed = self.membership.handle_leave(node);
            self.rebalance(&changed);
            return;
        }
        let mut set = None;
        let mut members: Vec<MemberRepr<'_>> = Vec::new();
        let mut any = false;
        for ext in extensions {
            match MemberExt::parse(ext) {
                Ok(Some(MemberExt::Set(s))) => set = Some(s),
                Ok(Some(MemberExt::Member(m))) => members.push(m),
                Ok(Some(MemberExt::Commit(c))) => {
                    let key = CommitKey {
                        group: Arc::from(c.group),
                        topic: Arc::from(c.topic),
                        source: c.source,
                        partition: c.partition,
                    };
                    if self.commits.advance(key, c.offset, false) {
                        self.stats.commits_merged += 1;
                    }
                }
                Ok(None) => continue,
                Err(e) => {
                    self.stats.member_tlvs_malformed += 1;
                    log::debug!("malformed member extension node={node} error={e}");
                    return;
                }
            }
            any = true;
        }
        if any {
            self.stats.announcements_received += 1;
        }
        match set {
            Some(set) => {
                let changed = self
                    .membership
                    .handle_members(now, node, session, set, &members);
                self.rebalance(&changed);
            }
            None => self.membership.heard(now, node),
        }
        // A newcomer learns our members at once rather than an interval on.
        if kind == AnnounceKind::Join && self.membership.has_announced() {
            self.announce_members = true;
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let changed = self.membership.expire(now);
        self.rebalance(&changed);
        if self.next_periodic.is_some_and(|t| t <= now) {
            self.announce_members = true;
            self.next_periodic = Some(now + self.config().announce_interval);
        }
        if self.commit_due.is_some_and(|t| t <= now) {
            self.announce_commits = true;
            self.commit_due = None;
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_periodic,
            self.commit_due,
            self.membership.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether [`take_announcements`](Self::take_announcements) has
    /// something to send.
    pub fn wants_announce(&self) -> bool {
        self.announce_members || self.announce_commits
    }

    /// The ANNOUNCE extension bytes to send now, one entry per frame, each
    /// at most `budget` bytes: the member list (in parts, if it does not
    /// fit one frame) with the changed and some rotated committed offsets.
    pub fn take_announcements(&mut self, budget: usize) -> Vec<Vec<u8>> {
        let members = std::mem::take(&mut self.announce_members);
        let commits = std::mem::take(&mut self.announce_commits) || members;
        if !members && !commits {
            return Vec::new();
        }
        let mut frames: Vec<Vec<Vec<u8>>> = Vec::new();
        if members {
            let mut current: Vec<Vec<u8>> = Vec::new();
            let mut used = EXTENSION_HEADER_LEN + MEMBER_SET_LEN;
            for m in self.membership.local_reprs() {
                let mut tlv = Vec::new();
                if m.emit_to_vec(&mut tlv).is_err() {
                    continue;
                }
                if used + tlv.len() > budget && !current.is_empty() {
                    frames.push(std::mem::take(&mut current));
                    used = EXTENSION_HEADER_LEN + MEMBER_SET_LEN;
                }
                used += tlv.len();
                current.push(tlv);
            }
            frames.push(current);
        }
        let mut entries = self.commits.take_dirty();
        if members {
            let groups = self.membership.local_groups();
            let n = self.config().commit_refresh_entries;
            let rotated = self
                .commits
                .rotate(&groups, self.refresh_cursor.as_ref(), n);
            if let Some((k, _)) = rotated.last() {
                self.refresh_cursor = Some(k.clone());
            }
            entries.extend(rotated);
        }
        let member_parts = frames.len();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let version = self.membership.version();
        let parts = u16::try_from(member_parts).unwrap_or(u16::MAX);
        for (i, tlvs) in frames.into_iter().enumerate() {
            let mut bytes = Vec::new();
            let set = MemberSetRepr {
                version,
                part: u16::try_from(i).unwrap_or(u16::MAX),
                parts,
            };
            if set.emit_to_vec(&mut bytes).is_err() {
                continue;
            }
            for t in tlvs {
                bytes.extend_from_slice(&t);
            }
            out.push(bytes);
        }
        for (k, offset) in entries {
            let mut tlv = Vec::new();
            let repr = CommitRepr {
                source: k.source,
                partition: k.partition,
                offset,
                group: &k.group,
                topic: &k.topic,
            };
            if repr.emit_to_vec(&mut tlv).is_err() {
                continue;
            }
            match out.last_mut().filter(|f| f.len() + tlv.len() <= budget) {
                Some(f) => f.extend_from_slice(&tlv),
                None => out.push(tlv),
            }
        }
        self.stats.announcements_sent += out.len() as u64;
        out
    }
}
