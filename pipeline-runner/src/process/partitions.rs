//! The consumer's partitions: their progress when assigned, the offsets handed to
//! librdkafka as records finish, pausing while Cassandra fails, and whether a bounded run
//! reached its end offsets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use rtdp_crds::CommittedProgress;
use rtdp_provisioning::kafka::committed_progress;

use super::EndOffsets;
use super::offsets::{OffsetTracker, partition_list};
use super::writer::WriteClock;
use crate::kafka::ConsumerCallbacks;
use crate::telemetry::Health;

/// Where a partition that was just assigned resumes: its counts from the committed offset's
/// progress, and its write-time chain from there too when consumption starts exactly at that
/// offset (restarted from the Kafka timestamps otherwise: a replay or reset, see
/// [`WriteClock`]). Waits for Kafka: run on the blocking pool (see [`Resuming`]).
fn resume(
    consumer: &StreamConsumer<ConsumerCallbacks>,
    topic: &str,
    partition: i32,
    first_offset: i64,
) -> (WriteClock, CommittedProgress) {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = match consumer.committed_offsets(wanted, Duration::from_secs(10)) {
        Ok(committed) => committed,
        Err(error) => {
            tracing::warn!(%error, partition, "reading the committed offset's progress failed; restarting the write-time chain from the Kafka timestamps and the counts from 0");
            return (WriteClock::default(), CommittedProgress::default());
        }
    };
    let Some(element) = committed.find_partition(topic, partition) else {
        return (WriteClock::default(), CommittedProgress::default());
    };
    let progress = committed_progress(&element);
    let clock = match progress.write_time_micros {
        Some(micros) if element.offset() == Offset::Offset(first_offset) => {
            WriteClock::resumed_at(micros)
        }
        _ => WriteClock::default(),
    };
    (clock, progress)
}

/// Hands the offsets that moved to librdkafka (committed by its auto-commit every second, and
/// at shutdown).
pub(super) fn store_offsets(
    consumer: &StreamConsumer<ConsumerCallbacks>,
    topic: &str,
    tracker: &mut OffsetTracker,
) {
    let moved = tracker.take_to_store();
    if moved.is_empty() {
        return;
    }
    if let Err(error) = consumer.store_offsets(&partition_list(topic, &moved)) {
        // A partition was revoked meanwhile; its new owner re-reads from the last commit.
        tracing::debug!(%error, ?moved, "storing offsets failed");
    }
}

/// Pauses every assigned partition while Cassandra fails (the consumer keeps polling, so it
/// stays in its group) and resumes when a write succeeds again.
pub(super) fn pause_while_cassandra_is_down(
    consumer: &StreamConsumer<ConsumerCallbacks>,
    health: &Health,
    paused: bool,
) -> bool {
    // Only Cassandra's state: while Kafka is away there is nothing to consume anyway.
    let healthy = health.cassandra_is_up();
    if healthy != paused {
        return paused;
    }
    let Ok(assignment) = consumer.assignment() else {
        return paused;
    };
    let (result, done, action) = if healthy {
        (
            consumer.resume(&assignment),
            "Cassandra is back; resuming consumption",
            "resuming",
        )
    } else {
        (
            consumer.pause(&assignment),
            "Cassandra is failing; pausing consumption until writes succeed",
            "pausing",
        )
    };
    match result {
        Ok(()) if healthy => tracing::info!("{done}"),
        Ok(()) => tracing::warn!("{done}"),
        Err(error) => {
            tracing::warn!(%error, "{action} partitions failed");
            // Nothing changed: still in the state we were in.
            return paused;
        }
    }
    !paused
}

/// True when the group's committed offsets reached `end_offsets` on every partition. Waits for
/// Kafka (a commit, then a read): run on the blocking pool.
pub(super) fn reached(
    consumer: &StreamConsumer<ConsumerCallbacks>,
    end_offsets: &EndOffsets,
) -> bool {
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let Some(topic) = assignment
        .elements()
        .first()
        .map(|element| element.topic().to_string())
    else {
        return end_offsets.values().all(|offset| *offset <= 0);
    };
    let mut wanted = TopicPartitionList::new();
    for partition in end_offsets.keys() {
        wanted.add_partition(&topic, *partition);
    }
    // Commit what is stored first, so the comparison sees it.
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    let Ok(committed) = consumer.committed_offsets(wanted, Duration::from_secs(5)) else {
        return false;
    };
    end_offsets.iter().all(|(partition, end)| {
        if *end <= 0 {
            return true;
        }
        match committed
            .find_partition(&topic, *partition)
            .map(|element| element.offset())
        {
            Some(Offset::Offset(offset)) => offset >= *end,
            _ => false,
        }
    })
}

/// A partition's committed progress, read off the loop, and the records that waited for it.
pub(super) struct Resumed {
    /// The partition.
    pub(super) partition: i32,
    /// Its write-time chain from the committed offset on.
    pub(super) clock: WriteClock,
    /// Its counts at the committed offset.
    pub(super) progress: CommittedProgress,
    /// Its records taken meanwhile, in order.
    pub(super) records: Vec<OwnedMessage>,
}

/// One read of a partition's committed progress.
struct Read {
    partition: i32,
    epoch: u64,
    resumed: (WriteClock, CommittedProgress),
}

/// Partitions whose first record since their assignment arrived: their committed progress is
/// read on the blocking pool (a Kafka round trip, up to 10 s when the coordinator is away),
/// never on the loop, and their records wait here, in order, until it is known.
#[derive(Default)]
pub(super) struct Resuming {
    /// Per partition, the read it waits for (its epoch) and its records.
    waiting: HashMap<i32, (u64, Vec<OwnedMessage>)>,
    /// Records waiting, over every partition: they count against the writes in flight.
    records: usize,
    reads: FuturesUnordered<BoxFuture<'static, Read>>,
    epochs: u64,
}

impl Resuming {
    /// Holds `message` until its partition's progress is read, starting the read when it is
    /// the partition's first.
    pub(super) fn hold(
        &mut self,
        consumer: &Arc<StreamConsumer<ConsumerCallbacks>>,
        topic: &str,
        message: OwnedMessage,
    ) {
        self.records += 1;
        let partition = message.partition();
        if let Some((_, records)) = self.waiting.get_mut(&partition) {
            records.push(message);
            return;
        }
        self.epochs += 1;
        let epoch = self.epochs;
        let (consumer, topic, first) = (Arc::clone(consumer), topic.to_string(), message.offset());
        let read = tokio::task::spawn_blocking(move || resume(&consumer, &topic, partition, first));
        self.reads.push(Box::pin(async move {
            let resumed = read.await.unwrap_or_else(|error| {
                tracing::warn!(%error, partition, "reading the committed offset's progress failed; restarting the write-time chain from the Kafka timestamps and the counts from 0");
                (WriteClock::default(), CommittedProgress::default())
            });
            Read {
                partition,
                epoch,
                resumed,
            }
        }));
        self.waiting.insert(partition, (epoch, vec![message]));
    }

    /// Records held, over every partition.
    pub(super) fn records(&self) -> usize {
        self.records
    }

    /// Whether a read is under way.
    pub(super) fn is_reading(&self) -> bool {
        !self.reads.is_empty()
    }

    /// The next read that finished: its partition's progress and held records; `None` for a
    /// read whose partition was revoked meanwhile (its records go to the new owner).
    pub(super) async fn next(&mut self) -> Option<Resumed> {
        let read = self.reads.next().await?;
        let (epoch, _) = self.waiting.get(&read.partition)?;
        if *epoch != read.epoch {
            return None;
        }
        let (_, records) = self.waiting.remove(&read.partition)?;
        self.records -= records.len();
        let (clock, progress) = read.resumed;
        Some(Resumed {
            partition: read.partition,
            clock,
            progress,
            records,
        })
    }

    /// Drops a revoked partition's held records (nothing of theirs was stored: the new owner
    /// reads them again); returns how many.
    pub(super) fn revoke(&mut self, partition: i32) -> usize {
        let dropped = self
            .waiting
            .remove(&partition)
            .map_or(0, |(_, records)| records.len());
        self.records -= dropped;
        dropped
    }
}
