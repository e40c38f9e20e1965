//! A rebalance storm mid-stream: the processors go from 1 to 4 and back to 1 while records
//! keep arriving (what an autoscaler or a rolling update does to a consumer group). Partitions
//! move between members with in-flight writes; nothing may be lost, nothing written twice
//! out of order, and the group must end with every offset committed: every row of every table
//! and every dead letter are then what a clean run of the same records leaves.

use std::time::Duration;

use crate::common::*;
use rtdp_test_support::eventually;

#[tokio::test(flavor = "multi_thread")]
async fn scaling_one_to_four_to_one_mid_stream_loses_nothing() {
    let mut pipeline = listings_pipeline("storm");
    pipeline.spec.topic.partitions = 6;
    provision(&pipeline).await;
    let keys = 120_i64;
    let rounds = 10_i64;
    let updates = PriceRounds::new(&pipeline, keys);
    updates.clone().send(0..2, Duration::ZERO).await;
    // A few records no run can store: dead-lettered once each, whoever owns their partition.
    let malformed = 5;
    let producer = producer(&pipeline);
    for index in 0..malformed {
        produce(
            &producer,
            &pipeline.topic_name(),
            &format!("malformed-{index}"),
            Some(b"{not json"),
        )
        .await;
    }
    let manifest = write_manifest(&pipeline);
    let session = cassandra().await;
    let by_id = format!("{}.listings_by_id", pipeline.spec.cassandra.keyspace.name);

    let first = Runner::start(&["process"], &manifest, &[]);
    eventually("some listings written", Duration::from_secs(60), || async {
        (!read_rows(&session, &by_id).await.is_empty()).then_some(())
    })
    .await;
    // Records keep arriving through the whole storm.
    let producing = tokio::spawn(updates.clone().send(2..rounds, Duration::from_millis(700)));
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(Runner::start(&["process"], &manifest, &[]));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Back to one: the members leave as Kubernetes stops pods (SIGTERM, drain, commit).
    for runner in others {
        let status = runner.terminate(Duration::from_secs(40));
        assert!(status.success(), "a scaled-down member's exit: {status}");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    producing.await.expect("the producer task");

    let latest = updates.latest(rounds);
    wait_for_prices(&session, &by_id, &latest, Duration::from_secs(120)).await;
    wait_offsets_at_end(&pipeline, Duration::from_secs(60)).await;
    let log = first.log_text();
    let status = first.terminate(Duration::from_secs(30));
    assert!(status.success(), "the remaining member's exit: {status}");
    assert_eq!(
        dead_letter_set(&pipeline).len(),
        malformed,
        "only the malformed records are dead-lettered, never a valid one; log:\n{log}"
    );
    assert_same_as_a_clean_run(&session, &pipeline, "after the rebalance storm").await;
}
