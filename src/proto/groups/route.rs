//! Per (group, topic, source) stream: the owner of each partition under the
//! current view, and for partitions owned by a local member the cursor that
//! keeps delivery gap-free and in order across a rebalance.
//!
//! A cursor's `next` means "every record of this partition below `next` was
//! delivered to the member (or committed by the group)". A live cursor
//! takes records as they are routed; a catching-up one holds them while the
//! daemon feeds the log from `next` through `catch_up` until it meets the
//! live position.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::assign::rendezvous_owner;
use super::{Epoch, MemberKey};
use crate::wire::Offset;

#[derive(Debug, Clone)]
pub struct Cursor {
    pub member: Arc<str>,
    pub next: Offset,
    pub live: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Part {
    pub owner: Option<MemberKey>,
    /// Present when the owner is a local member.
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub partitions: u32,
    /// Next offset the live path will route: everything below it was routed.
    pub fed: Offset,
    pub parts: Vec<Part>,
    pub epoch: Epoch,
}

/// A change of one partition's owner, for the local members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Gained { partition: u32, member: Arc<str> },
    Lost { partition: u32, member: Arc<str> },
}

impl Stream {
    pub fn new(partitions: u32, fed: Offset, epoch: Epoch) -> Stream {
        Stream {
            partitions,
            fed,
            parts: vec![Part::default(); partitions.max(1) as usize],
            epoch,
        }
    }

    /// Recomputes owners from `candidates`; local gains get no cursor yet
    /// (the caller sets it from the committed offset).
    pub fn reassign(
        &mut self,
        group: &str,
        topic: &str,
        candidates: &[MemberKey],
        local: crate::wire::NodeId,
        epoch: Epoch,
    ) -> Vec<Change> {
        self.epoch = epoch;
        let mut changes = Vec::new();
        for (p, part) in (0u32..).zip(self.parts.iter_mut()) {
            let owner = rendezvous_owner(group, topic, p, candidates).cloned();
            if owner == part.owner {
                continue;
            }
            if let Some(c) = part.cursor.take() {
                changes.push(Change::Lost {
                    partition: p,
                    member: c.member,
                });
            }
            if let Some(o) = owner.as_ref().filter(|o| o.node == local) {
                changes.push(Change::Gained {
                    partition: p,
                    member: o.member.clone(),
                });
            }
            part.owner = owner;
        }
        changes
    }

    pub fn part_mut(&mut self, partition: u32) -> Option<&mut Part> {
        self.parts.get_mut(partition as usize)
    }

    /// Lowest `next` of the catching-up cursors: where the log feed starts.
    pub fn catch_up_from(&self) -> Option<Offset> {
        self.parts
            .iter()
            .filter_map(|p| p.cursor.as_ref())
            .filter(|c| !c.live)
            .map(|c| c.next)
            .min()
    }
}

/// (consumer group, topic, source).
pub type StreamKey = (Arc<str>, Arc<str>, crate::wire::NodeId);

type Sources = BTreeMap<crate::wire::NodeId, Stream>;

/// Streams by group, then topic, then source: nested so that the per-record
/// lookup borrows `&str`s instead of building an owned key.
#[derive(Debug, Default)]
pub struct StreamTable {
    groups: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Sources>>,
}

impl StreamTable {
    pub fn find(&self, group: &str, topic: &str, source: crate::wire::NodeId) -> Option<&Stream> {
        self.groups.get(group)?.get(topic)?.get(&source)
    }

    /// The stream and its key (the stored `Arc`s, cloned without allocating).
    pub fn find_mut(
        &mut self,
        group: &str,
        topic: &str,
        source: crate::wire::NodeId,
    ) -> Option<(StreamKey, &mut Stream)> {
        let g = self.groups.get_key_value(group)?.0.clone();
        let topics = self.groups.get_mut(group)?;
        let (t, _) = topics.get_key_value(topic)?;
        let t = t.clone();
        let stream = topics.get_mut(topic)?.get_mut(&source)?;
        Some(((g, t, source), stream))
    }

    pub fn contains(&self, key: &StreamKey) -> bool {
        self.find(&key.0, &key.1, key.2).is_some()
    }

    pub fn get_mut(&mut self, key: &StreamKey) -> Option<&mut Stream> {
        self.groups
            .get_mut(&key.0)?
            .get_mut(&key.1)?
            .get_mut(&key.2)
    }

    pub fn insert(&mut self, key: StreamKey, stream: Stream) {
        let (g, t, s) = key;
        self.groups
            .entry(g)
            .or_default()
            .entry(t)
            .or_default()
            .insert(s, stream);
    }

    pub fn remove(&mut self, key: &StreamKey) {
        let Some(topics) = self.groups.get_mut(&key.0) else {
            return;
        };
        if let Some(sources) = topics.get_mut(&key.1) {
            sources.remove(&key.2);
            if sources.is_empty() {
                topics.remove(&key.1);
            }
        }
        if topics.is_empty() {
            self.groups.remove(&key.0);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (StreamKey, &Stream)> {
        self.groups.iter().flat_map(|(g, topics)| {
            topics.iter().flat_map(move |(t, sources)| {
                sources
                    .iter()
                    .map(move |(s, st)| ((g.clone(), t.clone(), *s), st))
            })
        })
    }

    /// Keys of the streams of one group.
    pub fn keys_of(&self, group: &str) -> Vec<StreamKey> {
        self.iter()
            .filter(|(k, _)| &*k.0 == group)
            .map(|(k, _)| k)
            .collect()
    }

    /// The streams of one group.
    pub fn group_mut(&mut self, group: &str) -> impl Iterator<Item = &mut Stream> {
        self.groups
            .get_mut(group)
            .into_iter()
            .flat_map(|topics| topics.values_mut().flat_map(|s| s.values_mut()))
    }
}
