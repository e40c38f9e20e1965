//! What operators of the runner watch: Prometheus metrics, `/healthz`, `/readyz`, and the
//! counters behind standalone mode's progress line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;
use hdrhistogram::Histogram as LatencyHistogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::error::RunnerError;
use crate::record::RejectReason;

/// A dead-letter reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason, e.g. `wrong_type`.
    pub reason: String,
}

/// A Kafka partition label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: String,
}

/// An error kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind, e.g. `timeout`.
    pub kind: String,
}

/// An outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome, e.g. `ok` or `retry`.
    pub outcome: String,
}

/// Every metric of the runner; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Records taken from the topic.
    pub records_consumed: Counter,
    /// Records acknowledged by Cassandra in every table.
    pub records_written: Counter,
    /// Records the filter skipped on purpose.
    pub records_filtered: Counter,
    /// Identities whose rows a record deleted (`deleteWhen`, a tombstone, or, with an
    /// identity, a record the filter skips).
    pub identities_deleted: Counter,
    /// Records whose identity's stored state was as new or newer (applied before a restart
    /// re-delivered them, or an older version): nothing written, counted as written.
    pub records_superseded: Counter,
    /// Records sent to the dead-letter topic, by reason.
    pub records_dead_lettered: Family<ReasonLabel, Counter>,
    /// Time from dispatching a record's writes to Cassandra acknowledging all of them.
    pub write_latency: Histogram,
    /// Time from the Kafka record's timestamp to Cassandra acknowledging it.
    pub end_to_end_latency: Histogram,
    /// Consumer lag per partition (from librdkafka's statistics).
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Records the process role took from the consumer at once (at most
    /// `runner.batch.maxRecords`), one observation per batch.
    pub consumer_batch_records: Histogram,
    /// Cassandra write errors by kind (each one retried).
    pub cassandra_errors: Family<KindLabel, Counter>,
    /// Records produced to the topic by the ingest role.
    pub records_produced: Counter,
    /// HTTP source requests by outcome.
    pub source_requests: Family<OutcomeLabel, Counter>,
    /// Source runs (one pass over one interval) by outcome: `succeeded`, `partial`, `failed`.
    pub source_runs: Family<OutcomeLabel, Counter>,
    /// Every end-to-end latency in microseconds, for exact percentiles in reports
    /// (standalone, bench): recording is a constant-time bucket increment.
    latency_microseconds: Mutex<LatencyHistogram<u64>>,
    /// Seconds the runner's threads were runnable but waited for a core, brought up to date
    /// at each scrape.
    cpu_wait: Counter<f64, AtomicU64>,
    /// Each live thread's wait (ns) at the last scrape, by thread id: only what a thread
    /// waited since is added, so a thread that ends takes nothing back from the counter (the
    /// lock keeps two scrapes from adding the same wait twice).
    cpu_wait_by_thread: Mutex<HashMap<u32, f64>>,
}

/// Significant decimal digits the latency histogram keeps (0.1 % resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

impl Metrics {
    /// Registers every metric, labelled with the pipeline (`namespace/name`).
    pub fn new(pipeline: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "rtdp",
            [(Cow::Borrowed("pipeline"), Cow::Owned(pipeline.to_string()))].into_iter(),
        );
        let records_consumed = Counter::default();
        let records_written = Counter::default();
        let records_filtered = Counter::default();
        let identities_deleted = Counter::default();
        let records_superseded = Counter::default();
        let records_dead_lettered = Family::<ReasonLabel, Counter>::default();
        let write_latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        // Fine buckets (25 % apart, 1 ms to ~7 s): p99 targets are read from this histogram.
        let end_to_end_latency = Histogram::new(exponential_buckets(0.001, 1.25, 40));
        let consumer_lag = Family::<PartitionLabel, Gauge>::default();
        // 1, 2, 4, ... 16384: maxRecords is at most 10 000 (the CRD's bound).
        let consumer_batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        let cassandra_errors = Family::<KindLabel, Counter>::default();
        let records_produced = Counter::default();
        let source_requests = Family::<OutcomeLabel, Counter>::default();
        let source_runs = Family::<OutcomeLabel, Counter>::default();
        let cpu_wait = Counter::<f64, AtomicU64>::default();
        for reason in RejectReason::ALL {
            let _ = records_dead_lettered.get_or_create(&ReasonLabel {
                reason: reason.as_str().to_string(),
            });
        }
        registry.register(
            "records_consumed",
            "Records taken from the pipeline's topic",
            records_consumed.clone(),
        );
        registry.register(
            "records_written",
            "Records acknowledged by Cassandra in every table",
            records_written.clone(),
        );
        registry.register(
            "records_filtered",
            "Records the filter skipped on purpose",
            records_filtered.clone(),
        );
        registry.register(
            "identities_deleted",
            "Identities whose rows a record deleted (deleteWhen, a tombstone, or a record the filter skips)",
            identities_deleted.clone(),
        );
        registry.register(
            "records_superseded",
            "Records whose identity's stored state was as new or newer (applied before a restart, or older): nothing written",
            records_superseded.clone(),
        );
        registry.register(
            "records_dead_lettered",
            "Records sent to the dead-letter topic, by reason",
            records_dead_lettered.clone(),
        );
        registry.register(
            "write_latency_seconds",
            "Time from dispatching a record's writes to Cassandra acknowledging all of them",
            write_latency.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "Time from the Kafka record's timestamp to Cassandra acknowledging it",
            end_to_end_latency.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records behind the end of each partition",
            consumer_lag.clone(),
        );
        registry.register(
            "consumer_batch_records",
            "Records the process role took from the consumer at once, at most runner.batch.maxRecords",
            consumer_batch_records.clone(),
        );
        registry.register(
            "cassandra_errors",
            "Cassandra write errors by kind; each is retried, none loses a record",
            cassandra_errors.clone(),
        );
        registry.register(
            "records_produced",
            "Records produced to the topic by the ingest role",
            records_produced.clone(),
        );
        registry.register(
            "source_requests",
            "HTTP source requests by outcome",
            source_requests.clone(),
        );
        registry.register(
            "source_runs",
            "Source runs (one pass over one interval) by outcome: succeeded, partial (some pages failed after their retries) or failed (no page)",
            source_runs.clone(),
        );
        registry.register(
            "cpu_wait_seconds",
            "Time the runner's threads were runnable but waited for a core (Linux schedstat); rising with the end-to-end latency, the processor shares its cores with busy neighbours",
            cpu_wait.clone(),
        );
        Self {
            registry,
            records_consumed,
            records_written,
            records_filtered,
            identities_deleted,
            records_superseded,
            records_dead_lettered,
            write_latency,
            end_to_end_latency,
            consumer_lag,
            consumer_batch_records,
            cassandra_errors,
            records_produced,
            source_requests,
            source_runs,
            latency_microseconds: Mutex::new(new_latency_histogram()),
            cpu_wait,
            cpu_wait_by_thread: Mutex::default(),
        }
    }

    /// Records one end-to-end latency (Prometheus histogram and percentile histogram).
    pub fn observe_end_to_end(&self, seconds: f64) {
        self.end_to_end_latency.observe(seconds);
        let microseconds = (seconds.max(0.0) * 1e6).round() as u64;
        self.latency_microseconds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(microseconds);
    }

    /// The given percentiles (0-100) of the end-to-end latencies, in seconds; `None` before
    /// the first record.
    pub fn end_to_end_percentiles(&self, percentiles: &[f64]) -> Option<Vec<f64>> {
        let histogram = self
            .latency_microseconds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        percentiles_of(&histogram, percentiles)
    }

    /// Counts a dead-lettered record.
    pub fn dead_lettered(&self, reason: RejectReason) {
        self.records_dead_lettered
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    /// The total dead-lettered, over every reason.
    pub fn dead_lettered_total(&self) -> u64 {
        RejectReason::ALL
            .iter()
            .map(|reason| {
                self.records_dead_lettered
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str().to_string(),
                    })
                    .get()
            })
            .sum()
    }

    /// Adds what every thread waited for a core since the last scrape.
    fn update_cpu_wait(&self) {
        let Some(now) = cpu_wait_by_thread() else {
            return;
        };
        let mut last = self
            .cpu_wait_by_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let added = waited_since(&last, &now);
        *last = now;
        if added > 0.0 {
            self.cpu_wait.inc_by(added / 1e9);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.update_cpu_wait();
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Nanoseconds each of this process's threads has been runnable but not running, by thread
/// id (`/proc/self/task/<tid>/schedstat`); `None` where the kernel does not tell.
fn cpu_wait_by_thread() -> Option<HashMap<u32, f64>> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut waits = HashMap::new();
    for task in tasks.filter_map(Result::ok) {
        let Some(thread) = task.file_name().to_str().and_then(|tid| tid.parse().ok()) else {
            continue;
        };
        // A thread that ended since the listing has nothing more to tell.
        if let Ok(line) = std::fs::read_to_string(task.path().join("schedstat")) {
            waits.insert(thread, run_queue_nanoseconds(&line)?);
        }
    }
    Some(waits)
}

/// Nanoseconds the threads of `now` waited since `last`: a new thread counts from 0, a thread
/// that ended counts no more (nothing it waited before is taken back).
fn waited_since(last: &HashMap<u32, f64>, now: &HashMap<u32, f64>) -> f64 {
    now.iter()
        .map(|(thread, waited)| (waited - last.get(thread).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// The second field of a schedstat line: `<on-CPU ns> <waiting ns> <timeslices>`.
fn run_queue_nanoseconds(schedstat: &str) -> Option<f64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// The longest latency told apart, in microseconds (an hour); longer ones count as an hour.
const LONGEST_LATENCY_MICROSECONDS: u64 = 3_600_000_000;

/// A fixed-size histogram from 1 µs to an hour; the bounds are constants that
/// `new_with_bounds` accepts, so it cannot fail.
fn new_latency_histogram() -> LatencyHistogram<u64> {
    LatencyHistogram::new_with_bounds(1, LONGEST_LATENCY_MICROSECONDS, LATENCY_SIGNIFICANT_DIGITS)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// The given percentiles (0-100) of microsecond latencies, in seconds; `None` when empty.
fn percentiles_of(histogram: &LatencyHistogram<u64>, percentiles: &[f64]) -> Option<Vec<f64>> {
    if histogram.is_empty() {
        return None;
    }
    Some(
        percentiles
            .iter()
            .map(|percentile| histogram.value_at_percentile(*percentile) as f64 / 1e6)
            .collect(),
    )
}

/// Liveness and readiness, set by the roles as they connect and lose connections.
#[derive(Debug, Default)]
pub struct Health {
    kafka: AtomicBool,
    cassandra: AtomicBool,
    needs_cassandra: AtomicBool,
}

impl Health {
    /// A role that writes to Cassandra is ready only when Cassandra is.
    pub fn require_cassandra(&self) {
        self.needs_cassandra.store(true, Ordering::Relaxed);
    }

    /// Records whether Kafka is usable.
    pub fn set_kafka(&self, ready: bool) {
        self.kafka.store(ready, Ordering::Relaxed);
    }

    /// Records whether Cassandra is usable.
    pub fn set_cassandra(&self, ready: bool) {
        self.cassandra.store(ready, Ordering::Relaxed);
    }

    /// Whether Cassandra's last write (or connection) succeeded.
    pub fn cassandra_is_up(&self) -> bool {
        self.cassandra.load(Ordering::Relaxed)
    }

    /// Ready: Kafka usable and, when needed, Cassandra too.
    pub fn is_ready(&self) -> bool {
        self.kafka.load(Ordering::Relaxed)
            && (!self.needs_cassandra.load(Ordering::Relaxed)
                || self.cassandra.load(Ordering::Relaxed))
    }
}

/// Binds the metrics address; a port in use is a clear error.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, RunnerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| RunnerError::Io {
            context: format!(
                "binding the metrics address {address} (in use? pass --metrics-address, e.g. 127.0.0.1:0)"
            ),
            source,
        })
}

/// What the telemetry routes read.
#[derive(Clone, Debug)]
struct Telemetry {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends (axum, which also
/// backs off when accepting a connection fails instead of spinning).
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let router = Router::new()
        .route("/metrics", any(metrics_page))
        .route("/healthz", any(|| async { text(StatusCode::OK, "ok\n") }))
        .route("/readyz", any(readiness))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n") })
        .with_state(Telemetry { metrics, health });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
}

async fn metrics_page(State(telemetry): State<Telemetry>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        telemetry.metrics.encode(),
    )
}

async fn readiness(State(telemetry): State<Telemetry>) -> impl IntoResponse {
    if telemetry.health.is_ready() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for Kafka or Cassandra\n",
        )
    }
}

fn text(status: StatusCode, body: &'static str) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "text/plain")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_to_a_tenth_of_a_percent() {
        let metrics = Metrics::new("default/listings");
        assert_eq!(metrics.end_to_end_percentiles(&[50.0]), None);
        for milliseconds in 1..=100 {
            metrics.observe_end_to_end(f64::from(milliseconds) / 1000.0);
        }
        let found = metrics
            .end_to_end_percentiles(&[50.0, 99.0, 100.0])
            .expect("recorded");
        for (value, expected) in found.iter().zip([0.050, 0.099, 0.100]) {
            assert!((value - expected).abs() <= expected * 0.001, "{found:?}");
        }
    }

    #[test]
    fn the_run_queue_wait_is_the_second_schedstat_field() {
        assert_eq!(
            run_queue_nanoseconds("9509577 387276 15\n"),
            Some(387_276.0)
        );
        assert_eq!(run_queue_nanoseconds("9509577"), None);
        assert_eq!(run_queue_nanoseconds("a b c"), None);
    }

    #[test]
    fn a_thread_that_ends_takes_nothing_back_and_a_new_one_counts_from_zero() {
        let last = HashMap::from([(1, 100.0), (2, 50.0)]);
        // Thread 2 ended, thread 3 started, thread 1 waited 20 ns more.
        let now = HashMap::from([(1, 120.0), (3, 7.0)]);
        assert_eq!(waited_since(&last, &now), 27.0);
        assert_eq!(waited_since(&now, &now), 0.0);
    }

    #[test]
    fn the_cpu_wait_is_exposed_and_never_goes_back() {
        // Linux tells every thread's wait (the runner's images and CI are Linux).
        let waits = cpu_wait_by_thread().expect("/proc/self/task/*/schedstat is readable");
        assert!(!waits.is_empty(), "at least this thread");
        assert!(waits.values().all(|waited| *waited >= 0.0), "{waits:?}");
        let metrics = Metrics::new("default/listings");
        let value = |text: &str| -> f64 {
            rtdp_test_support::prometheus::metric_where(
                text,
                "rtdp_cpu_wait_seconds_total",
                "pipeline=\"default/listings\"",
            )
            .unwrap_or_else(|| panic!("no rtdp_cpu_wait_seconds_total in:\n{text}"))
        };
        let first = value(&metrics.encode());
        let second = value(&metrics.encode());
        assert!(first >= 0.0 && second >= first, "{first} then {second}");
    }

    #[test]
    fn metrics_are_exposed_with_the_pipeline_label() {
        let metrics = Metrics::new("default/listings");
        metrics.records_written.inc();
        metrics.dead_lettered(RejectReason::WrongType);
        let text = metrics.encode();
        assert!(
            text.contains("rtdp_records_written_total{pipeline=\"default/listings\"} 1"),
            "{text}"
        );
        assert!(text.contains("reason=\"wrong_type\""), "{text}");
        assert_eq!(metrics.dead_lettered_total(), 1);
    }

    #[test]
    fn readiness_needs_cassandra_only_when_required() {
        let health = Health::default();
        health.set_kafka(true);
        assert!(health.is_ready());
        health.require_cassandra();
        assert!(!health.is_ready());
        health.set_cassandra(true);
        assert!(health.is_ready());
    }
}
