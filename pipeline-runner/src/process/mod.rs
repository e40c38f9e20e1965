//! The process role: consume the Pipeline's topic, parse and transform each record, write it
//! to every table, dead-letter what cannot be written, and store each partition's offset
//! only once every earlier record of it is safely done.

mod batch;
pub mod dead_letter;
pub mod identity;
pub mod offsets;
mod partitions;
pub mod writer;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Timestamp};
use rtdp_crds::Pipeline;
use tokio::sync::watch;

use crate::connect::{EndpointOverrides, cassandra_session, kafka_client_config};
use crate::error::RunnerError;
use crate::kafka::{ConsumerCallbacks, Producer, ProducerCallbacks, consumer, producer};
use crate::record::{RecordError, RecordParser};
use crate::retry;
use crate::telemetry::{Health, KindLabel, Metrics};
use crate::transform::{Outcome, Transforms};
use identity::{Applied, Change, IdentityWriter};
use offsets::{Finished, OffsetTracker};
use partitions::{Resuming, pause_while_cassandra_is_down, reached, store_offsets};
use writer::{TableWriter, WriteFailure, error_kind};

/// How long in-flight writes may take to finish after SIGTERM before the runner gives up on
/// them (their offsets are then not stored, so they are re-delivered: nothing is lost).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Offsets (next to consume) per partition at which `process` may stop: standalone mode's
/// "run until everything ingested so far is processed".
pub type EndOffsets = HashMap<i32, i64>;

/// What the process role needs besides the manifest.
#[derive(Debug)]
pub struct ProcessOptions {
    /// Endpoint overrides.
    pub overrides: EndpointOverrides,
    /// Flips to true on SIGTERM/SIGINT.
    pub shutdown: watch::Receiver<bool>,
    /// When set, stop once the group's committed offsets reach these.
    pub stop_at: watch::Receiver<Option<EndOffsets>>,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Health to report.
    pub health: Arc<Health>,
}

/// A record's work: its partition, offset and what became of it (`None`: abandoned, never
/// expected since the retries have no limit; its offset is never stored, so the record is
/// re-delivered after a restart).
type Work = Pin<Box<dyn Future<Output = (i32, i64, Option<Finished>)> + Send>>;

/// Runs the process role until shutdown (or `stop_at` is reached).
pub async fn run(pipeline: &Pipeline, options: ProcessOptions) -> Result<(), RunnerError> {
    let ProcessOptions {
        overrides,
        mut shutdown,
        mut stop_at,
        metrics,
        health,
    } = options;
    health.require_cassandra();
    let spec = &pipeline.spec;
    let pipeline_name = format!(
        "{}/{}",
        pipeline.namespace_or_default(),
        kube_name(pipeline)
    );
    let parser =
        RecordParser::new(&spec.schema).map_err(|error| RunnerError::Config(error.to_string()))?;
    let transforms =
        Transforms::new(&spec.schema).map_err(|error| RunnerError::Config(error.to_string()))?;
    let value_names: Vec<String> = parser
        .field_names()
        .chain(transforms.derived_names())
        .map(str::to_string)
        .collect();

    let Some(session) =
        connect_cassandra_with_retry(pipeline, &overrides, &health, &mut shutdown).await?
    else {
        return Ok(());
    };
    let session = Arc::new(session);
    let writer = TableWriter::prepare(Arc::clone(&session), spec, &value_names).await?;
    let identities = IdentityWriter::prepare(Arc::clone(&session), pipeline, &value_names)
        .await?
        .map(Arc::new);
    health.set_cassandra(true);

    let base = kafka_client_config(&spec.kafka, &overrides)?;
    // The consumer reports Kafka's readiness; the dead-letter producer talks to the same
    // brokers.
    let topic = pipeline.topic_name();
    // Shared by every record's work (one allocation, not a copy of its names per record).
    let dead_letters = Arc::new(DeadLetters {
        producer: producer(&base, &spec.runner.batch, ProducerCallbacks::default())?,
        topic: pipeline.dead_letter_topic_name(),
        pipeline: pipeline_name.clone(),
    });
    // Shared with the blocking pool's reads of committed offsets.
    let consumer = Arc::new(consumer(
        &base,
        &pipeline.consumer_group(),
        Arc::clone(&metrics),
        Arc::clone(&health),
    )?);
    consumer
        .subscribe(&[topic.as_str()])
        .map_err(|error| RunnerError::kafka(format!("subscribing to topic {topic}"), error))?;
    tracing::info!(
        pipeline = %pipeline_name,
        %topic,
        group = %pipeline.consumer_group(),
        tables = writer.table_count(),
        identity = ?pipeline.identity_fields(),
        "processing"
    );

    // Each record writes to every table (and its identity's state); `concurrency` bounds the
    // writes in flight.
    let statements_per_record = writer.table_count()
        + identities
            .as_ref()
            .map_or(0, |identities| identities.extra_statements());
    let max_in_flight = (usize::try_from(spec.runner.concurrency).unwrap_or(1)
        / statements_per_record.max(1))
    .max(1);
    let shared = Arc::new(Shared {
        tables: writer,
        identities,
        dead_letters,
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
    });
    let max_batch = usize::try_from(spec.runner.batch.max_records)
        .unwrap_or(1)
        .max(1);
    let cel_root = cel::Context::default();
    let rules = Rules {
        parser: &parser,
        transforms: &transforms,
        cel_root: &cel_root,
        shared: &shared,
    };
    let mut tracker = OffsetTracker::new(consumer.context().to_store());
    let mut work: FuturesUnordered<Work> = FuturesUnordered::new();
    let mut resuming = Resuming::default();
    // Standalone's "has the group committed the end offsets?": one check at a time, off the
    // loop (a commit and a read, each a Kafka round trip).
    let mut end_checks: FuturesUnordered<tokio::task::JoinHandle<bool>> = FuturesUnordered::new();
    let mut paused = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Nothing in this loop waits for Kafka or Cassandra: writes run as futures, Kafka's
    // blocking calls on the blocking pool, and the consumer is polled only for records.
    loop {
        let capacity = max_in_flight.saturating_sub(work.len() + resuming.records());
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::info!(in_flight = work.len(), "shutting down: finishing in-flight records");
                    break;
                }
            }
            Some((partition, offset, finished)) = work.next(), if !work.is_empty() => {
                finish(&mut tracker, &metrics, partition, offset, finished);
            }
            resumed = resuming.next(), if resuming.is_reading() => {
                if let Some(resumed) = resumed {
                    tracker.start(resumed.partition, resumed.clock, resumed.progress);
                    // Another processor may have applied this partition's records since.
                    if let Some(identities) = &shared.identities {
                        identities.forget_cached();
                    }
                    for message in resumed.records {
                        dispatch(message, &rules, &mut tracker, &mut work);
                    }
                }
            }
            received = consumer.recv(), if capacity > 0 => {
                let message = received.map_err(|error| {
                    RunnerError::kafka(format!("consuming topic {topic}"), error)
                });
                let message = match message {
                    Ok(message) => {
                        // A record just came from a broker: Kafka is reachable.
                        health.set_kafka(true);
                        message.detach()
                    }
                    Err(error) => {
                        // librdkafka retries by itself; a consume error is reported, not fatal.
                        tracing::warn!(%error, "consume error");
                        continue;
                    }
                };
                // Take what is already fetched, up to a batch and the free write slots,
                // without waiting.
                let batch = batch::take_fetched(message, max_batch.min(capacity), || {
                    match consumer.recv().now_or_never() {
                        Some(Ok(message)) => Some(message.detach()),
                        _ => None,
                    }
                });
                metrics.consumer_batch_records.observe(batch.len() as f64);
                // A rebalance runs inside the polls above: its revocations apply before any
                // record taken after it.
                apply_revocations(&consumer, &mut tracker, &mut resuming);
                for message in batch {
                    metrics.records_consumed.inc();
                    if tracker.is_tracking(message.partition()) {
                        dispatch(message, &rules, &mut tracker, &mut work);
                    } else {
                        // Its partition's first record since it was assigned: its committed
                        // progress is read first.
                        resuming.hold(&consumer, &topic, message);
                    }
                }
            }
            Some(reached) = end_checks.next(), if !end_checks.is_empty() => {
                if matches!(reached, Ok(true)) {
                    tracing::info!("caught up with the end offsets; stopping");
                    break;
                }
            }
            _ = tick.tick() => {
                apply_revocations(&consumer, &mut tracker, &mut resuming);
                store_offsets(&consumer, &topic, &mut tracker);
                paused = pause_while_cassandra_is_down(&consumer, &health, paused);
                let target = stop_at.borrow_and_update().clone();
                if let Some(end_offsets) = target
                    && work.is_empty()
                    && resuming.records() == 0
                    && end_checks.is_empty()
                {
                    let consumer = Arc::clone(&consumer);
                    end_checks.push(tokio::task::spawn_blocking(move || {
                        reached(&consumer, &end_offsets)
                    }));
                }
            }
        }
    }

    // Finish what is in flight, store its offsets, commit, leave the group.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !work.is_empty() {
        match tokio::time::timeout_at(deadline, work.next()).await {
            Ok(Some((partition, offset, finished))) => {
                finish(&mut tracker, &metrics, partition, offset, finished);
            }
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    in_flight = work.len(),
                    "gave up waiting for in-flight writes; their records will be re-delivered"
                );
                break;
            }
        }
    }
    store_offsets(&consumer, &topic, &mut tracker);
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last automatic commit is not an error worth failing on.
        tracing::debug!(%error, "final offset commit");
    }
    tracing::info!("offsets committed; process role stopped");
    Ok(())
}

fn kube_name(pipeline: &Pipeline) -> String {
    pipeline.metadata.name.clone().unwrap_or_default()
}

/// Connects to Cassandra, retrying with backoff until it answers or shutdown.
async fn connect_cassandra_with_retry(
    pipeline: &Pipeline,
    overrides: &EndpointOverrides,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<scylla::client::session::Session>, RunnerError> {
    let connect = (|| cassandra_session(&pipeline.spec.cassandra, overrides))
        .retry(retry::until_it_works(
            Duration::from_millis(500),
            Duration::from_secs(10),
        ))
        .when(|error| !matches!(error, RunnerError::Config(_)))
        .notify(|error, delay| {
            health.set_cassandra(false);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "Cassandra is not reachable yet");
        });
    tokio::select! {
        session = connect => session.map(Some),
        _ = shutdown.changed() => Ok(None),
    }
}

enum Decision {
    Store(RecordChange),
    DeadLetter(RecordError),
    Filtered,
}

/// What a record does to the tables.
enum RecordChange {
    /// No identity: its rows are upserted, nothing else.
    Event(Vec<Option<scylla::value::CqlValue>>),
    /// With an identity: its rows replace the identity's, or the identity is deleted.
    Identity {
        identity: Vec<scylla::value::CqlValue>,
        change: Change,
        /// The filter skipped it (counted as filtered, the identity's rows deleted).
        filtered: bool,
    },
}

/// Forgets the partitions a rebalance took away (what they finished was committed by the
/// rebalance callback): their records in flight, and those waiting for their progress, are
/// left to the new owner, which applies them again (writes are idempotent).
fn apply_revocations(
    consumer: &StreamConsumer<ConsumerCallbacks>,
    tracker: &mut OffsetTracker,
    resuming: &mut Resuming,
) {
    for partition in consumer.context().take_revoked() {
        let abandoned = tracker.revoke(partition);
        let dropped = resuming.revoke(partition);
        if abandoned + dropped > 0 {
            tracing::info!(
                partition,
                abandoned,
                dropped,
                "a revoked partition's unfinished records are left to its new owner"
            );
        }
    }
}

/// What decides a record's fate, shared by every dispatch.
struct Rules<'a, 'p, 'v> {
    parser: &'a RecordParser,
    transforms: &'a Transforms,
    cel_root: &'a cel::Context<'p, 'v>,
    shared: &'a Arc<Shared>,
}

/// Starts a record's work: its write time from its partition's chain, then its rows written,
/// its dead letter sent, or (filtered) finished at once.
fn dispatch(
    message: OwnedMessage,
    rules: &Rules<'_, '_, '_>,
    tracker: &mut OffsetTracker,
    work: &mut FuturesUnordered<Work>,
) {
    let (partition, offset) = (message.partition(), message.offset());
    let write_time = tracker.dispatched(partition, offset, kafka_millis(&message));
    let started = Instant::now();
    let shared = rules.shared;
    match decide(
        rules.parser,
        rules.transforms,
        shared.identities.as_deref(),
        rules.cel_root,
        &message,
    ) {
        Decision::Store(change) => work.push(Box::pin(write(
            Arc::clone(shared),
            Pending {
                message,
                change,
                write_time,
                started,
            },
        ))),
        Decision::DeadLetter(error) => work.push(Box::pin(dead_letter(
            Arc::clone(&shared.dead_letters),
            message,
            error,
            Arc::clone(&shared.metrics),
        ))),
        Decision::Filtered => finish(
            tracker,
            &shared.metrics,
            partition,
            offset,
            Some(Finished::Filtered),
        ),
    }
}

/// Parse, validate, derive, filter: pure, per record.
fn decide(
    parser: &RecordParser,
    transforms: &Transforms,
    identities: Option<&IdentityWriter>,
    cel_root: &cel::Context<'_, '_>,
    message: &OwnedMessage,
) -> Decision {
    // A tombstone deletes the identity its key names.
    if let Some(identities) = identities
        && message.payload().is_none()
    {
        return match identities.identity_of_key(message.key()) {
            Ok(identity) => Decision::Store(RecordChange::Identity {
                identity,
                change: Change::Delete,
                filtered: false,
            }),
            Err(error) => Decision::DeadLetter(error),
        };
    }
    let parsed = match parser.parse(message.payload()) {
        Ok(parsed) => parsed,
        Err(error) => return Decision::DeadLetter(error),
    };
    let outcome = match transforms.apply(cel_root, &parsed) {
        Ok(outcome) => outcome,
        Err(error) => return Decision::DeadLetter(error),
    };
    let Some(identities) = identities else {
        return match outcome {
            Outcome::Keep(derived) => {
                let mut values = parsed.values;
                values.extend(derived);
                Decision::Store(RecordChange::Event(values))
            }
            Outcome::FilteredOut | Outcome::Delete => Decision::Filtered,
        };
    };
    // Identity fields are required (or defaulted): a parsed record always has them.
    let Some(identity) = identities.identity_of(&parsed.values) else {
        return Decision::DeadLetter(RecordError {
            reason: crate::record::RejectReason::MissingRequiredField,
            field: None,
            table: None,
            detail: "the record has no value for an identity field".to_string(),
        });
    };
    let (change, filtered) = match outcome {
        Outcome::Keep(derived) => {
            let mut values = parsed.values;
            values.extend(derived);
            (Change::Upsert(values), false)
        }
        Outcome::Delete => (Change::Delete, false),
        Outcome::FilteredOut => (Change::Delete, true),
    };
    Decision::Store(RecordChange::Identity {
        identity,
        change,
        filtered,
    })
}

/// Where a record that cannot be written goes.
struct DeadLetters {
    producer: Producer,
    topic: String,
    /// `namespace/name`, for the dead letter's headers.
    pipeline: String,
}

/// The record's Kafka timestamp in milliseconds (the broker's append time on topics the
/// operator manages, see `provisioning::kafka`), or now when it has none.
fn kafka_millis(message: &OwnedMessage) -> i64 {
    match message.timestamp() {
        Timestamp::CreateTime(millis) | Timestamp::LogAppendTime(millis) => millis,
        Timestamp::NotAvailable => chrono::Utc::now().timestamp_millis(),
    }
}

/// What every record's work shares.
struct Shared {
    tables: TableWriter,
    identities: Option<Arc<IdentityWriter>>,
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// One record on its way to the tables.
struct Pending {
    message: OwnedMessage,
    change: RecordChange,
    /// Its cells' write time (see [`writer::WriteClock`]).
    write_time: i64,
    /// When its work started, for the write latency.
    started: Instant,
}

/// Why an attempt to store a record is worth retrying.
#[derive(Debug, thiserror::Error)]
enum Retry {
    #[error(transparent)]
    Cassandra(Box<scylla::errors::ExecutionError>),
    #[error("{0}")]
    StateUnreadable(String),
}

impl Retry {
    fn kind(&self) -> &'static str {
        match self {
            Retry::Cassandra(error) => error_kind(error),
            Retry::StateUnreadable(_) => "state_unreadable",
        }
    }
}

/// Stores one record: its rows in every table, or, with an identity, its identity's rows
/// replaced or deleted (see [`identity`]). While Cassandra is unavailable it retries (never
/// dead-letters: the record is fine, the database is not); when Cassandra refuses the row
/// for good (a null key, an oversized value), the record is dead-lettered with the server's
/// message and its partition moves on.
async fn write(shared: Arc<Shared>, pending: Pending) -> (i32, i64, Option<Finished>) {
    let Pending {
        message,
        change,
        write_time,
        started,
    } = pending;
    let Shared {
        tables,
        identities,
        dead_letters,
        metrics,
        health,
    } = &*shared;
    let millis = kafka_millis(&message);
    // Records of one identity apply one at a time, across retries too.
    let lock = match (&change, identities) {
        (RecordChange::Identity { identity, .. }, Some(identities)) => {
            Some(identities.lock(identity).await)
        }
        _ => None,
    };
    let outcome = (|| async {
        let result = match (&change, identities, &lock) {
            (
                RecordChange::Identity {
                    identity, change, ..
                },
                Some(identities),
                Some(lock),
            ) => {
                identities
                    .apply(tables, lock, identity, change, write_time)
                    .await
            }
            (RecordChange::Event(values), _, _) => tables
                .write(values, write_time)
                .await
                .map(|()| Applied::Upserted),
            // An identity change is only decided when the Pipeline has one.
            (RecordChange::Identity { .. }, _, _) => Ok(Applied::Superseded),
        };
        match result {
            Ok(applied) => Ok(Ok(applied)),
            Err(WriteFailure::Rejected {
                table,
                message,
                kind,
            }) => Ok(Err((table, message, kind))),
            Err(WriteFailure::Transient(error)) => Err(Retry::Cassandra(Box::new(error))),
            Err(WriteFailure::StateUnreadable(message)) => Err(Retry::StateUnreadable(message)),
        }
    })
    .retry(retry::until_it_works(
        Duration::from_millis(100),
        Duration::from_secs(2),
    ))
    .notify(|error, delay| {
        health.set_cassandra(false);
        metrics
            .cassandra_errors
            .get_or_create(&KindLabel {
                kind: error.kind().to_string(),
            })
            .inc();
        tracing::warn!(
            %error,
            partition = message.partition(),
            offset = message.offset(),
            retry_in_ms = delay.as_millis() as u64,
            "Cassandra write failed; retrying"
        );
    })
    .await;
    drop(lock);
    let filtered = matches!(change, RecordChange::Identity { filtered: true, .. });
    match outcome {
        Ok(Ok(applied)) => {
            health.set_cassandra(true);
            let done = match applied {
                Applied::Upserted => {
                    metrics.records_written.inc();
                    metrics
                        .write_latency
                        .observe(started.elapsed().as_secs_f64());
                    let now = chrono::Utc::now().timestamp_millis();
                    metrics.observe_end_to_end((now - millis).max(0) as f64 / 1000.0);
                    Finished::Written
                }
                Applied::Deleted => {
                    metrics.identities_deleted.inc();
                    if filtered {
                        Finished::Filtered
                    } else {
                        metrics.records_written.inc();
                        Finished::Written
                    }
                }
                Applied::Superseded => {
                    metrics.records_superseded.inc();
                    // The same spec decides the same way: a skipped record stays skipped.
                    // Otherwise it counts as written: the tables hold it or what superseded it.
                    if filtered {
                        Finished::Filtered
                    } else {
                        Finished::Written
                    }
                }
            };
            (message.partition(), message.offset(), Some(done))
        }
        Ok(Err((table, server_message, kind))) => {
            // Cassandra answered: it is up, this record is what it refuses.
            health.set_cassandra(true);
            metrics
                .cassandra_errors
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
            tracing::warn!(
                %table,
                error = %server_message,
                partition = message.partition(),
                offset = message.offset(),
                "Cassandra refused the row; dead-lettering the record"
            );
            let error = RecordError::write_rejected(&table, server_message);
            dead_letter(
                Arc::clone(dead_letters),
                message,
                error,
                Arc::clone(metrics),
            )
            .await
        }
        Err(error) => {
            tracing::error!(%error, partition = message.partition(), offset = message.offset(), "gave up writing a record; it is re-delivered after a restart");
            (message.partition(), message.offset(), None)
        }
    }
}

async fn dead_letter(
    dead_letters: Arc<DeadLetters>,
    message: OwnedMessage,
    error: RecordError,
    metrics: Arc<Metrics>,
) -> (i32, i64, Option<Finished>) {
    tracing::debug!(
        reason = error.reason.as_str(),
        partition = message.partition(),
        offset = message.offset(),
        %error,
        "dead-lettering a record"
    );
    let sent = dead_letter::send(
        &dead_letters.producer,
        &dead_letters.topic,
        &dead_letters.pipeline,
        &message,
        &error,
    )
    .await;
    if let Err(kafka_error) = sent {
        tracing::error!(error = %kafka_error, partition = message.partition(), offset = message.offset(), "gave up producing a dead letter; the record is re-delivered after a restart");
        return (message.partition(), message.offset(), None);
    }
    metrics.dead_lettered(error.reason);
    (
        message.partition(),
        message.offset(),
        Some(Finished::DeadLettered(error.reason.as_str())),
    )
}

/// Settles a record whose work ended: its offset may be stored once every earlier one is.
fn finish(
    tracker: &mut OffsetTracker,
    metrics: &Metrics,
    partition: i32,
    offset: i64,
    finished: Option<Finished>,
) {
    // Abandoned: never stored, the partition stops advancing there and a restart re-delivers.
    let Some(finished) = finished else {
        return;
    };
    if finished == Finished::Filtered {
        metrics.records_filtered.inc();
    }
    tracker.finished(partition, offset, finished);
}
