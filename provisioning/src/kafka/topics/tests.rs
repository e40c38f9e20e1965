//! Unit tests of topic planning.

use super::*;

fn declared(partitions: i32, replication_factor: i32) -> TopicDefinition {
    TopicDefinition {
        name: "listings".into(),
        partitions,
        replication_factor,
        config: BTreeMap::new(),
    }
}

#[test]
fn creates_grows_or_keeps() {
    assert_eq!(
        plan_topic(&declared(6, 1), None).ok(),
        Some(TopicPlan::Create)
    );
    let existing = ExistingTopic {
        partitions: 3,
        replication_factor: 1,
    };
    assert_eq!(
        plan_topic(&declared(6, 1), Some(&existing)).ok(),
        Some(TopicPlan::AddPartitions(6))
    );
    assert_eq!(
        plan_topic(&declared(3, 1), Some(&existing)).ok(),
        Some(TopicPlan::UpToDate)
    );
}

#[test]
fn refuses_what_kafka_cannot_do_in_place() {
    let existing = ExistingTopic {
        partitions: 6,
        replication_factor: 1,
    };
    let refusal =
        |declared_topic, what| plan_topic(&declared_topic, Some(&existing)).expect_err(what);
    let decrease = refusal(declared(3, 1), "a decrease is refused");
    assert_eq!(decrease.reason(), "NotSupported");
    let message = decrease.to_string();
    assert!(
        message.contains("has 6 partitions in Kafka but declares 3"),
        "{message}"
    );
    let message = refusal(declared(6, 3), "a replication change is refused").to_string();
    assert!(
        message.contains("replication factor is 1 in Kafka but declared 3"),
        "{message}"
    );
}

#[test]
fn names_default_from_the_pipeline() {
    let text = include_str!("../../../../examples/generated-listings.yaml");
    let mut pipeline = rtdp_crds::parse_pipeline(text, "generated-listings.yaml").expect("parses");
    pipeline.metadata.namespace = Some("demo".into());
    let [topic, dead_letter] =
        <[_; 2]>::try_from(topic_definitions(&pipeline)).expect("two topics");
    assert_eq!(
        (topic.name.as_str(), topic.partitions),
        ("demo.generated-listings", 4)
    );
    assert_eq!(
        (dead_letter.name.as_str(), dead_letter.partitions),
        ("demo.generated-listings.dlq", 1)
    );
}

#[test]
fn a_scheduled_source_gets_a_compacted_run_ledger() {
    let text = include_str!("../../../../examples/property-listings.yaml");
    let mut pipeline = rtdp_crds::parse_pipeline(text, "property-listings.yaml").expect("parses");
    pipeline.metadata.namespace = Some("demo".into());
    let definitions = topic_definitions(&pipeline);
    let ledger = definitions.last().expect("topics");
    assert_eq!(definitions.len(), 3);
    assert_eq!(ledger.name, format!("{}.runs", pipeline.topic_name()));
    assert_eq!(
        ledger.partitions, 1,
        "one partition keeps the runs in order"
    );
    assert_eq!(
        ledger.config.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
}
