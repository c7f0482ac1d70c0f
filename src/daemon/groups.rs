//! Glue between client subscriptions with a consumer group and
//! `proto::groups` (the decisions: membership, assignment, commits): which
//! connection a member is, feeding records through `route` and the log
//! through `catch_up`, and keeping committed offsets in the data directory
//! (`log::offsets`).
//!
//! A clustering subscription becomes a group member named
//! `<daemon name>.<n>`; it gets only the records its partitions' owner
//! rule gives it, from the group's committed offset on. Broadcast-mode
//! group subscriptions stay ordinary subscriptions (every record) and are
//! registered as broadcast members, so that `castlog groups` lists them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ipc::{ConnId, Response};
use super::Daemon;
use crate::log::offsets::{CommittedOffset, OffsetsStore};
use crate::netconf::NetConf;
use crate::proto::groups::{
    CommitKey, GroupEvent, GroupsConfig, MemberMode, MemberSpec, Route, StartPolicy, TopicFilter,
};
use crate::wire::ipc::{
    Commit, ConsumeMode, DeliveryRef, Failure, FailureKind, GapNotice, GapReason, StartFrom,
    Subscribe,
};
use crate::wire::{NodeId, Offset, RecordRepr};

/// Record bytes read from the log per catching-up stream per loop round.
const CATCH_UP_BYTES: usize = 256 << 10;
/// Bytes queued to a member's connection above which its records wait in
/// the log until it has read some (as for plain subscriptions).
const BACKLOG_LIMIT: usize = 8 << 20;
/// How often changed committed offsets are written to disk.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A local member: the subscription that receives its records.
#[derive(Debug, Clone)]
struct Member {
    conn: ConnId,
    sub_id: u32,
    group: Arc<str>,
    mode: MemberMode,
}

/// The daemon's consumer-group members and offset persistence.
#[derive(Default)]
pub(super) struct GroupMembers {
    members: BTreeMap<(Arc<str>, Arc<str>), Member>,
    next_id: u64,
    store: Option<OffsetsStore>,
    next_save: Option<Instant>,
    /// The table as last written, to write only groups that changed.
    saved: BTreeMap<CommitKey, Offset>,
    lagging: bool,
    /// Every stream still catching up waits for a member's socket to drain:
    /// the loop may sleep (the member's WRITABLE event wakes it).
    lagging_blocked: bool,
    /// Next offset of each log a group routes, for the lag report.
    log_ends: BTreeMap<(Arc<str>, NodeId), Offset>,
}

impl GroupMembers {
    /// Opens the offsets store and reads the committed offsets kept there.
    pub fn open(store: Option<OffsetsStore>) -> (GroupMembers, Vec<(CommitKey, Offset)>) {
        let mut loaded = Vec::new();
        if let Some(s) = &store {
            let (groups, errors) = s.load();
            for e in errors {
                ::log::warn!("committed offsets not loaded error={e}");
            }
            for (group, list) in groups {
                let group: Arc<str> = Arc::from(group);
                for c in list {
                    let key = CommitKey {
                        group: group.clone(),
                        topic: Arc::from(c.topic),
                        source: c.source,
                        partition: c.partition,
                    };
                    loaded.push((key, c.offset));
                }
            }
        }
        let saved = loaded.iter().cloned().collect();
        let members = GroupMembers {
            store,
            saved,
            ..GroupMembers::default()
        };
        (members, loaded)
    }

    /// Whether a member is catching up from the log and can take more now
    /// (poll without sleeping).
    pub fn is_lagging(&self) -> bool {
        self.lagging && !self.lagging_blocked
    }

    fn member_of(&self, conn: ConnId, group: &str) -> Option<(Arc<str>, Member)> {
        self.members
            .iter()
            .find(|((g, _), m)| m.conn == conn && g.as_ref() == group)
            .map(|((_, id), m)| (id.clone(), m.clone()))
    }
}

/// Consumer-group settings from netconf: the partitions of each topic rule.
pub(super) fn groups_config(netconf: &NetConf) -> GroupsConfig {
    GroupsConfig {
        partitions: netconf
            .topics
            .iter()
            .map(|t| (TopicFilter::parse(&t.pattern.to_string()), t.partitions))
            .collect(),
        ..GroupsConfig::default()
    }
}

impl Daemon {
    /// A SUBSCRIBE with a group: clustering members are handled here and
    /// answered `true`; broadcast ones are registered, then left to the
    /// ordinary subscriptions (`false`).
    pub(super) fn group_subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        s: &Subscribe,
    ) -> Result<bool, Failure> {
        let Some(group) = s.group.as_deref() else {
            return Ok(false);
        };
        let mode = match s.mode {
            ConsumeMode::Clustering => MemberMode::Clustering,
            _ => MemberMode::Broadcast,
        };
        let invalid = |message: String| Failure {
            kind: FailureKind::InvalidRequest,
            message,
        };
        if group.is_empty() {
            return Err(invalid(
                "empty group name: name the group or subscribe without one".into(),
            ));
        }
        let body = s.pattern.strip_suffix(".*").unwrap_or(&s.pattern);
        if s.pattern != "*" && (body.is_empty() || body.contains('*')) {
            return Err(invalid(format!(
                "bad topic pattern {:?}: use an exact name, prefix.* or *",
                s.pattern
            )));
        }
        if self.group_members.member_of(conn, group).is_some() {
            return Err(invalid(format!(
                "this connection is already a member of group {group:?}; use another connection"
            )));
        }
        self.group_members.next_id += 1;
        let id: Arc<str> = Arc::from(format!("{}.{}", self.name, self.group_members.next_id));
        let start = match s.from {
            StartFrom::Latest => StartPolicy::Latest,
            StartFrom::Offset(o) => StartPolicy::At(o),
            _ => StartPolicy::Earliest,
        };
        let spec = MemberSpec {
            group: Arc::from(group),
            member: id.clone(),
            patterns: vec![TopicFilter::parse(&s.pattern)],
            mode,
            auto_commit: false,
            start,
        };
        self.node
            .consumers_mut()
            .join(now, spec)
            .map_err(|e| invalid(e.to_string()))?;
        ::log::info!("group member joined group={group} member={id} mode={mode:?}");
        // Logs that exist already: the member catches up on them from the
        // committed offsets even if no record flows.
        let filter = TopicFilter::parse(&s.pattern);
        for (topic, source) in self.log.logs() {
            if !filter.matches(&topic) {
                continue;
            }
            let Ok(next) = self.log.log(&topic, source).map(|l| l.next_offset()) else {
                continue;
            };
            self.node.consumers_mut().open_streams(&topic, source, next);
            let end = self
                .group_members
                .log_ends
                .entry((Arc::from(topic.as_str()), source))
                .or_insert(Offset(0));
            *end = (*end).max(next);
        }
        self.group_members.lagging = true;
        self.group_members.members.insert(
            (Arc::from(group), id),
            Member {
                conn,
                sub_id: s.sub_id,
                group: Arc::from(group),
                mode,
            },
        );
        Ok(mode == MemberMode::Clustering)
    }

    /// An UNSUBSCRIBE or a closed connection (`sub_id` None: all of them).
    pub(super) fn group_unsubscribe(&mut self, now: Instant, conn: ConnId, sub_id: Option<u32>) {
        let gone: Vec<(Arc<str>, Arc<str>)> = self
            .group_members
            .members
            .iter()
            .filter(|(_, m)| m.conn == conn && sub_id.is_none_or(|s| s == m.sub_id))
            .map(|(k, _)| k.clone())
            .collect();
        for (group, id) in gone {
            self.group_members
                .members
                .remove(&(group.clone(), id.clone()));
            self.node.consumers_mut().leave(now, &group, &id);
            ::log::info!("group member left group={group} member={id}");
        }
    }

    /// A COMMIT: `true` when it was a clustering member's (applied to the
    /// group's partitions); `false` leaves it to the ordinary subscriptions.
    pub(super) fn group_commit(&mut self, now: Instant, conn: ConnId, c: &Commit) -> bool {
        let Some((id, m)) = self.group_members.member_of(conn, &c.group) else {
            return false;
        };
        let res = self
            .node
            .consumers_mut()
            .commit(now, &c.group, &id, &c.topic, c.source, c.offset);
        if let Err(e) = res {
            ::log::warn!("commit refused group={} member={id} error={e}", c.group);
        }
        m.mode == MemberMode::Clustering
    }

    /// A run of records of one (topic, source) just appended to the log, in
    /// offset order: each goes to the owning member of every group that has
    /// members here. The groups and the log end are looked up once per run.
    pub(super) fn group_records(
        &mut self,
        topic: &str,
        source: NodeId,
        source_name: Option<&str>,
        records: &[RecordRepr<'_>],
    ) {
        if self.group_members.members.is_empty() {
            return;
        }
        let Some(last) = records.last() else {
            return;
        };
        let groups = self.node.consumers().local_groups_for(topic);
        if groups.is_empty() {
            return;
        }
        let end = self
            .group_members
            .log_ends
            .entry((Arc::from(topic), source))
            .or_insert(Offset(0));
        *end = (*end).max(last.offset.next());
        for group in groups {
            for r in records {
                let route =
                    self.node
                        .consumers_mut()
                        .route(&group, topic, source, r.offset, Some(r.key));
                match route {
                    Route::Deliver { member, .. } => {
                        self.deliver_to(
                            &group,
                            &member,
                            topic,
                            source,
                            source_name,
                            r.offset,
                            r.timestamp_ms,
                            r.key,
                            r.value,
                        );
                    }
                    Route::Hold { .. } => self.group_members.lagging = true,
                    _ => {}
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_to(
        &mut self,
        group: &Arc<str>,
        member: &Arc<str>,
        topic: &str,
        source: NodeId,
        source_name: Option<&str>,
        offset: Offset,
        timestamp_ms: u64,
        key: &[u8],
        value: &[u8],
    ) {
        let Some(m) = self
            .group_members
            .members
            .get(&(group.clone(), member.clone()))
        else {
            return;
        };
        let conn = m.conn;
        let sub_id = m.sub_id;
        if self.ipc.backlog(conn) >= BACKLOG_LIMIT {
            // This one was routed to it already; what follows waits in the log.
            self.node.consumers_mut().pause(group, member);
            self.group_members.lagging = true;
        }
        self.ipc.send_record(
            conn,
            &DeliveryRef {
                sub_id,
                topic,
                source,
                source_name,
                offset,
                timestamp_ms,
                key,
                value,
            },
        );
    }

    /// After every loop round: log the groups' events, feed catching-up
    /// members from the log (a bounded amount), save changed offsets.
    pub(super) fn group_flush(&mut self, now: Instant) {
        while let Some(ev) = self.node.consumers_mut().poll_event() {
            match ev {
                GroupEvent::Rebalanced {
                    group,
                    epoch,
                    members,
                } => ::log::info!(
                    "group rebalanced group={group} epoch={} members={members}",
                    epoch.number
                ),
                GroupEvent::Assigned {
                    group,
                    member,
                    topic,
                    source,
                    partition,
                    from,
                    catch_up,
                    ..
                } => {
                    ::log::debug!(
                        "partition assigned group={group} member={member} topic={topic} source={source} partition={partition} from={from} catch_up={catch_up}"
                    );
                    if catch_up {
                        self.group_members.lagging = true;
                    }
                }
                GroupEvent::Revoked {
                    group,
                    member,
                    topic,
                    source,
                    partition,
                    ..
                } => ::log::debug!(
                    "partition revoked group={group} member={member} topic={topic} source={source} partition={partition}"
                ),
            }
        }
        if self.group_members.lagging {
            self.group_catch_up();
        }
        self.save_offsets(now, false);
    }

    fn group_catch_up(&mut self) {
        let mut still = false;
        let mut progressed = false;
        for (group, topic, source, from) in self.node.consumers().catching_up() {
            // A member that cannot take more holds the stream's feed back.
            let backed_up = self
                .node
                .consumers()
                .catching_up_members(&group, &topic, source)
                .iter()
                .filter_map(|id| self.group_members.members.get(&(group.clone(), id.clone())))
                .any(|m| self.ipc.backlog(m.conn) >= BACKLOG_LIMIT);
            if backed_up {
                still = true;
                continue;
            }
            progressed = true;
            let Ok(log) = self.log.log(&topic, source) else {
                continue;
            };
            let mut retention_gap = None;
            let read = match log.read(from, CATCH_UP_BYTES) {
                Err(crate::log::Error::BelowRetention {
                    requested,
                    earliest,
                }) => {
                    retention_gap = Some((requested, earliest));
                    log.read(earliest, CATCH_UP_BYTES)
                }
                other => other,
            };
            if let Some((requested, earliest)) = retention_gap {
                self.group_gap(
                    &group,
                    &topic,
                    source,
                    requested,
                    earliest,
                    GapReason::Retention,
                );
            }
            let batch = match read {
                Ok(b) => b,
                Err(e) => {
                    ::log::warn!("group catch-up read failed topic={topic} source={source} offset={from} error={e}");
                    continue;
                }
            };
            if let Some(hole) = &batch.hole {
                self.group_gap(
                    &group,
                    &topic,
                    source,
                    hole.start,
                    hole.end,
                    GapReason::Unavailable,
                );
            }
            let name = self.loop_state.names.get(&source).cloned();
            if let Ok(records) = batch.records() {
                for r in records {
                    let route = self.node.consumers_mut().catch_up(
                        &group,
                        &topic,
                        source,
                        r.offset,
                        Some(r.key),
                    );
                    if let Route::Deliver { member, .. } = route {
                        self.deliver_to(
                            &group,
                            &member,
                            &topic,
                            source,
                            name.as_deref(),
                            r.offset,
                            r.timestamp_ms,
                            r.key,
                            r.value,
                        );
                    }
                }
            }
            if self
                .node
                .consumers()
                .catch_up_from(&group, &topic, source)
                .is_some()
                && batch.next_offset > from
            {
                still = true;
            }
        }
        self.group_members.lagging = still;
        self.group_members.lagging_blocked = still && !progressed;
    }

    /// Tells the clustering members of `group` on this stream that offsets
    /// `from..to` will not come.
    fn group_gap(
        &mut self,
        group: &Arc<str>,
        topic: &str,
        source: NodeId,
        from: Offset,
        to: Offset,
        reason: GapReason,
    ) {
        let targets: Vec<(ConnId, u32)> = self
            .group_members
            .members
            .values()
            .filter(|m| &m.group == group && m.mode == MemberMode::Clustering)
            .map(|m| (m.conn, m.sub_id))
            .collect();
        for (conn, sub_id) in targets {
            self.ipc.send(
                conn,
                &Response::Gap(GapNotice {
                    sub_id,
                    topic: topic.to_string(),
                    source,
                    from,
                    to,
                    reason,
                }),
            );
        }
    }

    /// Writes the groups whose committed offsets changed, at most every
    /// [`SAVE_EVERY`] (or now, with `force`: on shutdown).
    pub(super) fn save_offsets(&mut self, now: Instant, force: bool) {
        if !force && self.group_members.next_save.is_some_and(|t| t > now) {
            return;
        }
        self.group_members.next_save = Some(now + SAVE_EVERY);
        let Some(store) = self.group_members.store.clone() else {
            return;
        };
        let table: BTreeMap<CommitKey, Offset> = self
            .node
            .consumers()
            .commits()
            .iter()
            .map(|(k, o)| (k.clone(), o))
            .collect();
        let changed: BTreeSet<Arc<str>> = table
            .iter()
            .filter(|(k, o)| self.group_members.saved.get(*k) != Some(*o))
            .map(|(k, _)| k.group.clone())
            .collect();
        for group in changed {
            let entries: Vec<CommittedOffset> = table
                .iter()
                .filter(|(k, _)| k.group == group)
                .map(|(k, o)| CommittedOffset {
                    topic: k.topic.to_string(),
                    source: k.source,
                    partition: k.partition,
                    offset: *o,
                })
                .collect();
            if let Err(e) = store.save(&group, &entries) {
                ::log::warn!("committed offsets not saved group={group} error={e}");
                continue;
            }
            for (k, o) in table.iter().filter(|(k, _)| k.group == group) {
                self.group_members.saved.insert(k.clone(), *o);
            }
        }
    }

    /// `castlog groups`: groups, members, assignment, committed offsets and
    /// lag per partition, as JSON (inside the stats document).
    pub(super) fn groups_json(&self) -> serde_json::Value {
        let consumers = self.node.consumers();
        let node = self.node_id;
        let mut groups = Vec::new();
        let mut topics_of: BTreeMap<Arc<str>, BTreeSet<(Arc<str>, NodeId)>> = BTreeMap::new();
        for (k, _) in consumers.commits().iter() {
            topics_of
                .entry(k.group.clone())
                .or_default()
                .insert((k.topic.clone(), k.source));
        }
        for ((g, t, s), ..) in consumers.streams() {
            topics_of.entry(g).or_default().insert((t, s));
        }
        let mut rows = Vec::new();
        // Groups with members, and groups with only committed offsets left.
        let names: BTreeSet<Arc<str>> = consumers
            .membership()
            .views()
            .keys()
            .chain(topics_of.keys())
            .cloned()
            .collect();
        for g in &names {
            let view = consumers.membership().view(g).cloned().unwrap_or_default();
            let members: Vec<serde_json::Value> = view
                .members
                .iter()
                .map(|(k, info)| {
                    serde_json::json!({
                        "node": k.node.to_string(),
                        "member": &*k.member,
                        "local": k.node == node,
                        "mode": match info.mode {
                            MemberMode::Clustering => "clustering",
                            MemberMode::Broadcast => "broadcast",
                            MemberMode::Unknown(_) => "unknown",
                        },
                        "patterns": info.patterns.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut partitions = Vec::new();
            for (topic, source) in topics_of.get(g).cloned().unwrap_or_default() {
                let owners = consumers.assignment(g, &topic);
                for (p, owner) in (0u32..).zip(owners) {
                    let committed = consumers.committed(g, &topic, source, p);
                    rows.push((topic.clone(), source, p, committed, owner));
                }
            }
            for (topic, source, p, committed, owner) in rows.drain(..) {
                let end = self
                    .group_members
                    .log_ends
                    .get(&(topic.clone(), source))
                    .copied();
                let lag = match (end, committed) {
                    (Some(e), Some(c)) => Some(e.0.saturating_sub(c.0)),
                    (Some(e), None) => Some(e.0),
                    _ => None,
                };
                partitions.push(serde_json::json!({
                    "topic": &*topic,
                    "source": source.to_string(),
                    "partition": p,
                    "owner": owner.map(|o| format!("{}/{}", o.node, o.member)),
                    "committed": committed.map(|c| c.0),
                    "log_end": end.map(|e| e.0),
                    "lag": lag,
                }));
            }
            groups.push(serde_json::json!({
                "group": &**g,
                "epoch": view.epoch.number,
                "members": members,
                "partitions": partitions,
            }));
        }
        serde_json::json!(groups)
    }
}

/// Sets up consumer groups at start: the node's group settings from netconf,
/// and the committed offsets kept in `data_dir/offsets`.
pub(super) fn open_members(
    data_dir: &std::path::Path,
    netconf: &NetConf,
    node: &mut crate::proto::Node,
) -> GroupMembers {
    let store = match OffsetsStore::open(&data_dir.join("offsets")) {
        Ok(s) => Some(s),
        Err(e) => {
            ::log::warn!("committed offsets will not be kept error={e}");
            None
        }
    };
    let (members, loaded) = GroupMembers::open(store);
    let id = node.id();
    *node.consumers_mut() = crate::proto::groups::ConsumerGroups::new(id, groups_config(netconf));
    for (key, offset) in loaded {
        node.consumers_mut().restore_commit(key, offset);
    }
    members
}
