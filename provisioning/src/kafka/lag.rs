//! How far a pipeline's processors are behind, read from Kafka alone: the consumer group's
//! committed offsets against each partition's watermarks, and the timestamps of two records
//! per partition (the last one stored, the oldest one waiting). Committed offsets only advance
//! after Cassandra acknowledged a record's writes, so "stored" here means stored in Cassandra,
//! as of the processors' last commit.
//!
//! Reading never joins the group (the partitions are assigned, not subscribed) and never
//! commits, so it cannot disturb the processors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use rtdp_crds::{CommittedProgress, RecordCounts};

use crate::ProvisionError;

/// One partition's position: where the group is, and the records around it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The partition.
    pub partition: i32,
    /// The earliest offset still retained.
    pub low: i64,
    /// The offset the next record produced will get.
    pub high: i64,
    /// The group's committed offset (the next record to process); `None` before its first commit.
    pub committed: Option<i64>,
    /// The timestamp (ms) of the last record stored, the one just before the committed offset.
    pub last_stored_millis: Option<i64>,
    /// The timestamp (ms) of the oldest record waiting, the one at the committed offset.
    pub oldest_waiting_millis: Option<i64>,
    /// The records before the committed offset by outcome, as the processors committed them
    /// (zero where they committed none).
    pub records: RecordCounts,
    /// The write time (µs) the processors committed with the offset, where they did.
    pub write_time_micros: Option<i64>,
    /// The timestamp (ms) of the newest record written to the tables, as the processors
    /// committed it (0: none yet); `None` where they did not say.
    pub last_written_millis: Option<i64>,
    /// The dead-lettered records before the committed offset, by reason label.
    pub dead_lettered_by_reason: BTreeMap<String, i64>,
}

impl PartitionPosition {
    /// The next offset the processors will read: the committed one, or the earliest retained
    /// when there is none or it was deleted by retention.
    pub fn next(&self) -> i64 {
        self.committed
            .map_or(self.low, |committed| committed.max(self.low))
            .min(self.high)
    }

    /// The records produced and not yet stored.
    pub fn waiting(&self) -> i64 {
        self.high - self.next()
    }
}

/// The group's position over every partition of the topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupLag {
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionPosition>,
}

impl GroupLag {
    /// Records produced and not yet stored, over all partitions.
    pub fn records(&self) -> i64 {
        self.partitions.iter().map(PartitionPosition::waiting).sum()
    }

    /// The timestamp (ms) of the oldest record not yet stored; `None` when nothing waits (or
    /// its timestamp could not be read in time).
    pub fn oldest_waiting_millis(&self) -> Option<i64> {
        self.partitions
            .iter()
            .filter(|position| position.waiting() > 0)
            .filter_map(|position| position.oldest_waiting_millis)
            .min()
    }

    /// The lag in time: how long the oldest record not yet stored has been waiting at `now`
    /// (ms since the epoch), in whole seconds; 0 when nothing waits.
    pub fn lag_seconds(&self, now_millis: i64) -> i64 {
        self.oldest_waiting_millis()
            .map_or(0, |oldest| (now_millis - oldest).max(0) / 1000)
    }

    /// The records the processors finished, by outcome, over all partitions.
    pub fn records_finished(&self) -> RecordCounts {
        self.partitions
            .iter()
            .fold(RecordCounts::default(), |total, position| {
                total.plus(position.records)
            })
    }

    /// The dead-lettered records by reason label, over all partitions.
    pub fn dead_lettered_by_reason(&self) -> BTreeMap<String, i64> {
        let mut total = BTreeMap::new();
        for position in &self.partitions {
            for (reason, count) in &position.dead_lettered_by_reason {
                *total.entry(reason.clone()).or_default() += count;
            }
        }
        total
    }

    /// The timestamp (ms) of the newest record written to the tables, over all partitions:
    /// as the processors committed it, so dead-lettered and filtered records (which move the
    /// offsets too) do not count; the record before the committed offset where they did not
    /// say.
    pub fn last_stored_millis(&self) -> Option<i64> {
        self.partitions
            .iter()
            .filter_map(|position| match position.last_written_millis {
                Some(millis) => (millis > 0).then_some(millis),
                None => position.last_stored_millis,
            })
            .max()
    }
}

/// Reads the position of `group` on `topic`. `config` carries the cluster and its security
/// settings (see [`super::client_config`]); `timeout` bounds each request and the reading of
/// the timestamps (a timestamp not read in time is left out, never guessed).
pub async fn read_group_lag(
    config: &ClientConfig,
    topic: &str,
    group: &str,
    timeout: Duration,
) -> Result<GroupLag, ProvisionError> {
    let mut config = config.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Two records per partition are wanted, not a full fetch.
        .set("max.partition.fetch.bytes", "65536")
        .set("queued.max.messages.kbytes", "1024");
    let topic = topic.to_string();
    super::blocking("lag", move || read_blocking(&config, &topic, timeout)).await
}

fn read_blocking(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<GroupLag, ProvisionError> {
    let mut view = GroupView::read(config, topic, timeout)?;
    read_timestamps(&view.consumer, topic, &mut view.positions, timeout)?;
    Ok(GroupLag {
        partitions: view.positions,
    })
}

/// What reading the lag and rewinding for a replay both start from: a consumer of the group
/// that never joins it (partitions are assigned, not subscribed), and each partition's
/// watermarks and committed offset.
pub(super) struct GroupView {
    /// The consumer, with the group's `group.id`.
    pub(super) consumer: BaseConsumer,
    /// One entry per partition, timestamps not read.
    pub(super) positions: Vec<PartitionPosition>,
}

impl GroupView {
    /// Reads the topic's partitions, their watermarks and the group's committed offsets.
    pub(super) fn read(
        config: &ClientConfig,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, ProvisionError> {
        let reading =
            |what: &str, error| ProvisionError::kafka(format!("{what} of topic {topic}"), error);
        let consumer: BaseConsumer = config
            .create()
            .map_err(|error| reading("creating a consumer of the group", error))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|error| reading("reading the metadata", error))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|found| found.name() == topic && found.error().is_none())
            .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
            .collect();
        if partitions.is_empty() {
            return Err(ProvisionError::Internal(format!(
                "topic {topic} does not exist (yet)"
            )));
        }
        let mut wanted = TopicPartitionList::new();
        for partition in &partitions {
            wanted.add_partition(topic, *partition);
        }
        let committed = consumer
            .committed_offsets(wanted, timeout)
            .map_err(|error| reading("reading the committed offsets", error))?;
        let mut positions = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, timeout)
                .map_err(|error| reading("reading the watermarks", error))?;
            let element = committed.find_partition(topic, partition);
            let progress = element.as_ref().map(committed_progress).unwrap_or_default();
            let committed = element.and_then(|element| match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
            positions.push(PartitionPosition {
                partition,
                low,
                high,
                committed,
                records: progress.records,
                write_time_micros: progress.write_time_micros,
                last_written_millis: progress.last_written_millis,
                dead_lettered_by_reason: progress.dead_lettered_by_reason,
                ..PartitionPosition::default()
            });
        }
        Ok(Self {
            consumer,
            positions,
        })
    }
}

/// The progress the processors committed with an offset. rdkafka panics on metadata that is
/// not UTF-8 (another tool may have committed any bytes); such metadata is not ours.
pub fn committed_progress(element: &TopicPartitionListElem<'_>) -> CommittedProgress {
    let metadata = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        element.metadata().to_string()
    }))
    .unwrap_or_default();
    CommittedProgress::parse(&metadata)
}

/// Fills in the timestamps of the last stored and the oldest waiting record of each
/// partition, reading from just before the next offset.
fn read_timestamps(
    consumer: &BaseConsumer,
    topic: &str,
    positions: &mut [PartitionPosition],
    timeout: Duration,
) -> Result<(), ProvisionError> {
    let mut assignment = TopicPartitionList::new();
    // Per partition: the next offset to process, and whether anything before it is stored.
    let mut pending: BTreeMap<i32, (i64, bool)> = BTreeMap::new();
    for position in positions.iter() {
        let next = position.next();
        let has_stored = next > position.low;
        if !has_stored && position.waiting() == 0 {
            continue;
        }
        let start = if has_stored { next - 1 } else { next };
        assignment
            .add_partition_offset(topic, position.partition, Offset::Offset(start))
            .map_err(|error| ProvisionError::kafka(format!("assigning {topic}"), error))?;
        pending.insert(position.partition, (next, has_stored));
    }
    if pending.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&assignment)
        .map_err(|error| ProvisionError::kafka(format!("assigning {topic}"), error))?;
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        // A fetch error (e.g. an offset deleted meanwhile) leaves that timestamp unknown.
        let Ok(message) = result else { continue };
        let partition = message.partition();
        let Some(&(next, has_stored)) = pending.get(&partition) else {
            continue;
        };
        let Some(position) = positions
            .iter_mut()
            .find(|position| position.partition == partition)
        else {
            continue;
        };
        let timestamp = message.timestamp().to_millis();
        if message.offset() < next {
            position.last_stored_millis = timestamp;
        } else if position.oldest_waiting_millis.is_none() {
            position.oldest_waiting_millis = timestamp;
        }
        let stored_known = !has_stored || position.last_stored_millis.is_some();
        let waiting_known = position.waiting() == 0 || position.oldest_waiting_millis.is_some();
        if (stored_known && waiting_known) || message.offset() >= next {
            pending.remove(&partition);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(low: i64, high: i64, committed: Option<i64>) -> PartitionPosition {
        PartitionPosition {
            partition: 0,
            low,
            high,
            committed,
            ..PartitionPosition::default()
        }
    }

    #[test]
    fn waiting_counts_from_the_committed_offset_or_the_earliest_retained() {
        assert_eq!(position(0, 100, Some(40)).waiting(), 60);
        // No commit yet: everything retained waits (the processors start at the earliest).
        assert_eq!(position(10, 100, None).waiting(), 90);
        // Retention deleted records past the commit: they cannot wait any more.
        assert_eq!(position(50, 100, Some(40)).waiting(), 50);
        assert_eq!(position(0, 100, Some(100)).waiting(), 0);
    }

    #[test]
    fn the_group_sums_records_and_takes_the_oldest_and_newest_timestamps() {
        let mut behind = position(0, 10, Some(4));
        behind.oldest_waiting_millis = Some(5_000);
        behind.last_stored_millis = Some(4_000);
        let mut caught_up = position(0, 3, Some(3));
        caught_up.partition = 1;
        caught_up.last_stored_millis = Some(9_000);
        // A caught-up partition's timestamps never count as waiting.
        caught_up.oldest_waiting_millis = Some(1_000);
        let lag = GroupLag {
            partitions: vec![behind, caught_up],
        };
        assert_eq!(lag.records(), 6);
        assert_eq!(lag.oldest_waiting_millis(), Some(5_000));
        assert_eq!(lag.lag_seconds(17_500), 12);
        assert_eq!(lag.last_stored_millis(), Some(9_000));
        assert_eq!(GroupLag::default().lag_seconds(17_500), 0);
    }

    #[test]
    fn the_newest_stored_record_is_the_newest_written_one_where_the_processors_say() {
        // The record before the committed offset was dead-lettered: the processors committed
        // an older written record's time, or none at all.
        let mut dead_lettered_last = position(0, 10, Some(10));
        dead_lettered_last.last_stored_millis = Some(9_000);
        dead_lettered_last.last_written_millis = Some(6_000);
        let mut nothing_written = position(0, 5, Some(5));
        nothing_written.partition = 1;
        nothing_written.last_stored_millis = Some(12_000);
        nothing_written.last_written_millis = Some(0);
        let lag = GroupLag {
            partitions: vec![dead_lettered_last, nothing_written.clone()],
        };
        assert_eq!(lag.last_stored_millis(), Some(6_000));
        let lag = GroupLag {
            partitions: vec![nothing_written],
        };
        assert_eq!(
            lag.last_stored_millis(),
            None,
            "nothing stored, nothing to show"
        );
    }
}
