//! The deterministic rules every daemon applies on its own and that must
//! agree across hosts without a coordinator: the stable hash, a record's
//! partition, and a partition's owner (rendezvous hashing).
//!
//! Nothing here may use `std`'s `RandomState` (seeded per process) or
//! depend on map iteration order: the same inputs give the same answer on
//! every host, every build, every run.

use super::MemberKey;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, then splitmix64's finalizer: FNV alone mixes the
/// last bytes weakly (keys `k1`, `k2`, ... would land in neighbouring
/// buckets), the finalizer spreads every input bit over the output.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    finish(fnv1a(FNV_OFFSET, bytes))
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn finish(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The partition of a record: a stable hash of its key; a record without a
/// key (`None` or empty) goes round robin per source, and the round-robin
/// counter is the record's offset in its source's log. Why the offset:
/// every daemon must compute the same partition for a record with no
/// partition field on the wire, and the offset is dense per (source, topic),
/// so it *is* a per-source round-robin counter that all hosts agree on.
/// `partitions` of 0 is treated as 1.
pub fn partition_for(key: Option<&[u8]>, partitions: u32, round_robin_counter: u64) -> u32 {
    let n = u64::from(partitions.max(1));
    let h = match key {
        Some(k) if !k.is_empty() => stable_hash(k),
        _ => round_robin_counter,
    };
    // invariant: the remainder is below `n`, which came from a u32.
    u32::try_from(h % n).unwrap_or(0)
}

/// Rendezvous (highest-random-weight) score of one member for one
/// partition. A member's score does not depend on the other members, so a
/// join or leave moves only the partitions that the changed member wins or
/// loses (minimal reshuffling, as in Thaler & Ravishankar's HRW).
pub fn rendezvous_score(group: &str, topic: &str, partition: u32, member: &MemberKey) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, group.as_bytes());
    h = fnv1a(h, &[0xff]);
    h = fnv1a(h, topic.as_bytes());
    h = fnv1a(h, &[0xff]);
    h = fnv1a(h, &partition.to_be_bytes());
    h = fnv1a(h, &member.node.0.to_be_bytes());
    h = fnv1a(h, member.member.as_bytes());
    finish(h)
}

/// The owner of `partition` among `candidates` (sorted, deduplicated live
/// clustering members subscribed to the topic): the highest score; on a
/// (practically impossible) tie, the smaller key, so the answer never
/// depends on the order of the slice.
pub fn rendezvous_owner<'a>(
    group: &str,
    topic: &str,
    partition: u32,
    candidates: &'a [MemberKey],
) -> Option<&'a MemberKey> {
    candidates
        .iter()
        .map(|m| (rendezvous_score(group, topic, partition, m), m))
        .max_by(|(sa, ma), (sb, mb)| sa.cmp(sb).then_with(|| mb.cmp(ma)))
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeId;
    use std::sync::Arc;

    fn key(node: u64, m: &str) -> MemberKey {
        MemberKey {
            node: NodeId(node),
            member: Arc::from(m),
        }
    }

    #[test]
    fn stable_hash_is_pinned_across_builds() {
        // Pinned values: a change here changes every deployed assignment.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"a"), finish(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn keyed_records_always_get_the_same_partition() {
        for k in 0..100u32 {
            let key = format!("k{k}");
            let p = partition_for(Some(key.as_bytes()), 12, 0);
            assert_eq!(p, partition_for(Some(key.as_bytes()), 12, 999));
            assert!(p < 12);
        }
    }

    #[test]
    fn keyless_records_go_round_robin_by_offset() {
        let ps: Vec<u32> = (0..6).map(|o| partition_for(None, 3, o)).collect();
        assert_eq!(ps, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(partition_for(Some(b""), 3, 4), 1);
        assert_eq!(partition_for(Some(b"x"), 0, 4), 0);
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0u32; 8];
        for k in 0..8000u32 {
            let p = partition_for(Some(format!("key-{k}").as_bytes()), 8, 0);
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn owner_does_not_depend_on_candidate_order() {
        let a = vec![key(1, "a"), key(2, "b"), key(3, "c")];
        let mut b = a.clone();
        b.reverse();
        for p in 0..64 {
            assert_eq!(
                rendezvous_owner("g", "t", p, &a),
                rendezvous_owner("g", "t", p, &b)
            );
        }
        assert_eq!(rendezvous_owner("g", "t", 0, &[]), None);
    }

    #[test]
    fn a_leaving_member_moves_only_its_own_partitions() {
        let all = vec![key(1, "a"), key(2, "b"), key(3, "c"), key(3, "d")];
        let without_b: Vec<MemberKey> = all.iter().filter(|m| *m.member != *"b").cloned().collect();
        let mut moved = 0;
        for p in 0..256 {
            let before = rendezvous_owner("g", "t", p, &all).cloned();
            let after = rendezvous_owner("g", "t", p, &without_b).cloned();
            if before.as_ref().is_some_and(|m| *m.member == *"b") {
                moved += 1;
            } else {
                assert_eq!(before, after, "partition {p} moved needlessly");
            }
        }
        assert!((32..=96).contains(&moved), "b owned {moved} of 256");
    }
}
