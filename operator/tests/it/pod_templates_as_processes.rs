//! A fast check of the operator and the runner contract together, without a kubelet: the
//! operator reconciles the property-listings Pipeline on the local stack's real API server,
//! and this test starts the `pipeline-runner` processes itself, exactly as the CronJob's and
//! the Deployment's pod templates say (the container's args, its environment with
//! `secretKeyRef` values read from the real Secret, its mounted ConfigMap written to a
//! temporary directory that stands in for the mount path; each process gets its own metrics
//! port, since they share one network namespace). Listings flow from a local listings API
//! through Kafka into Cassandra; a `kubectl apply` that adds a column reaches Cassandra;
//! `kubectl delete` with `deletionPolicy: Delete` removes the topics and tables.
//!
//! It is not the end-to-end test: that is `make kind-e2e` (dev/kind-e2e), which runs the same
//! story on real pods in a kind cluster, images, probes, RBAC, DNS and the CronJob's own
//! schedule included. This one catches a broken pod template in seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::pods::start_pod;
use crate::common::{Operator, TestWorld, cassandra, condition_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rtdp_crds::{DeletionPolicy, Pipeline, parse_pipeline};
use rtdp_test_support::listings_api::{Listings, ListingsApi};
use rtdp_test_support::process::run_ok;
use rtdp_test_support::{
    cassandra_contact_points, eventually, kafka_bootstrap_servers, required_env,
    unique_cql_identifier,
};

fn kubectl(arguments: &[&str]) -> String {
    run_ok("kubectl", arguments, None)
}

/// `kubectl apply -n NAMESPACE -f MANIFEST`, as a user would.
fn kubectl_apply(namespace: &str, manifest: &Path) {
    let path = manifest.to_str().expect("a UTF-8 path");
    kubectl(&["apply", "-n", namespace, "-f", path]);
}

async fn columns_of(keyspace: &str, table: &str) -> Vec<String> {
    let session = cassandra().await;
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
            (keyspace, table),
        )
        .await
        .expect("reading system_schema.columns")
        .into_rows_result()
        .expect("rows");
    rows.rows::<(String,)>()
        .expect("typed rows")
        .map(|row| row.expect("a row").0)
        .collect()
}

async fn count(table: &str) -> usize {
    let session = cassandra().await;
    match session
        .query_unpaged(format!("SELECT zpid FROM {table}"), ())
        .await
    {
        Ok(result) => result
            .into_rows_result()
            .map(|rows| rows.rows_num())
            .unwrap_or_default(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn property_listings_through_kubernetes() {
    required_env("KUBECONFIG");
    let world = TestWorld::new("e2e").await;
    let namespace = world.namespace.clone();
    let _operator = Operator::start(&namespace, &[]);
    let listings = Listings::generate(3, 20, 9);
    let api = ListingsApi::start(
        "127.0.0.1:0".parse().expect("an address"),
        listings.clone(),
        None,
    )
    .await
    .expect("starting the listings API");

    // The example as a user would apply it, pointed at this machine's servers and API.
    let text = include_str!("../../../examples/property-listings.yaml");
    let mut pipeline: Pipeline = parse_pipeline(text, "property-listings.yaml").expect("example");
    pipeline.metadata.namespace = Some(namespace.clone());
    let topic = format!("{namespace}.listings");
    pipeline.spec.topic.name = Some(topic.clone());
    pipeline.spec.topic.partitions = 3;
    pipeline.spec.kafka.bootstrap_servers = vec![kafka_bootstrap_servers()];
    pipeline.spec.cassandra.contact_points = cassandra_contact_points();
    let keyspace = unique_cql_identifier("e2e");
    pipeline.spec.cassandra.keyspace.name = keyspace.clone();
    pipeline.spec.deletion_policy = DeletionPolicy::Delete;
    if let Some(http) = pipeline
        .spec
        .source
        .as_mut()
        .and_then(|source| source.http.as_mut())
    {
        http.url = api.url.clone();
    }
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&namespace);
    std::fs::create_dir_all(&work).expect("a work directory");
    let manifest = work.join("property-listings.yaml");
    std::fs::write(
        &manifest,
        serde_yaml_ng::to_string(&pipeline).expect("yaml"),
    )
    .expect("manifest");

    // The API key Secret the example references.
    world
        .create_secret("listings-api", &[("api-key", "e2e-key")])
        .await;

    kubectl_apply(&namespace, &manifest);
    let name = "property-listings";
    world
        .wait_for(
            name,
            "TopicReady and SchemaReady",
            Duration::from_secs(90),
            |pipeline| {
                condition_of(pipeline, "TopicReady").0 == "True"
                    && condition_of(pipeline, "SchemaReady").0 == "True"
            },
        )
        .await;
    assert!(world.topic_exists(&topic).await, "topic {topic}");
    assert!(
        world.topic_exists(&format!("{topic}.dlq")).await,
        "dead-letter topic"
    );
    for table in ["listings_by_id", "listings_by_city"] {
        assert!(
            !columns_of(&keyspace, table).await.is_empty(),
            "table {keyspace}.{table}"
        );
    }
    let config_maps: Api<ConfigMap> = world.api();
    let deployments: Api<Deployment> = world.api();
    let cron_jobs: Api<CronJob> = world.api();
    let (processor, ingest) =
        eventually("the runner workloads", Duration::from_secs(60), || async {
            config_maps
                .get_opt(&format!("{name}-runner"))
                .await
                .ok()
                .flatten()?;
            let processor = deployments
                .get_opt(&format!("{name}-processor"))
                .await
                .ok()
                .flatten()?;
            let ingest = cron_jobs
                .get_opt(&format!("{name}-ingest"))
                .await
                .ok()
                .flatten()?;
            Some((processor, ingest))
        })
        .await;
    assert_eq!(
        ingest.spec.as_ref().map(|spec| spec.schedule.as_str()),
        Some("@daily")
    );

    // The CronJob's run, then the Deployment's pod, as their templates say.
    let ingest_template = ingest
        .spec
        .and_then(|spec| spec.job_template.spec)
        .map(|job| job.template)
        .expect("the CronJob's pod template");
    let mut ingest_pod = start_pod(&world, &ingest_template, &work.join("ingest"), "ingest").await;
    let log = ingest_pod.log.clone();
    let status = ingest_pod.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "ingest --once from the CronJob's template: {status}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let processor_template = processor.spec.expect("a spec").template;
    let processor_pod = start_pod(
        &world,
        &processor_template,
        &work.join("processor"),
        "processor",
    )
    .await;
    let expected = listings
        .good()
        .filter(|record| record["price"].as_i64().is_some_and(|price| price > 0))
        .count();
    let by_id = format!("{keyspace}.listings_by_id");
    eventually(
        "the listings in Cassandra",
        Duration::from_secs(90),
        || async { (count(&by_id).await >= expected).then_some(()) },
    )
    .await;
    assert_eq!(
        count(&by_id).await,
        expected,
        "{}",
        processor_pod.log_text()
    );
    world
        .wait_for(name, "Provisioned", Duration::from_secs(60), |pipeline| {
            condition_of(pipeline, "Provisioned").0 == "True"
        })
        .await;

    // A kubectl apply that adds a column reaches Cassandra.
    pipeline.spec.schema.fields.push(
        serde_json::from_value(
            serde_json::json!({"name": "price_for_hdp", "path": "/priceForHDP", "type": "bigint"}),
        )
        .expect("a field"),
    );
    std::fs::write(
        &manifest,
        serde_yaml_ng::to_string(&pipeline).expect("yaml"),
    )
    .expect("manifest");
    kubectl_apply(&namespace, &manifest);
    eventually(
        "the new column in listings_by_id",
        Duration::from_secs(60),
        || async {
            columns_of(&keyspace, "listings_by_id")
                .await
                .contains(&"price_for_hdp".to_string())
                .then_some(())
        },
    )
    .await;
    drop(processor_pod);

    // kubectl delete with deletionPolicy: Delete removes topics and tables.
    kubectl(&[
        "delete",
        "-n",
        &namespace,
        "pipeline",
        name,
        "--wait=true",
        "--timeout=90s",
    ]);
    eventually(
        "the topics and tables gone",
        Duration::from_secs(60),
        || async {
            let topics_gone = !world.topic_exists(&topic).await
                && !world.topic_exists(&format!("{topic}.dlq")).await;
            let tables_gone = columns_of(&keyspace, "listings_by_id").await.is_empty()
                && columns_of(&keyspace, "listings_by_city").await.is_empty();
            (topics_gone && tables_gone).then_some(())
        },
    )
    .await;
    world.cleanup().await;
}
