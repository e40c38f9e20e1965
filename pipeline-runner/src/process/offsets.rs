//! Which offsets may be stored: per partition, only up to the first record whose writes are
//! still in flight. Records finish out of order (writes run concurrently); an offset is
//! stored only when its record and every earlier one of its partition are done, so a crash
//! re-delivers, never skips.

use std::collections::{BTreeSet, HashMap};

/// The in-flight offsets of one partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    in_flight: BTreeSet<i64>,
    /// The highest offset dispatched so far.
    highest_dispatched: Option<i64>,
    /// The last offset handed to Kafka to store (the next offset to consume).
    stored: Option<i64>,
}

impl PartitionOffsets {
    /// A record was taken from the partition and its work started.
    pub fn dispatched(&mut self, offset: i64) {
        // Before anything finishes, the position to store is the first record's own offset.
        self.stored.get_or_insert(offset);
        self.in_flight.insert(offset);
        self.highest_dispatched = Some(self.highest_dispatched.map_or(offset, |h| h.max(offset)));
    }

    /// A record's work finished (written, dead-lettered or filtered). Returns the offset to
    /// store (the next one to consume) when it moved forward.
    pub fn finished(&mut self, offset: i64) -> Option<i64> {
        if !self.in_flight.remove(&offset) {
            // Not ours (dispatched before a rebalance took the partition away and gave it back).
            return None;
        }
        let next = match self.in_flight.first() {
            Some(lowest) => *lowest,
            None => self.highest_dispatched? + 1,
        };
        if self.stored.is_some_and(|stored| stored >= next) {
            return None;
        }
        self.stored = Some(next);
        Some(next)
    }

    /// Records still in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// The trackers of every partition this consumer owns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionOffsets>,
    /// Offsets that moved since the last [`OffsetTracker::take_to_store`], by partition.
    to_store: HashMap<i32, i64>,
}

impl OffsetTracker {
    /// A record was dispatched.
    pub fn dispatched(&mut self, partition: i32, offset: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .dispatched(offset);
    }

    /// A record finished; the offset to store for its partition, if it moved.
    pub fn finished(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let next = self.partitions.get_mut(&partition)?.finished(offset)?;
        self.to_store.insert(partition, next);
        Some(next)
    }

    /// The offsets to hand to Kafka now (one store call per turn, not one per record).
    pub fn take_to_store(&mut self) -> HashMap<i32, i64> {
        std::mem::take(&mut self.to_store)
    }

    /// Forgets partitions taken away by a rebalance: their late completions store nothing
    /// (the new owner re-reads from the last stored offset).
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        self.to_store.remove(&partition);
    }

    /// Records in flight over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionOffsets::in_flight)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_moves_one_by_one() {
        let mut offsets = PartitionOffsets::default();
        offsets.dispatched(10);
        offsets.dispatched(11);
        assert_eq!(offsets.finished(10), Some(11));
        assert_eq!(offsets.finished(11), Some(12));
    }

    #[test]
    fn out_of_order_completion_waits_for_the_earliest() {
        let mut offsets = PartitionOffsets::default();
        for offset in 0..4 {
            offsets.dispatched(offset);
        }
        assert_eq!(offsets.finished(2), None, "0 and 1 are still in flight");
        assert_eq!(offsets.finished(3), None);
        assert_eq!(offsets.finished(1), None, "0 is still in flight");
        assert_eq!(offsets.finished(0), Some(4), "everything up to 3 is done");
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compacted topics and transaction markers leave gaps.
        let mut offsets = PartitionOffsets::default();
        offsets.dispatched(5);
        offsets.dispatched(9);
        assert_eq!(offsets.finished(9), None);
        assert_eq!(offsets.finished(5), Some(10));
    }

    #[test]
    fn revoked_partitions_store_nothing() {
        let mut tracker = OffsetTracker::default();
        tracker.dispatched(0, 1);
        tracker.dispatched(1, 1);
        tracker.revoke(0);
        assert_eq!(tracker.finished(0, 1), None);
        assert_eq!(tracker.finished(1, 1), Some(2));
        assert_eq!(tracker.in_flight(), 0);
        assert_eq!(tracker.take_to_store(), HashMap::from([(1, 2)]));
        assert!(tracker.take_to_store().is_empty());
    }

    #[test]
    fn a_finish_without_dispatch_stores_nothing() {
        let mut offsets = PartitionOffsets::default();
        assert_eq!(offsets.finished(3), None);
    }
}
