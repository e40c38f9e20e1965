//! Scale: 200 Pipelines reconcile to their desired objects (`RTDP_SCALE_PIPELINES` others;
//! `make bench-operator` runs 1 000 on a release build). Prints (and writes to
//! `target/tmp/operator-scale.txt`) the time to converge, the reconciles' p50 and p99 (from the
//! operator's histogram), the Kubernetes API requests per reconcile (from the API server's own
//! `apiserver_request_total`, the test's requests taken out), the operator's peak RSS, and
//! where the reconciles' time went (per step, from the operator's step histogram). Then, with
//! the operator gone and its topics and tables dropped, the same topic and schema steps run
//! alone, without Kubernetes, at the operator's concurrency: Kafka's and Cassandra's own share,
//! which bounds the time to Ready from below (printed with the ratio; nothing is asserted on
//! time).
//!
//! Each Pipeline has its own topic and dead-letter topic (1 partition each) and its own table
//! in one shared keyspace, no source (so a processor Deployment, a ConfigMap and a Service),
//! and `deletionPolicy: Retain`; the test drops the topics and the keyspace at the end.

// Shares the helpers of the `it` binary, of which it uses a part.
#[path = "it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestWorld, cassandra};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::ListParams;
use rdkafka::admin::AdminOptions;
use rtdp_crds::{DeletionPolicy, Pipeline};
use rtdp_test_support::prometheus::{
    histogram_buckets, histogram_buckets_where, metric_sum, metric_where,
};
use rtdp_test_support::{cassandra_table_names, unique_cql_identifier};

/// Pipelines applied, unless `RTDP_SCALE_PIPELINES` says otherwise.
const DEFAULT_PIPELINES: usize = 200;

/// Reconciles the operator runs at once (its `--concurrency` default).
const OPERATOR_CONCURRENCY: usize = 16;

/// The `index`th Pipeline of the test: its own topics (one partition each) and table in the
/// shared `keyspace`, no source, `deletionPolicy: Retain`.
fn scale_pipeline(world: &TestWorld, name: &str, index: usize, keyspace: &str) -> Pipeline {
    let mut pipeline = world.pipeline(name);
    pipeline.spec.topic.partitions = 1;
    pipeline.spec.source = None;
    pipeline.spec.deletion_policy = DeletionPolicy::Retain;
    pipeline.spec.cassandra.keyspace.name = keyspace.to_string();
    pipeline.spec.cassandra.tables[0].name = format!("listings_{index:03}");
    pipeline
}

/// The same topics and tables made without Kubernetes: each Pipeline's topic and schema steps
/// as the operator runs them (its own `KafkaClients` and `CassandraSessions`, one admin client
/// and one session, connected before the clock starts), `OPERATOR_CONCURRENCY` at a time,
/// nothing else. What Kafka and Cassandra themselves take for the operator's work: the
/// operator's time to Ready is read against it. Returns the wall time and the seconds spent in
/// each of the two steps; drops what it made, also when a step fails (then it panics).
async fn provisioning_alone(world: &TestWorld, count: usize) -> (Duration, f64, f64) {
    let keyspace = unique_cql_identifier("scale_alone");
    let kafka = rtdp_operator::kafka::KafkaClients::default();
    let sessions = rtdp_operator::cassandra::CassandraSessions::default();
    let pipelines: Vec<Pipeline> = (0..count)
        .map(|index| scale_pipeline(world, &format!("alone-{index:03}"), index, &keyspace))
        .collect();
    let client = &world.client;
    if let Some(first) = pipelines.first() {
        kafka
            .admin(client, first)
            .await
            .expect("a Kafka admin client");
        sessions
            .session(client, first)
            .await
            .expect("a Cassandra session");
    }
    let started = Instant::now();
    let outcomes: Vec<Result<(f64, f64), String>> = futures::stream::iter(&pipelines)
        .map(|pipeline| {
            let (kafka, sessions) = (&kafka, &sessions);
            async move {
                let topics = Instant::now();
                kafka
                    .ensure(client, pipeline)
                    .await
                    .map_err(|error| format!("topics alone: {error}"))?;
                let schema = Instant::now();
                sessions
                    .ensure(client, pipeline, || None)
                    .await
                    .map_err(|error| format!("schema alone: {error}"))?;
                Ok((
                    (schema - topics).as_secs_f64(),
                    schema.elapsed().as_secs_f64(),
                ))
            }
        })
        .buffer_unordered(OPERATOR_CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    delete_namespace_topics(world).await;
    let _ = cassandra()
        .await
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await;
    let seconds: Vec<(f64, f64)> = outcomes
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("{error}"));
    (
        elapsed,
        seconds.iter().map(|(topics, _)| topics).sum(),
        seconds.iter().map(|(_, schema)| schema).sum(),
    )
}

/// The test namespace's topics (`<namespace>.` names).
fn namespace_topics(world: &TestWorld) -> Vec<String> {
    let prefix = format!("{}.", world.namespace);
    world
        .admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .map(|metadata| {
            metadata
                .topics()
                .iter()
                .map(|topic| topic.name().to_string())
                .filter(|name| name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A quantile of a Prometheus histogram: the upper bound of the bucket it falls in.
fn histogram_quantile(exposition: &str, histogram: &str, quantile: f64) -> Option<f64> {
    bucket_quantile(&histogram_buckets(exposition, histogram), quantile)
}

/// A quantile of cumulative buckets: the upper bound of the bucket it falls in.
fn bucket_quantile(buckets: &[(f64, f64)], quantile: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, count)| *count >= total * quantile)
        .map(|(bound, _)| *bound)
}

/// Where the reconciles' time went: per step of the operator's
/// `rtdp_operator_reconcile_step_duration_seconds`, how often it ran, its total time and its
/// p50/p99 (bucket bounds).
fn step_report(exposition: &str) -> String {
    let histogram = "rtdp_operator_reconcile_step_duration_seconds";
    let lines: Vec<String> = [
        "topics",
        "schema",
        "workloads",
        "backfill",
        "runner_health",
        "status",
    ]
    .iter()
    .filter_map(|step| {
        let label = format!("step=\"{step}\"");
        let count = metric_where(exposition, &format!("{histogram}_count"), &label)?;
        let total = metric_where(exposition, &format!("{histogram}_sum"), &label)?;
        let buckets = histogram_buckets_where(exposition, histogram, &label);
        Some(format!(
            "  {step:<13} {count:>6.0} runs, {total:>8.1} s in all, p50 <= {} s, p99 <= {} s",
            bucket_quantile(&buckets, 0.5).unwrap_or(f64::NAN),
            bucket_quantile(&buckets, 0.99).unwrap_or(f64::NAN),
        ))
    })
    .collect();
    lines.join("\n")
}

/// The API server's request counts by verb and resource (`resource/subresource`).
async fn api_server_requests(world: &TestWorld) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let text = world
        .client
        .request_text(request)
        .await
        .expect("the API server's /metrics");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .map(|value| value.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let subresource = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if subresource.is_empty() {
                String::new()
            } else {
                format!("/{subresource}")
            }
        );
        *counts.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// What changed between two readings of [`api_server_requests`], largest first.
fn request_deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut deltas: Vec<(String, f64)> = after
        .iter()
        .map(|(key, count)| (key.clone(), count - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta > 0.0)
        .collect();
    deltas.sort_by(|left, right| right.1.total_cmp(&left.1));
    deltas
}

#[tokio::test]
async fn two_hundred_pipelines_converge() {
    let pipelines_wanted: usize = std::env::var("RTDP_SCALE_PIPELINES")
        .ok()
        .map(|value| value.parse().expect("RTDP_SCALE_PIPELINES is a number"))
        .unwrap_or(DEFAULT_PIPELINES);
    #[allow(non_snake_case)]
    let PIPELINES = pipelines_wanted;
    let (world, operator) = TestWorld::with_operator("op-scale", &[]).await;
    let requests_before = api_server_requests(&world).await;
    // The test's own requests: the creations, and the list each round below.
    let mut own_requests = PIPELINES as f64;
    let keyspace = unique_cql_identifier("scale");
    let names: Vec<String> = (0..PIPELINES)
        .map(|index| format!("scale-{index:03}"))
        .collect();

    let started = Instant::now();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(OPERATOR_CONCURRENCY, |(index, name)| {
            let pipeline = scale_pipeline(&world, name, index, &keyspace);
            let world = &world;
            async move {
                world.create(&pipeline).await;
            }
        })
        .await;
    let created = started.elapsed();

    // Converged: every Pipeline Ready for its generation, and every object in place.
    let deadline = Instant::now() + Duration::from_secs(600);
    let pipelines = world.pipelines();
    let mut peak_rss = 0;
    let mut failure = None;
    loop {
        peak_rss = peak_rss.max(operator.peak_rss_kib());
        let list = pipelines
            .list(&ListParams::default())
            .await
            .expect("listing Pipelines");
        own_requests += 1.0;
        let ready = list
            .items
            .iter()
            .filter(|pipeline| {
                pipeline.status.as_ref().is_some_and(|status| {
                    status.observed_generation == pipeline.metadata.generation
                        && status.conditions.iter().any(|condition| {
                            condition.type_ == "Provisioned" && condition.status == "True"
                        })
                })
            })
            .count();
        if ready == PIPELINES {
            break;
        }
        if Instant::now() >= deadline {
            failure = Some(format!(
                "only {ready} of {PIPELINES} Pipelines Ready after {:?}; operator log: {}",
                started.elapsed(),
                operator.log.display()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(failure) = failure {
        drop(operator);
        clean_up(&world, &keyspace).await;
        panic!("{failure}");
    }
    let converged = started.elapsed();
    let deltas = request_deltas(&requests_before, &api_server_requests(&world).await);
    let requests = deltas.iter().map(|(_, delta)| delta).sum::<f64>() - own_requests - 1.0;
    let exposition = operator
        .get("/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    let reconciles = metric_sum(&exposition, "rtdp_operator_reconciles_total");
    let duration = "rtdp_operator_reconcile_duration_seconds";
    let (p50, p99) = (
        histogram_quantile(&exposition, duration, 0.5).unwrap_or(f64::NAN),
        histogram_quantile(&exposition, duration, 0.99).unwrap_or(f64::NAN),
    );
    let selector = ListParams::default().labels("app.kubernetes.io/managed-by=rtdp-operator");
    let deployments = world
        .api::<Deployment>()
        .list(&selector)
        .await
        .expect("list")
        .items
        .len();
    let config_maps = world
        .api::<ConfigMap>()
        .list(&selector)
        .await
        .expect("list")
        .items
        .len();
    let services = world
        .api::<Service>()
        .list(&selector)
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(
        (deployments, config_maps, services),
        (PIPELINES, PIPELINES, PIPELINES)
    );
    let session = cassandra().await;
    assert_eq!(
        cassandra_table_names(&session, &keyspace).await.len(),
        PIPELINES
    );
    let metadata = world
        .admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .expect("Kafka metadata");
    let prefix = format!("{}.", world.namespace);
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|topic| topic.name().to_string())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert_eq!(topics.len(), 2 * PIPELINES);
    peak_rss = peak_rss.max(operator.peak_rss_kib());

    let report = format!(
        "operator scale: {PIPELINES} Pipelines (each 2 topics, 1 table, ConfigMap, Deployment, Service) \
         created in {:.1} s, all Ready in {:.1} s; {reconciles:.0} reconciles, p50 <= {p50} s, \
         p99 <= {p99} s (histogram bucket bounds); {:.1} API requests per reconcile; operator peak RSS {:.1} MiB\n",
        created.as_secs_f64(),
        converged.as_secs_f64(),
        requests / reconciles.max(1.0),
        peak_rss as f64 / 1024.0
    );
    let breakdown: Vec<String> = deltas
        .iter()
        .take(12)
        .map(|(key, delta)| format!("  {key}: {delta:.0}"))
        .collect();
    let report = format!(
        "{report}Reconcile steps (concurrent reconciles overlap: the operator runs 16 at once):\n{}\n\
         API requests by verb and resource (the test's own creations and lists included):\n{}\n",
        step_report(&exposition),
        breakdown.join("\n")
    );
    println!("{report}");
    let report_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator-scale.txt");
    let _ = std::fs::write(&report_file, &report);

    drop(operator);
    clean_up(&world, &keyspace).await;

    // Kafka and Cassandra alone, after the operator's run, once its topics are gone (the
    // keyspace is dropped synchronously).
    let deadline = Instant::now() + Duration::from_secs(300);
    while !namespace_topics(&world).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the operator run's topics were not deleted within 300 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (alone, topic_seconds, schema_seconds) = provisioning_alone(&world, PIPELINES).await;
    let comparison = format!(
        "provisioning alone (the same {PIPELINES} Pipelines' topic and schema steps, {OPERATOR_CONCURRENCY} at a time, \
         no Kubernetes): {:.1} s ({topic_seconds:.1} s in topics, {schema_seconds:.1} s in schema, summed); \
         the operator's all-Ready / provisioning alone: {:.2}\n",
        alone.as_secs_f64(),
        converged.as_secs_f64() / alone.as_secs_f64().max(0.001)
    );
    println!("{comparison}");
    let _ = std::fs::write(&report_file, format!("{report}{comparison}"));
}

/// Removes the namespace's objects (the Pipelines retain their topics and tables), then the
/// topics and the keyspace; also after a failure.
async fn clean_up(world: &TestWorld, keyspace: &str) {
    world.cleanup().await;
    delete_namespace_topics(world).await;
    let _ = cassandra()
        .await
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await;
}

/// Deletes every topic of the test's namespace (`<namespace>.` names).
async fn delete_namespace_topics(world: &TestWorld) {
    let topics = namespace_topics(world);
    for chunk in topics.chunks(50) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let _ = world
            .admin
            .delete_topics(&names, &AdminOptions::new())
            .await;
    }
}
