//! `rtdp-operator plan` against the real local stack: a provisioned Pipeline, then a changed
//! manifest (one more partition, a new field and column, a TTL, more replicas) is planned: the
//! plan names the topic growth, the exact CQL, the objects that would change and the spec
//! fields; and afterwards nothing changed anywhere (topic, table, Deployment, Pipeline). A
//! change Kafka cannot make (fewer partitions) and a manifest the API server refuses are
//! reported as refused, exit code 1.

use crate::common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use crate::common::{Operator, TestWorld};
use k8s_openapi::api::apps::v1::Deployment;
use rtdp_crds::{CqlType, FieldSpec, Pipeline};
use rtdp_provisioning::cassandra::read_table;

fn run_plan(world: &TestWorld, pipeline: &Pipeline) -> (Output, String) {
    let manifest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-{}.yaml",
        world.namespace,
        pipeline.metadata.name.as_deref().unwrap_or("pipeline")
    ));
    std::fs::write(
        &manifest,
        serde_yaml_ng::to_string(pipeline).expect("serialising the manifest"),
    )
    .expect("writing the manifest");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rtdp-operator"))
        .args(["plan", "-f"])
        .arg(&manifest)
        .args(["--log-format", "text"])
        .output()
        .expect("running rtdp-operator plan");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&output.stderr));
    (output, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_names_every_change_and_changes_nothing() {
    let (world, mut operator) = TestWorld::with_operator("op-plan", &[]).await;
    let name = "planned";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.source = None;
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let scenario = world.scenario(name);
    world.create(&pipeline).await;
    let provisioned = scenario.until_provisioned().await;
    let topic = provisioned.topic_name();
    let table = pipeline.spec.cassandra.tables[0].name.clone();
    // The operator stops, so that nothing but the plan could change anything from here on.
    operator.terminate();

    let processor = format!("{name}-processor");
    let deployment_before: Deployment = world.get(&processor).await;
    let session = common::cassandra().await;
    let columns_before = read_table(&session, &keyspace, &table)
        .await
        .expect("reading the table");

    let mut changed = pipeline.clone();
    changed.spec.topic.partitions = 3;
    changed.spec.runner.replicas = 4;
    changed.spec.schema.fields.push(FieldSpec {
        name: "listing_url".into(),
        path: None,
        type_: CqlType::Text,
        required: false,
        default: None,
        max_length: None,
    });
    changed.spec.cassandra.tables[0].ttl_seconds = 86_400;
    let (output, text) = run_plan(&world, &changed);
    assert!(
        output.status.success(),
        "a plan that would be applied exits 0"
    );
    assert!(
        text.starts_with(&format!(
            "Pipeline {}/{name} would be changed.",
            world.namespace
        )),
        "{text}"
    );
    for expected in [
        "spec.topic.partitions: 2 → 3".to_string(),
        "spec.runner.replicas: 1 → 4".to_string(),
        format!("grow topic {topic} from 2 to 3 partitions"),
        format!("ALTER TABLE {keyspace}.{table} ADD listing_url text"),
        format!("ALTER TABLE {keyspace}.{table} WITH default_time_to_live = 86400"),
        format!("change Deployment {}/{processor}: ", world.namespace),
        "spec.replicas: 1 → 4".to_string(),
        format!(
            "change ConfigMap {}/{name}-runner: data.pipeline.yaml",
            world.namespace
        ),
        format!("Service {}/{name}-metrics: unchanged", world.namespace),
        "Refused:\n  (no change)".to_string(),
        "Nothing was changed (dry run).".to_string(),
    ] {
        assert!(
            text.contains(&expected),
            "the plan should say {expected:?}:\n{text}"
        );
    }

    // Nothing changed: the topic, the table, the Deployment, the Pipeline.
    assert_eq!(
        world.topic(&topic).await.partitions,
        2,
        "the topic did not grow"
    );
    let columns_after = read_table(&session, &keyspace, &table)
        .await
        .expect("reading the table");
    assert_eq!(
        columns_after.keys().collect::<Vec<_>>(),
        columns_before.keys().collect::<Vec<_>>(),
        "no column added"
    );
    let deployment_after: Deployment = world.get(&processor).await;
    assert_eq!(
        deployment_after.metadata.resource_version, deployment_before.metadata.resource_version,
        "the Deployment was not written"
    );
    let stored: Pipeline = world.get(name).await;
    assert_eq!(stored.metadata.generation, provisioned.metadata.generation);
    assert_eq!(stored.spec, provisioned.spec);

    // Refused by Kafka: a replication factor it cannot change in place, exit 1.
    let mut replicated = pipeline.clone();
    replicated.spec.topic.replication_factor = 2;
    let (output, text) = run_plan(&world, &replicated);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Refused:\n  Kafka: topic")
            && text.contains("replication factor is 1 in Kafka but declared 2"),
        "{text}"
    );

    // Refused by the API server (a CRD transition rule): fewer partitions; nothing else is
    // planned then.
    let mut shrunk = pipeline.clone();
    shrunk.spec.topic.partitions = 1;
    let (output, text) = run_plan(&world, &shrunk);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the API server refuses the Pipeline: Pipeline.rtdp.dev \"planned\" is invalid: spec.topic.partitions"),
        "{text}"
    );
    assert!(text.contains("Kafka:\n  (not planned)"), "{text}");
    assert_eq!(
        world.topic(&topic).await.partitions,
        2,
        "still nothing changed"
    );

    // An operator again, to run the finalizer.
    let _operator = Operator::start(&world.namespace, &[]);
    scenario.delete_and_wait_gone(Duration::from_secs(60)).await;
    world.drop_topics_and_keyspace(&topic, &keyspace).await;
    world.cleanup().await;
}
