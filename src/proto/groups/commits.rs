//! Committed offsets: the table shared among daemons (max-merged, since an
//! offset only moves forward), and the per-member list of delivered but not
//! yet committed records that turns a client's per-(topic, source) commit
//! into per-partition offsets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::wire::{NodeId, Offset};

/// Which committed offset: (consumer group, topic, source node, partition).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitKey {
    pub group: Arc<str>,
    pub topic: Arc<str>,
    pub source: NodeId,
    pub partition: u32,
}

/// Committed offsets, each the next record the group has to process
/// (Kafka's convention). Merging takes the maximum, so the table converges
/// whatever the order, loss or repetition of the announcements carrying it.
#[derive(Debug, Default)]
pub struct CommitTable {
    offsets: BTreeMap<CommitKey, Offset>,
    /// Changed since the last announcement.
    dirty: BTreeSet<CommitKey>,
}

impl CommitTable {
    pub fn get(&self, key: &CommitKey) -> Option<Offset> {
        self.offsets.get(key).copied()
    }

    /// Raises the offset of `key` to `offset`; returns whether it moved.
    /// `local` entries are announced to the other daemons.
    pub fn advance(&mut self, key: CommitKey, offset: Offset, local: bool) -> bool {
        if self.offsets.get(&key).is_some_and(|o| *o >= offset) {
            return false;
        }
        if local {
            self.dirty.insert(key.clone());
        }
        self.offsets.insert(key, offset);
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = (&CommitKey, Offset)> {
        self.offsets.iter().map(|(k, o)| (k, *o))
    }

    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Entries changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<(CommitKey, Offset)> {
        let keys = std::mem::take(&mut self.dirty);
        keys.into_iter()
            .filter_map(|k| self.offsets.get(&k).map(|o| (k.clone(), *o)))
            .collect()
    }

    /// Up to `max` entries of `groups` after `after` (wrapping), for the
    /// periodic refresh that repairs lost announcements and teaches newly
    /// started daemons.
    pub fn rotate(
        &self,
        groups: &BTreeSet<Arc<str>>,
        after: Option<&CommitKey>,
        max: usize,
    ) -> Vec<(CommitKey, Offset)> {
        let wanted = |k: &&CommitKey| groups.contains(&k.group);
        let tail = self
            .offsets
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| *k > a));
        let head = self
            .offsets
            .iter()
            .filter(|(k, _)| after.is_some_and(|a| *k <= a));
        tail.chain(head)
            .filter(|(k, _)| wanted(k))
            .take(max)
            .map(|(k, o)| (k.clone(), *o))
            .collect()
    }
}

/// Most delivered-but-uncommitted records remembered per member; beyond
/// it the oldest are forgotten (safe: a forgotten record only means its
/// partition's offset is raised by a later commit instead).
pub const PENDING_MAX: usize = 1 << 16;

/// (offset, partition) of delivered records, in delivery order.
type Delivered = VecDeque<(Offset, u32)>;

/// What one local member was delivered and has not committed, per (topic,
/// source), in delivery order.
#[derive(Debug, Default)]
pub struct Pending {
    queues: BTreeMap<(Arc<str>, NodeId), Delivered>,
    len: usize,
}

impl Pending {
    /// Returns true when an old entry had to be forgotten.
    pub fn push(
        &mut self,
        topic: &Arc<str>,
        source: NodeId,
        offset: Offset,
        partition: u32,
    ) -> bool {
        let q = self.queues.entry((topic.clone(), source)).or_default();
        q.push_back((offset, partition));
        self.len += 1;
        if self.len > PENDING_MAX {
            if let Some(q) = self.queues.values_mut().max_by_key(|q| q.len()) {
                q.pop_front();
                self.len -= 1;
                return true;
            }
        }
        false
    }

    /// A commit of `next` (the next record to deliver) for (topic, source):
    /// the member has processed the record at `next - 1` and, since clients
    /// process in delivery order, everything delivered before it. Returns
    /// the highest processed offset + 1 per partition. Without an exact
    /// match, the last record delivered with an offset below `next` counts.
    pub fn resolve(&mut self, topic: &str, source: NodeId, next: Offset) -> BTreeMap<u32, Offset> {
        let mut out = BTreeMap::new();
        let key = (Arc::<str>::from(topic), source);
        let Some(q) = self.queues.get_mut(&key) else {
            return out;
        };
        let exact = q.iter().rposition(|(o, _)| o.0.saturating_add(1) == next.0);
        let cut = exact.or_else(|| q.iter().rposition(|(o, _)| *o < next));
        let Some(cut) = cut else {
            return out;
        };
        for (offset, partition) in q.drain(..=cut) {
            let e = out.entry(partition).or_insert(Offset(0));
            *e = (*e).max(offset.next());
            self.len -= 1;
        }
        if q.is_empty() {
            self.queues.remove(&key);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: u32) -> CommitKey {
        CommitKey {
            group: Arc::from("g"),
            topic: Arc::from("t"),
            source: NodeId(1),
            partition: p,
        }
    }

    #[test]
    fn commits_only_move_forward() {
        let mut t = CommitTable::default();
        assert!(t.advance(key(0), Offset(10), false));
        assert!(!t.advance(key(0), Offset(5), true));
        assert_eq!(t.get(&key(0)), Some(Offset(10)));
        assert!(!t.is_dirty());
        assert!(t.advance(key(0), Offset(11), true));
        assert_eq!(t.take_dirty(), vec![(key(0), Offset(11))]);
        assert!(!t.is_dirty());
    }

    #[test]
    fn a_commit_covers_what_was_delivered_before_it_not_what_came_after() {
        let mut p = Pending::default();
        let t: Arc<str> = Arc::from("t");
        // q@500 delivered live, then p@100 from a catch-up.
        p.push(&t, NodeId(1), Offset(500), 1);
        p.push(&t, NodeId(1), Offset(100), 2);
        let r = p.resolve("t", NodeId(1), Offset(501));
        assert_eq!(r, BTreeMap::from([(1, Offset(501))]));
        let r = p.resolve("t", NodeId(1), Offset(101));
        assert_eq!(r, BTreeMap::from([(2, Offset(101))]));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_commit_without_exact_match_takes_the_last_record_below_it() {
        let mut p = Pending::default();
        let t: Arc<str> = Arc::from("t");
        for o in [3, 5, 9] {
            p.push(&t, NodeId(1), Offset(o), (o % 2) as u32);
        }
        let r = p.resolve("t", NodeId(1), Offset(7));
        assert_eq!(r, BTreeMap::from([(1, Offset(6))]));
        assert_eq!(p.len(), 1);
        assert!(p.resolve("t", NodeId(2), Offset(7)).is_empty());
    }

    #[test]
    fn rotation_wraps_and_stays_in_the_asked_groups() {
        let mut t = CommitTable::default();
        for p in 0..5 {
            t.advance(key(p), Offset(1), false);
        }
        let mut other = key(0);
        other.group = Arc::from("h");
        t.advance(other, Offset(1), false);
        let groups = BTreeSet::from([Arc::<str>::from("g")]);
        let first = t.rotate(&groups, None, 3);
        assert_eq!(first.len(), 3);
        let next = t.rotate(&groups, first.last().map(|(k, _)| k), 3);
        let parts: Vec<u32> = next.iter().map(|(k, _)| k.partition).collect();
        assert_eq!(parts, vec![3, 4, 0]);
    }
}
