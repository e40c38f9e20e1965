//! Standalone mode, like Kafka Connect's: no Kubernetes. Provision the topics and tables
//! with the same code the operator uses, then run ingest and process in one process, with a
//! live progress line on a terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rtdp_crds::Pipeline;
use rtdp_provisioning::{cassandra as schema, kafka as topics};
use tokio::sync::watch;

use crate::connect::{
    EndpointOverrides, cassandra_session, check_kafka_access, kafka_client_config,
    kafka_client_properties,
};
use crate::error::RunnerError;
use crate::ingest::{self, IngestOptions, IngestReport};
use crate::process::{self, EndOffsets, ProcessOptions};
use crate::record::RejectReason;
use crate::telemetry::{Health, Metrics, ReasonLabel};
use rtdp_crds::template::Interval;

/// What standalone mode needs besides the manifest.
#[derive(Debug)]
pub struct StandaloneOptions {
    /// Endpoint overrides.
    pub overrides: EndpointOverrides,
    /// Ingest once, process everything ingested, then stop.
    pub once: bool,
    /// The intervals to run, one pass each (`--interval`, `--backfill`); empty: the pass's own.
    pub intervals: Vec<Interval>,
    /// Show the progress line (on a terminal).
    pub progress: bool,
    /// Flips to true on SIGTERM/SIGINT.
    pub shutdown: watch::Receiver<bool>,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Health to report.
    pub health: Arc<Health>,
}

/// The closing report.
#[derive(Debug, Clone)]
pub struct StandaloneReport {
    /// What ingest did (none when the Pipeline has no source).
    pub ingest: Option<IngestReport>,
    /// Records consumed.
    pub consumed: u64,
    /// Records written to every table.
    pub written: u64,
    /// Records the filter skipped.
    pub filtered: u64,
    /// Identities whose rows a record deleted (`spec.schema.identity`).
    pub deleted: u64,
    /// Dead-lettered records by reason.
    pub dead_lettered: BTreeMap<String, u64>,
    /// End-to-end latency p50 and p99, in seconds.
    pub latency: Option<(f64, f64)>,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for StandaloneReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ingest) = &self.ingest {
            writeln!(
                formatter,
                "ingested       {:>9} records ({} pages{})",
                ingest.records,
                ingest.pages,
                if ingest.failures > 0 {
                    format!(", {} failed", ingest.failures)
                } else {
                    String::new()
                }
            )?;
            // A run per interval when several ran (a backfill): its history.
            if ingest.runs.len() > 1 {
                for run in &ingest.runs {
                    writeln!(formatter, "  {run}")?;
                }
            }
        }
        writeln!(formatter, "consumed       {:>9}", self.consumed)?;
        writeln!(
            formatter,
            "written        {:>9} (to every table)",
            self.written
        )?;
        writeln!(formatter, "filtered out   {:>9}", self.filtered)?;
        if self.deleted > 0 {
            writeln!(
                formatter,
                "deleted        {:>9} identities (deleteWhen, tombstones, filtered: gone from every table)",
                self.deleted
            )?;
        }
        let dead: u64 = self.dead_lettered.values().sum();
        writeln!(formatter, "dead-lettered  {dead:>9}")?;
        for (reason, count) in &self.dead_lettered {
            writeln!(formatter, "  {reason:<22} {count:>5}")?;
        }
        if let Some((p50, p99)) = self.latency {
            writeln!(
                formatter,
                "end-to-end latency p50 {:.1} ms, p99 {:.1} ms (Kafka timestamp to Cassandra ack)",
                p50 * 1000.0,
                p99 * 1000.0
            )?;
        }
        write!(
            formatter,
            "elapsed        {:.1} s",
            self.elapsed.as_secs_f64()
        )
    }
}

/// Provisions, then runs ingest and process together.
pub async fn run(
    pipeline: &Pipeline,
    options: StandaloneOptions,
) -> Result<StandaloneReport, RunnerError> {
    let StandaloneOptions {
        overrides,
        once,
        intervals,
        progress,
        shutdown,
        metrics,
        health,
    } = options;
    if pipeline.spec.suspend {
        return Err(RunnerError::Config(
            "spec.suspend is true: the pipeline is paused, so there is nothing to run; set spec.suspend: false (or remove it) to run it".into(),
        ));
    }
    let started = Instant::now();
    provision(pipeline, &overrides).await?;

    let (stop_sender, stop_at) = watch::channel::<Option<EndOffsets>>(None);
    let process = process::run(
        pipeline,
        ProcessOptions {
            overrides: overrides.clone(),
            shutdown: shutdown.clone(),
            stop_at,
            metrics: Arc::clone(&metrics),
            health: Arc::clone(&health),
        },
    );
    let ingest_then_stop = async {
        let report = if pipeline.spec.source.is_some() {
            Some(
                ingest::run(
                    pipeline,
                    IngestOptions {
                        overrides: overrides.clone(),
                        once,
                        intervals: intervals.clone(),
                        shutdown: shutdown.clone(),
                        metrics: Arc::clone(&metrics),
                        health: Arc::clone(&health),
                    },
                )
                .await,
            )
        } else {
            None
        };
        if once {
            // Everything ingested so far is below these offsets: stop when processed.
            match end_offsets(pipeline, &overrides).await {
                Ok(end) => {
                    let _ = stop_sender.send(Some(end));
                }
                Err(error) => tracing::error!(%error, "reading the topic's end offsets"),
            }
        }
        report
    };
    let show = progress && std::io::stderr().is_terminal();
    let progress_task = show.then(|| tokio::spawn(progress_line(Arc::clone(&metrics))));
    let (process_result, ingest_result) = tokio::join!(process, ingest_then_stop);
    if let Some(task) = progress_task {
        task.abort();
        eprintln!();
    }
    let ingest = match ingest_result {
        Some(Ok(report)) => Some(report),
        Some(Err(error)) => return Err(error),
        None => None,
    };
    process_result?;
    let dead_lettered = RejectReason::ALL
        .iter()
        .filter_map(|reason| {
            let count = metrics
                .records_dead_lettered
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str().to_string(),
                })
                .get();
            (count > 0).then(|| (reason.as_str().to_string(), count))
        })
        .collect();
    Ok(StandaloneReport {
        ingest,
        consumed: metrics.records_consumed.get(),
        written: metrics.records_written.get(),
        filtered: metrics.records_filtered.get(),
        deleted: metrics.identities_deleted.get(),
        dead_lettered,
        latency: metrics
            .end_to_end_percentiles(&[50.0, 99.0])
            .and_then(|values| Some((*values.first()?, *values.get(1)?))),
        elapsed: started.elapsed(),
    })
}

/// Rewrites one terminal line every second with the pipeline's counters.
async fn progress_line(metrics: Arc<Metrics>) {
    let mut last = (Instant::now(), 0_u64);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let written = metrics.records_written.get();
        let rate = written.saturating_sub(last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), written);
        eprint!(
            "\r\x1b[2Kproduced {} | consumed {} | written {} | dead-lettered {} | filtered {} | {:.0} records/s | lag {}",
            metrics.records_produced.get(),
            metrics.records_consumed.get(),
            written,
            metrics.dead_lettered_total(),
            metrics.records_filtered.get(),
            rate,
            lag_total(&metrics)
        );
        let _ = std::io::stderr().flush();
    }
}

fn lag_total(metrics: &Metrics) -> i64 {
    // The lag family is small (one gauge per partition); encode-free sum via the text.
    metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with("rtdp_consumer_lag{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// Creates (or adopts) the topics and the keyspace and tables, exactly as the operator does.
pub async fn provision(
    pipeline: &Pipeline,
    overrides: &EndpointOverrides,
) -> Result<(), RunnerError> {
    let (bootstrap, properties) = kafka_client_properties(&pipeline.spec.kafka, overrides)?;
    check_kafka_access(&topics::client_config(&bootstrap, &properties)).await?;
    let admin = topics::admin_client(&bootstrap, &properties)?;
    let report = topics::ensure_topics(&admin, pipeline).await?;
    tracing::info!(?report, "topics ready");
    let session = cassandra_session(&pipeline.spec.cassandra, overrides).await?;
    let report = schema::ensure_schema(&session, pipeline).await?;
    tracing::info!(?report, "keyspace and tables ready");
    Ok(())
}

/// The end offset of every partition of the Pipeline's topic.
pub async fn end_offsets(
    pipeline: &Pipeline,
    overrides: &EndpointOverrides,
) -> Result<EndOffsets, RunnerError> {
    let base = kafka_client_config(&pipeline.spec.kafka, overrides)?;
    let topic = pipeline.topic_name();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = base
            .create()
            .map_err(|error| RunnerError::kafka("creating a metadata client", error))?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|error| RunnerError::kafka(format!("reading metadata of {topic}"), error))?;
        let mut end = EndOffsets::new();
        for found in metadata
            .topics()
            .iter()
            .filter(|found| found.name() == topic)
        {
            for partition in found.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, partition.id(), timeout)
                    .map_err(|error| {
                        RunnerError::kafka(format!("reading end offsets of {topic}"), error)
                    })?;
                end.insert(partition.id(), high);
            }
        }
        Ok(end)
    })
    .await
    .map_err(|error| RunnerError::Config(format!("end offsets task failed: {error}")))?
}
