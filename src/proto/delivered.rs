//! The records one [`Event::Deliver`](super::Event::Deliver) hands out: the
//! records of one topic from one DATA frame, as a view over the frame.
//!
//! One event per frame and topic, not per record: at 64 B records a frame
//! carries about twenty, and an event per record (moved through two queues,
//! with a reference count taken per key, value and topic name) cost the
//! receiving daemon more than the log write. The view keeps the frame's
//! `Bytes` and the rule the receiver applied (which topic, and the offset the
//! topic expected before the frame), so iterating yields exactly the records
//! the receiver accepted, without copying or allocating.

use bytes::Bytes;

use crate::wire::{Offset, RecordRepr, TopicId};

/// Records of one topic from one frame, in offset order, each exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredRecords {
    /// Back-to-back encoded records (a DATA frame's record area, or one
    /// reassembled record), validated on arrival.
    batch: Bytes,
    topic: TopicId,
    /// A record is delivered iff its offset is at or past this running
    /// mark, which then moves past it: the receiver's duplicate rule.
    from: Offset,
    count: usize,
}

impl DeliveredRecords {
    pub(super) fn new(batch: Bytes, topic: TopicId, from: Offset, count: usize) -> Self {
        DeliveredRecords {
            batch,
            topic,
            from,
            count,
        }
    }

    /// How many records [`iter`](Self::iter) yields.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, borrowed from the frame. `topic` of each is the
    /// sender's topic id; the event carries the name.
    pub fn iter(&self) -> DeliveredIter<'_> {
        DeliveredIter {
            rest: &self.batch,
            topic: self.topic,
            next: self.from,
            left: self.count,
        }
    }

    /// The frame bytes a record borrows from, so a consumer that must keep a
    /// record can take `Bytes::slice_ref` of its key or value.
    pub fn bytes(&self) -> &Bytes {
        &self.batch
    }
}

/// Iterator of [`DeliveredRecords`].
#[derive(Debug, Clone)]
pub struct DeliveredIter<'a> {
    rest: &'a [u8],
    topic: TopicId,
    next: Offset,
    left: usize,
}

impl<'a> Iterator for DeliveredIter<'a> {
    type Item = RecordRepr<'a>;

    fn next(&mut self) -> Option<RecordRepr<'a>> {
        while self.left > 0 {
            // invariant: the batch was validated on arrival; stop if not.
            let (rec, len) = RecordRepr::parse_prefix(self.rest).ok()?;
            self.rest = self.rest.get(len..)?;
            if rec.topic != self.topic || rec.declaration().is_some() || rec.offset < self.next {
                continue;
            }
            self.next = rec.offset.next();
            self.left -= 1;
            return Some(rec);
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::DECLARATION_TOPIC;

    fn batch(records: &[(u32, u64, &[u8])]) -> Bytes {
        let mut out = Vec::new();
        for &(topic, offset, value) in records {
            RecordRepr {
                topic: TopicId(topic),
                offset: Offset(offset),
                timestamp_ms: 7,
                key: b"",
                value,
            }
            .emit_to_vec(&mut out)
            .unwrap();
        }
        Bytes::from(out)
    }

    #[test]
    fn iterating_yields_only_the_topics_records_at_or_past_the_mark() {
        // A declaration, two topics interleaved, a duplicate of topic 1.
        let b = batch(&[
            (DECLARATION_TOPIC.0, 0, &2u32.to_be_bytes()),
            (1, 4, b"old"),
            (1, 5, b"a"),
            (2, 9, b"x"),
            (1, 5, b"dup"),
            (1, 6, b"b"),
        ]);
        let one = DeliveredRecords::new(b.clone(), TopicId(1), Offset(5), 2);
        let got: Vec<(u64, &[u8])> = one.iter().map(|r| (r.offset.0, r.value)).collect();
        assert_eq!(got, vec![(5, &b"a"[..]), (6, &b"b"[..])]);
        let two = DeliveredRecords::new(b, TopicId(2), Offset(0), 1);
        let got: Vec<u64> = two.iter().map(|r| r.offset.0).collect();
        assert_eq!(got, vec![9]);
    }

    #[test]
    fn a_torn_batch_ends_the_iteration_instead_of_panicking() {
        let b = batch(&[(1, 0, b"a"), (1, 1, b"b")]);
        let torn = b.slice(..b.len() - 1);
        let d = DeliveredRecords::new(torn, TopicId(1), Offset(0), 2);
        assert_eq!(d.iter().count(), 1);
    }
}
