//! The operator against the secured local stack: Kafka's SASL_SSL listener (SCRAM-SHA-512,
//! TLS with the stack's CA) and the Cassandra with PasswordAuthenticator, credentials and CA
//! from Secrets as `examples/web-events.yaml` declares them. The example runs as written
//! except for endpoints, names and sizes (one broker; one Cassandra node in SimpleSnitch's
//! `datacenter1`, so `dc1: 3` becomes `datacenter1: 1`). Correct Secrets give Ready=True with
//! topics and tables made; a wrong password gives Ready=False with a clear message and event;
//! no secret value appears in status, events, the runner's Deployment or the operator's log.

use std::time::Duration;

use crate::common::{Operator, TestWorld, condition_of, find_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use rtdp_crds::{DeletionPolicy, Pipeline, parse_pipeline};
use rtdp_test_support::{
    assert_no_password, cassandra_secured_contact_points, cassandra_secured_credentials,
    cassandra_secured_session, cassandra_table_names, eventually, kafka_ca_file,
    kafka_sasl_credentials, kafka_secure_bootstrap_servers, unique_cql_identifier, unique_name,
};

/// examples/web-events.yaml on the secured local stack, with unique topic and keyspace.
fn web_events(world: &TestWorld, name: &str) -> Pipeline {
    let text = include_str!("../../../examples/web-events.yaml");
    let mut pipeline = parse_pipeline(text, "web-events.yaml").expect("the example parses");
    pipeline.metadata.name = Some(name.to_string());
    pipeline.metadata.namespace = Some(world.namespace.clone());
    pipeline.spec.kafka.bootstrap_servers = vec![kafka_secure_bootstrap_servers()];
    let topic = unique_name("secured");
    pipeline.spec.topic.name = Some(topic.clone());
    pipeline.spec.topic.partitions = 2;
    pipeline.spec.topic.replication_factor = 1;
    pipeline.spec.topic.dead_letter.name = Some(format!("{topic}.rejected"));
    pipeline.spec.topic.dead_letter.partitions = Some(1);
    let cassandra = &mut pipeline.spec.cassandra;
    cassandra.contact_points = cassandra_secured_contact_points();
    cassandra.local_datacenter = "datacenter1".into();
    cassandra.keyspace.name = unique_cql_identifier("secured");
    cassandra.keyspace.replication.datacenters = [("datacenter1".to_string(), 1)].into();
    pipeline
}

/// Creates the three Secrets the example refers to.
async fn create_secrets(world: &TestWorld, kafka_password: &str, cassandra_password: &str) {
    let (kafka_user, _) = kafka_sasl_credentials();
    let (cassandra_user, _) = cassandra_secured_credentials();
    let ca = std::fs::read_to_string(kafka_ca_file()).expect("reading the stack's Kafka CA");
    world.create_secret("kafka-ca", &[("ca.crt", &ca)]).await;
    world
        .create_secret(
            "web-events-kafka",
            &[("username", &kafka_user), ("password", kafka_password)],
        )
        .await;
    world
        .create_secret(
            "web-events-cassandra",
            &[
                ("username", &cassandra_user),
                ("password", cassandra_password),
            ],
        )
        .await;
}

/// Everything a user (or a log collector) can read about the Pipeline, as text: its status,
/// its events, the runner Deployments and the operator's log.
async fn visible_text(world: &TestWorld, name: &str, operator: &Operator) -> String {
    let pipeline = world
        .pipelines()
        .get(name)
        .await
        .expect("reading the Pipeline");
    let events = world.events(name).await;
    let deployments = world
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .expect("listing Deployments");
    format!(
        "{}\n{}\n{}\n{}",
        serde_json::to_string(&pipeline.status).unwrap_or_default(),
        serde_json::to_string(&events).unwrap_or_default(),
        serde_json::to_string(&deployments.items).unwrap_or_default(),
        operator.log_text()
    )
}

/// Fails when a password appears in what `visible_text` gathered.
fn assert_no_secret(text: &str, extra: &[&str]) {
    assert_no_password(
        "the status, events, Deployments or operator log",
        text,
        extra,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_with_correct_credentials_make_topics_and_tables_ready() {
    let world = TestWorld::new("secured-ok").await;
    let (_, kafka_password) = kafka_sasl_credentials();
    let (_, cassandra_password) = cassandra_secured_credentials();
    create_secrets(&world, &kafka_password, &cassandra_password).await;
    let operator = Operator::start(&world.namespace, &[]);
    let name = "web-events";
    let mut pipeline = web_events(&world, name);
    pipeline.spec.deletion_policy = DeletionPolicy::Delete;
    let topic = pipeline.topic_name();
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    world.create(&pipeline).await;

    let ready = world
        .wait_for_condition(name, "Provisioned", "True", None)
        .await;
    assert_eq!(condition_of(&ready, "TopicReady").0, "True");
    // The same broker also listens in PLAINTEXT: the test's admin client reads the topics.
    assert_eq!(world.topic(&topic).await.partitions, 2);
    world.topic(&format!("{topic}.rejected")).await;
    let session = cassandra_secured_session().await;
    assert_eq!(
        cassandra_table_names(&session, &keyspace).await,
        vec![
            "events_by_page_day".to_string(),
            "events_by_user".to_string()
        ]
    );
    assert_no_secret(&visible_text(&world, name, &operator).await, &[]);

    // Deletion drops them again through the same secured connections.
    world
        .scenario(name)
        .delete_and_wait_gone(Duration::from_secs(90))
        .await;
    world.wait_topic_deleted(&topic).await;
    assert!(cassandra_table_names(&session, &keyspace).await.is_empty());
    world.cleanup().await;
}

/// Waits for Ready=False with a message naming `server` and an authentication failure, and
/// for an event saying the same; returns (message, event notes).
async fn wait_for_refusal(world: &TestWorld, name: &str, server: &str) -> (String, String) {
    let not_ready = world
        .wait_for(
            name,
            "Ready=False naming the authentication failure",
            Duration::from_secs(90),
            |pipeline| {
                find_condition(pipeline, "Ready").is_some_and(|ready| {
                    ready.status == "False"
                        && ready.message.to_lowercase().contains("authentication")
                })
            },
        )
        .await;
    let ready = find_condition(&not_ready, "Ready").expect("a Ready condition");
    assert!(
        ready.message.contains(server),
        "the Ready message should name {server}: {}",
        ready.message
    );
    let notes = eventually(
        "an event about the authentication failure",
        Duration::from_secs(30),
        || async {
            let notes: Vec<String> = world
                .events(name)
                .await
                .into_iter()
                .filter_map(|event| event.note)
                .filter(|note| note.to_lowercase().contains("authentication"))
                .collect();
            (!notes.is_empty()).then(|| notes.join("\n"))
        },
    )
    .await;
    (ready.message.clone(), notes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_kafka_password_is_ready_false_with_a_clear_message_and_event() {
    let world = TestWorld::new("secured-bad-kafka").await;
    let wrong = "wrong-kafka-password-Pq93";
    let (_, cassandra_password) = cassandra_secured_credentials();
    create_secrets(&world, wrong, &cassandra_password).await;
    let operator = Operator::start(&world.namespace, &[]);
    let name = "web-events";
    let pipeline = web_events(&world, name);
    let server = kafka_secure_bootstrap_servers();
    world.create(&pipeline).await;
    let (message, notes) = wait_for_refusal(&world, name, &server).await;
    eprintln!("Ready message: {message}\nevents: {notes}");
    assert!(message.contains("Kafka"), "{message}");
    assert!(!world.topic_exists(&pipeline.topic_name()).await);
    assert_no_secret(&visible_text(&world, name, &operator).await, &[wrong]);

    // Correcting the Secret is enough: the refused client was not kept, the retry succeeds.
    let (_, kafka_password) = kafka_sasl_credentials();
    let secrets: kube::Api<Secret> = world.api();
    secrets
        .patch(
            "web-events-kafka",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "stringData": {"password": kafka_password}
            })),
        )
        .await
        .expect("correcting the Secret");
    world
        .wait_for(
            name,
            "Ready=True after the fix",
            Duration::from_secs(90),
            |pipeline| {
                find_condition(pipeline, "Provisioned").is_some_and(|ready| ready.status == "True")
            },
        )
        .await;
    world.topic(&pipeline.topic_name()).await;
    assert_no_secret(&visible_text(&world, name, &operator).await, &[wrong]);
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_cassandra_password_is_ready_false_with_a_clear_message_and_event() {
    let world = TestWorld::new("secured-bad-cassandra").await;
    let wrong = "wrong-cassandra-password-Hs46";
    let (_, kafka_password) = kafka_sasl_credentials();
    create_secrets(&world, &kafka_password, wrong).await;
    let operator = Operator::start(&world.namespace, &[]);
    let name = "web-events";
    let pipeline = web_events(&world, name);
    let server = cassandra_secured_contact_points().join(",");
    world.create(&pipeline).await;
    let (message, notes) = wait_for_refusal(&world, name, &server).await;
    eprintln!("Ready message: {message}\nevents: {notes}");
    assert!(message.contains("Cassandra"), "{message}");
    assert_no_secret(&visible_text(&world, name, &operator).await, &[wrong]);
    world.cleanup().await;
}
