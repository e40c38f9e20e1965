//! What operators of the runner watch: Prometheus metrics, `/healthz`, `/readyz`, and the
//! counters behind standalone mode's progress line.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
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
    /// Records sent to the dead-letter topic, by reason.
    pub records_dead_lettered: Family<ReasonLabel, Counter>,
    /// Time from dispatching a record's writes to Cassandra acknowledging all of them.
    pub write_latency: Histogram,
    /// Time from the Kafka record's timestamp to Cassandra acknowledging it.
    pub end_to_end_latency: Histogram,
    /// Consumer lag per partition (from librdkafka's statistics).
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Cassandra write errors by kind (each one retried).
    pub cassandra_errors: Family<KindLabel, Counter>,
    /// Records produced to the topic by the ingest role.
    pub records_produced: Counter,
    /// HTTP source requests by outcome.
    pub source_requests: Family<OutcomeLabel, Counter>,
    /// The most recent end-to-end latencies, for reports (standalone, bench).
    latency_samples: Mutex<LatencySamples>,
}

/// A ring of recent latencies in seconds.
#[derive(Debug, Default)]
struct LatencySamples {
    values: Vec<f64>,
    next: usize,
}

/// Latencies kept for percentiles.
const LATENCY_SAMPLES: usize = 100_000;

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
        let records_dead_lettered = Family::<ReasonLabel, Counter>::default();
        let write_latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        // Fine buckets (25 % apart, 1 ms to ~7 s): p99 targets are read from this histogram.
        let end_to_end_latency = Histogram::new(exponential_buckets(0.001, 1.25, 40));
        let consumer_lag = Family::<PartitionLabel, Gauge>::default();
        let cassandra_errors = Family::<KindLabel, Counter>::default();
        let records_produced = Counter::default();
        let source_requests = Family::<OutcomeLabel, Counter>::default();
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
        Self {
            registry,
            records_consumed,
            records_written,
            records_filtered,
            records_dead_lettered,
            write_latency,
            end_to_end_latency,
            consumer_lag,
            cassandra_errors,
            records_produced,
            source_requests,
            latency_samples: Mutex::new(LatencySamples::default()),
        }
    }

    /// Records one end-to-end latency (histogram and percentile samples).
    pub fn observe_end_to_end(&self, seconds: f64) {
        self.end_to_end_latency.observe(seconds);
        let mut samples = match self.latency_samples.lock() {
            Ok(samples) => samples,
            Err(poisoned) => poisoned.into_inner(),
        };
        if samples.values.len() < LATENCY_SAMPLES {
            samples.values.push(seconds);
        } else {
            let index = samples.next;
            samples.values[index] = seconds;
        }
        samples.next = (samples.next + 1) % LATENCY_SAMPLES;
    }

    /// The given percentiles (0-100) of the recent end-to-end latencies, in seconds.
    pub fn end_to_end_percentiles(&self, percentiles: &[f64]) -> Option<Vec<f64>> {
        let mut values = match self.latency_samples.lock() {
            Ok(samples) => samples.values.clone(),
            Err(poisoned) => poisoned.into_inner().values.clone(),
        };
        Some(percentiles_of(&mut values, percentiles)).filter(|result| !result.is_empty())
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Nearest-rank percentiles of `values` (sorted in place); empty when there are none.
pub fn percentiles_of(values: &mut [f64], percentiles: &[f64]) -> Vec<f64> {
    if values.is_empty() {
        return Vec::new();
    }
    values.sort_by(f64::total_cmp);
    percentiles
        .iter()
        .map(|percentile| {
            let rank = (percentile / 100.0 * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        })
        .collect()
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

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = Arc::clone(&metrics);
            let health = Arc::clone(&health);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let response = respond(request.uri().path(), &metrics, &health);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn respond(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if health.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: waiting for Kafka or Cassandra\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            percentiles_of(&mut values, &[50.0, 99.0, 100.0]),
            vec![50.0, 99.0, 100.0]
        );
        assert!(percentiles_of(&mut [], &[50.0]).is_empty());
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
