//! Proves the local stack's Kafka and Cassandra are real and usable from the runner's client
//! libraries (rdkafka, scylla). Needs `dev/stack up`; fails (never skips) without it.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rtdp_test_support::{
    cassandra_contact_points, kafka_bootstrap_servers, unique_cql_identifier, unique_name,
};
use scylla::client::session_builder::SessionBuilder;

#[tokio::test]
async fn kafka_produce_consume_round_trip() {
    let bootstrap = kafka_bootstrap_servers();
    let topic = unique_name("stack-round-trip");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("creating the Kafka admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("creating the topic");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("creating topic {name}: {code}"));
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("creating the producer");
    let sent: Vec<(String, String)> = (0..30)
        .map(|index| (format!("key-{index}"), format!("{{\"value\":{index}}}")))
        .collect();
    for (key, payload) in &sent {
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("producing {key}: {error}"));
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", unique_name("stack-round-trip-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the consumer");
    consumer.subscribe(&[&topic]).expect("subscribing");
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no record within 30 s; received {} of {}",
                    received.len(),
                    sent.len()
                )
            })
            .expect("consuming");
        let key = String::from_utf8_lossy(message.key().expect("a key")).into_owned();
        let payload = String::from_utf8_lossy(message.payload().expect("a payload")).into_owned();
        received.push((key, payload));
    }
    received.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(
        received, expected,
        "every produced record comes back exactly once"
    );

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("deleting the topic");
}

#[tokio::test]
async fn cassandra_create_insert_select() {
    let contact_points = cassandra_contact_points();
    let session = SessionBuilder::new()
        .known_nodes(&contact_points)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("connecting to Cassandra");
    let keyspace = unique_cql_identifier("stack_smoke");

    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
            ),
            &[],
        )
        .await
        .expect("CREATE KEYSPACE");
    session
        .query_unpaged(
            format!("CREATE TABLE {keyspace}.listings (zpid bigint PRIMARY KEY, city text, price bigint)"),
            &[],
        )
        .await
        .expect("CREATE TABLE");
    let insert = session
        .prepare(format!(
            "INSERT INTO {keyspace}.listings (zpid, city, price) VALUES (?, ?, ?)"
        ))
        .await
        .expect("preparing INSERT");
    for (zpid, city, price) in [(1_i64, "Houston", 250_000_i64), (2, "Austin", 410_000)] {
        session
            .execute_unpaged(&insert, (zpid, city, price))
            .await
            .expect("INSERT");
    }
    let mut rows: Vec<(i64, String, i64)> = session
        .query_unpaged(
            format!("SELECT zpid, city, price FROM {keyspace}.listings"),
            &[],
        )
        .await
        .expect("SELECT")
        .into_rows_result()
        .expect("SELECT returns rows")
        .rows::<(i64, String, i64)>()
        .expect("typed rows")
        .collect::<Result<_, _>>()
        .expect("decoding rows");
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (1, "Houston".to_string(), 250_000),
            (2, "Austin".to_string(), 410_000)
        ]
    );

    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[])
        .await
        .expect("DROP KEYSPACE");
}
