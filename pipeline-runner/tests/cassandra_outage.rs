//! Cassandra goes away for ~20 s while records stream in: the runner pauses, retries and
//! resumes, and nothing is lost or dead-lettered for it: every row of every table and every
//! dead letter are what a clean run of the same records leaves.
//!
//! This test stops and restarts the local stack's shared Cassandra. It is alone in its test
//! binary on purpose: cargo runs test binaries one after another, so no other test is talking
//! to Cassandra while it is down, and it is back up before the next binary starts.

// Shares the helpers of the `it` binary, of which it uses a part.
#[path = "it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::*;
use rtdp_test_support::process::dev_stack;

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_outage_pauses_and_resumes_without_losing_a_record() {
    let pipeline = listings_pipeline("outage");
    provision(&pipeline).await;
    let topic = pipeline.topic_name();
    let producer = producer(&pipeline);
    let manifest = write_manifest(&pipeline);
    let by_id = format!("{}.listings_by_id", pipeline.spec.cassandra.keyspace.name);
    let total = 600_usize;
    let malformed = total / 100;
    let send = |from: usize, to: usize| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            for index in from..to {
                let listing = rtdp_test_support::listings_api::listing(index);
                let key = listing["zpid"].to_string();
                // Every 100th record is not JSON: exactly these are dead-lettered.
                let payload = if index % 100 == 42 {
                    b"{not json".to_vec()
                } else {
                    listing.to_string().into_bytes()
                };
                produce(&producer, &topic, &key, Some(&payload)).await;
            }
        }
    };
    send(0, 200).await;
    let process = Runner::start(&["process"], &manifest, &[]);
    {
        let session = cassandra().await;
        wait_for_rows(&session, &by_id, 198, Duration::from_secs(60)).await;
    }

    dev_stack(&["down", "cassandra"]);
    // Records keep arriving while Cassandra is away.
    send(200, total).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    dev_stack(&["up", "cassandra"]);

    let session = cassandra().await;
    wait_for_rows(
        &session,
        &by_id,
        total - malformed,
        Duration::from_secs(180),
    )
    .await;
    wait_offsets_at_end(&pipeline, Duration::from_secs(30)).await;
    let log = process.log_text();
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");
    assert!(
        log.contains("pausing consumption") && log.contains("resuming consumption"),
        "the runner paused and resumed; log:\n{log}"
    );
    assert_eq!(
        dead_letter_set(&pipeline).len(),
        malformed,
        "nothing was dead-lettered for the outage; log:\n{log}"
    );
    assert_same_as_a_clean_run(&session, &pipeline, "after the Cassandra outage").await;
}
