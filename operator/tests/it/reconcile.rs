//! The operator against the real local stack (`dev/stack up`): create, update and delete
//! scenarios, checked by reading Kafka's topic metadata, Cassandra's system_schema and the
//! Kubernetes objects. Each test runs its own operator process in its own namespace.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{TestWorld, assert_restricted, cassandra, condition_of, find_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rtdp_crds::{DeletionPolicy, HttpSource, SourceSpec};
use rtdp_provisioning::cassandra::read_table;
use rtdp_test_support::{eventually, stays};

const HASH: &str = "rtdp.dev/config-hash";

fn template_hash(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .and_then(|meta| meta.annotations.as_ref())
        .and_then(|annotations| annotations.get(HASH).cloned())
        .expect("the config-hash annotation")
}

/// Create, then update in place: topics, tables, ConfigMap, processor and ingest workloads,
/// Service, status and events.
#[tokio::test]
async fn creates_everything_then_updates_in_place() {
    let (world, _operator) = TestWorld::with_operator("op-create", &[]).await;
    let name = "listings";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.topic.config = BTreeMap::from([("retention.ms".into(), "7200000".into())]);
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let listings = world.scenario(name);
    world.create(&pipeline).await;

    let ready = listings
        .until("Provisioned", "True", Some("Reconciled"))
        .await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(
        condition_of(&ready, "TopicReady"),
        ("True".into(), "TopicsReady".into())
    );
    assert_eq!(
        condition_of(&ready, "SchemaReady"),
        ("True".into(), "SchemaReady".into())
    );
    assert_eq!(
        condition_of(&ready, "Degraded"),
        ("False".into(), "AsExpected".into())
    );
    // No kubelet here: the Deployment never has ready replicas, and the status says so.
    assert_eq!(
        condition_of(&ready, "RunnerReady"),
        ("False".into(), "ReplicasUnavailable".into())
    );
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(0)));
    let topic = format!("{}.{name}", world.namespace);
    assert_eq!(status.topic.as_deref(), Some(topic.as_str()));
    assert_eq!(status.tables, vec![format!("{keyspace}.listings_by_id")]);
    assert!(ready.finalizers().contains(&"rtdp.dev/cleanup".to_string()));

    // Kafka: both topics as declared.
    let found = world.topic(&topic).await;
    assert_eq!((found.partitions, found.replication_factor), (2, 1));
    assert_eq!(world.topic(&format!("{topic}.dlq")).await.partitions, 1);

    // Cassandra: the table, read from system_schema.
    let session = cassandra().await;
    let columns = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("system_schema.columns");
    assert_eq!(columns["zpid"].kind, "partition_key");
    assert_eq!(columns["price"].cql_type, "bigint");
    assert_eq!(columns.len(), 5);

    // Kubernetes: the runner's config, workloads and Service.
    let config_map = world.get::<ConfigMap>(&format!("{name}-runner")).await;
    let manifest = config_map
        .data
        .as_ref()
        .and_then(|data| data.get("pipeline.yaml"))
        .expect("pipeline.yaml");
    let parsed = rtdp_crds::parse_pipeline(manifest, "configmap").expect("the runner can read it");
    assert_eq!(parsed.spec, ready.spec);
    let processor = world.get::<Deployment>(&format!("{name}-processor")).await;
    let owner = &processor.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Pipeline", Some(true))
    );
    assert_eq!(Some(owner.uid.clone()), ready.metadata.uid);
    let processor_spec = processor.spec.clone().expect("spec");
    assert_eq!(processor_spec.replicas, Some(1));
    let pod = processor_spec.template.spec.clone().expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(
        container.args.clone().expect("args"),
        ["process", "--file", "/etc/rtdp/pipeline.yaml"]
    );
    assert_restricted(container);
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    let first_hash = template_hash(&processor);
    // The generator is a continuous source: an ingest Deployment.
    let ingest = world.get::<Deployment>(&format!("{name}-ingest")).await;
    assert_eq!(
        ingest
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .containers[0]
            .args
            .clone()
            .expect("args"),
        ["ingest", "--file", "/etc/rtdp/pipeline.yaml"]
    );
    let service = world.get::<Service>(&format!("{name}-metrics")).await;
    assert_eq!(
        service.spec.expect("spec").ports.expect("ports")[0].port,
        9090
    );

    listings
        .expect_events(&["TopicCreated", "TableCreated", "Reconciled"])
        .await;

    // Update: more partitions, a new column, more replicas, a scheduled HTTP source.
    let mut fields = serde_json::to_value(&ready.spec.schema.fields).expect("fields");
    fields
        .as_array_mut()
        .expect("array")
        .push(serde_json::json!({"name": "bedrooms", "type": "int"}));
    listings
        .patch(serde_json::json!({
            "topic": {"partitions": 4},
            "schema": {"fields": fields},
            "runner": {"replicas": 2},
            "source": {
                "generator": null,
                "http": {"url": "http://127.0.0.1:1/search", "schedule": "*/5 * * * *"}
            }
        }))
        .await;
    world
        .wait_for(
            name,
            "the update to be reconciled",
            Duration::from_secs(90),
            |pipeline| {
                find_condition(pipeline, "Provisioned").is_some_and(|ready| ready.status == "True")
                    && pipeline.status.as_ref().and_then(|status| status.replicas) == Some(2)
            },
        )
        .await;
    assert_eq!(world.topic(&topic).await.partitions, 4);
    let columns = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("system_schema.columns");
    assert_eq!(columns["bedrooms"].cql_type, "int");
    let processor = world.get::<Deployment>(&format!("{name}-processor")).await;
    assert_eq!(
        processor.spec.as_ref().and_then(|spec| spec.replicas),
        Some(2)
    );
    assert_ne!(
        template_hash(&processor),
        first_hash,
        "a spec change rolls the pods"
    );
    let cron_job = world.get::<CronJob>(&format!("{name}-ingest")).await;
    let cron_spec = cron_job.spec.expect("spec");
    assert_eq!(cron_spec.schedule, "*/5 * * * *");
    assert_eq!(cron_spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert!(cron_spec.successful_jobs_history_limit.is_some());
    assert!(
        cron_spec
            .job_template
            .spec
            .expect("job")
            .backoff_limit
            .is_some()
    );
    world
        .wait_object_gone::<Deployment>(&format!("{name}-ingest"))
        .await;
    listings
        .expect_events(&["PartitionsIncreased", "ColumnAdded"])
        .await;

    // Delete (policy Delete): topics and tables are dropped, then the Pipeline goes.
    listings.delete_and_wait_gone(Duration::from_secs(90)).await;
    world.wait_topic_deleted(&topic).await;
    let columns = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("system_schema.columns");
    assert!(columns.is_empty(), "the table is dropped: {columns:?}");
    world.cleanup().await;
}

/// Deletion stops the runners before it drops topics and tables: while a runner workload
/// still exists (held here by a finalizer of the test, as pods that take their time to stop
/// would hold it), the topics stay; once it is gone they are dropped.
#[tokio::test]
async fn runners_stop_before_topics_and_tables_are_dropped() {
    const HOLD: &str = "tests.rtdp.dev/hold";
    let (world, _operator) = TestWorld::with_operator("op-order", &[]).await;
    let name = "order";
    let pipeline = world.pipeline(name);
    let topic = pipeline.topic_name();
    let order = world.scenario(name);
    world.create(&pipeline).await;
    order.until_provisioned().await;

    let deployments = world.api::<Deployment>();
    let processor = format!("{name}-processor");
    deployments
        .patch(
            &processor,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": [HOLD]}})),
        )
        .await
        .expect("holding the processor Deployment");

    world.delete(name).await;
    eventually(
        "the operator to stop the processor Deployment",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            let processor = processor.clone();
            async move {
                let deployment = deployments.get(&processor).await.ok()?;
                deployment.metadata.deletion_timestamp.map(|_| ())
            }
        },
    )
    .await;
    // The status says so at once, for the generation being deleted.
    eventually(
        "Ready=False, reason Deleting, for the current generation",
        Duration::from_secs(30),
        || async {
            let pipeline = world.pipelines().get(name).await.ok()?;
            let status = pipeline.status.as_ref()?;
            let ready = find_condition(&pipeline, "Ready")?;
            (ready.reason == "Deleting"
                && status.observed_generation == pipeline.metadata.generation
                && ready.observed_generation == pipeline.metadata.generation)
                .then_some(())
        },
    )
    .await;
    // Several cleanup polls (every 2 s) pass while the runner is still there: the topic and
    // the Pipeline stay all along.
    stays(
        "the topic and the Pipeline, while a runner workload still exists",
        Duration::from_secs(6),
        || async {
            world.topic_exists(&topic).await
                && world
                    .pipelines()
                    .get_opt(name)
                    .await
                    .expect("reading the Pipeline")
                    .is_some()
        },
    )
    .await;

    deployments
        .patch(
            &processor,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("releasing the processor Deployment");
    world.wait_gone(name, Duration::from_secs(90)).await;
    world.wait_topic_deleted(&topic).await;
    world.cleanup().await;
}

/// Owned objects edited or deleted by hand come back.
#[tokio::test]
async fn owned_objects_that_are_edited_or_deleted_come_back() {
    let (world, _operator) = TestWorld::with_operator("op-owned", &[]).await;
    let name = "owned";
    let owned = world.scenario(name);
    world.create(&world.pipeline(name)).await;
    owned.until_provisioned().await;

    let deployments = world.api::<Deployment>();
    let processor = format!("{name}-processor");
    deployments
        .patch(
            &processor,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "spec": {"replicas": 7}
            })),
        )
        .await
        .expect("scaling by hand");
    eventually(
        "the replicas to be set back",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            let processor = processor.clone();
            async move {
                let deployment = deployments.get(&processor).await.ok()?;
                (deployment.spec?.replicas == Some(1)).then_some(())
            }
        },
    )
    .await;

    let config_maps = world.api::<ConfigMap>();
    config_maps
        .delete(&format!("{name}-runner"), &DeleteParams::default())
        .await
        .expect("deleting the ConfigMap");
    world
        .api::<Service>()
        .delete(&format!("{name}-metrics"), &DeleteParams::default())
        .await
        .expect("deleting the Service");
    deployments
        .delete(&format!("{name}-ingest"), &DeleteParams::default())
        .await
        .expect("deleting the ingest Deployment");
    eventually(
        "the deleted objects to come back",
        Duration::from_secs(30),
        || {
            let world = &world;
            async move {
                world
                    .api::<ConfigMap>()
                    .get_opt(&format!("{name}-runner"))
                    .await
                    .ok()??;
                world
                    .api::<Service>()
                    .get_opt(&format!("{name}-metrics"))
                    .await
                    .ok()??;
                world
                    .api::<Deployment>()
                    .get_opt(&format!("{name}-ingest"))
                    .await
                    .ok()??;
                Some(())
            }
        },
    )
    .await;

    owned.delete_and_wait_gone(Duration::from_secs(60)).await;
    world.cleanup().await;
}

/// Existing topics are adopted; what Kafka or Cassandra cannot change in place is refused
/// with a condition and nothing is altered; drifted topic configs are set back.
#[tokio::test]
async fn adopts_refuses_and_sets_drift_back() {
    let (world, _operator) =
        TestWorld::with_operator("op-refuse", &["--resync-seconds", "3"]).await;
    let name = "refuse";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.topic.config = BTreeMap::from([("retention.ms".into(), "3600000".into())]);
    let topic = format!("{}.{name}", world.namespace);
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();

    // The topic already exists with more partitions than declared: adopted, but a decrease is
    // refused.
    let existing = NewTopic::new(&topic, 3, TopicReplication::Fixed(1));
    world
        .admin
        .create_topics(&[existing], &AdminOptions::new())
        .await
        .expect("creating the topic by hand");
    world.topic(&topic).await;
    let refuse = world.scenario(name);
    world.create(&pipeline).await;
    let refused = refuse
        .until("TopicReady", "False", Some("NotSupported"))
        .await;
    let message = refused
        .status
        .as_ref()
        .and_then(|status| status.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|message| message.contains("has 3 partitions in Kafka but declares 2")),
        "{message:?}"
    );
    assert_eq!(condition_of(&refused, "Ready").0, "False");
    assert_eq!(world.topic(&topic).await.partitions, 3, "nothing altered");
    refuse.expect_events(&["NotSupported"]).await;

    // Declaring what exists adopts the topic.
    refuse
        .patch(serde_json::json!({"topic": {"partitions": 3}}))
        .await;
    refuse.until_provisioned().await;

    // Drift: a managed config changed by hand is set back by the periodic resync
    // (a healthy Pipeline is reconciled every --resync-seconds; one with a permanent error
    // waits for a change).
    world
        .set_topic_config(&topic, "retention.ms", "60000")
        .await;
    world
        .wait_topic_config(&topic, "retention.ms", "3600000")
        .await;
    refuse.expect_events(&["TopicConfigReset"]).await;

    // A replication-factor change is refused.
    refuse
        .patch(serde_json::json!({"topic": {"replicationFactor": 2}}))
        .await;
    refuse
        .until_refused(
            "TopicReady",
            "NotSupported",
            "replication factor is 1 in Kafka but declared 2",
        )
        .await;
    assert_eq!(world.topic(&topic).await.replication_factor, 1);
    refuse
        .patch(serde_json::json!({"topic": {"replicationFactor": 1}}))
        .await;
    refuse.until_provisioned().await;

    // A type change is refused, nothing is altered, and the runner is held at the last
    // accepted spec: its ConfigMap (the manifest the processors read) does not change.
    let runner_config = world.get::<ConfigMap>(&format!("{name}-runner")).await.data;
    let mut fields = serde_json::to_value(&pipeline.spec.schema.fields).expect("fields");
    for field in fields.as_array_mut().expect("array") {
        if field["name"] == "price" {
            field["type"] = "text".into();
        }
    }
    fields
        .as_array_mut()
        .expect("array")
        .push(serde_json::json!({"name": "bathrooms", "type": "double"}));
    refuse
        .patch(serde_json::json!({"schema": {"fields": fields}}))
        .await;
    let refused = refuse
        .until_refused(
            "SchemaReady",
            "IncompatibleSchemaChange",
            "price is bigint in Cassandra but declared text",
        )
        .await;
    let session = cassandra().await;
    let columns = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("system_schema.columns");
    assert_eq!(columns["price"].cql_type, "bigint");
    assert!(
        !columns.contains_key("bathrooms"),
        "nothing altered: {columns:?}"
    );
    // The topics are still fine: only the schema is refused.
    assert_eq!(condition_of(&refused, "TopicReady").0, "True");
    let runner = condition_of(&refused, "RunnerReady");
    assert_eq!(
        (runner.0.as_str(), runner.1.as_str()),
        ("False", "HeldAtLastAcceptedSpec"),
        "{runner:?}"
    );
    assert_eq!(
        world.get::<ConfigMap>(&format!("{name}-runner")).await.data,
        runner_config,
        "the processors keep the last accepted manifest"
    );

    refuse.delete_and_wait_gone(Duration::from_secs(60)).await;
    world.cleanup().await;
}

/// `Retain` keeps the topics and tables; the owned objects are garbage-collected.
#[tokio::test]
async fn retain_keeps_topics_and_tables() {
    let (world, _operator) = TestWorld::with_operator("op-retain", &[]).await;
    let name = "kept";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.deletion_policy = DeletionPolicy::Retain;
    pipeline.spec.source = None;
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let kept = world.scenario(name);
    world.create(&pipeline).await;
    let ready = kept.until_provisioned().await;
    assert!(
        !ready.finalizers().contains(&"rtdp.dev/cleanup".to_string()),
        "Retain needs no finalizer"
    );
    // The owned objects name the Pipeline as controller, so the garbage collector removes
    // them with it.
    let processor = world.get::<Deployment>(&format!("{name}-processor")).await;
    let owners = processor
        .metadata
        .owner_references
        .expect("owner references");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, ready.metadata.uid.clone().expect("uid"));
    assert_eq!(
        (owners[0].controller, owners[0].block_owner_deletion),
        (Some(true), Some(true))
    );
    // No source: no ingest workload.
    let ingest = format!("{name}-ingest");
    assert!(!world.object_exists::<Deployment>(&ingest).await);
    assert!(!world.object_exists::<CronJob>(&ingest).await);

    kept.delete_and_wait_gone(Duration::from_secs(30)).await;
    let topic = format!("{}.{name}", world.namespace);
    assert!(world.topic_exists(&topic).await, "the topic is retained");
    let session = cassandra().await;
    let columns = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("system_schema.columns");
    assert!(!columns.is_empty(), "the table is retained");
    world.drop_topics_and_keyspace(&topic, &keyspace).await;
    world.cleanup().await;
}

/// A Delete Pipeline whose Cassandra is gone: the finalizer retries a bounded number of times,
/// then a condition and an event say how to release it, and `deletionPolicy: Retain` does.
#[tokio::test]
async fn a_blocked_deletion_says_how_to_release_it() {
    let (world, operator) =
        TestWorld::with_operator("op-blocked", &["--cleanup-attempts", "2"]).await;
    let name = "blocked";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.cassandra.contact_points = vec![format!("127.0.0.1:{}", common::free_port())];
    let blocked = world.scenario(name);
    world.create(&pipeline).await;
    let failing = blocked
        .until("SchemaReady", "False", Some("CassandraUnavailable"))
        .await;
    assert_eq!(condition_of(&failing, "TopicReady").0, "True");
    assert_eq!(
        condition_of(&failing, "Degraded"),
        ("True".into(), "CassandraUnavailable".into())
    );
    // Transient errors are retried, and counted by reason.
    eventually("the failure metric", Duration::from_secs(30), || async {
        let failures = operator
            .metric("rtdp_operator_reconcile_failures_total{reason=\"CassandraUnavailable\"}")
            .await?;
        (failures >= 2.0).then_some(())
    })
    .await;

    world.delete(name).await;
    let pipelines = world.pipelines();
    let message = eventually(
        "the deletion to be reported blocked",
        Duration::from_secs(90),
        || {
            let pipelines = pipelines.clone();
            async move {
                let pipeline = pipelines.get(name).await.ok()?;
                let degraded = find_condition(&pipeline, "Degraded")?;
                (degraded.reason == "CleanupBlocked").then(|| degraded.message.clone())
            }
        },
    )
    .await;
    assert!(message.contains("after 2 attempts"), "{message}");
    // Backed off (at most every --max-backoff-seconds, 5 s here), not hammering the server.
    let sample = "rtdp_operator_reconcile_failures_total{reason=\"CassandraUnavailable\"}";
    let before = operator.metric(sample).await.expect("failures counted");
    stays(
        "at most 2 more failures in 4 s (backed off)",
        Duration::from_secs(4),
        || async {
            let now = operator.metric(sample).await.expect("failures counted");
            now - before <= 2.0
        },
    )
    .await;
    assert!(message.contains("deletionPolicy"), "{message}");
    blocked.expect_events(&["CleanupBlocked"]).await;

    blocked
        .patch(serde_json::json!({"deletionPolicy": "Retain"}))
        .await;
    world.wait_gone(name, Duration::from_secs(30)).await;
    let topic = format!("{}.{name}", world.namespace);
    world
        .drop_topics_and_keyspace(&topic, &pipeline.spec.cassandra.keyspace.name)
        .await;
    world.cleanup().await;
}

/// An invalid spec is a permanent error: reported, then nothing until the Pipeline changes;
/// nothing with a side effect happens before the validation (not even the finalizer).
#[tokio::test]
async fn an_invalid_spec_waits_for_the_next_change() {
    let (world, operator) = TestWorld::with_operator("op-invalid", &[]).await;
    // 46 characters: too long for a CronJob's name with "-ingest".
    let name = "a-pipeline-name-that-is-too-long-for-a-cronjob";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.deletion_policy = DeletionPolicy::Delete;
    pipeline.spec.source = Some(SourceSpec {
        http: Some(http_source(Some("@hourly"), None)),
        generator: None,
    });
    let scenario = world.scenario(name);
    world.create(&pipeline).await;
    let invalid = scenario.until("Ready", "False", Some("InvalidSpec")).await;
    let message = invalid
        .status
        .as_ref()
        .and_then(|status| status.message.clone())
        .unwrap_or_default();
    assert!(message.contains("at most 45"), "{message}");
    assert_eq!(
        invalid.metadata.finalizers, None,
        "no finalizer before the spec is valid"
    );
    assert!(
        !world.topic_exists(&invalid.topic_name()).await,
        "no topic for an invalid spec"
    );
    scenario.expect_events(&["InvalidSpec"]).await;

    // No retries while nothing changes: once the count has settled (the reconcile that its
    // own status write triggers may count once more), it stays.
    let sample = "rtdp_operator_reconcile_failures_total{reason=\"InvalidSpec\"}";
    let before = eventually(
        "the InvalidSpec failure count to settle (2 s unchanged)",
        Duration::from_secs(30),
        || async {
            let first = operator.metric(sample).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            (operator.metric(sample).await? == first).then_some(first)
        },
    )
    .await;
    stays(
        "the InvalidSpec failure count (a permanent error is not retried)",
        Duration::from_secs(5),
        || async { operator.metric(sample).await == Some(before) },
    )
    .await;
    let (code, body) = operator.get("/healthz").await.expect("/healthz answers");
    assert_eq!((code, body.trim()), (200, "ok"));

    // A change that makes it valid: continuous polling fits the name.
    scenario
        .patch(serde_json::json!({"source": {"http": {"schedule": null, "pollInterval": "5m"}}}))
        .await;
    let provisioned = scenario.until_provisioned().await;
    assert!(
        provisioned
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|finalizers| !finalizers.is_empty()),
        "the finalizer once the topics exist: {:?}",
        provisioned.metadata.finalizers
    );
    assert!(
        world
            .object_exists::<Deployment>(&format!("{name}-ingest"))
            .await
    );
    // The local stack runs no pods: the poll Deployment is not ready, and the status says so.
    let ingest_missing = format!("the ingest Deployment {name}-ingest has 0 of 1 replicas ready");
    world
        .wait_for(
            name,
            "RunnerReady naming the ingest Deployment",
            Duration::from_secs(60),
            |pipeline| {
                find_condition(pipeline, "RunnerReady").is_some_and(|condition| {
                    condition.status == "False" && condition.message.contains(&ingest_missing)
                })
            },
        )
        .await;

    scenario.delete_and_wait_gone(Duration::from_secs(30)).await;
    let topic = format!("{}.{name}", world.namespace);
    world
        .drop_topics_and_keyspace(&topic, &pipeline.spec.cassandra.keyspace.name)
        .await;
    world.cleanup().await;
}

/// A `localDatacenter` the Cassandra cluster does not have is refused at reconcile, naming the
/// field and the cluster's datacenters, before any keyspace or table is created (a permanent
/// error: it waits for the spec to change); the cluster's own datacenter then provisions.
#[tokio::test]
async fn a_local_datacenter_the_cluster_lacks_is_refused_before_any_table() {
    let (world, _operator) = TestWorld::with_operator("op-datacenter", &[]).await;
    let name = "datacenter";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.cassandra.local_datacenter = "no-such-datacenter".into();
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let scenario = world.scenario(name);
    world.create(&pipeline).await;
    scenario
        .until_refused(
            "Ready",
            "UnknownDatacenter",
            "spec.cassandra.localDatacenter \"no-such-datacenter\" is not a datacenter of the \
             Cassandra cluster, whose datacenters are: datacenter1",
        )
        .await;
    scenario.expect_events(&["UnknownDatacenter"]).await;
    let session = cassandra().await;
    let table = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("system_schema.columns");
    assert!(table.is_empty(), "no table while refused: {table:?}");

    scenario
        .patch(serde_json::json!({"cassandra": {"localDatacenter": "datacenter1"}}))
        .await;
    scenario.until_provisioned().await;
    let table = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("system_schema.columns");
    assert_eq!(table["zpid"].kind, "partition_key");

    scenario.delete_and_wait_gone(Duration::from_secs(30)).await;
    world
        .drop_topics_and_keyspace(&format!("{}.{name}", world.namespace), &keyspace)
        .await;
    world.cleanup().await;
}

fn http_source(schedule: Option<&str>, poll_interval: Option<&str>) -> HttpSource {
    serde_json::from_value(serde_json::json!({
        "url": "http://127.0.0.1:1/search",
        "schedule": schedule,
        "pollInterval": poll_interval,
    }))
    .expect("an HTTP source")
}

/// Each distinct failure is its own Event (kube-runtime's recorder alone would bump the count
/// of the first message for every later, different failure of the same step), and an exact
/// repeat still counts up on one Event.
#[tokio::test]
async fn each_distinct_failure_is_its_own_event_and_repeats_count_up() {
    use kube::runtime::events::{Event, EventType, Reporter};
    use rtdp_operator::events::EventRecorders;

    let world = TestWorld::new("op-events").await;
    let name = "events";
    let created = world.create(&world.pipeline(name)).await;
    let recorders = EventRecorders::new(
        world.client.clone(),
        Reporter {
            controller: "rtdp-operator-test".into(),
            instance: None,
        },
    );
    let failure = |note: &str| Event {
        type_: EventType::Warning,
        reason: "KafkaUnavailable".into(),
        note: Some(note.into()),
        action: "EnsureTopics".into(),
        secondary: None,
    };
    let reference = created.object_ref(&());
    for note in [
        "reading metadata of topic t: broker down",
        "reading metadata of topic t: broker down",
        "deleting topic t: timed out",
    ] {
        recorders
            .publish(&failure(note), &reference)
            .await
            .expect("publishing an event");
    }
    let events = eventually("two events", Duration::from_secs(30), || async {
        let events = world.events(name).await;
        (events.len() == 2).then_some(events)
    })
    .await;
    let count_of = |note: &str| {
        events
            .iter()
            .find(|event| event.note.as_deref() == Some(note))
            .map(|event| event.series.as_ref().map_or(1, |series| series.count))
    };
    assert_eq!(
        count_of("reading metadata of topic t: broker down"),
        Some(2)
    );
    assert_eq!(count_of("deleting topic t: timed out"), Some(1));
    world.cleanup().await;
}

/// A new Pipeline whose Kafka does not answer: before the slow topic step fails, the status
/// already says `Ready=False`, reason `Reconciling`, for this generation, with its topic; the
/// failure replaces it when it comes.
#[tokio::test]
async fn a_new_generation_is_reported_before_the_slow_steps() {
    let (world, _operator) = TestWorld::with_operator("op-progress", &[]).await;
    let name = "progress";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.kafka.bootstrap_servers = vec![format!("127.0.0.1:{}", common::free_port())];
    let topic = pipeline.topic_name();
    world.create(&pipeline).await;
    let first = eventually("a first status", Duration::from_secs(30), || async {
        world.pipelines().get(name).await.ok()?.status
    })
    .await;
    let ready = first
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Reconciling"),
        "the first status is the progress report, not the Kafka failure: {first:?}"
    );
    assert_eq!(first.observed_generation, Some(1));
    assert_eq!(first.topic.as_deref(), Some(topic.as_str()));
    world
        .scenario(name)
        .until("Ready", "False", Some("KafkaUnavailable"))
        .await;
    world.cleanup().await;
}

/// `spec.suspend: true` scales the processors and the continuous source to zero, says so in
/// `Ready`/`RunnerReady` (reason `Suspended`) and an Event, and keeps the topics and tables;
/// `false` brings the declared replicas back with a `Resumed` Event.
#[tokio::test]
async fn suspend_stops_the_workloads_and_resume_restarts_them() {
    let (world, _operator) = TestWorld::with_operator("op-suspend", &[]).await;
    let name = "paused";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.runner.replicas = 2;
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let paused = world.scenario(name);
    world.create(&pipeline).await;
    paused.until_provisioned().await;
    let replicas_of = |deployment: Deployment| deployment.spec.and_then(|spec| spec.replicas);
    let processor = format!("{name}-processor");
    let ingest = format!("{name}-ingest");
    assert_eq!(replicas_of(world.get(&processor).await), Some(2));
    assert_eq!(replicas_of(world.get(&ingest).await), Some(1));

    paused.patch(serde_json::json!({"suspend": true})).await;
    let suspended = paused.until("Ready", "False", Some("Suspended")).await;
    assert_eq!(
        condition_of(&suspended, "RunnerReady"),
        ("False".to_string(), "Suspended".to_string()),
        "RunnerReady says why no processor runs"
    );
    assert_eq!(
        condition_of(&suspended, "Provisioned"),
        ("True".to_string(), "Reconciled".to_string())
    );
    assert_eq!(replicas_of(world.get(&processor).await), Some(0));
    assert_eq!(replicas_of(world.get(&ingest).await), Some(0));
    paused.expect_events(&["Suspended"]).await;
    let topic = format!("{}.{name}", world.namespace);
    assert!(world.topic_exists(&topic).await, "the topic is kept");

    paused.patch(serde_json::json!({"suspend": false})).await;
    let resumed = world
        .wait_for(
            name,
            "RunnerReady no longer Suspended",
            Duration::from_secs(90),
            |pipeline| {
                find_condition(pipeline, "RunnerReady")
                    .is_some_and(|condition| condition.reason != "Suspended")
            },
        )
        .await;
    assert_eq!(
        condition_of(&resumed, "Provisioned"),
        ("True".to_string(), "Reconciled".to_string())
    );
    assert_eq!(replicas_of(world.get(&processor).await), Some(2));
    assert_eq!(replicas_of(world.get(&ingest).await), Some(1));
    paused.expect_events(&["Resumed"]).await;

    paused.delete_and_wait_gone(Duration::from_secs(60)).await;
    world.drop_topics_and_keyspace(&topic, &keyspace).await;
    world.cleanup().await;
}

/// The replication options of a keyspace, as `system_schema.keyspaces` holds them.
async fn keyspace_replication(keyspace: &str) -> BTreeMap<String, String> {
    let session = cassandra().await;
    session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .expect("reading system_schema.keyspaces")
        .into_rows_result()
        .expect("rows")
        .single_row::<(BTreeMap<String, String>,)>()
        .expect("the keyspace exists")
        .0
}

/// Two Pipelines share a keyspace and declare different replication: the oldest sets it, the
/// other is told so in its status, and nobody ALTERs it back and forth; once the owner is
/// gone, the next one's declaration applies.
#[tokio::test]
async fn pipelines_sharing_a_keyspace_leave_its_replication_to_the_oldest() {
    let (world, _operator) =
        TestWorld::with_operator("op-shared", &["--resync-seconds", "2"]).await;
    let mut first = world.pipeline("first");
    first.spec.source = None;
    let keyspace = first.spec.cassandra.keyspace.name.clone();
    let mut second = world.pipeline("second");
    second.spec.source = None;
    second.spec.cassandra.keyspace.name = keyspace.clone();
    second.spec.cassandra.tables[0].name = "second_listings".into();
    second
        .spec
        .cassandra
        .keyspace
        .replication
        .replication_factor = Some(2);

    let owner = world.scenario("first");
    world.create(&first).await;
    owner.until_provisioned().await;
    // Created later, so younger: not the owner.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let other = world.scenario("second");
    world.create(&second).await;
    let told = other
        .until("SchemaReady", "True", Some("ReplicationOwnedElsewhere"))
        .await;
    let message = find_condition(&told, "SchemaReady")
        .map(|condition| condition.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&format!("Pipeline {}/first", world.namespace))
            && message.contains("replication_factor=1")
            && message.contains("replication_factor=2"),
        "{message}"
    );
    // Several resyncs of both: the replication stays the owner's, the second stays told.
    stays(
        "the keyspace's replication stays the owner's",
        Duration::from_secs(8),
        || async {
            keyspace_replication(&keyspace)
                .await
                .get("replication_factor")
                == Some(&"1".to_string())
        },
    )
    .await;
    let still = world.get::<rtdp_crds::Pipeline>("second").await;
    assert_eq!(
        condition_of(&still, "SchemaReady"),
        ("True".to_string(), "ReplicationOwnedElsewhere".to_string())
    );

    // The owner leaves: the second's declaration applies at its next check.
    owner.delete_and_wait_gone(Duration::from_secs(60)).await;
    other
        .until("SchemaReady", "True", Some("SchemaReady"))
        .await;
    eventually(
        "the second Pipeline's replication",
        Duration::from_secs(30),
        || async {
            (keyspace_replication(&keyspace)
                .await
                .get("replication_factor")
                == Some(&"2".to_string()))
            .then_some(())
        },
    )
    .await;
    other.delete_and_wait_gone(Duration::from_secs(60)).await;
    world.cleanup().await;
}
