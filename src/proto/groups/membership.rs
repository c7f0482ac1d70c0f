//! `GroupMembership`: who is in which consumer group, across daemons.
//!
//! Local members are registered by the daemon; remote ones are learned from
//! the member lists other daemons announce. A daemon's list replaces the
//! previous one whole (state, not deltas, so a lost announcement is
//! repaired by the next), and a daemon not heard for `member_expiry` loses
//! its members. From the live members each group gets a sorted *view*;
//! every change of a group's view bumps its assignment epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::{assign::stable_hash, Epoch, GroupsConfig, MemberKey, TopicFilter};
use crate::wire::member::{MemberMode, MemberRepr, MemberSetRepr};
use crate::wire::{NodeId, SessionId};

/// What is known of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub mode: MemberMode,
    pub patterns: Vec<TopicFilter>,
}

impl MemberInfo {
    /// Whether this member shares `topic` by partition.
    pub fn takes_partitions_of(&self, topic: &str) -> bool {
        self.mode == MemberMode::Clustering && self.patterns.iter().any(|p| p.matches(topic))
    }
}

/// One group's live members, sorted by key, and its epoch.
#[derive(Debug, Clone, Default)]
pub struct GroupView {
    pub epoch: Epoch,
    pub members: BTreeMap<MemberKey, MemberInfo>,
}

impl GroupView {
    /// Sorted clustering members subscribed to `topic`: the rendezvous
    /// candidates.
    pub fn candidates(&self, topic: &str) -> Vec<MemberKey> {
        self.members
            .iter()
            .filter(|(_, info)| info.takes_partitions_of(topic))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Stable digest of the member list, so that two daemons can tell
    /// whether their views of one epoch number agree.
    fn digest(members: &BTreeMap<MemberKey, MemberInfo>) -> u64 {
        let mut bytes = Vec::new();
        for (k, info) in members {
            bytes.extend_from_slice(&k.node.0.to_be_bytes());
            bytes.extend_from_slice(k.member.as_bytes());
            bytes.push(0xff);
            bytes.push(info.mode.code());
            for p in &info.patterns {
                bytes.extend_from_slice(p.as_str().as_bytes());
                bytes.push(0xfe);
            }
        }
        stable_hash(&bytes)
    }
}

struct RemoteNode {
    session: SessionId,
    version: u64,
    last_heard: Instant,
    members: BTreeMap<(Arc<str>, Arc<str>), MemberInfo>,
    /// Parts of a newer list being collected: version, part count, parts.
    assembling: Option<(u64, u16, BTreeMap<u16, Vec<OwnedMember>>)>,
}

#[derive(Debug, Clone)]
struct OwnedMember {
    group: Arc<str>,
    member: Arc<str>,
    info: MemberInfo,
}

/// Consumer-group membership of one daemon, sans-IO.
pub struct GroupMembership {
    node: NodeId,
    cfg: GroupsConfig,
    local: BTreeMap<(Arc<str>, Arc<str>), MemberInfo>,
    /// Bumped on every local change; announced with the list.
    version: u64,
    remote: BTreeMap<NodeId, RemoteNode>,
    /// Highest epoch announced per group.
    seen_epochs: BTreeMap<Arc<str>, u64>,
    views: BTreeMap<Arc<str>, GroupView>,
}

impl GroupMembership {
    pub fn new(node: NodeId, cfg: GroupsConfig) -> GroupMembership {
        GroupMembership {
            node,
            cfg,
            local: BTreeMap::new(),
            version: 0,
            remote: BTreeMap::new(),
            seen_epochs: BTreeMap::new(),
            views: BTreeMap::new(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn config(&self) -> &GroupsConfig {
        &self.cfg
    }

    /// Adds or replaces a local member; returns the groups whose view
    /// changed.
    pub fn join(&mut self, group: Arc<str>, member: Arc<str>, info: MemberInfo) -> Vec<Arc<str>> {
        self.local.insert((group, member), info);
        self.version += 1;
        self.refresh()
    }

    /// Removes a local member; returns the groups whose view changed.
    pub fn leave(&mut self, group: &str, member: &str) -> Vec<Arc<str>> {
        let before = self.local.len();
        self.local
            .retain(|(g, m), _| !(g.as_ref() == group && m.as_ref() == member));
        if self.local.len() == before {
            return Vec::new();
        }
        self.version += 1;
        self.refresh()
    }

    pub fn is_local(&self, group: &str, member: &str) -> bool {
        self.local
            .keys()
            .any(|(g, m)| g.as_ref() == group && m.as_ref() == member)
    }

    pub fn local_member(&self, group: &str, member: &str) -> Option<&MemberInfo> {
        self.local
            .iter()
            .find(|((g, m), _)| g.as_ref() == group && m.as_ref() == member)
            .map(|(_, info)| info)
    }

    /// Whether this daemon has ever announced members (then it keeps
    /// announcing, so that peers also learn of an emptied list).
    pub fn has_announced(&self) -> bool {
        self.version > 0
    }

    /// Groups with at least one local member.
    pub fn local_groups(&self) -> BTreeSet<Arc<str>> {
        self.local.keys().map(|(g, _)| g.clone()).collect()
    }

    pub fn view(&self, group: &str) -> Option<&GroupView> {
        self.views.get(group)
    }

    pub fn views(&self) -> &BTreeMap<Arc<str>, GroupView> {
        &self.views
    }

    /// Nodes whose members we know, with when we last heard them.
    pub fn remote_nodes(&self) -> impl Iterator<Item = (NodeId, Instant)> + '_ {
        self.remote.iter().map(|(n, r)| (*n, r.last_heard))
    }

    /// Our member list as MEMBER TLV contents, with each group's epoch.
    pub fn local_reprs(&self) -> Vec<MemberRepr<'_>> {
        self.local
            .iter()
            .map(|((g, m), info)| MemberRepr {
                mode: info.mode,
                epoch: self.views.get(g).map_or(0, |v| v.epoch.number),
                group: g,
                member: m,
                patterns: info.patterns.iter().map(|p| p.as_str()).collect(),
            })
            .collect()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// A node said it is still there (any ANNOUNCE from it).
    pub fn heard(&mut self, now: Instant, node: NodeId) {
        if let Some(r) = self.remote.get_mut(&node) {
            r.last_heard = now;
        }
    }

    /// One ANNOUNCE's member-list part. Returns the groups whose view
    /// changed (when the part completed a newer list).
    pub fn handle_members(
        &mut self,
        now: Instant,
        node: NodeId,
        session: SessionId,
        set: MemberSetRepr,
        members: &[MemberRepr<'_>],
    ) -> Vec<Arc<str>> {
        for m in members {
            let e = self.seen_epochs.entry(Arc::from(m.group)).or_insert(0);
            *e = (*e).max(m.epoch);
        }
        let r = self.remote.entry(node).or_insert_with(|| RemoteNode {
            session,
            version: 0,
            last_heard: now,
            members: BTreeMap::new(),
            assembling: None,
        });
        r.last_heard = now;
        // A new session is a restarted daemon: its versions start over.
        let restarted = r.session != session;
        if !restarted && set.version <= r.version {
            return self.adopt_epochs();
        }
        if restarted {
            r.session = session;
            r.version = 0;
            r.assembling = None;
        }
        let fresh = match &r.assembling {
            Some((v, parts, _)) => *v != set.version || *parts != set.parts,
            None => true,
        };
        if fresh {
            r.assembling = Some((set.version, set.parts, BTreeMap::new()));
        }
        let owned: Vec<OwnedMember> = members
            .iter()
            .map(|m| OwnedMember {
                group: Arc::from(m.group),
                member: Arc::from(m.member),
                info: MemberInfo {
                    mode: m.mode,
                    patterns: m.patterns.iter().map(|p| TopicFilter::parse(p)).collect(),
                },
            })
            .collect();
        let complete = match &mut r.assembling {
            Some((_, parts, got)) => {
                got.insert(set.part, owned);
                got.len() == usize::from(*parts)
            }
            None => false,
        };
        if !complete {
            return Vec::new();
        }
        if let Some((_, _, got)) = r.assembling.take() {
            r.version = set.version;
            r.members = got
                .into_values()
                .flatten()
                .map(|m| ((m.group, m.member), m.info))
                .collect();
        }
        self.refresh()
    }

    /// A node left cleanly (ANNOUNCE leave): its members go at once.
    pub fn handle_leave(&mut self, node: NodeId) -> Vec<Arc<str>> {
        if self.remote.remove(&node).is_some() {
            self.refresh()
        } else {
            Vec::new()
        }
    }

    /// Drops the members of daemons silent for `member_expiry`.
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<str>> {
        let expiry = self.cfg.member_expiry;
        let before = self.remote.len();
        self.remote
            .retain(|_, r| now.saturating_duration_since(r.last_heard) < expiry);
        if self.remote.len() == before {
            return Vec::new();
        }
        self.refresh()
    }

    /// When the next remote daemon expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.remote
            .values()
            .map(|r| r.last_heard + self.cfg.member_expiry)
            .min()
    }

    /// Rebuilds every group's view; bumps the epoch of those that changed
    /// (to above both its own and every announced epoch, Lamport-style, so
    /// that epochs converge to one number once the views agree).
    fn refresh(&mut self) -> Vec<Arc<str>> {
        let mut next: BTreeMap<Arc<str>, BTreeMap<MemberKey, MemberInfo>> = BTreeMap::new();
        for ((g, m), info) in &self.local {
            next.entry(g.clone()).or_default().insert(
                MemberKey {
                    node: self.node,
                    member: m.clone(),
                },
                info.clone(),
            );
        }
        for (node, r) in &self.remote {
            for ((g, m), info) in &r.members {
                next.entry(g.clone()).or_default().insert(
                    MemberKey {
                        node: *node,
                        member: m.clone(),
                    },
                    info.clone(),
                );
            }
        }
        let mut changed = Vec::new();
        let names: BTreeSet<Arc<str>> = next.keys().chain(self.views.keys()).cloned().collect();
        for g in names {
            let members = next.remove(&g).unwrap_or_default();
            let old = self.views.get(&g);
            if old.is_some_and(|v| v.members == members) {
                continue;
            }
            let seen = self.seen_epochs.get(&g).copied().unwrap_or(0);
            let own = old.map_or(0, |v| v.epoch.number);
            let epoch = Epoch {
                number: own.saturating_add(1).max(seen),
                digest: GroupView::digest(&members),
            };
            changed.push(g.clone());
            if members.is_empty() {
                self.views.remove(&g);
            } else {
                self.views.insert(g, GroupView { epoch, members });
            }
        }
        let mut adopted = self.adopt_epochs();
        adopted.retain(|g| !changed.contains(g));
        changed.extend(adopted);
        changed
    }

    /// Takes higher epoch numbers that others announced for views that did
    /// not change here. The assignment does not change with them; only the
    /// number does. Returns nothing (no rebalance needed).
    fn adopt_epochs(&mut self) -> Vec<Arc<str>> {
        for (g, v) in self.views.iter_mut() {
            if let Some(seen) = self.seen_epochs.get(g) {
                v.epoch.number = v.epoch.number.max(*seen);
            }
        }
        Vec::new()
    }
}
