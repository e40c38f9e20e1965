//! Producing records to the Pipeline's topic with bounded memory: sends are queued into
//! librdkafka without waiting, and deliveries are awaited in bulk.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use crate::kafka::Producer;
use crate::telemetry::Metrics;

/// Deliveries awaited at most at once before a send waits for earlier ones.
const MAX_PENDING: usize = 20_000;

/// A topic to produce to, counting acknowledged and failed deliveries.
pub struct Sink<'a> {
    producer: &'a Producer,
    topic: &'a str,
    metrics: &'a Metrics,
    pending: FuturesUnordered<DeliveryFuture>,
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records that failed for good (the idempotent producer already retried them).
    pub failed: u64,
    last_error: Option<String>,
}

impl std::fmt::Debug for Sink<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sink")
            .field("topic", &self.topic)
            .field("pending", &self.pending.len())
            .field("delivered", &self.delivered)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<'a> Sink<'a> {
    /// A sink for `topic`.
    pub fn new(producer: &'a Producer, topic: &'a str, metrics: &'a Metrics) -> Self {
        Self {
            producer,
            topic,
            metrics,
            pending: FuturesUnordered::new(),
            delivered: 0,
            failed: 0,
            last_error: None,
        }
    }

    /// Queues one record; waits only when librdkafka's queue or our pending set is full.
    pub async fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) {
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(self.topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if !self.await_one().await {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((error, _)) => {
                    self.record_failure(error.to_string());
                    return;
                }
            }
        }
        while self.pending.len() >= MAX_PENDING {
            self.await_one().await;
        }
    }

    /// Waits for every queued record's delivery.
    pub async fn flush(&mut self) {
        while self.await_one().await {}
    }

    /// The last delivery error, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    async fn await_one(&mut self) -> bool {
        match self.pending.next().await {
            Some(Ok(Ok(_))) => {
                self.delivered += 1;
                self.metrics.records_produced.inc();
                true
            }
            Some(Ok(Err((error, _)))) => {
                self.record_failure(error.to_string());
                true
            }
            Some(Err(_canceled)) => {
                self.record_failure("the producer was dropped before delivery".to_string());
                true
            }
            None => false,
        }
    }

    fn record_failure(&mut self, error: String) {
        self.failed += 1;
        if self.last_error.is_none() {
            tracing::error!(%error, topic = self.topic, "producing a record failed");
        }
        self.last_error = Some(error);
    }
}
