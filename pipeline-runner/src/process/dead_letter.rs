//! The dead-letter topic: a rejected record, byte for byte, with headers that say why and
//! where it came from. Produced with the same idempotent, acks=all producer as ingest; the
//! record's offset is stored only after the broker acknowledged its dead letter.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Timestamp};

use crate::record::RecordError;

/// Header names, stable for anyone reading the dead-letter topic.
pub mod headers {
    /// The reason label, e.g. `wrong_type`.
    pub const REASON: &str = "rtdp.reason";
    /// The field at fault, when one is.
    pub const FIELD: &str = "rtdp.field";
    /// The human-readable error.
    pub const ERROR: &str = "rtdp.error";
    /// The topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "rtdp.original.topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "rtdp.original.partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "rtdp.original.offset";
    /// Its timestamp in milliseconds.
    pub const ORIGINAL_TIMESTAMP: &str = "rtdp.original.timestamp";
    /// The pipeline, `namespace/name`.
    pub const PIPELINE: &str = "rtdp.pipeline";
}

/// Sends one dead letter, retrying until the broker acknowledges it (a dead letter is never
/// dropped; while Kafka is away the partition simply stops advancing).
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    pipeline: &str,
    message: &OwnedMessage,
    error: &RecordError,
) {
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let timestamp = match message.timestamp() {
        Timestamp::CreateTime(millis) | Timestamp::LogAppendTime(millis) => millis.to_string(),
        Timestamp::NotAvailable => String::new(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut record_headers = OwnedHeaders::new_with_capacity(8)
            .insert(Header {
                key: headers::REASON,
                value: Some(error.reason.as_str()),
            })
            .insert(Header {
                key: headers::ERROR,
                value: Some(error.to_string().as_str()),
            })
            .insert(Header {
                key: headers::ORIGINAL_TOPIC,
                value: Some(message.topic()),
            })
            .insert(Header {
                key: headers::ORIGINAL_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: headers::ORIGINAL_OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: headers::ORIGINAL_TIMESTAMP,
                value: Some(timestamp.as_str()),
            })
            .insert(Header {
                key: headers::PIPELINE,
                value: Some(pipeline),
            });
        if let Some(field) = &error.field {
            record_headers = record_headers.insert(Header {
                key: headers::FIELD,
                value: Some(field.as_str()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(record_headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => return,
            Err((kafka_error, _)) => {
                tracing::warn!(
                    error = %kafka_error,
                    topic,
                    retry_in_ms = backoff.as_millis() as u64,
                    "producing a dead letter failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
