//! Provisioning against the real Kafka and Cassandra of the local stack (`dev/stack up`):
//! what the operator and the standalone runner both rely on.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use rtdp_crds::{CqlType, FieldSpec, Pipeline, parse_pipeline};
use rtdp_provisioning::ProvisionError;
use rtdp_provisioning::cassandra::{drop_tables, ensure_schema, read_table};
use rtdp_provisioning::kafka::{admin_client, delete_topics, ensure_topics, read_topic};
use rtdp_test_support::{
    cassandra_session, eventually, kafka_bootstrap_servers, unique_cql_identifier, unique_name,
};

fn pipeline() -> Pipeline {
    let text = include_str!("../../../examples/generated-listings.yaml");
    let mut pipeline = parse_pipeline(text, "generated-listings.yaml").expect("the example parses");
    pipeline.metadata.name = Some(unique_name("provisioning"));
    pipeline.metadata.namespace = Some("tests".into());
    pipeline.spec.cassandra.keyspace.name = unique_cql_identifier("provisioning");
    pipeline
}

#[tokio::test]
async fn topics_are_created_adopted_grown_and_never_shrunk() {
    let admin = admin_client(&kafka_bootstrap_servers(), &BTreeMap::new()).expect("admin client");
    let mut pipeline = pipeline();
    pipeline.spec.topic.config =
        BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]);
    let topic = pipeline.topic_name();

    let report = ensure_topics(&admin, &pipeline)
        .await
        .expect("creating the topics");
    assert_eq!(
        report.created,
        vec![topic.clone(), pipeline.dead_letter_topic_name()]
    );
    let existing = eventually("the topic's metadata", Duration::from_secs(20), || {
        let admin = admin.clone();
        let topic = topic.clone();
        async move { read_topic(&admin, &topic).await.ok().flatten() }
    })
    .await;
    assert_eq!((existing.partitions, existing.replication_factor), (4, 1));
    let dead_letter = eventually(
        "the dead-letter topic's metadata",
        Duration::from_secs(20),
        || {
            let admin = admin.clone();
            let topic = pipeline.dead_letter_topic_name();
            async move { read_topic(&admin, &topic).await.ok().flatten() }
        },
    )
    .await;
    assert_eq!(dead_letter.partitions, 1);

    // A second reconcile adopts what exists and changes nothing.
    let report = ensure_topics(&admin, &pipeline)
        .await
        .expect("adopting the topics");
    assert!(
        report.created.is_empty() && report.grown.is_empty() && report.config_reset.is_empty(),
        "{report:?}"
    );

    // Someone changes a managed config by hand: it is set back.
    let drift = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "60000");
    admin
        .alter_configs(&[drift], &AdminOptions::new())
        .await
        .expect("altering the config by hand");
    // Kafka applies a config change asynchronously: reconcile until the drift is seen (and
    // set back), with a deadline, never assuming it has already propagated. The legacy
    // AlterConfigs above replaced the whole dynamic config, so the managed timestamp type
    // drifted too.
    let expected_reset = format!("{topic}: retention.ms");
    let report = eventually(
        "the hand-made change seen and set back",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            let pipeline = pipeline.clone();
            let expected_reset = expected_reset.clone();
            async move {
                let report = ensure_topics(&admin, &pipeline)
                    .await
                    .expect("resetting drift");
                report
                    .config_reset
                    .contains(&expected_reset)
                    .then_some(report)
            }
        },
    )
    .await;
    assert!(
        report
            .config_reset
            .iter()
            .all(|entry| entry == &expected_reset
                || entry == &format!("{topic}: message.timestamp.type")),
        "{report:?}"
    );
    // Set back means set back: the broker reports the declared values again.
    eventually(
        "the declared configs in place",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            let pipeline = pipeline.clone();
            async move {
                let report = ensure_topics(&admin, &pipeline).await.ok()?;
                report.config_reset.is_empty().then_some(())
            }
        },
    )
    .await;

    // Partitions grow in place.
    pipeline.spec.topic.partitions = 6;
    let report = ensure_topics(&admin, &pipeline)
        .await
        .expect("growing partitions");
    assert_eq!(report.grown, vec![topic.clone()]);
    eventually("6 partitions", Duration::from_secs(20), || {
        let admin = admin.clone();
        let topic = topic.clone();
        async move {
            read_topic(&admin, &topic)
                .await
                .ok()
                .flatten()
                .filter(|found| found.partitions == 6)
        }
    })
    .await;

    // A decrease is refused and nothing changes.
    pipeline.spec.topic.partitions = 3;
    let error = ensure_topics(&admin, &pipeline)
        .await
        .expect_err("a decrease is refused");
    assert!(
        matches!(error, ProvisionError::TopicNotSupported { .. }),
        "{error}"
    );
    assert_eq!(error.reason(), "NotSupported");
    let existing = read_topic(&admin, &topic)
        .await
        .expect("metadata")
        .expect("the topic");
    assert_eq!(existing.partitions, 6);

    delete_topics(&admin, &pipeline)
        .await
        .expect("deleting the topics");
    eventually("the topic to be gone", Duration::from_secs(30), || {
        let admin = admin.clone();
        let topic = topic.clone();
        async move { matches!(read_topic(&admin, &topic).await, Ok(None)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn tables_are_created_extended_and_protected_from_incompatible_changes() {
    let session = cassandra_session().await;
    let mut pipeline = pipeline();
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();

    let report = ensure_schema(&session, &pipeline)
        .await
        .expect("creating the schema");
    assert_eq!(report.created, vec![format!("{keyspace}.listings_by_id")]);
    let columns = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("reading the table");
    assert_eq!(columns["zpid"].kind, "partition_key");
    assert_eq!(columns["price"].cql_type, "bigint");
    assert_eq!(columns.len(), 5);

    // A new field is an additive change: ALTER TABLE ADD.
    pipeline.spec.schema.fields.push(FieldSpec {
        name: "bedrooms".into(),
        path: None,
        type_: CqlType::Int,
        required: false,
        default: None,
        max_length: None,
    });
    let report = ensure_schema(&session, &pipeline)
        .await
        .expect("adding a column");
    assert_eq!(
        report.added_columns,
        vec![format!("{keyspace}.listings_by_id.bedrooms")]
    );
    assert_eq!(
        read_table(&session, &keyspace, "listings_by_id")
            .await
            .expect("reading")["bedrooms"]
            .cql_type,
        "int"
    );

    // A type change is refused, and nothing is altered — not even the additive part.
    pipeline
        .spec
        .schema
        .fields
        .retain(|field| field.name != "price");
    pipeline.spec.schema.fields.push(FieldSpec {
        name: "price".into(),
        path: None,
        type_: CqlType::Double,
        required: true,
        default: None,
        max_length: None,
    });
    pipeline.spec.schema.fields.push(FieldSpec {
        name: "bathrooms".into(),
        path: None,
        type_: CqlType::Double,
        required: false,
        default: None,
        max_length: None,
    });
    let error = ensure_schema(&session, &pipeline)
        .await
        .expect_err("a type change is refused");
    assert_eq!(error.reason(), "IncompatibleSchemaChange");
    assert!(
        error
            .to_string()
            .contains("price is bigint in Cassandra but declared double"),
        "{error}"
    );
    let columns = read_table(&session, &keyspace, "listings_by_id")
        .await
        .expect("reading");
    assert_eq!(columns["price"].cql_type, "bigint");
    assert!(!columns.contains_key("bathrooms"), "nothing altered");

    drop_tables(&session, &pipeline)
        .await
        .expect("dropping the tables");
    assert!(
        read_table(&session, &keyspace, "listings_by_id")
            .await
            .expect("reading")
            .is_empty()
    );
    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .expect("dropping the keyspace");
}

/// A keyspace replication or a table TTL changed in the spec is applied with ALTER, and said
/// in the report; applying again changes nothing.
#[tokio::test]
async fn replication_and_ttl_changes_are_applied() {
    let session = cassandra_session().await;
    let mut pipeline = pipeline();
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    ensure_schema(&session, &pipeline)
        .await
        .expect("creating the schema");

    pipeline
        .spec
        .cassandra
        .keyspace
        .replication
        .replication_factor = Some(2);
    pipeline.spec.cassandra.tables[0].ttl_seconds = 3600;
    let table = pipeline.spec.cassandra.tables[0].name.clone();
    let report = ensure_schema(&session, &pipeline)
        .await
        .expect("changing replication and TTL");
    assert_eq!(
        report.replication_changed,
        vec![format!(
            "{keyspace} (class=SimpleStrategy, replication_factor=1 → class=SimpleStrategy, replication_factor=2)"
        )]
    );
    assert_eq!(
        report.ttl_changed,
        vec![format!("{keyspace}.{table} (0 → 3600 seconds)")]
    );
    let (replication,): (BTreeMap<String, String>,) = session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace.as_str(),),
        )
        .await
        .expect("reading the keyspace")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one keyspace");
    assert_eq!(
        replication.get("replication_factor").map(String::as_str),
        Some("2")
    );
    let (ttl,): (i32,) = session
        .query_unpaged(
            "SELECT default_time_to_live FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
            (keyspace.as_str(), table.as_str()),
        )
        .await
        .expect("reading the table")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one table");
    assert_eq!(ttl, 3600);

    let again = ensure_schema(&session, &pipeline)
        .await
        .expect("applying again");
    assert!(
        again.replication_changed.is_empty() && again.ttl_changed.is_empty(),
        "{again:?}"
    );
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .expect("dropping the test keyspace");
}

/// The dead-letter topic has a config of its own (`topic.deadLetter.config`), set at creation
/// and set back after drift, and its partitions (`topic.deadLetter.partitions`) grow in place
/// when raised, never shrink.
#[tokio::test]
async fn the_dead_letter_topic_takes_its_own_config_and_grows() {
    /// The value of `key` in the configs the broker reports for `topic`; `None` until the
    /// topic is known.
    async fn config_value(
        admin: &rtdp_provisioning::kafka::Admin,
        topic: &str,
        key: &str,
    ) -> Option<String> {
        let results = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
            .await
            .ok()?;
        results
            .into_iter()
            .flatten()
            .flat_map(|resource| resource.entries)
            .find(|entry| entry.name == key)
            .and_then(|entry| entry.value)
    }
    /// Waits until the broker reports `expected` for `key` of `topic`.
    async fn wait_for_config(
        admin: &rtdp_provisioning::kafka::Admin,
        topic: &str,
        key: &str,
        expected: &str,
    ) {
        eventually(
            &format!("{topic}: {key}={expected}"),
            Duration::from_secs(30),
            || async {
                (config_value(admin, topic, key).await.as_deref() == Some(expected)).then_some(())
            },
        )
        .await;
    }
    /// Waits until `topic` has `partitions` partitions.
    async fn wait_for_partitions(
        admin: &rtdp_provisioning::kafka::Admin,
        topic: &str,
        partitions: i32,
    ) {
        eventually(
            &format!("{topic} with {partitions} partitions"),
            Duration::from_secs(30),
            || async {
                read_topic(admin, topic)
                    .await
                    .ok()
                    .flatten()
                    .filter(|found| found.partitions == partitions)
                    .map(|_| ())
            },
        )
        .await;
    }

    let admin = admin_client(&kafka_bootstrap_servers(), &BTreeMap::new()).expect("admin client");
    let mut pipeline = pipeline();
    pipeline.spec.topic.dead_letter.config = BTreeMap::from([
        ("retention.ms".to_string(), "7200000".to_string()),
        ("max.message.bytes".to_string(), "2097152".to_string()),
    ]);
    let topic = pipeline.topic_name();
    let dead_letter = pipeline.dead_letter_topic_name();

    // Created with its config; the main topic does not get it.
    let report = ensure_topics(&admin, &pipeline)
        .await
        .expect("creating the topics");
    assert_eq!(report.created, vec![topic.clone(), dead_letter.clone()]);
    wait_for_config(&admin, &dead_letter, "retention.ms", "7200000").await;
    wait_for_config(&admin, &dead_letter, "max.message.bytes", "2097152").await;
    wait_for_partitions(&admin, &dead_letter, 1).await;
    let main_retention = config_value(&admin, &topic, "retention.ms").await;
    assert!(
        main_retention.is_some() && main_retention.as_deref() != Some("7200000"),
        "the dead-letter config is not the main topic's: retention.ms {main_retention:?}"
    );

    // Drift by hand: set back, and only on the dead-letter topic. The legacy AlterConfigs
    // replaces the whole dynamic config, so max.message.bytes drifts too.
    let drift =
        AlterConfig::new(ResourceSpecifier::Topic(&dead_letter)).set("retention.ms", "60000");
    admin
        .alter_configs(&[drift], &AdminOptions::new())
        .await
        .expect("altering the dead-letter config by hand");
    let expected_reset = format!("{dead_letter}: retention.ms");
    let report = eventually(
        "the dead-letter drift seen and set back",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            let pipeline = pipeline.clone();
            let expected_reset = expected_reset.clone();
            async move {
                let report = ensure_topics(&admin, &pipeline)
                    .await
                    .expect("resetting drift");
                report
                    .config_reset
                    .contains(&expected_reset)
                    .then_some(report)
            }
        },
    )
    .await;
    assert!(
        report
            .config_reset
            .iter()
            .all(|entry| entry.starts_with(&format!("{dead_letter}: "))),
        "only the dead-letter topic drifted: {report:?}"
    );
    wait_for_config(&admin, &dead_letter, "retention.ms", "7200000").await;
    wait_for_config(&admin, &dead_letter, "max.message.bytes", "2097152").await;

    // Raised partitions grow the existing dead-letter topic in place; the main topic stays.
    pipeline.spec.topic.dead_letter.partitions = Some(3);
    let report = ensure_topics(&admin, &pipeline)
        .await
        .expect("growing the dead-letter topic");
    assert_eq!(report.grown, vec![dead_letter.clone()], "{report:?}");
    assert!(report.created.is_empty(), "{report:?}");
    wait_for_partitions(&admin, &dead_letter, 3).await;
    let main = read_topic(&admin, &topic)
        .await
        .expect("metadata")
        .expect("the topic");
    assert_eq!(main.partitions, pipeline.spec.topic.partitions);
    // Growing kept the config.
    assert_eq!(
        config_value(&admin, &dead_letter, "retention.ms")
            .await
            .as_deref(),
        Some("7200000")
    );

    // Fewer is refused and nothing changes.
    pipeline.spec.topic.dead_letter.partitions = Some(2);
    let error = ensure_topics(&admin, &pipeline)
        .await
        .expect_err("a decrease is refused");
    assert!(
        matches!(&error, ProvisionError::TopicNotSupported { topic, .. } if *topic == dead_letter),
        "{error}"
    );
    let existing = read_topic(&admin, &dead_letter)
        .await
        .expect("metadata")
        .expect("the dead-letter topic");
    assert_eq!(existing.partitions, 3);

    delete_topics(&admin, &pipeline)
        .await
        .expect("deleting the topics");
    eventually(
        "the dead-letter topic to be gone",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            let dead_letter = dead_letter.clone();
            async move { matches!(read_topic(&admin, &dead_letter).await, Ok(None)).then_some(()) }
        },
    )
    .await;
}
