//! The shared Kafka access check against real things: a host name that does not resolve, a
//! local port nothing listens on, the stack's SASL_SSL listener with a wrong and a right
//! password, and its mutual-TLS listener with and without the client certificate. Each
//! failure must name the server tried and the cause.

use std::time::Duration;

use rtdp_provisioning::kafka::{
    AccessError, Pem, Refusal, ServerOutcome, TlsMaterial, check_access, client_config,
    client_properties,
};
use rtdp_test_support::{
    kafka_ca_file, kafka_client_certificate_files, kafka_mtls_bootstrap_servers,
    kafka_sasl_credentials, kafka_secure_bootstrap_servers, unique_name,
};

/// Long enough for a reachable broker to answer; a failing check waits for all of it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

fn plaintext(bootstrap_servers: &str) -> rdkafka::ClientConfig {
    client_config(bootstrap_servers, &Default::default())
}

fn secured(password: &str) -> rdkafka::ClientConfig {
    let (username, _) = kafka_sasl_credentials();
    let mut config = client_config(&kafka_secure_bootstrap_servers(), &Default::default());
    config
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", username)
        .set("sasl.password", password)
        .set("ssl.ca.location", kafka_ca_file());
    config
}

/// The check's error for `config`, which must fail (`what` says why), shown for the report.
async fn refused_access(config: &rdkafka::ClientConfig, what: &str) -> AccessError {
    let error = check_access(config, CHECK_TIMEOUT).await.expect_err(what);
    eprintln!("{error}");
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_host_is_named_with_its_dns_failure() {
    let server = "rtdp-no-such-host.invalid:9092";
    let error = refused_access(&plaintext(server), "an unresolvable host").await;
    let AccessError::Unreachable { servers, .. } = &error else {
        panic!("expected Unreachable, got {error:?}");
    };
    assert!(
        matches!(servers[..], [ref probe] if matches!(probe.outcome, ServerOutcome::UnknownHost(_))),
        "{servers:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(server) && message.contains("DNS lookup failed"),
        "{message}"
    );
    assert!(!message.contains("BrokerTransportFailure"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_port_is_named_as_refused() {
    // A port that was free a moment ago: bound, then released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    let server = listener.local_addr().expect("its address").to_string();
    drop(listener);
    let error = refused_access(&plaintext(&server), "a closed port").await;
    let message = error.to_string();
    assert!(
        message.contains(&format!("{server} (connection refused by {server})")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_server_tried_is_listed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    let closed = listener.local_addr().expect("its address").to_string();
    drop(listener);
    let bootstrap_servers = format!("rtdp-no-such-host.invalid:9092,{closed}");
    let error = refused_access(&plaintext(&bootstrap_servers), "nothing reachable").await;
    let message = error.to_string();
    assert!(
        message.contains("rtdp-no-such-host.invalid:9092 (DNS lookup failed")
            && message.contains(&format!("{closed} (connection refused")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_an_authentication_refusal_without_the_password() {
    let wrong = "not-the-kafka-password-Hh31";
    let error = refused_access(&secured(wrong), "a wrong password").await;
    assert!(
        matches!(
            error,
            AccessError::Refused {
                refusal: Refusal::Authentication,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&kafka_secure_bootstrap_servers())
            && message.contains("SASL authentication failed"),
        "{message}"
    );
    assert!(!message.contains(wrong), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_password_passes() {
    let (_, password) = kafka_sasl_credentials();
    check_access(&secured(&password), CHECK_TIMEOUT)
        .await
        .expect("Kafka accepts the stack's credentials");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_broker_certificate_is_a_tls_refusal() {
    let (_, password) = kafka_sasl_credentials();
    let mut config = secured(&password);
    // The system trust store instead of the stack's CA: the broker's certificate is unknown.
    config.remove("ssl.ca.location");
    let error = refused_access(&config, "an untrusted certificate").await;
    assert!(
        matches!(
            error,
            AccessError::Refused {
                refusal: Refusal::Tls,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("TLS authentication failed"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_of_another_protocol_is_named_as_listening_but_not_answering() {
    // A plaintext client on the SASL_SSL port: TCP connects, Kafka never answers it.
    let server = kafka_secure_bootstrap_servers();
    let error = refused_access(&plaintext(&server), "the wrong protocol").await;
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "{server} (accepts TCP connections but did not answer as Kafka"
        )),
        "{message}"
    );
}

/// A Pipeline's `spec.kafka` for the stack's mutual-TLS listener: TLS with a client
/// certificate Secret, no SASL.
fn mtls_spec() -> rtdp_crds::KafkaSpec {
    rtdp_crds::KafkaSpec {
        bootstrap_servers: vec![kafka_mtls_bootstrap_servers()],
        tls: Some(rtdp_crds::KafkaTls {
            ca_secret_ref: None,
            client_certificate_secret_ref: Some(rtdp_crds::SecretReference {
                name: "kafka-client".into(),
            }),
        }),
        sasl: None,
    }
}

/// The client settings for the mutual-TLS listener, mapped from [`mtls_spec`] as the operator
/// (`Pem::Text`, read from the Secret) or the runner (`Pem::File`, mounted) does, with the
/// stack's CA and, when `with_certificate`, its client certificate and key.
fn mtls(with_certificate: bool, as_text: bool) -> rdkafka::ClientConfig {
    let pem = |path: String| {
        if as_text {
            Pem::Text(
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|error| panic!("reading {path}: {error}")),
            )
        } else {
            Pem::File(path)
        }
    };
    let (certificate, key) = kafka_client_certificate_files();
    let tls = TlsMaterial {
        ca: Some(pem(kafka_ca_file())),
        certificate: with_certificate.then(|| pem(certificate)),
        key: with_certificate.then(|| pem(key)),
    };
    let spec = mtls_spec();
    client_config(
        &spec.bootstrap_servers.join(","),
        &client_properties(&spec, &tls, None),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_with_the_client_certificate_administers_produces_and_consumes() {
    use rdkafka::Message;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    // The operator's way: the certificate and key as PEM text, read from its Secret.
    let operator = mtls(true, true);
    check_access(&operator, CHECK_TIMEOUT)
        .await
        .expect("the mutual-TLS listener accepts the stack's client certificate");
    let admin: AdminClient<_> = operator.create().expect("an admin client over mutual TLS");
    let topic = unique_name("mtls");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("creating a topic over mutual TLS");
    for result in created {
        result.unwrap_or_else(|(name, code)| panic!("creating {name}: {code}"));
    }

    // The runner's way: the certificate and key as mounted files.
    let runner = mtls(true, false);
    let producer: FutureProducer = runner.create().expect("a producer over mutual TLS");
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("over mutual TLS"),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(error, _)| panic!("producing over mutual TLS: {error}"));
    let mut consumer_config = runner.clone();
    consumer_config
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = consumer_config
        .create()
        .expect("a consumer over mutual TLS");
    consumer.subscribe(&[&topic]).expect("subscribing");
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a record within 60 s over mutual TLS")
        .expect("consuming over mutual TLS");
    assert_eq!(message.payload(), Some(&b"over mutual TLS"[..]));

    let deleted = admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("deleting the topic");
    for result in deleted {
        result.unwrap_or_else(|(name, code)| panic!("deleting {name}: {code}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_without_the_client_certificate_is_a_client_certificate_refusal() {
    let error = refused_access(&mtls(false, false), "no client certificate").await;
    assert!(
        matches!(
            error,
            AccessError::Refused {
                refusal: Refusal::ClientCertificate,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&kafka_mtls_bootstrap_servers())
            && message.contains("the broker refused the client certificate")
            && message.contains("spec.kafka.tls.clientCertificateSecretRef"),
        "{message}"
    );
}
