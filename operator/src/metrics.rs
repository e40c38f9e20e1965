//! Prometheus metrics and the operator's small HTTP server: `/metrics` (text exposition),
//! `/healthz` (liveness: the process serves and its control loop is alive) and `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    leader: Gauge,
    healthy: AtomicBool,
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
        let leader = Gauge::default();
        registry.register(
            "rtdp_operator_leader",
            "1 while this replica holds the leader Lease and reconciles, else 0",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
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

    /// Counts a failure by reason.
    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
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

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.encode(),
            ),
            (&Method::GET, "/healthz" | "/readyz") => {
                if self.healthy.load(Ordering::Relaxed) {
                    (StatusCode::OK, "text/plain", "ok\n".to_string())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "the control loop stopped\n".to_string(),
                    )
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics or /healthz\n".to_string(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let (stream, _) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection");
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = metrics.respond(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection");
            }
        });
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
    }
}
