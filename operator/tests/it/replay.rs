//! A replay on the real local stack, processors included (run as processes from the operator's
//! pod templates, since the local stack has no kubelet): a clean run stores the generated
//! listings; the table is then truncated (a bad fix, say) and `spec.replay` (from `earliest`)
//! moves the processors' committed offsets back; the processor started again rebuilds the table
//! row for row as the clean run left it. A replay asked for while a processor still runs
//! waits (`Stopping`) until it has stopped: Kafka refuses to move a group that has members.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::pods::start_pod;
use crate::common::{TestWorld, cassandra};
use k8s_openapi::api::apps::v1::Deployment;
use rtdp_crds::{Pipeline, RecordCounts};
use rtdp_provisioning::kafka::{client_config, read_group_lag};
use rtdp_test_support::process::Process;
use rtdp_test_support::{eventually, kafka_bootstrap_servers};
use scylla::value::Row;

const RECORDS: i64 = 300;

/// Every row of the table, as text, sorted: what a clean run stored.
async fn rows(table: &str) -> Vec<String> {
    let session = cassandra().await;
    let result = session
        .query_unpaged(format!("SELECT * FROM {table}"), ())
        .await
        .expect("reading the table")
        .into_rows_result()
        .expect("rows");
    let mut rows: Vec<String> = result
        .rows::<Row>()
        .expect("untyped rows")
        .map(|row| format!("{:?}", row.expect("a row").columns))
        .collect();
    rows.sort();
    rows
}

/// Waits until the processors' group has stored everything produced so far.
async fn caught_up(pipeline: &Pipeline) {
    let config = client_config(&kafka_bootstrap_servers(), &Default::default());
    let topic = pipeline.topic_name();
    let group = pipeline.consumer_group();
    eventually(
        "the processors to catch up",
        Duration::from_secs(120),
        || {
            let (config, topic, group) = (config.clone(), topic.clone(), group.clone());
            async move {
                let lag = read_group_lag(&config, &topic, &group, Duration::from_secs(10))
                    .await
                    .ok()?;
                (lag.partitions.iter().map(|p| p.high).sum::<i64>() == RECORDS
                    && lag.records() == 0)
                    .then_some(())
            }
        },
    )
    .await;
}

/// Waits until `status.freshness.records` says `written` records were written, none
/// dead-lettered or filtered (the generator's listings are all valid and pass the filter).
async fn records_in_status(world: &TestWorld, name: &str, written: i64) {
    world
        .wait_for(
            name,
            &format!("{written} records written in status.freshness.records"),
            Duration::from_secs(60),
            |pipeline| {
                pipeline
                    .status
                    .as_ref()
                    .and_then(|status| status.freshness.as_ref())
                    .and_then(|freshness| freshness.records)
                    == Some(RecordCounts {
                        written,
                        ..RecordCounts::default()
                    })
            },
        )
        .await;
}

fn replay_state(pipeline: &Pipeline) -> Option<(String, String)> {
    let replay = pipeline.status.as_ref()?.replay.as_ref()?;
    Some((replay.id.clone(), replay.state.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_rebuilds_the_tables_as_a_clean_run_left_them() {
    let (world, _operator) =
        TestWorld::with_operator("op-replay", &["--freshness-period-seconds", "1"]).await;
    let name = "replayed";
    let mut pipeline = world.pipeline(name);
    if let Some(generator) = pipeline
        .spec
        .source
        .as_mut()
        .and_then(|source| source.generator.as_mut())
    {
        generator.total_records = Some(RECORDS);
        generator.distinct_keys = 100;
    }
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let table = format!("{keyspace}.{}", pipeline.spec.cassandra.tables[0].name);
    let scenario = world.scenario(name);
    world.create(&pipeline).await;
    let provisioned = scenario.until_provisioned().await;
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&world.namespace);
    let processor_template = || async {
        let deployment: Deployment = world.get(&format!("{name}-processor")).await;
        deployment.spec.expect("a spec").template
    };

    // The clean run: the generator's pod produces its 300 records, one processor stores them.
    let ingest: Deployment = world.get(&format!("{name}-ingest")).await;
    let mut generator = start_pod(
        &world,
        &ingest.spec.expect("a spec").template,
        &work,
        "ingest",
    )
    .await;
    assert!(
        generator.wait(Duration::from_secs(120)).success(),
        "the generator stops after totalRecords"
    );
    let mut processor: Process =
        start_pod(&world, &processor_template().await, &work, "processor-1").await;
    caught_up(&provisioned).await;
    let clean = rows(&table).await;
    assert_eq!(clean.len(), 100, "one row per distinct key");
    // Every record counted once in the status, from the progress committed with the offsets.
    records_in_status(&world, name, RECORDS).await;

    // A replay asked for in the same change as an invalid spec: refused as a whole, before
    // any side effect (nothing rewound, the processors not held, no replay reported).
    scenario
        .patch(serde_json::json!({
            "replay": {"id": "invalid-1", "from": "earliest"},
            "schema": {"filter": "price >"}
        }))
        .await;
    let refused = world
        .wait_for(
            name,
            "the invalid spec to be reported",
            Duration::from_secs(60),
            |pipeline| {
                pipeline
                    .condition("Degraded")
                    .is_some_and(|condition| condition.reason == "InvalidSpec")
            },
        )
        .await;
    assert_eq!(
        replay_state(&refused),
        None,
        "no replay for an invalid spec"
    );
    let not_held: Deployment = world.get(&format!("{name}-processor")).await;
    assert_eq!(
        not_held.spec.and_then(|spec| spec.replicas),
        Some(pipeline.spec.runner.replicas),
        "the processors are not held for an invalid spec's replay"
    );
    let lag = read_group_lag(
        &client_config(&kafka_bootstrap_servers(), &Default::default()),
        &provisioned.topic_name(),
        &provisioned.consumer_group(),
        Duration::from_secs(10),
    )
    .await
    .expect("reading the group's lag");
    assert_eq!(
        lag.records(),
        0,
        "the offsets stay where the clean run committed them"
    );
    assert!(
        !world
            .event_reasons(name)
            .await
            .iter()
            .any(|reason| reason.starts_with("Replay")),
        "no replay event for an invalid spec"
    );
    scenario
        .patch(serde_json::json!({"replay": null, "schema": {"filter": null}}))
        .await;
    world
        .wait_for(
            name,
            "the valid spec again",
            Duration::from_secs(60),
            |pipeline| {
                pipeline
                    .condition("Degraded")
                    .is_some_and(|condition| condition.status == "False")
            },
        )
        .await;

    // A replay while the processor runs: it waits for the processor to stop.
    cassandra()
        .await
        .query_unpaged(format!("TRUNCATE {table}"), ())
        .await
        .expect("truncating the table");
    scenario
        .patch(serde_json::json!({"replay": {"id": "rebuild-1", "from": "earliest"}}))
        .await;
    let stopping = world
        .wait_for(
            name,
            "the replay to wait for the processor",
            Duration::from_secs(60),
            |pipeline| replay_state(pipeline) == Some(("rebuild-1".into(), "Stopping".into())),
        )
        .await;
    let message = &stopping
        .status
        .as_ref()
        .and_then(|status| status.replay.clone())
        .expect("replay")
        .message;
    assert!(message.contains("still has members"), "{message}");
    let held: Deployment = world.get(&format!("{name}-processor")).await;
    assert_eq!(
        held.spec.and_then(|spec| spec.replicas),
        Some(0),
        "processors held at zero"
    );
    assert!(processor.terminate(Duration::from_secs(30)).success());

    // Stopped: the offsets move back, the processors come back.
    let completed = world
        .wait_for(
            name,
            "the replay to complete",
            Duration::from_secs(60),
            |pipeline| replay_state(pipeline) == Some(("rebuild-1".into(), "Completed".into())),
        )
        .await;
    let replay = completed
        .status
        .as_ref()
        .and_then(|status| status.replay.clone())
        .expect("replay");
    assert!(
        replay
            .message
            .ends_with(&format!("{RECORDS} records to process again")),
        "{}",
        replay.message
    );
    assert!(replay.finished_at.is_some());
    // Moved once, from where the clean run had committed (never "0 → 0": a second rewind).
    assert!(
        !replay.message.contains(": 0 → 0") && !replay.message.contains("none →"),
        "{}",
        replay.message
    );
    scenario
        .expect_events(&["ReplayStarted", "ReplayCompleted"])
        .await;
    let resumed: Deployment = world.get(&format!("{name}-processor")).await;
    assert_eq!(
        resumed.spec.and_then(|spec| spec.replicas),
        Some(pipeline.spec.runner.replicas),
        "the processors are back"
    );

    // The processor, started again, rebuilds the table exactly.
    let _processor = start_pod(&world, &processor_template().await, &work, "processor-2").await;
    caught_up(&provisioned).await;
    assert_eq!(
        rows(&table).await,
        clean,
        "the replayed table equals the clean run's"
    );
    // The rewind kept the counts: the replayed records count again.
    records_in_status(&world, name, 2 * RECORDS).await;

    scenario.delete_and_wait_gone(Duration::from_secs(60)).await;
    world
        .drop_topics_and_keyspace(&provisioned.topic_name(), &keyspace)
        .await;
    world.cleanup().await;
}
