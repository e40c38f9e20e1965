//! Moving a consumer group's committed offsets back, for a replay: to the earliest retained
//! record, or per partition to the first record at or after a time (Kafka's ListOffsets by
//! timestamp). Kafka accepts the commit only while the group has no members, so the
//! processors must have stopped; a refusal says so.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use rtdp_crds::CommittedProgress;

use super::lag::GroupView;
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
    super::blocking("rewind", move || {
        rewind_blocking(&config, &topic, to, timeout)
    })
    .await
}

/// The rewind, on a thread that may block; the group is the one `config` names.
fn rewind_blocking(
    config: &ClientConfig,
    topic: &str,
    to: RewindTo,
    timeout: Duration,
) -> Result<Vec<Rewound>, ProvisionError> {
    let group = config.get("group.id").unwrap_or_default();
    let failed =
        |what: &str, error| ProvisionError::kafka(format!("{what} of topic {topic}"), error);
    let GroupView {
        consumer,
        positions,
    } = GroupView::read(config, topic, timeout)?;
    let by_time = match to {
        RewindTo::Earliest => None,
        RewindTo::Time(millis) => {
            let mut wanted = TopicPartitionList::new();
            for position in &positions {
                wanted
                    .add_partition_offset(topic, position.partition, Offset::Offset(millis))
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
    let mut rewound = Vec::with_capacity(positions.len());
    for position in positions {
        let offset = match &by_time {
            None => position.low,
            Some(found) => match found
                .find_partition(topic, position.partition)
                .map(|element| element.offset())
            {
                Some(Offset::Offset(offset)) => offset.max(position.low),
                // No record at or after the time: start at the end (nothing to reprocess).
                _ => position.high,
            },
        };
        target
            .add_partition_offset(topic, position.partition, Offset::Offset(offset))
            .map_err(|error| failed("preparing the commit", error))?;
        // The counts go on (replayed records count again). The write-time chain resumes
        // above every write time given so far (now, or the chain itself where it ran ahead),
        // so replayed records overwrite what the first run wrote, and records produced
        // later still win over them (they follow the replayed ones in the partition).
        let progress = CommittedProgress {
            write_time_micros: Some(replay_floor_micros(position.write_time_micros)),
            records: position.records,
            // Records stay stored while they are processed again.
            last_written_millis: position.last_written_millis,
            dead_lettered_by_reason: position.dead_lettered_by_reason.clone(),
        };
        if let Some(mut element) = target.find_partition(topic, position.partition) {
            element.set_metadata(progress.encode());
        }
        rewound.push(Rewound {
            partition: position.partition,
            from: position.committed,
            to: offset,
            high: position.high,
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

/// Where a replay's write-time chain resumes: above the wall clock (every earlier Kafka
/// timestamp) and above the partition's own chain, which runs ahead of the clock when many
/// records share a millisecond or an earlier replay moved it.
pub fn replay_floor_micros(committed_write_time_micros: Option<i64>) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        });
    now.max(committed_write_time_micros.unwrap_or(0))
}

#[cfg(test)]
mod replay_floor_tests {
    use super::replay_floor_micros;

    #[test]
    fn a_replay_resumes_above_the_clock_and_above_the_chain() {
        let before = replay_floor_micros(None);
        assert!(
            before > 1_700_000_000_000_000,
            "microseconds since the epoch"
        );
        let ahead = before + 60_000_000;
        assert_eq!(replay_floor_micros(Some(ahead)), ahead);
        assert!(replay_floor_micros(Some(5)) >= before);
    }
}
