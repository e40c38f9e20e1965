//! The runner's Kafka clients: an idempotent producer (ingest, dead letters) and a consumer
//! whose offsets are stored by hand (process).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};
use rtdp_crds::BatchSpec;

use crate::error::RunnerError;
use crate::process::offsets::{ToStore, partition_list};
use crate::telemetry::{Health, Metrics, PartitionLabel};

/// How often librdkafka reports its statistics (lag, broker states), in milliseconds.
const STATISTICS_INTERVAL_MILLISECONDS: &str = "5000";

/// The runner's producers (ingest, dead letters).
pub type Producer = FutureProducer<ProducerCallbacks>;

/// Kafka readiness as librdkafka sees it: ready while a connection to a real broker (not a
/// bootstrap address) is up. Reported with every statistics event (5 s), and set to false at
/// once when librdkafka reports that every broker is down.
fn report_kafka_health(health: Option<&Health>, statistics: &Statistics) {
    if let Some(health) = health {
        let up = statistics
            .brokers
            .values()
            .any(|broker| broker.nodeid >= 0 && broker.state == "UP");
        health.set_kafka(up);
    }
}

/// How often the same Kafka client error is logged again while it persists.
const REPEATED_ERROR_INTERVAL: Duration = Duration::from_secs(60);

/// Client errors as log lines: a new error at once, the same one again only once a minute
/// (librdkafka reports "all brokers down" every reconnect attempt, about every second), with
/// how many were held back.
#[derive(Debug, Default)]
struct ErrorLog {
    last: Mutex<Option<(String, Instant, u64)>>,
}

impl ErrorLog {
    fn report(&self, error: &KafkaError, reason: &str) {
        if let Some(held_back) = self.admit(format!("{error}: {reason}"), Instant::now()) {
            tracing::warn!(%error, reason, repeated_since_last_line = held_back, "Kafka client error (librdkafka keeps reconnecting with backoff)");
        }
    }

    /// Whether the error `text` seen at `now` is written: `Some(held back since the last line)`
    /// for a new error or a repeat after the interval, `None` for a repeat within it.
    fn admit(&self, text: String, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.as_mut() {
            Some((previous, logged_at, held_back))
                if *previous == text
                    && now.duration_since(*logged_at) < REPEATED_ERROR_INTERVAL =>
            {
                *held_back += 1;
                None
            }
            _ => {
                let held_back = last.as_ref().map_or(0, |(_, _, held_back)| *held_back);
                *last = Some((text, now, 0));
                Some(held_back)
            }
        }
    }
}

/// Logs a client error (see [`ErrorLog`]) and, for "all brokers down", marks Kafka not ready
/// (librdkafka keeps reconnecting by itself with backoff).
fn report_kafka_error(health: Option<&Health>, log: &ErrorLog, error: &KafkaError, reason: &str) {
    if matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AllBrokersDown)
    ) && let Some(health) = health
    {
        health.set_kafka(false);
    }
    log.report(error, reason);
}

/// Callbacks of a producer: Kafka readiness, when the role's readiness depends on it.
#[derive(Debug, Default)]
pub struct ProducerCallbacks {
    health: Option<Arc<Health>>,
    errors: ErrorLog,
}

impl ProducerCallbacks {
    /// Callbacks that keep `health`'s Kafka readiness current.
    pub fn reporting_to(health: Arc<Health>) -> Self {
        Self {
            health: Some(health),
            errors: ErrorLog::default(),
        }
    }
}

impl ClientContext for ProducerCallbacks {
    fn stats(&self, statistics: Statistics) {
        report_kafka_health(self.health.as_deref(), &statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report_kafka_error(self.health.as_deref(), &self.errors, &error, reason);
    }
}

/// An idempotent producer with `acks=all`: a record acknowledged is on every in-sync
/// replica, exactly once per send.
pub fn producer(
    base: &ClientConfig,
    batch: &BatchSpec,
    callbacks: ProducerCallbacks,
) -> Result<Producer, RunnerError> {
    producer_config(base, batch)
        .create_with_context(callbacks)
        .map_err(|error| RunnerError::kafka("creating the Kafka producer", error))
}

/// The producer's configuration: idempotent, `acks=all`, batched per `runner.batch`.
fn producer_config(base: &ClientConfig, batch: &BatchSpec) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", batch.max_delay_milliseconds.to_string())
        .set("batch.num.messages", batch.max_records.max(1).to_string())
        .set("message.timeout.ms", "120000")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MILLISECONDS);
    config
}

/// Callbacks of the process consumer: lag and Kafka readiness from librdkafka's statistics,
/// and the partitions a rebalance takes away: what their records finished is committed at
/// once, and the loop is told (their records still in flight must not store offsets any
/// more).
#[derive(Debug)]
pub struct ConsumerCallbacks {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    errors: ErrorLog,
    revoked: Mutex<Vec<i32>>,
    to_store: ToStore,
}

impl ConsumerCallbacks {
    /// Callbacks feeding these metrics and this health.
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>) -> Self {
        Self {
            metrics,
            health,
            errors: ErrorLog::default(),
            revoked: Mutex::new(Vec::new()),
            to_store: ToStore::default(),
        }
    }

    /// Where the loop puts the offsets its records finished (see [`ToStore`]).
    pub fn to_store(&self) -> ToStore {
        self.to_store.clone()
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
    fn error(&self, error: KafkaError, reason: &str) {
        report_kafka_error(Some(&self.health), &self.errors, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        report_kafka_health(Some(&self.health), &statistics);
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
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let numbers = partition_numbers(partitions);
            tracing::info!(partitions = ?numbers, "partitions revoked");
            // Still ours until this returns: commit what their records finished (without
            // waiting), so the new owner starts right after it.
            let finished = self.to_store.take_partitions(&numbers);
            if let Some(topic) = partitions.elements().first().map(|element| element.topic())
                && !finished.is_empty()
            {
                let list = partition_list(topic, &finished);
                if let Err(error) = consumer
                    .store_offsets(&list)
                    .and_then(|()| consumer.commit(&list, CommitMode::Async))
                {
                    tracing::warn!(%error, partitions = ?numbers, "committing the revoked partitions' finished offsets failed; the new owner repeats their last records");
                }
            }
            match self.revoked.lock() {
                Ok(mut revoked) => revoked.extend(numbers),
                Err(poisoned) => poisoned.into_inner().extend(numbers),
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let numbers = partition_numbers(partitions);
            tracing::info!(partitions = ?numbers, "partitions assigned");
            // The group coordinator answered: Kafka is reachable.
            self.health.set_kafka(true);
        }
    }
}

/// The most one fetch response may carry, over all its partitions (2 MiB: about 2 000
/// listings, a tenth of a second of the fastest drain measured).
const FETCH_MAX_BYTES: &str = "2097152";
/// The most one partition may add to a fetch response (256 KiB; a larger record is still
/// fetched whole).
const MAX_PARTITION_FETCH_BYTES: &str = "262144";

/// The process consumer: librdkafka's automatic offset *store* is off (we store an offset
/// only once Cassandra acknowledged its record and every earlier one), its automatic
/// *commit* of stored offsets is on.
pub fn consumer(
    base: &ClientConfig,
    group: &str,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
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
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MILLISECONDS)
        // librdkafka prefetches up to 100 000 messages / 64 MiB per partition by default; the
        // runner has at most `concurrency` records in flight, so a few thousand is plenty and
        // keeps the process small.
        .set("queued.min.messages", "2000")
        .set("queued.max.messages.kbytes", "2048")
        // A fetch response is bounded per request, not per partition (1 MiB each by default):
        // memory stays the same for 3 partitions or 24.
        .set("fetch.max.bytes", FETCH_MAX_BYTES)
        .set("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES)
        // When that queue is full, fetch again soon (librdkafka waits a whole second).
        .set("fetch.queue.backoff.ms", "20");
    config
        .create_with_context(ConsumerCallbacks::new(metrics, health))
        .map_err(|error| RunnerError::kafka("creating the Kafka consumer", error))
}

/// The partition numbers of a rebalance's list, for the log and the revoked set.
fn partition_numbers(partitions: &TopicPartitionList) -> Vec<i32> {
    partitions
        .elements()
        .iter()
        .map(|element| element.partition())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_batches_as_the_spec_says() {
        let batch = BatchSpec {
            max_records: 250,
            max_delay_milliseconds: 15,
        };
        let config = producer_config(&ClientConfig::new(), &batch);
        assert_eq!(config.get("linger.ms"), Some("15"));
        assert_eq!(config.get("batch.num.messages"), Some("250"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn a_repeated_client_error_is_one_line_a_minute_with_the_count_held_back() {
        let log = ErrorLog::default();
        let start = Instant::now();
        let down = "all brokers down".to_string();
        assert_eq!(log.admit(down.clone(), start), Some(0));
        // librdkafka repeats it about every second: held back.
        for second in 1..60 {
            assert_eq!(
                log.admit(down.clone(), start + Duration::from_secs(second)),
                None
            );
        }
        // A minute on, one line says how many were held back.
        assert_eq!(
            log.admit(down.clone(), start + Duration::from_secs(60)),
            Some(59)
        );
        // A different error is written at once.
        assert_eq!(
            log.admit(
                "authentication failed".into(),
                start + Duration::from_secs(61)
            ),
            Some(0)
        );
    }
}
