//! What the runner says about its endpoints: an unreachable Kafka names each bootstrap server
//! tried and why (DNS, refused), a `localDatacenter` the Cassandra cluster does not have is
//! refused naming the field and the cluster's datacenters, and the telemetry server answers
//! its routes and reports a port in use clearly. Real servers only: the local stack's Kafka
//! and Cassandra.

use std::time::Duration;

use crate::common::*;
use rtdp_test_support::eventually;

/// How long a run that must fail may take to do so.
const FAILURE_BOUND: Duration = Duration::from_secs(90);

/// A local port that was free a moment ago (bound, then released): nothing listens there.
fn closed_port() -> u16 {
    rtdp_test_support::free_port()
}

/// Runs the runner until it exits by itself (within [`FAILURE_BOUND`]): its status and log.
fn run_to_the_end(
    arguments: &[&str],
    manifest: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let runner = Runner::start(arguments, manifest, env);
    let log_path = runner.log.clone();
    let status = runner.wait(FAILURE_BOUND);
    (
        status,
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_kafka_names_each_server_tried_and_why() {
    let pipeline = listings_pipeline("unreachable-kafka");
    let manifest = write_manifest(&pipeline);
    let unresolvable = "rtdp-no-such-host.invalid:9092";
    let closed = format!("127.0.0.1:{}", closed_port());
    let servers = format!("{unresolvable},{closed}");
    let (status, log) = run_to_the_end(
        &["standalone", "--once", "--no-progress"],
        &manifest,
        &[("RTDP_KAFKA_BOOTSTRAP_SERVERS", servers.as_str())],
    );
    assert_eq!(
        status.code(),
        Some(1),
        "an unreachable Kafka exits 1; log:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log that is not a terminal has no colour escapes: {log:?}"
    );
    let line = log
        .lines()
        .find(|line| line.contains("Kafka is unreachable"))
        .unwrap_or_else(|| panic!("no line says Kafka is unreachable; log:\n{log}"));
    eprintln!("{line}");
    assert!(
        line.contains(&format!("{unresolvable} (DNS lookup failed"))
            && line.contains(&format!("{closed} (connection refused by {closed})")),
        "{line}"
    );
}

/// The datacenter of the local Cassandra, as it reports itself in `system.local`.
async fn local_stack_datacenter() -> String {
    let session = cassandra().await;
    let (datacenter,) = session
        .query_unpaged("SELECT data_center FROM system.local", ())
        .await
        .expect("reading system.local")
        .into_rows_result()
        .expect("a rows result")
        .single_row::<(String,)>()
        .expect("one row of system.local");
    datacenter
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_datacenter_the_cluster_lacks_is_refused_and_the_right_one_writes() {
    let datacenter = local_stack_datacenter().await;
    let mut pipeline = listings_pipeline("datacenter");
    provision(&pipeline).await;
    let by_id = format!(
        "{}.{}",
        pipeline.spec.cassandra.keyspace.name, pipeline.spec.cassandra.tables[0].name
    );
    let producer = producer(&pipeline);
    let records = 20;
    for index in 0..records {
        let (key, payload) = listing_with_price(index, 100_000);
        produce(
            &producer,
            &pipeline.topic_name(),
            &key,
            Some(payload.as_bytes()),
        )
        .await;
    }

    // A name the cluster does not have: a configuration error (exit 2, not retried), before
    // anything is consumed or written.
    let wrong = "no-such-datacenter";
    pipeline.spec.cassandra.local_datacenter = wrong.into();
    let (status, log) = run_to_the_end(&["process"], &write_manifest(&pipeline), &[]);
    assert_eq!(status.code(), Some(2), "log:\n{log}");
    let expected = format!(
        "spec.cassandra.localDatacenter \"{wrong}\" is not a datacenter of the Cassandra \
         cluster, whose datacenters are: {datacenter}"
    );
    let line = log
        .lines()
        .find(|line| line.contains(&expected))
        .unwrap_or_else(|| panic!("no line says {expected:?}; log:\n{log}"));
    eprintln!("{line}");
    let session = cassandra().await;
    assert_eq!(
        read_rows(&session, &by_id).await.len(),
        0,
        "nothing written"
    );
    assert!(
        committed_and_end(&pipeline)
            .iter()
            .all(|(_, committed, _)| committed.is_none()),
        "nothing consumed: {:?}",
        committed_and_end(&pipeline)
    );

    // The cluster's own datacenter, named explicitly: every record is written.
    pipeline.spec.cassandra.local_datacenter = datacenter;
    let process = Runner::start(&["process"], &write_manifest(&pipeline), &[]);
    wait_for_rows(&session, &by_id, records, Duration::from_secs(60)).await;
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "process exit: {status}");
}

/// GETs `path` on the runner's telemetry port: status, content type and body.
async fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((status, content_type, response.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_answers_its_routes_and_a_busy_port_is_a_clear_error() {
    let pipeline = listings_pipeline("telemetry");
    provision(&pipeline).await;
    let manifest = write_manifest(&pipeline);
    let port = closed_port();
    let address = format!("127.0.0.1:{port}");
    let process = Runner::start(
        &["process"],
        &manifest,
        &[("RTDP_METRICS_ADDRESS", address.as_str())],
    );
    let health = eventually("/healthz answering", Duration::from_secs(30), || async {
        get(port, "/healthz").await
    })
    .await;
    assert_eq!(health, (200, "text/plain".into(), "ok\n".into()));
    let (status, content_type, body) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.contains("rtdp_records_consumed_total"), "{body}");
    eventually(
        "/readyz 200 once Kafka and Cassandra are up",
        Duration::from_secs(60),
        || async { (get(port, "/readyz").await?.0 == 200).then_some(()) },
    )
    .await;
    let missing = get(port, "/no-such-page")
        .await
        .expect("an unknown path answers");
    assert_eq!((missing.0, missing.2.as_str()), (404, "not found\n"));

    let (status, log) = run_to_the_end(
        &["process"],
        &manifest,
        &[("RTDP_METRICS_ADDRESS", address.as_str())],
    );
    assert!(
        !status.success(),
        "a busy port must fail the second runner; log:\n{log}"
    );
    assert!(
        log.contains(&format!("binding the metrics address {address} (in use?")),
        "{log}"
    );
    process.terminate(Duration::from_secs(30));
}

/// A suspended manifest is paused on purpose: standalone mode refuses it (exit 2, bad
/// configuration) and says how to run it, instead of provisioning and processing.
#[tokio::test(flavor = "multi_thread")]
async fn standalone_refuses_a_suspended_pipeline() {
    let mut pipeline = listings_pipeline("suspended");
    pipeline.spec.suspend = true;
    let manifest = write_manifest(&pipeline);
    let (status, log) = run_to_the_end(&["standalone", "--once", "--no-progress"], &manifest, &[]);
    assert_eq!(status.code(), Some(2), "log:\n{log}");
    assert!(
        log.contains("spec.suspend is true") && log.contains("spec.suspend: false"),
        "{log}"
    );
}
