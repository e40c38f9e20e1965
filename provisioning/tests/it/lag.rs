//! The lag reader against the local stack's Kafka: records produced with known timestamps on
//! two partitions, a consumer group that commits part of them, and the reader's view before
//! and after the commit (records waiting, the oldest waiting and the last stored timestamps);
//! and the rewind a replay makes, by time and to the earliest.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rtdp_provisioning::kafka::{
    RewindTo, Rewound, admin_client, client_config, read_group_lag, rewind_group,
};
use rtdp_test_support::{kafka_bootstrap_servers, unique_name};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The first record's timestamp (ms); record `i` of a partition is one second later per `i`.
const FIRST: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn lag_is_what_the_group_has_not_committed_with_the_records_timestamps() {
    let bootstrap = kafka_bootstrap_servers();
    let config = client_config(&bootstrap, &Default::default());
    let topic = unique_name("lag");
    let group = format!("{topic}-group");
    let admin = admin_client(&bootstrap, &Default::default()).expect("an admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("creating the topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // 10 records on partition 0, 3 on partition 1, with known timestamps.
    let producer: FutureProducer = config
        .clone()
        .set("acks", "all")
        .create()
        .expect("a producer");
    for (partition, count) in [(0, 10), (1, 3)] {
        for index in 0..count {
            let payload = format!("{{\"index\":{index}}}");
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(partition)
                        .payload(&payload)
                        .timestamp(FIRST + i64::from(index) * 1000),
                    TIMEOUT,
                )
                .await
                .expect("producing a record");
        }
    }

    // No commit yet: everything waits, since the first record of partition 0.
    let lag = read_group_lag(&config, &topic, &group, TIMEOUT)
        .await
        .expect("reading the lag");
    assert_eq!(lag.records(), 13, "{lag:?}");
    assert_eq!(lag.oldest_waiting_millis(), Some(FIRST), "{lag:?}");
    assert_eq!(lag.last_stored_millis(), None, "{lag:?}");

    // The group commits 4 records of partition 0 and all of partition 1.
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer of the group");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(4))
        .expect("an offset");
    offsets
        .add_partition_offset(&topic, 1, Offset::Offset(3))
        .expect("an offset");
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("committing the offsets");

    let lag = read_group_lag(&config, &topic, &group, TIMEOUT)
        .await
        .expect("reading the lag");
    assert_eq!(lag.records(), 6, "{lag:?}");
    let committed: Vec<Option<i64>> = lag.partitions.iter().map(|p| p.committed).collect();
    assert_eq!(committed, [Some(4), Some(3)]);
    // Waiting: partition 0 from its record 4. Stored: partition 0 up to record 3, partition 1
    // up to record 2; the newest of those is partition 0's record 3.
    assert_eq!(lag.oldest_waiting_millis(), Some(FIRST + 4000), "{lag:?}");
    assert_eq!(lag.last_stored_millis(), Some(FIRST + 3000), "{lag:?}");
    assert_eq!(lag.lag_seconds(FIRST + 4000 + 60_000), 60);

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("deleting the topic");
}

/// A replay's rewind: by time, each partition's group offset moves to the first record at or
/// after it (Kafka's offsets by timestamp); to `earliest`, to the oldest retained; a time past
/// every record leaves nothing to reprocess.
#[tokio::test(flavor = "multi_thread")]
async fn rewind_moves_the_group_to_a_time_or_the_earliest() {
    let bootstrap = kafka_bootstrap_servers();
    let config = client_config(&bootstrap, &Default::default());
    let topic = unique_name("rewind");
    let group = format!("{topic}-group");
    let admin = admin_client(&bootstrap, &Default::default()).expect("an admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("creating the topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let producer: FutureProducer = config
        .clone()
        .set("acks", "all")
        .create()
        .expect("a producer");
    for index in 0..10_i64 {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(0)
                    .payload("{}")
                    .timestamp(FIRST + index * 1000),
                TIMEOUT,
            )
            .await
            .expect("producing a record");
    }

    let moved = rewind_group(
        &config,
        &topic,
        &group,
        RewindTo::Time(FIRST + 6500),
        TIMEOUT,
    )
    .await
    .expect("rewinding by time");
    assert_eq!(
        moved,
        [Rewound {
            partition: 0,
            from: None,
            to: 7,
            high: 10
        }]
    );
    let lag = read_group_lag(&config, &topic, &group, TIMEOUT)
        .await
        .expect("reading the lag");
    assert_eq!(lag.records(), 3, "records 7, 8 and 9 wait again");

    let moved = rewind_group(&config, &topic, &group, RewindTo::Earliest, TIMEOUT)
        .await
        .expect("rewinding to the earliest");
    assert_eq!((moved[0].from, moved[0].to), (Some(7), 0));
    let moved = rewind_group(
        &config,
        &topic,
        &group,
        RewindTo::Time(FIRST + 60_000),
        TIMEOUT,
    )
    .await
    .expect("rewinding past the end");
    assert_eq!(
        moved[0].to, 10,
        "nothing at or after the time: nothing to reprocess"
    );

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("deleting the topic");
}
