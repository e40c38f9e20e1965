//! The runner's Kafka clients: an idempotent producer (ingest, dead letters) and a consumer
//! whose offsets are stored by hand (process).

use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rtdp_crds::BatchSpec;

use crate::error::RunnerError;
use crate::telemetry::{Metrics, PartitionLabel};

/// An idempotent producer with `acks=all`: a record acknowledged is on every in-sync
/// replica, exactly once per send.
pub fn producer(base: &ClientConfig, batch: &BatchSpec) -> Result<FutureProducer, RunnerError> {
    let mut config = base.clone();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", batch.max_delay_milliseconds.to_string())
        .set("batch.num.messages", batch.max_records.max(1).to_string())
        .set("message.timeout.ms", "120000");
    config
        .create()
        .map_err(|error| RunnerError::kafka("creating the Kafka producer", error))
}

/// Callbacks of the process consumer: lag from librdkafka's statistics, and the partitions
/// a rebalance takes away (their in-flight records must not store offsets any more).
#[derive(Debug)]
pub struct ConsumerCallbacks {
    metrics: Arc<Metrics>,
    revoked: Mutex<Vec<i32>>,
}

impl ConsumerCallbacks {
    /// Callbacks feeding these metrics.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        match self.revoked.lock() {
            Ok(mut revoked) => std::mem::take(&mut *revoked),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl ClientContext for ConsumerCallbacks {
    fn stats(&self, statistics: Statistics) {
        for (topic, topic_statistics) in statistics.topics {
            for (partition, partition_statistics) in topic_statistics.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 means unknown.
                if partition < 0 || partition_statistics.consumer_lag < 0 {
                    continue;
                }
                self.metrics
                    .consumer_lag
                    .get_or_create(&PartitionLabel {
                        topic: topic.clone(),
                        partition: partition.to_string(),
                    })
                    .set(partition_statistics.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for ConsumerCallbacks {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let numbers: Vec<i32> = partitions
                .elements()
                .iter()
                .map(|element| element.partition())
                .collect();
            tracing::info!(partitions = ?numbers, "partitions revoked");
            match self.revoked.lock() {
                Ok(mut revoked) => revoked.extend(numbers),
                Err(poisoned) => poisoned.into_inner().extend(numbers),
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let numbers: Vec<i32> = partitions
                .elements()
                .iter()
                .map(|element| element.partition())
                .collect();
            tracing::info!(partitions = ?numbers, "partitions assigned");
        }
    }
}

/// The process consumer: librdkafka's automatic offset *store* is off (we store an offset
/// only once Cassandra acknowledged its record and every earlier one), its automatic
/// *commit* of stored offsets is on.
pub fn consumer(
    base: &ClientConfig,
    group: &str,
    metrics: Arc<Metrics>,
) -> Result<StreamConsumer<ConsumerCallbacks>, RunnerError> {
    let mut config = base.clone();
    config
        .set("group.id", group)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A crashed member's partitions move on after 10 s rather than 45.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000")
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 100 000 messages / 64 MiB per partition by default; the
        // runner has at most `concurrency` records in flight, so a few thousand is plenty and
        // keeps the process small.
        .set("queued.min.messages", "2000")
        .set("queued.max.messages.kbytes", "4096")
        // When that queue is full, fetch again soon (librdkafka waits a whole second).
        .set("fetch.queue.backoff.ms", "20");
    config
        .create_with_context(ConsumerCallbacks::new(metrics))
        .map_err(|error| RunnerError::kafka("creating the Kafka consumer", error))
}
