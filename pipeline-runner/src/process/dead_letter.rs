//! The dead-letter topic: a rejected record, byte for byte, with headers that say why and
//! where it came from. Produced with the same idempotent, acks=all producer as ingest; the
//! record's offset is stored only after the broker acknowledged its dead letter.

use std::time::Duration;

use backon::Retryable;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Timestamp};

use rtdp_crds::dead_letter_headers as headers;

use crate::kafka::Producer;
use crate::record::RecordError;
use crate::retry;

/// Sends one dead letter, retrying until the broker acknowledges it (a dead letter is never
/// dropped; while Kafka is away the partition simply stops advancing). An error comes back
/// only if the retries ever end, and then the record's offset must not be stored.
pub async fn send(
    producer: &Producer,
    topic: &str,
    pipeline: &str,
    message: &OwnedMessage,
    error: &RecordError,
) -> Result<(), KafkaError> {
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let timestamp = match message.timestamp() {
        Timestamp::CreateTime(millis) | Timestamp::LogAppendTime(millis) => millis.to_string(),
        Timestamp::NotAvailable => String::new(),
    };
    let error_text = error.to_string();
    let mut record_headers = OwnedHeaders::new_with_capacity(9);
    for (key, value) in [
        (headers::REASON, error.reason.as_str()),
        (headers::ERROR, error_text.as_str()),
        (headers::ORIGINAL_TOPIC, message.topic()),
        (headers::ORIGINAL_PARTITION, partition.as_str()),
        (headers::ORIGINAL_OFFSET, offset.as_str()),
        (headers::ORIGINAL_TIMESTAMP, timestamp.as_str()),
        (headers::PIPELINE, pipeline),
    ] {
        record_headers = record_headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    if let Some(table) = &error.table {
        record_headers = record_headers.insert(Header {
            key: headers::TABLE,
            value: Some(table.as_str()),
        });
    }
    if let Some(field) = &error.field {
        record_headers = record_headers.insert(Header {
            key: headers::FIELD,
            value: Some(field.as_str()),
        });
    }
    let attempt = || {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(record_headers.clone());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        async move {
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(kafka_error, _)| kafka_error)
        }
    };
    attempt
        .retry(retry::until_it_works(
            Duration::from_millis(100),
            Duration::from_secs(5),
        ))
        .notify(|kafka_error, delay| {
            tracing::warn!(
                error = %kafka_error,
                topic,
                retry_in_ms = delay.as_millis() as u64,
                "producing a dead letter failed; retrying"
            );
        })
        .await
}
