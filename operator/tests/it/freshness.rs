//! Freshness in status against the real local stack: records waiting in the topic show as
//! `status.freshness.lagRecords`/`lagSeconds` and a `Fresh=False` (reason `LagExceeded`)
//! against `spec.slo`; once the processors' consumer group commits them (done here by the
//! test, as the local stack has no kubelet to run processors), the lag is 0, the last stored
//! record's time is its Kafka timestamp and `Fresh` is True. A reconcile of a new generation
//! leaves the freshness loop's fields alone (two field managers, one status).

use std::time::Duration;

use crate::common::{TestWorld, find_condition};
use k8s_openapi::jiff::Timestamp;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rtdp_crds::{Pipeline, SloSpec};
use rtdp_test_support::{eventually, kafka_bootstrap_servers};

const TIMEOUT: Duration = Duration::from_secs(10);

fn kafka() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", kafka_bootstrap_servers());
    config
}

fn freshness(pipeline: &Pipeline) -> Option<&rtdp_crds::FreshnessStatus> {
    pipeline.status.as_ref()?.freshness.as_ref()
}

/// Records `{"zpid": n}` for each `n` of `zpids`, into partition 0 of `topic`.
async fn produce_zpids(producer: &FutureProducer, topic: &str, zpids: std::ops::Range<i64>) {
    for zpid in zpids {
        let payload = format!("{{\"zpid\":{zpid}}}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&payload),
                TIMEOUT,
            )
            .await
            .expect("producing a record");
    }
}

fn fresh_reason(pipeline: &Pipeline) -> Option<&str> {
    find_condition(pipeline, "Fresh").map(|condition| condition.reason.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_and_the_last_stored_record_reach_the_status_and_the_objective() {
    let (world, operator) =
        TestWorld::with_operator("op-freshness", &["--freshness-period-seconds", "1"]).await;
    let name = "fresh";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.source = None;
    pipeline.spec.slo = Some(SloSpec {
        max_lag_seconds: Some(1),
        max_staleness_seconds: None,
    });
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let scenario = world.scenario(name);
    world.create(&pipeline).await;
    let provisioned = scenario.until_provisioned().await;
    let topic = provisioned.topic_name();
    let group = provisioned.consumer_group();

    // Nothing produced yet: no lag, nothing stored, and the objective is met.
    world
        .wait_for(
            name,
            "an empty topic measured",
            Duration::from_secs(60),
            |pipeline| {
                freshness(pipeline).is_some_and(|freshness| freshness.lag_records == 0)
                    && fresh_reason(pipeline) == Some("WithinObjective")
            },
        )
        .await;

    // Five records wait unprocessed. The main topic stamps records with LogAppendTime, so
    // their timestamps are when they reached Kafka: between these two readings of the clock.
    let before = Timestamp::now().as_millisecond();
    let producer: FutureProducer = kafka().set("acks", "all").create().expect("a producer");
    produce_zpids(&producer, &topic, 0..5).await;
    let after = Timestamp::now().as_millisecond();
    let late = world
        .wait_for(
            name,
            "5 records lagging",
            Duration::from_secs(60),
            |pipeline| {
                freshness(pipeline).is_some_and(|freshness| {
                    freshness.lag_records == 5 && freshness.lag_seconds >= 2
                }) && fresh_reason(pipeline) == Some("LagExceeded")
            },
        )
        .await;
    // Over maxLagSeconds (1) once they have waited two seconds.
    let measured = freshness(&late).expect("freshness");
    assert_eq!(measured.last_stored_record_time, None, "nothing stored yet");
    // The same reading, as a metric per Pipeline.
    let sample = format!(
        "rtdp_pipeline_lag_records{{namespace=\"{}\",pipeline=\"{name}\"}}",
        world.namespace
    );
    eventually("the lag metric", Duration::from_secs(30), || {
        let operator = &operator;
        let sample = sample.clone();
        async move { (operator.metric(&sample).await == Some(5.0)).then_some(()) }
    })
    .await;
    scenario.expect_events(&["LagExceeded"]).await;

    // A new generation is reconciled; the freshness loop's fields survive its status write.
    scenario
        .patch(serde_json::json!({"runner": {"concurrency": 64}}))
        .await;
    let reconciled = world
        .wait_for(
            name,
            "the new generation reconciled",
            Duration::from_secs(60),
            |pipeline| {
                find_condition(pipeline, "Provisioned").is_some_and(|condition| {
                    condition.observed_generation == pipeline.metadata.generation
                })
            },
        )
        .await;
    assert!(freshness(&reconciled).is_some(), "{:?}", reconciled.status);
    assert_eq!(fresh_reason(&reconciled), Some("LagExceeded"));

    // The processors' group commits all five: caught up, the last one stored.
    let consumer: BaseConsumer = kafka()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer of the processors' group");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(5))
        .expect("an offset");
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("committing");
    let caught_up = world
        .wait_for(name, "caught up", Duration::from_secs(60), |pipeline| {
            freshness(pipeline).is_some_and(|freshness| freshness.lag_records == 0)
                && fresh_reason(pipeline) == Some("WithinObjective")
        })
        .await;
    let measured = freshness(&caught_up).expect("freshness");
    assert_eq!(measured.lag_seconds, 0);
    let stored: Timestamp = measured
        .last_stored_record_time
        .as_deref()
        .expect("the last stored record's time")
        .parse()
        .expect("an RFC 3339 time");
    assert!(
        (before - 1000..=after + 1000).contains(&stored.as_millisecond()),
        "the last stored record reached Kafka between {before} and {after}: {stored}"
    );
    scenario.expect_events(&["WithinObjective"]).await;

    // Twenty more records, most of them dead-lettered: the processors commit the offset past
    // them with their counts by reason and the newest written record's time (still the one
    // above). LAST-STORED stays, and Storing turns False naming the dominant reason.
    produce_zpids(&producer, &topic, 5..25).await;
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(25))
        .expect("an offset");
    if let Some(mut element) = offsets.find_partition(&topic, 0) {
        element.set_metadata(format!(
            "rtdp.written=7;rtdp.dead-lettered=18;rtdp.filtered=0;rtdp.last-written={};\
             rtdp.dead-lettered.wrong_type=15;rtdp.dead-lettered.malformed_json=3",
            stored.as_millisecond()
        ));
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("committing");
    let dead_lettering = world
        .wait_for(name, "Storing False", Duration::from_secs(60), |pipeline| {
            find_condition(pipeline, "Storing")
                .is_some_and(|condition| condition.reason == "MostlyDeadLettered")
        })
        .await;
    let condition = find_condition(&dead_lettering, "Storing").expect("Storing");
    assert_eq!(condition.status, "False");
    assert!(
        condition.message.contains("18 of the 25 records")
            && condition
                .message
                .contains("most of them for wrong_type (15)"),
        "{}",
        condition.message
    );
    let measured = freshness(&dead_lettering).expect("freshness");
    assert_eq!(measured.lag_records, 0);
    assert_eq!(
        measured.last_stored_record_time.as_deref(),
        Some(stored.to_string().as_str()),
        "dead letters do not make the pipeline look fresh"
    );
    assert_eq!(
        measured.dead_lettered_by_reason.get("wrong_type"),
        Some(&15)
    );
    scenario.expect_events(&["MostlyDeadLettered"]).await;

    scenario.delete_and_wait_gone(Duration::from_secs(60)).await;
    world.drop_topics_and_keyspace(&topic, &keyspace).await;
    world.cleanup().await;
}
