//! Moving a consumer group's committed offsets back, for a replay: to the earliest retained
//! record, or per partition to the first record at or after a time (Kafka's ListOffsets by
//! timestamp). Kafka accepts the commit only while the group has no members, so the
//! processors must have stopped; a refusal says so.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::ProvisionError;

/// Where a replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewindTo {
    /// The oldest record each partition retains.
    Earliest,
    /// The first record whose timestamp is at or after this time (ms since the epoch).
    Time(i64),
}

/// One partition moved: from the committed offset (if any) to the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewound {
    /// The partition.
    pub partition: i32,
    /// The committed offset before.
    pub from: Option<i64>,
    /// The committed offset now.
    pub to: i64,
    /// The end of the partition: `high - to` records will be processed again.
    pub high: i64,
}

/// Commits `to` for `group` on every partition of `topic`, and says what moved.
pub async fn rewind_group(
    config: &ClientConfig,
    topic: &str,
    group: &str,
    to: RewindTo,
    timeout: Duration,
) -> Result<Vec<Rewound>, ProvisionError> {
    let mut config = config.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let topic = topic.to_string();
    let group = group.to_string();
    tokio::task::spawn_blocking(move || rewind_blocking(&config, &topic, &group, to, timeout))
        .await
        .map_err(|error| ProvisionError::Internal(format!("rewind task failed: {error}")))?
}

fn rewind_blocking(
    config: &ClientConfig,
    topic: &str,
    group: &str,
    to: RewindTo,
    timeout: Duration,
) -> Result<Vec<Rewound>, ProvisionError> {
    let failed =
        |what: &str, error| ProvisionError::kafka(format!("{what} of topic {topic}"), error);
    let consumer: BaseConsumer = config
        .create()
        .map_err(|error| failed("creating a consumer to rewind", error))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|error| failed("reading the metadata", error))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|found| found.name() == topic && found.error().is_none())
        .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ProvisionError::Internal(format!(
            "topic {topic} does not exist, so there is nothing to replay"
        )));
    }
    let mut all = TopicPartitionList::new();
    for partition in &partitions {
        all.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(all, timeout)
        .map_err(|error| failed("reading the committed offsets", error))?;
    let by_time = match to {
        RewindTo::Earliest => None,
        RewindTo::Time(millis) => {
            let mut wanted = TopicPartitionList::new();
            for partition in &partitions {
                wanted
                    .add_partition_offset(topic, *partition, Offset::Offset(millis))
                    .map_err(|error| failed("asking for offsets by time", error))?;
            }
            Some(
                consumer
                    .offsets_for_times(wanted, timeout)
                    .map_err(|error| failed("finding the offsets by time", error))?,
            )
        }
    };
    let mut target = TopicPartitionList::new();
    let mut rewound = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|error| failed("reading the watermarks", error))?;
        let offset = match &by_time {
            None => low,
            Some(found) => match found
                .find_partition(topic, partition)
                .map(|element| element.offset())
            {
                Some(Offset::Offset(offset)) => offset.max(low),
                // No record at or after the time: start at the end (nothing to reprocess).
                _ => high,
            },
        };
        target
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|error| failed("preparing the commit", error))?;
        let from = committed
            .find_partition(topic, partition)
            .and_then(|element| match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        rewound.push(Rewound {
            partition,
            from,
            to: offset,
            high,
        });
    }
    consumer
        .commit(&target, CommitMode::Sync)
        .map_err(|error| match error {
            KafkaError::ConsumerCommit(
                RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress,
            ) => ProvisionError::Internal(format!(
                "consumer group {group} still has members (processors still running), so its offsets cannot be moved"
            )),
            error => failed("committing the replay offsets", error),
        })?;
    Ok(rewound)
}
