//! Which offsets may be stored: per partition, only up to the first record whose writes are
//! still in flight. Records finish out of order (writes run concurrently); an offset is
//! stored only when its record and every earlier one of its partition are done, so a crash
//! re-delivers, never skips. Each offset is stored with the partition's progress as it stood
//! just before it (see [`CommittedProgress`]): the [`WriteClock`], so whoever resumes there
//! continues the same chain of write times, and the records written, dead-lettered and
//! filtered so far, so the counts are exact at every committed offset.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::{Offset, TopicPartitionList};
use rtdp_crds::{CommittedProgress, RecordCounts};

use super::writer::WriteClock;

/// What became of a record whose work finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Written to every table.
    Written,
    /// Sent to the dead-letter topic, with this reason label.
    DeadLettered(&'static str),
    /// Dropped by the filter.
    Filtered,
}

impl Finished {
    fn count(self) -> RecordCounts {
        let mut counts = RecordCounts::default();
        match self {
            Self::Written => counts.written = 1,
            Self::DeadLettered(_) => counts.dead_lettered = 1,
            Self::Filtered => counts.filtered = 1,
        }
        counts
    }
}

/// A dispatched record: the clock as it stood before it, its Kafka timestamp, and its
/// outcome once finished.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    clock_before: WriteClock,
    kafka_millis: i64,
    finished: Option<Finished>,
}

/// The in-flight offsets of one partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    /// Dispatched offsets from the first unfinished one on (later ones may have finished).
    in_flight: BTreeMap<i64, InFlight>,
    /// The highest offset dispatched so far.
    highest_dispatched: Option<i64>,
    /// The clock after the highest dispatched record.
    clock: WriteClock,
    /// The records before the first in-flight one, by outcome.
    settled: RecordCounts,
    /// The Kafka timestamp (ms) of the newest written record before the first in-flight
    /// one; 0 when none was.
    last_written_millis: i64,
    /// The dead-lettered records before the first in-flight one, by reason label.
    dead_lettered_by_reason: BTreeMap<String, i64>,
    /// The last offset handed to Kafka to store (the next offset to consume).
    stored: Option<i64>,
}

impl PartitionOffsets {
    /// A partition resuming from a committed offset: its chain of write times continues at
    /// `clock` and its counts at `counts`.
    pub fn resuming(clock: WriteClock, counts: RecordCounts, last_written_millis: i64) -> Self {
        Self {
            clock,
            settled: counts,
            last_written_millis,
            ..Self::default()
        }
    }

    /// Continues the committed counts of dead letters by reason.
    pub fn with_dead_letter_reasons(mut self, by_reason: BTreeMap<String, i64>) -> Self {
        self.dead_lettered_by_reason = by_reason;
        self
    }

    /// A record was taken from the partition and its work started; returns its write time.
    pub fn dispatched(&mut self, offset: i64, kafka_timestamp_millis: i64) -> i64 {
        // Before anything finishes, the position to store is the first record's own offset.
        self.stored.get_or_insert(offset);
        self.in_flight.insert(
            offset,
            InFlight {
                clock_before: self.clock,
                kafka_millis: kafka_timestamp_millis,
                finished: None,
            },
        );
        self.highest_dispatched = Some(self.highest_dispatched.map_or(offset, |h| h.max(offset)));
        self.clock.next(kafka_timestamp_millis)
    }

    /// A record's work finished. Returns the offset to store (the next one to consume) and
    /// the progress before it, when it moved forward.
    pub fn finished(&mut self, offset: i64, outcome: Finished) -> Option<(i64, CommittedProgress)> {
        // Not ours when absent (dispatched before a rebalance took the partition away).
        let record = self.in_flight.get_mut(&offset)?;
        if record.finished.is_some() {
            return None;
        }
        record.finished = Some(outcome);
        // Everything finished from the front on is settled: counted, and no longer in flight.
        while let Some(entry) = self.in_flight.first_entry() {
            let Some(finished) = entry.get().finished else {
                break;
            };
            match finished {
                Finished::Written => {
                    self.last_written_millis =
                        self.last_written_millis.max(entry.get().kafka_millis);
                }
                Finished::DeadLettered(reason) => {
                    *self
                        .dead_lettered_by_reason
                        .entry(reason.to_string())
                        .or_default() += 1;
                }
                Finished::Filtered => {}
            }
            entry.remove();
            self.settled = self.settled.plus(finished.count());
        }
        let (next, clock) = match self.in_flight.first_key_value() {
            Some((lowest, record)) => (*lowest, record.clock_before),
            None => (self.highest_dispatched? + 1, self.clock),
        };
        if self.stored.is_some_and(|stored| stored >= next) {
            return None;
        }
        self.stored = Some(next);
        Some((
            next,
            CommittedProgress {
                write_time_micros: Some(clock.last_micros()),
                records: self.settled,
                last_written_millis: Some(self.last_written_millis),
                dead_lettered_by_reason: self.dead_lettered_by_reason.clone(),
            },
        ))
    }

    /// Records still in flight (dispatched and not finished).
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .values()
            .filter(|record| record.finished.is_none())
            .count()
    }
}

/// Per partition, the offset to store next (the next one to consume) and the progress to
/// commit beside it.
pub type Moved = HashMap<i32, (i64, CommittedProgress)>;

/// The offsets that moved since they were last handed to Kafka, shared by the loop (which
/// fills it as records finish, and hands it to Kafka every turn of its timer) and the
/// consumer's rebalance callback (which, when partitions are revoked, commits theirs at once:
/// the new owner starts after every record this one finished).
#[derive(Clone, Debug, Default)]
pub struct ToStore(Arc<Mutex<Moved>>);

impl ToStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, Moved> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes every partition's moved offset.
    pub fn take(&self) -> Moved {
        std::mem::take(&mut *self.entries())
    }

    /// Takes the moved offsets of `partitions`.
    pub fn take_partitions(&self, partitions: &[i32]) -> Moved {
        let mut entries = self.entries();
        partitions
            .iter()
            .filter_map(|partition| Some((*partition, entries.remove(partition)?)))
            .collect()
    }
}

/// `moved` as a partition list of `topic` for Kafka: each offset with its progress as the
/// offset's metadata. `store_offsets` and `commit` take exactly the next offset to consume.
pub fn partition_list(topic: &str, moved: &Moved) -> TopicPartitionList {
    let mut positions = TopicPartitionList::with_capacity(moved.len());
    for (partition, (next, progress)) in moved {
        if let Err(error) = positions.add_partition_offset(topic, *partition, Offset::Offset(*next))
        {
            tracing::warn!(%error, partition, next, "an offset could not be recorded");
            continue;
        }
        // The progress travels with the offset (committed as its metadata).
        if let Some(mut element) = positions.find_partition(topic, *partition) {
            element.set_metadata(progress.encode());
        }
    }
    positions
}

/// The trackers of every partition this consumer owns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionOffsets>,
    /// Offsets (and progress) that moved and were not handed to Kafka yet.
    to_store: ToStore,
}

impl OffsetTracker {
    /// A tracker whose moved offsets go to `to_store` (shared with the consumer's callbacks).
    pub fn new(to_store: ToStore) -> Self {
        Self {
            partitions: HashMap::new(),
            to_store,
        }
    }

    /// True when the partition's first record since it was assigned was seen.
    pub fn is_tracking(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Starts tracking a partition resuming at `clock` and the committed `progress`.
    pub fn start(&mut self, partition: i32, clock: WriteClock, progress: CommittedProgress) {
        self.partitions.insert(
            partition,
            PartitionOffsets::resuming(
                clock,
                progress.records,
                progress.last_written_millis.unwrap_or(0),
            )
            .with_dead_letter_reasons(progress.dead_lettered_by_reason),
        );
    }

    /// A record was dispatched; returns its write time.
    pub fn dispatched(&mut self, partition: i32, offset: i64, kafka_timestamp_millis: i64) -> i64 {
        self.partitions
            .entry(partition)
            .or_default()
            .dispatched(offset, kafka_timestamp_millis)
    }

    /// A record finished; the offset to store for its partition, if it moved.
    pub fn finished(&mut self, partition: i32, offset: i64, outcome: Finished) -> Option<i64> {
        let (next, progress) = self
            .partitions
            .get_mut(&partition)?
            .finished(offset, outcome)?;
        self.to_store.entries().insert(partition, (next, progress));
        Some(next)
    }

    /// The offsets to hand to Kafka now, with the progress to commit beside each (one store
    /// call per turn, not one per record).
    pub fn take_to_store(&mut self) -> Moved {
        self.to_store.take()
    }

    /// Forgets a partition taken away by a rebalance (what it had finished was committed by
    /// the rebalance callback): its records still in flight are abandoned on purpose, their
    /// late completions store nothing, and the new owner applies them again (writes are
    /// idempotent). Returns how many were abandoned.
    pub fn revoke(&mut self, partition: i32) -> usize {
        self.to_store.entries().remove(&partition);
        self.partitions
            .remove(&partition)
            .map_or(0, |offsets| offsets.in_flight())
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

    use Finished::Written;

    fn resumed_clock(progress: CommittedProgress) -> WriteClock {
        WriteClock::resumed_at(progress.write_time_micros.expect("the clock is committed"))
    }

    fn next_offset(result: Option<(i64, CommittedProgress)>) -> Option<i64> {
        result.map(|(next, _)| next)
    }

    #[test]
    fn in_order_completion_moves_one_by_one() {
        let mut offsets = PartitionOffsets::default();
        offsets.dispatched(10, 1);
        offsets.dispatched(11, 1);
        assert_eq!(next_offset(offsets.finished(10, Written)), Some(11));
        assert_eq!(next_offset(offsets.finished(11, Written)), Some(12));
    }

    #[test]
    fn out_of_order_completion_waits_for_the_earliest() {
        let mut offsets = PartitionOffsets::default();
        for offset in 0..4 {
            offsets.dispatched(offset, 1);
        }
        assert_eq!(
            offsets.finished(2, Written),
            None,
            "0 and 1 are still in flight"
        );
        assert_eq!(offsets.finished(3, Written), None);
        assert_eq!(offsets.finished(1, Written), None, "0 is still in flight");
        assert_eq!(
            next_offset(offsets.finished(0, Written)),
            Some(4),
            "everything up to 3 is done"
        );
    }

    #[test]
    fn the_stored_clock_is_the_one_before_the_stored_offset() {
        let mut offsets = PartitionOffsets::default();
        let first = offsets.dispatched(0, 7);
        let second = offsets.dispatched(1, 7);
        offsets.dispatched(2, 7);
        // Offset 1 is still in flight: resuming at 1 must continue after offset 0's time.
        let (next, progress) = offsets.finished(0, Written).expect("moved");
        assert_eq!(next, 1);
        let mut resumed = resumed_clock(progress);
        assert_eq!(resumed.next(7), second);
        assert!(second > first);
        offsets.finished(2, Written);
        let (next, progress) = offsets.finished(1, Written).expect("moved");
        assert_eq!(next, 3);
        let mut resumed = resumed_clock(progress);
        assert!(
            resumed.next(7) > second + 1,
            "resumes after offset 2's time"
        );
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compacted topics and transaction markers leave gaps.
        let mut offsets = PartitionOffsets::default();
        offsets.dispatched(5, 1);
        offsets.dispatched(9, 1);
        assert_eq!(offsets.finished(9, Written), None);
        assert_eq!(next_offset(offsets.finished(5, Written)), Some(10));
    }

    #[test]
    fn a_revoke_takes_what_its_partitions_finished_and_abandons_what_is_in_flight() {
        let to_store = ToStore::default();
        let mut tracker = OffsetTracker::new(to_store.clone());
        for offset in 0..3 {
            tracker.dispatched(0, offset, 1);
            tracker.dispatched(1, offset, 1);
        }
        tracker.finished(0, 0, Written);
        tracker.finished(0, 1, Written);
        tracker.finished(1, 0, Written);
        // The rebalance callback takes partition 0's finished offset to commit it...
        let revoked = to_store.take_partitions(&[0]);
        let commit = partition_list("listings", &revoked);
        let element = commit
            .find_partition("listings", 0)
            .expect("partition 0 is committed");
        assert_eq!(element.offset(), Offset::Offset(2));
        assert!(
            element.metadata().contains("rtdp.written=2"),
            "the progress travels with it: {}",
            element.metadata()
        );
        // ... and the loop then abandons its record in flight; partition 1 is untouched.
        assert_eq!(tracker.revoke(0), 1);
        assert_eq!(tracker.finished(0, 2, Written), None);
        let stored: Vec<(i32, i64)> = tracker
            .take_to_store()
            .into_iter()
            .map(|(partition, (next, _))| (partition, next))
            .collect();
        assert_eq!(stored, vec![(1, 1)]);
    }

    #[test]
    fn revoked_partitions_store_nothing() {
        let mut tracker = OffsetTracker::default();
        tracker.dispatched(0, 1, 1);
        tracker.dispatched(1, 1, 1);
        assert_eq!(tracker.revoke(0), 1);
        assert!(!tracker.is_tracking(0));
        assert_eq!(tracker.finished(0, 1, Written), None);
        assert_eq!(tracker.finished(1, 1, Written), Some(2));
        assert_eq!(tracker.in_flight(), 0);
        let stored: Vec<(i32, i64)> = tracker
            .take_to_store()
            .into_iter()
            .map(|(partition, (next, _))| (partition, next))
            .collect();
        assert_eq!(stored, vec![(1, 2)]);
        assert!(tracker.take_to_store().is_empty());
    }

    #[test]
    fn a_resumed_partition_continues_its_chain() {
        let mut tracker = OffsetTracker::default();
        tracker.start(
            3,
            WriteClock::resumed_at(5_000_123),
            CommittedProgress::default(),
        );
        assert_eq!(tracker.dispatched(3, 40, 5), 5_000_124);
    }

    #[test]
    fn the_newest_written_time_counts_written_records_only() {
        let mut offsets =
            PartitionOffsets::resuming(WriteClock::default(), RecordCounts::default(), 0);
        offsets.dispatched(0, 1_000);
        offsets.dispatched(1, 2_000);
        offsets.dispatched(2, 3_000);
        // Offset 1 finishes first: the stored position cannot move past 0 yet.
        assert_eq!(offsets.finished(1, Written), None);
        let (next, progress) = offsets.finished(0, Written).expect("moved");
        assert_eq!((next, progress.last_written_millis), (2, Some(2_000)));
        // The newest record was dead-lettered: the newest stored one stays offset 1's.
        let (_, progress) = offsets
            .finished(2, Finished::DeadLettered("malformed_json"))
            .expect("moved");
        assert_eq!(
            progress.dead_lettered_by_reason,
            BTreeMap::from([("malformed_json".to_string(), 1)])
        );
        assert_eq!(progress.last_written_millis, Some(2_000));
        let resumed =
            PartitionOffsets::resuming(WriteClock::default(), RecordCounts::default(), 2_000);
        assert_eq!(resumed.last_written_millis, 2_000);
    }

    #[test]
    fn a_finish_without_dispatch_stores_nothing() {
        let mut offsets = PartitionOffsets::default();
        assert_eq!(offsets.finished(3, Written), None);
    }
}
