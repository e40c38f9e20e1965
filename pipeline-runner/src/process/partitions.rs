//! The consumer's partitions: their progress when assigned, the offsets handed to
//! librdkafka as records finish, pausing while Cassandra fails, and whether a bounded run
//! reached its end offsets.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use rtdp_crds::CommittedProgress;
use rtdp_provisioning::kafka::committed_progress;

use super::EndOffsets;
use super::offsets::OffsetTracker;
use super::writer::WriteClock;
use crate::kafka::ConsumerCallbacks;
use crate::telemetry::Health;

/// Where a partition that was just assigned resumes: its counts from the committed offset's
/// progress, and its write-time chain from there too when consumption starts exactly at that
/// offset (restarted from the Kafka timestamps otherwise: a replay or reset, see
/// [`WriteClock`]).
pub(super) fn resume(
    consumer: &StreamConsumer<ConsumerCallbacks>,
    topic: &str,
    partition: i32,
    first_offset: i64,
) -> (WriteClock, CommittedProgress) {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = blocking(|| consumer.committed_offsets(wanted, Duration::from_secs(10)));
    let committed = match committed {
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
/// at shutdown). `store_offsets` stores exactly the next offset to consume; the legacy
/// per-topic `store_offset` would add one to it.
pub(super) fn store_offsets(
    consumer: &StreamConsumer<ConsumerCallbacks>,
    topic: &str,
    tracker: &mut OffsetTracker,
) {
    let moved = tracker.take_to_store();
    if moved.is_empty() {
        return;
    }
    let mut positions = TopicPartitionList::with_capacity(moved.len());
    for (partition, (next, progress)) in &moved {
        if let Err(error) = positions.add_partition_offset(topic, *partition, Offset::Offset(*next))
        {
            tracing::warn!(%error, partition, next, "an offset could not be recorded");
            continue;
        }
        // The progress travels with the offset (committed as its metadata).
        let mut element = positions.find_partition(topic, *partition);
        if let Some(element) = element.as_mut() {
            element.set_metadata(progress.encode());
        }
    }
    if let Err(error) = consumer.store_offsets(&positions) {
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

/// True when the group's committed offsets reached `end_offsets` on every partition.
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
    let committed = blocking(|| consumer.committed_offsets(wanted, Duration::from_secs(5)));
    let Ok(committed) = committed else {
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

/// Runs a blocking Kafka call from the process role: on a multi-threaded runtime the worker's
/// other tasks move elsewhere meanwhile; on the current-thread runtime it simply blocks.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(call),
        _ => call(),
    }
}
