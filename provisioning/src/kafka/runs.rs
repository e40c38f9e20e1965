//! Reading the run ledger of a scheduled source (`rtdp_crds::runs`): its last entries, for a
//! scheduled run's catch-up (the runner) and for `status.runs` (the operator). Reading assigns
//! the one partition and never commits, so it needs no group of its own.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use rtdp_crds::runs::LedgerEntry;

use crate::ProvisionError;

/// What reading the ledger found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerTail {
    /// The last entries, oldest first (at most the number asked for).
    pub entries: Vec<LedgerEntry>,
    /// Entries that did not parse (another writer's records): counted, never guessed at.
    pub unreadable: usize,
}

/// Reads the last `count` entries of the ledger `topic`. An empty ledger is an empty tail; a
/// missing topic is an error (it is created with the Pipeline's other topics).
pub async fn read_run_ledger(
    config: &ClientConfig,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Result<LedgerTail, ProvisionError> {
    let mut config = config.clone();
    config
        // Required by librdkafka for a consumer; nothing is ever committed under it.
        .set("group.id", "rtdp.run-ledger-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    let topic = topic.to_string();
    super::blocking("reading the run ledger", move || {
        read_blocking(&config, &topic, count, timeout)
    })
    .await
}

fn read_blocking(
    config: &ClientConfig,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Result<LedgerTail, ProvisionError> {
    let reading = |what: &str, error| {
        ProvisionError::kafka(format!("{what} of the run ledger {topic}"), error)
    };
    let consumer: BaseConsumer = config
        .create()
        .map_err(|error| reading("creating a consumer", error))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|error| reading("reading the metadata", error))?;
    let exists = metadata.topics().iter().any(|found| {
        found.name() == topic && found.error().is_none() && !found.partitions().is_empty()
    });
    if !exists {
        return Err(ProvisionError::Internal(format!(
            "the run ledger topic {topic} does not exist (it is created with the Pipeline's topics)"
        )));
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, timeout)
        .map_err(|error| reading("reading the watermarks", error))?;
    let mut tail = LedgerTail::default();
    if high <= low {
        return Ok(tail);
    }
    let start = high
        .saturating_sub(i64::try_from(count).unwrap_or(i64::MAX))
        .max(low);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(start))
        .map_err(|error| reading("assigning the partition", error))?;
    consumer
        .assign(&assignment)
        .map_err(|error| reading("assigning the partition", error))?;
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() >= deadline {
            return Err(ProvisionError::Internal(format!(
                "reading the run ledger {topic} took longer than {timeout:?}"
            )));
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match result {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => break,
            Err(error) => return Err(reading("reading", error)),
        };
        match message.payload().map(serde_json::from_slice::<LedgerEntry>) {
            Some(Ok(entry)) => tail.entries.push(entry),
            _ => tail.unreadable += 1,
        }
        if message.offset() + 1 >= high {
            break;
        }
    }
    if tail.entries.len() > count {
        tail.entries.drain(..tail.entries.len() - count);
    }
    Ok(tail)
}
