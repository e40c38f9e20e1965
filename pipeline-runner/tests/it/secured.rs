//! The runner against the secured local stack: Kafka's SASL_SSL listener (SCRAM-SHA-512 over
//! TLS, CA from the stack) and the Cassandra with PasswordAuthenticator, with the
//! `examples/web-events.yaml` Pipeline as written except for its endpoints, names and sizes
//! (one broker, one Cassandra node whose datacenter is SimpleSnitch's `datacenter1`, so the
//! test overrides `dc1: 3` with `datacenter1: 1`). Correct credentials write rows; a wrong
//! Kafka or Cassandra password is a clear, bounded failure; no password reaches a log line.

use std::time::Duration;

use crate::common::{Runner, write_manifest};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rtdp_crds::{Pipeline, parse_pipeline};
use rtdp_test_support::{
    assert_no_password, cassandra_secured_contact_points, cassandra_secured_credentials,
    cassandra_secured_session, eventually, kafka_ca_file, kafka_sasl_credentials,
    kafka_secure_bootstrap_servers, unique_cql_identifier, unique_name,
};
use scylla::client::session::Session;

/// How long a run that must fail may take to do so.
const FAILURE_BOUND: Duration = Duration::from_secs(90);

/// examples/web-events.yaml on the secured local stack, with unique names.
fn web_events(prefix: &str) -> Pipeline {
    let text = include_str!("../../../examples/web-events.yaml");
    let mut pipeline = parse_pipeline(text, "web-events.yaml").expect("the example parses");
    let name = unique_name(prefix);
    pipeline.metadata.name = Some(name.clone());
    pipeline.metadata.namespace = Some("tests".into());
    pipeline.spec.kafka.bootstrap_servers = vec![kafka_secure_bootstrap_servers()];
    pipeline.spec.topic.name = Some(name.clone());
    pipeline.spec.topic.partitions = 3;
    pipeline.spec.topic.replication_factor = 1;
    pipeline.spec.topic.dead_letter.name = Some(format!("{name}.rejected"));
    pipeline.spec.topic.dead_letter.partitions = Some(1);
    let cassandra = &mut pipeline.spec.cassandra;
    cassandra.contact_points = cassandra_secured_contact_points();
    cassandra.local_datacenter = "datacenter1".into();
    cassandra.keyspace.name = unique_cql_identifier(prefix);
    cassandra.keyspace.replication.datacenters = [("datacenter1".to_string(), 1)].into();
    pipeline
}

/// The secrets as the operator would pass them (`secretKeyRef` variables), plus the CA file
/// the operator mounts: the stack's credentials, but for a wrong password given here.
fn secret_env(
    wrong_kafka_password: Option<&str>,
    wrong_cassandra_password: Option<&str>,
) -> Vec<(&'static str, String)> {
    let (kafka_user, kafka_password) = kafka_sasl_credentials();
    let (cassandra_user, cassandra_password) = cassandra_secured_credentials();
    vec![
        ("RTDP_KAFKA_USERNAME", kafka_user),
        (
            "RTDP_KAFKA_PASSWORD",
            wrong_kafka_password.map_or(kafka_password, str::to_string),
        ),
        ("RTDP_KAFKA_CA_FILE", kafka_ca_file()),
        ("RTDP_CASSANDRA_USERNAME", cassandra_user),
        (
            "RTDP_CASSANDRA_PASSWORD",
            wrong_cassandra_password.map_or(cassandra_password, str::to_string),
        ),
    ]
}

/// A `standalone --once` run with a wrong password fails within the bound, its log naming
/// `server` and the authentication failure, without a panic or any password.
fn assert_refused_clearly(
    pipeline: &Pipeline,
    env: &[(&'static str, String)],
    server: &str,
    wrong: &str,
) {
    let started = std::time::Instant::now();
    let (ok, log) = standalone_once(pipeline, env);
    eprintln!("failed after {:?}", started.elapsed());
    assert!(!ok, "a wrong password must fail the run; log:\n{log}");
    assert!(
        log.to_lowercase().contains("authentication") && log.contains(server),
        "the log must name the server {server} and the authentication failure:\n{log}"
    );
    assert!(!log.contains("panicked"), "the runner panicked:\n{log}");
    assert_no_password("the runner's log", &log, &[wrong]);
}

fn standalone_once(pipeline: &Pipeline, env: &[(&'static str, String)]) -> (bool, String) {
    let manifest = write_manifest(pipeline);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let runner = Runner::start(&["standalone", "--once", "--no-progress"], &manifest, &env);
    let log = runner.log.clone();
    let status = runner.wait(FAILURE_BOUND);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (status.success(), text)
}

fn secured_producer() -> FutureProducer {
    let (user, password) = kafka_sasl_credentials();
    ClientConfig::new()
        .set("bootstrap.servers", kafka_secure_bootstrap_servers())
        .set("security.protocol", "sasl_ssl")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("ssl.ca.location", kafka_ca_file())
        .set("enable.idempotence", "true")
        .create()
        .expect("a SASL_SSL producer")
}

fn event(index: usize, kind: &str) -> String {
    serde_json::json!({
        "event_id": format!("00000000-0000-4000-8000-{index:012}"),
        "user": {"id": format!("user-{}", index % 4)},
        "timestamp": format!("2026-11-27T10:{:02}:{:02}Z", index / 60, index % 60),
        "type": kind,
        "context": {"page": {"path": format!("/page/{}", index % 3)}},
        "properties": {"durationMs": index},
    })
    .to_string()
}

async fn count(session: &Session, table: &str) -> i64 {
    let result = session
        .query_unpaged(format!("SELECT COUNT(*) FROM {table}"), ())
        .await
        .unwrap_or_else(|error| panic!("counting {table}: {error}"))
        .into_rows_result()
        .expect("a rows result");
    let (count,): (i64,) = result.single_row().expect("one count row");
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn correct_credentials_provision_and_write_the_web_events_example() {
    let pipeline = web_events("secured-ok");
    let env = secret_env(None, None);

    // First run: provisions topics, keyspace and tables over SASL_SSL and with a login;
    // nothing to process yet.
    let (ok, log) = standalone_once(&pipeline, &env);
    assert!(ok, "provisioning run failed; log:\n{log}");

    let producer = secured_producer();
    let topic = pipeline.topic_name();
    let total = 30;
    for index in 0..total {
        let kind = if index % 10 == 9 {
            "heartbeat"
        } else {
            "click"
        };
        let payload = event(index, kind);
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("key-{index}"))
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("producing event {index}: {error}"));
    }

    // Second run: processes everything produced, then exits.
    let (ok, log) = standalone_once(&pipeline, &env);
    assert!(ok, "processing run failed; log:\n{log}");
    assert_no_password("the runner's log", &log, &[]);

    let session = cassandra_secured_session().await;
    let keyspace = &pipeline.spec.cassandra.keyspace.name;
    let expected = (total - total / 10) as i64;
    for table in ["events_by_user", "events_by_page_day"] {
        let table = format!("{keyspace}.{table}");
        let found = eventually(
            &format!("{expected} rows in {table}"),
            Duration::from_secs(30),
            || {
                let session = &session;
                let table = table.clone();
                async move {
                    let found = count(session, &table).await;
                    (found == expected).then_some(found)
                }
            },
        )
        .await;
        assert_eq!(found, expected);
    }
    // The derived `day` (a partition key) is the event's UTC date.
    let days: Vec<String> = session
        .query_unpaged(format!("SELECT day FROM {keyspace}.events_by_page_day"), ())
        .await
        .expect("reading the days")
        .into_rows_result()
        .expect("a rows result")
        .rows::<(String,)>()
        .expect("typed rows")
        .map(|row| row.expect("a day").0)
        .collect();
    assert!(
        !days.is_empty() && days.iter().all(|day| day == "2026-11-27"),
        "{days:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_kafka_password_is_a_clear_bounded_failure_without_the_password_in_the_log() {
    let pipeline = web_events("secured-bad-kafka");
    let wrong = "not-the-kafka-password-Zx81";
    let server = pipeline.spec.kafka.bootstrap_servers[0].clone();
    assert_refused_clearly(&pipeline, &secret_env(Some(wrong), None), &server, wrong);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_cassandra_password_is_a_clear_bounded_failure_without_the_password_in_the_log() {
    let pipeline = web_events("secured-bad-cassandra");
    let wrong = "not-the-cassandra-password-Qv27";
    let server = pipeline.spec.cassandra.contact_points[0].clone();
    assert_refused_clearly(&pipeline, &secret_env(None, Some(wrong)), &server, wrong);
}

/// The role Kubernetes runs: with a wrong Kafka password it keeps running (Kafka may be fixed
/// under it) but says why, naming the broker, within a bound, and never logs the password.
#[tokio::test(flavor = "multi_thread")]
async fn the_process_role_with_a_wrong_kafka_password_logs_the_authentication_failure() {
    let pipeline = web_events("secured-process-bad-kafka");
    // Provision with the right credentials first, so only the login differs.
    let (ok, log) = standalone_once(&pipeline, &secret_env(None, None));
    assert!(ok, "provisioning run failed; log:\n{log}");
    let wrong = "wrong-process-password-Mb55";
    let env = secret_env(Some(wrong), None);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let manifest = write_manifest(&pipeline);
    let runner = Runner::start(&["process"], &manifest, &env);
    let server = pipeline.spec.kafka.bootstrap_servers[0].clone();
    let log = eventually(
        "the process role to log the authentication failure",
        Duration::from_secs(60),
        || {
            let text = runner.log_text();
            let found = text.lines().any(|line| {
                line.contains(server.as_str()) && line.to_lowercase().contains("authentication")
            });
            async move { found.then_some(text) }
        },
    )
    .await;
    assert!(!log.contains("panicked"), "the runner panicked:\n{log}");
    runner.terminate(Duration::from_secs(30));
    let log = std::fs::read_to_string(manifest.with_extension("process.log")).unwrap_or(log);
    assert_no_password("the runner's log", &log, &[wrong]);
}
