//! The Kafka broker stops and restarts mid-stream: `/readyz` says so while it is away (and
//! only then), the producer and the consumer resume by themselves, and every record arrives
//! exactly as a clean run leaves it, with exactly the bad records dead-lettered.
//!
//! This test stops and restarts the local stack's shared Kafka. It is alone in its test
//! binary on purpose: cargo runs test binaries one after another, so no other test is talking
//! to Kafka while it is down, and it is back up before the next binary starts.

// Shares the helpers of the `it` binary, of which it uses a part.
#[path = "it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::*;
use rtdp_test_support::process::dev_stack;
use rtdp_test_support::{eventually, free_port, stays};

/// The status code of the runner's `/readyz`, or None when it does not answer.
async fn readyz(port: u16) -> Option<u16> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_restart_mid_stream_loses_nothing_and_readiness_tells_the_truth() {
    let pipeline = listings_pipeline("kafka-outage");
    provision(&pipeline).await;
    let topic = pipeline.topic_name();
    let manifest = write_manifest(&pipeline);
    let by_id = format!("{}.listings_by_id", pipeline.spec.cassandra.keyspace.name);
    let total = 400_usize;
    // Every 50th record of the second half is not JSON: exactly these are dead-lettered.
    let is_bad = |index: usize| index >= 200 && index % 50 == 7;
    let expected_rows = (0..total).filter(|index| !is_bad(*index)).count();
    let expected_letters = total - expected_rows;
    let send = |from: usize, to: usize| {
        // Idempotent, with librdkafka's default 300 s delivery timeout: sends issued while the
        // broker is away are delivered once it is back.
        let producer = producer(&pipeline);
        let topic = topic.clone();
        async move {
            for index in from..to {
                let listing = rtdp_test_support::listings_api::listing(index);
                let key = listing["zpid"].to_string();
                let payload = if is_bad(index) {
                    b"{not json".to_vec()
                } else {
                    listing.to_string().into_bytes()
                };
                produce(&producer, &topic, &key, Some(&payload)).await;
            }
        }
    };
    send(0, 200).await;

    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let process = Runner::start(
        &["process"],
        &manifest,
        &[("RTDP_METRICS_ADDRESS", address.as_str())],
    );
    let session = cassandra().await;
    wait_for_rows(&session, &by_id, 200, Duration::from_secs(60)).await;
    eventually("ready with Kafka up", Duration::from_secs(30), || async {
        (readyz(port).await == Some(200)).then_some(())
    })
    .await;

    dev_stack(&["down", "kafka"]);
    // Records keep being produced while the broker is away (the producer queues them).
    let producing = tokio::spawn(send(200, total));
    eventually(
        "not ready while Kafka is away",
        Duration::from_secs(30),
        || async { (readyz(port).await == Some(503)).then_some(()) },
    )
    .await;
    stays(
        "not ready (503) while Kafka is still away",
        Duration::from_secs(5),
        || async { readyz(port).await == Some(503) },
    )
    .await;
    dev_stack(&["up", "kafka"]);

    // Generous: on a loaded machine the broker's own restart (KRaft election, registration)
    // and the client's reconnect backoff take up to about a minute before a broker is UP.
    eventually("ready again", Duration::from_secs(120), || async {
        (readyz(port).await == Some(200)).then_some(())
    })
    .await;
    producing.await.expect("the producer task");
    wait_for_rows(&session, &by_id, expected_rows, Duration::from_secs(120)).await;
    wait_offsets_at_end(&pipeline, Duration::from_secs(60)).await;
    let letters = read_dead_letters(&pipeline, expected_letters).await;
    assert!(
        letters.iter().all(
            |letter| letter.headers.get("rtdp.reason").map(String::as_str)
                == Some("malformed_json")
        ),
        "{letters:?}"
    );
    let log = process.log_text();
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}; log:\n{log}");
    assert_eq!(read_rows(&session, &by_id).await.len(), expected_rows);
    assert_eq!(dead_letter_set(&pipeline).len(), expected_letters);
    assert_same_as_a_clean_run(&session, &pipeline, "after the Kafka restart").await;
}
