//! Prometheus metrics and the operator's small HTTP server: `/metrics` (text exposition),
//! `/healthz` (liveness: the process serves and its control loop is alive) and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

/// The buckets of the per-step histogram: 5 ms to ~82 s, doubling. A schema change on a
/// loaded Cassandra takes seconds; a skipped step records nothing.
fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// A step of a reconcile, as the `step` label of `rtdp_operator_reconcile_step_duration_seconds`
/// names it: where the time of a slow reconcile went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileStep {
    /// The topics checked and created in Kafka.
    Topics,
    /// The keyspace and tables checked and created in Cassandra.
    Schema,
    /// The Kubernetes objects applied (server-side apply), their replicas read back.
    Workloads,
    /// The backfill's Jobs listed and started.
    Backfill,
    /// Why runner replicas are missing (pods listed), when they are.
    RunnerHealth,
    /// The status written.
    Status,
}

impl ReconcileStep {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topics => "topics",
            Self::Schema => "schema",
            Self::Workloads => "workloads",
            Self::Backfill => "backfill",
            Self::RunnerHealth => "runner_health",
            Self::Status => "status",
        }
    }
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    step_duration: Family<Labels, Histogram, fn() -> Histogram>,
    leader: Gauge,
    external_checks: Counter,
    pipeline_lag_records: Family<Labels, Gauge>,
    pipeline_lag_seconds: Family<Labels, Gauge>,
    pipeline_last_stored: Family<Labels, Gauge>,
    pipeline_replicas: Family<Labels, Gauge>,
    healthy: AtomicBool,
}

/// One Pipeline's freshness, as the freshness loop measured it.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineGauges {
    /// Records waiting.
    pub lag_records: i64,
    /// Seconds the oldest waiting record has waited.
    pub lag_seconds: i64,
    /// The newest stored record's Kafka timestamp, in seconds since the epoch.
    pub last_stored_seconds: Option<i64>,
    /// The processor replicas wanted.
    pub processor_replicas: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "rtdp_operator_reconciles",
            "Reconciles of Pipelines, by result (success or error)",
            reconciles.clone(),
        );
        let failures = Family::<Labels, Counter>::default();
        registry.register(
            "rtdp_operator_reconcile_failures",
            "Reconcile failures, by reason (KafkaUnavailable, NotSupported, ...)",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "rtdp_operator_reconcile_duration_seconds",
            "How long each reconcile took",
            duration.clone(),
        );
        let step_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(step_histogram);
        registry.register(
            "rtdp_operator_reconcile_step_duration_seconds",
            "How long each step of a reconcile took (topics, schema, workloads, backfill, runner_health, status); a step a reconcile skips is not counted",
            step_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "rtdp_operator_leader",
            "1 while this replica holds the leader Lease and reconciles, else 0",
            leader.clone(),
        );
        let external_checks = Counter::default();
        registry.register(
            "rtdp_operator_external_checks",
            "Reconciles that checked the topics and tables in Kafka and Cassandra (a new spec, a failure, the resync period); the others reuse the last check",
            external_checks.clone(),
        );
        let pipeline_lag_records = Family::<Labels, Gauge>::default();
        registry.register(
            "rtdp_pipeline_lag_records",
            "Records in a Pipeline's topic not yet stored (from the processors' committed offsets)",
            pipeline_lag_records.clone(),
        );
        let pipeline_lag_seconds = Family::<Labels, Gauge>::default();
        registry.register(
            "rtdp_pipeline_lag_seconds",
            "How long the oldest record not yet stored has waited, in seconds",
            pipeline_lag_seconds.clone(),
        );
        let pipeline_last_stored = Family::<Labels, Gauge>::default();
        registry.register(
            "rtdp_pipeline_last_stored_record_timestamp_seconds",
            "The Kafka timestamp of the newest stored record, in seconds since the epoch",
            pipeline_last_stored.clone(),
        );
        let pipeline_replicas = Family::<Labels, Gauge>::default();
        registry.register(
            "rtdp_pipeline_processor_replicas",
            "The processor replicas a Pipeline wants (declared, autoscaled, or 0 while suspended)",
            pipeline_replicas.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            step_duration,
            leader,
            external_checks,
            pipeline_lag_records,
            pipeline_lag_seconds,
            pipeline_last_stored,
            pipeline_replicas,
            healthy: AtomicBool::new(true),
        }
    }

    /// Counts a reconcile and its duration.
    pub fn reconciled(&self, duration: Duration, success: bool) {
        let result = if success { "success" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        self.duration.observe(duration.as_secs_f64());
    }

    /// Records how long one step of a reconcile took.
    pub fn step_finished(&self, step: ReconcileStep, duration: Duration) {
        self.step_duration
            .get_or_create(&vec![("step".to_string(), step.as_str().to_string())])
            .observe(duration.as_secs_f64());
    }

    /// Runs one step of a reconcile and records how long it took.
    pub async fn timed<T>(&self, step: ReconcileStep, work: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let outcome = work.await;
        self.step_finished(step, started.elapsed());
        outcome
    }

    /// Counts a check of the topics and tables.
    pub fn external_check(&self) {
        self.external_checks.inc();
    }

    /// Counts a failure by reason.
    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Sets a Pipeline's gauges (labels `namespace`, `pipeline`).
    pub fn set_pipeline(&self, namespace: &str, pipeline: &str, gauges: PipelineGauges) {
        let labels = vec![
            ("namespace".to_string(), namespace.to_string()),
            ("pipeline".to_string(), pipeline.to_string()),
        ];
        self.pipeline_lag_records
            .get_or_create(&labels)
            .set(gauges.lag_records);
        self.pipeline_lag_seconds
            .get_or_create(&labels)
            .set(gauges.lag_seconds);
        if let Some(seconds) = gauges.last_stored_seconds {
            self.pipeline_last_stored
                .get_or_create(&labels)
                .set(seconds);
        }
        self.pipeline_replicas
            .get_or_create(&labels)
            .set(gauges.processor_replicas);
    }

    /// Drops a deleted Pipeline's gauges.
    pub fn forget_pipeline(&self, namespace: &str, pipeline: &str) {
        let labels = vec![
            ("namespace".to_string(), namespace.to_string()),
            ("pipeline".to_string(), pipeline.to_string()),
        ];
        for family in [
            &self.pipeline_lag_records,
            &self.pipeline_lag_seconds,
            &self.pipeline_last_stored,
            &self.pipeline_replicas,
        ] {
            family.remove(&labels);
        }
    }

    /// Marks whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Marks the process as unhealthy: `/healthz` fails from now on.
    pub fn set_unhealthy(&self) {
        self.healthy.store(false, Ordering::Relaxed);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "encoding metrics");
        }
        text
    }
}

/// The text exposition, with the OpenMetrics content type.
async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Liveness and readiness: the control loop is alive.
async fn health(State(metrics): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if metrics.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop stopped\n",
        )
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: try /metrics or /healthz\n",
    )
}

/// The routes the server answers.
fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .fallback(not_found)
        .with_state(metrics)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(error) = axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "serving metrics");
    }
}

/// Binds the metrics address, failing with the address in the message.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("binding the metrics address {address}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_reconciles_failures_duration_and_leadership() {
        let metrics = Metrics::new();
        metrics.reconciled(Duration::from_millis(30), true);
        metrics.reconciled(Duration::from_millis(30), false);
        metrics.failed("KafkaUnavailable");
        metrics.set_leader(true);
        metrics.step_finished(ReconcileStep::Schema, Duration::from_millis(1500));
        let text = metrics.encode();
        assert!(
            text.contains("rtdp_operator_reconciles_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rtdp_operator_reconcile_failures_total{reason=\"KafkaUnavailable\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rtdp_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("rtdp_operator_leader 1"), "{text}");
        assert!(
            text.contains(
                "rtdp_operator_reconcile_step_duration_seconds_bucket{le=\"2.56\",step=\"schema\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "rtdp_operator_reconcile_step_duration_seconds_bucket{le=\"1.28\",step=\"schema\"} 0"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_health_and_not_found() {
        let metrics = Arc::new(Metrics::new());
        let listener = bind("127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("bound");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics), async {
            stopped.await.ok();
        }));
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
            let mut response = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
                .await
                .expect("read");
            response
        };
        let response = get("/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("application/openmetrics-text"),
            "{response}"
        );
        assert!(response.contains("rtdp_operator_leader"), "{response}");
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        metrics.set_unhealthy();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        stop.send(()).ok();
        server.await.expect("the server stops on shutdown");
    }
}
