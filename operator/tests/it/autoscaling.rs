//! Lag-based autoscaling against the real local stack: records waiting in the topic scale the
//! processor Deployment up (⌈lag ÷ targetLag⌉, capped by maxReplicas, then by the partition
//! count), the drained topic (the processors' group commits everything; done here by the test,
//! as the local stack has no kubelet) scales it down after the scale-down window, and each
//! decision is an Event and in `status.autoscaling`.

use std::time::Duration;

use crate::common::{TestWorld, find_condition};
use k8s_openapi::api::apps::v1::Deployment;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rtdp_crds::{AutoscalingSpec, Pipeline};
use rtdp_test_support::{eventually, kafka_bootstrap_servers};

const TIMEOUT: Duration = Duration::from_secs(10);
const PARTITIONS: i32 = 4;

fn kafka() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", kafka_bootstrap_servers());
    config
}

async fn produce(topic: &str, count: usize) {
    let producer: FutureProducer = kafka().set("acks", "all").create().expect("a producer");
    for index in 0..count {
        let payload = format!("{{\"zpid\":{index}}}");
        let partition = i32::try_from(index).expect("a small count") % PARTITIONS;
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&payload),
                TIMEOUT,
            )
            .await
            .expect("producing a record");
    }
}

fn autoscaling_message(pipeline: &Pipeline) -> String {
    pipeline
        .status
        .as_ref()
        .and_then(|status| status.autoscaling.as_ref())
        .map(|autoscaling| autoscaling.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_scales_the_processors_up_within_bounds_and_down_after_the_window() {
    let (world, _operator) =
        TestWorld::with_operator("op-autoscale", &["--freshness-period-seconds", "1"]).await;
    let name = "scaled";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.source = None;
    pipeline.spec.topic.partitions = PARTITIONS;
    pipeline.spec.runner.replicas = 2;
    pipeline.spec.runner.autoscaling = Some(AutoscalingSpec {
        min_replicas: 1,
        max_replicas: 3,
        target_lag: 10,
        scale_up_stabilization_seconds: 0,
        scale_down_stabilization_seconds: 3,
    });
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let scenario = world.scenario(name);
    world.create(&pipeline).await;
    let provisioned = scenario.until_provisioned().await;
    let topic = provisioned.topic_name();
    let processor = format!("{name}-processor");
    let replicas = |expected: i32| {
        let world = &world;
        let processor = processor.clone();
        async move {
            eventually(
                &format!("{processor} at {expected} replicas"),
                Duration::from_secs(60),
                || {
                    let processor = processor.clone();
                    async move {
                        let deployment: Deployment = world.get(&processor).await;
                        (deployment.spec.and_then(|spec| spec.replicas) == Some(expected))
                            .then_some(())
                    }
                },
            )
            .await;
        }
    };

    // An empty topic: down to minReplicas once the scale-down window has passed.
    replicas(1).await;
    scenario.expect_events(&["ScaledDown"]).await;

    // 25 records waiting, targetLag 10: 3 replicas, at once (no scale-up window).
    let burst = std::time::Instant::now();
    produce(&topic, 25).await;
    replicas(3).await;
    // A reaction time to report (never asserted: machines are noisy), with a 1 s period.
    eprintln!(
        "measured: burst produced → 3 replicas in {:.1} s (freshness period 1 s, no scale-up window)",
        burst.elapsed().as_secs_f64()
    );
    scenario.expect_events(&["ScaledUp"]).await;
    let scaled = world
        .wait_for(
            name,
            "the decision in the status",
            Duration::from_secs(30),
            |pipeline| autoscaling_message(pipeline).starts_with("25 records waiting"),
        )
        .await;
    let autoscaling = scaled
        .status
        .as_ref()
        .and_then(|status| status.autoscaling.clone())
        .expect("status.autoscaling");
    assert_eq!(autoscaling.desired_replicas, 3);
    assert!(autoscaling.last_scale_time.is_some());

    // 125 waiting wants 13: capped at maxReplicas 3; raised to 10, capped at 4 partitions.
    produce(&topic, 100).await;
    world
        .wait_for(
            name,
            "capped at maxReplicas",
            Duration::from_secs(30),
            |pipeline| autoscaling_message(pipeline).contains("capped at maxReplicas 3"),
        )
        .await;
    scenario
        .patch(serde_json::json!({"runner": {"autoscaling": {"maxReplicas": 10}}}))
        .await;
    replicas(PARTITIONS).await;
    let capped = world
        .wait_for(
            name,
            "capped at the partitions",
            Duration::from_secs(30),
            |pipeline| {
                autoscaling_message(pipeline).contains("capped at the topic's 4 partitions")
                    && find_condition(pipeline, "RunnerReady")
                        .is_some_and(|condition| condition.message.contains("of 4 processor"))
            },
        )
        .await;
    assert_eq!(
        capped.status.as_ref().and_then(|status| status.replicas),
        Some(PARTITIONS),
        "status.replicas is the autoscaled count"
    );

    // The processors' group commits everything: drained, down to 1 after the window.
    let consumer: BaseConsumer = kafka()
        .set("group.id", provisioned.consumer_group())
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer of the processors' group");
    let mut offsets = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, TIMEOUT)
            .expect("the watermarks");
        offsets
            .add_partition_offset(&topic, partition, Offset::Offset(high))
            .expect("an offset");
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("committing");
    let drained = std::time::Instant::now();
    replicas(1).await;
    eprintln!(
        "measured: drained → 1 replica in {:.1} s (freshness period 1 s, scale-down window 3 s)",
        drained.elapsed().as_secs_f64()
    );

    scenario.delete_and_wait_gone(Duration::from_secs(60)).await;
    world.drop_topics_and_keyspace(&topic, &keyspace).await;
    world.cleanup().await;
}
