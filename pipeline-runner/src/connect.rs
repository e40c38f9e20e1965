//! Client settings for Kafka and Cassandra, from the Pipeline spec plus the secrets the
//! runner receives as environment variables (see docs/runner-contract.md).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rtdp_crds::{CassandraSpec, KafkaSpec};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;

use crate::error::RunnerError;

/// How long one Cassandra request may take before it counts as failed (and is retried).
const CASSANDRA_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Endpoints that replace the manifest's (standalone mode and tests; the operator never
/// sets them).
#[derive(Clone, Debug, Default)]
pub struct EndpointOverrides {
    /// `host:port,...` instead of `spec.kafka.bootstrapServers`.
    pub kafka_bootstrap_servers: Option<String>,
    /// `host:port,...` instead of `spec.cassandra.contactPoints`.
    pub cassandra_contact_points: Option<String>,
    /// A URL instead of `spec.source.http.url`.
    pub source_url: Option<String>,
}

/// Reads a required secret from the environment, naming where it should come from.
pub fn secret_from_env(variable: &str, origin: &str) -> Result<String, RunnerError> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(RunnerError::Config(format!(
            "{origin} is read from the environment variable {variable}, which is not set \
             (in Kubernetes the operator sets it from the Secret; in standalone mode export it)"
        ))),
    }
}

/// The librdkafka settings every client of this Pipeline shares: brokers, TLS, SASL.
pub fn kafka_client_config(
    spec: &KafkaSpec,
    overrides: &EndpointOverrides,
) -> Result<ClientConfig, RunnerError> {
    let mut config = ClientConfig::new();
    let bootstrap = overrides
        .kafka_bootstrap_servers
        .clone()
        .unwrap_or_else(|| spec.bootstrap_servers.join(","));
    config.set("bootstrap.servers", bootstrap);
    config.set("client.id", "rtdp-pipeline-runner");
    let protocol = match (&spec.tls, &spec.sasl) {
        (None, None) => "plaintext",
        (Some(_), None) => "ssl",
        (None, Some(_)) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if spec.tls.is_some() {
        for (variable, property) in [
            ("RTDP_KAFKA_CA_FILE", "ssl.ca.location"),
            ("RTDP_KAFKA_CERTIFICATE_FILE", "ssl.certificate.location"),
            ("RTDP_KAFKA_KEY_FILE", "ssl.key.location"),
        ] {
            if let Ok(path) = std::env::var(variable)
                && !path.is_empty()
            {
                config.set(property, path);
            }
        }
    }
    if let Some(sasl) = &spec.sasl {
        let origin = format!("Secret {}", sasl.credentials_secret_ref.name);
        config.set("sasl.mechanism", sasl.mechanism.as_str());
        config.set(
            "sasl.username",
            secret_from_env(
                "RTDP_KAFKA_USERNAME",
                &format!("the Kafka username ({origin})"),
            )?,
        );
        config.set(
            "sasl.password",
            secret_from_env(
                "RTDP_KAFKA_PASSWORD",
                &format!("the Kafka password ({origin})"),
            )?,
        );
    }
    Ok(config)
}

/// How long the access check waits for Kafka's metadata.
const KAFKA_ACCESS_TIMEOUT: Duration = Duration::from_secs(15);

/// Remembers the first authentication or TLS error librdkafka reports (it reports those only
/// through this callback; the request that failed just says "broker transport failure").
#[derive(Default)]
struct AccessProbe {
    refused: std::sync::Mutex<Option<String>>,
}

impl ClientContext for AccessProbe {
    fn error(&self, error: KafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        );
        if refused
            && let Ok(mut first) = self.refused.lock()
            && first.is_none()
        {
            *first = Some(reason.to_string());
        }
    }
}

impl ConsumerContext for AccessProbe {}

/// Connects once with the Pipeline's Kafka settings and fails clearly when Kafka refuses them:
/// a wrong SASL password or an untrusted certificate becomes "authentication failed" naming
/// the brokers, instead of a bare transport failure (or an endless reconnect loop). The
/// reason is librdkafka's, which never contains the password.
pub async fn check_kafka_access(config: &ClientConfig) -> Result<(), RunnerError> {
    let bootstrap = config
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    let config = config.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer<AccessProbe> =
            config
                .create_with_context(AccessProbe::default())
                .map_err(|error| RunnerError::kafka("creating a Kafka client", error))?;
        let result = probe.fetch_metadata(None, KAFKA_ACCESS_TIMEOUT);
        if result.is_err() {
            // Error events reach the context only when the client is polled.
            for _ in 0..10 {
                let _ = probe.poll(Duration::from_millis(100));
            }
        }
        let refused = probe
            .context()
            .refused
            .lock()
            .ok()
            .and_then(|mut first| first.take());
        Ok::<_, RunnerError>((result, refused))
    })
    .await
    .map_err(|error| RunnerError::Config(format!("the Kafka access check failed: {error}")))??;
    match outcome {
        (Ok(_), _) => Ok(()),
        (Err(_), Some(reason)) => Err(RunnerError::Config(format!(
            "Kafka at {bootstrap} refused the connection: authentication failed \
             (check the Pipeline's Kafka credentials and CA): {reason}"
        ))),
        (Err(error), None) => Err(RunnerError::kafka(
            format!("connecting to Kafka at {bootstrap}"),
            error,
        )),
    }
}

/// The contact points to use.
pub fn cassandra_contact_points(
    spec: &CassandraSpec,
    overrides: &EndpointOverrides,
) -> Vec<String> {
    match &overrides.cassandra_contact_points {
        Some(points) => points
            .split(',')
            .map(|point| point.trim().to_string())
            .filter(|point| !point.is_empty())
            .collect(),
        None => spec.contact_points.clone(),
    }
}

/// Connects to Cassandra: token-aware, local datacenter first, with a request timeout so an
/// outage is noticed (and retried) rather than waited on.
pub async fn cassandra_session(
    spec: &CassandraSpec,
    overrides: &EndpointOverrides,
) -> Result<Session, RunnerError> {
    let contact_points = cassandra_contact_points(spec, overrides);
    let policy = DefaultPolicy::builder()
        .prefer_datacenter(spec.local_datacenter.clone())
        .token_aware(true)
        // With one datacenter (or SimpleStrategy) failover is moot; it keeps query plans
        // non-empty when the local datacenter's name is wrong.
        .permit_dc_failover(true)
        .build();
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy)
        .request_timeout(Some(CASSANDRA_REQUEST_TIMEOUT))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(Duration::from_secs(5));
    if let Some(credentials) = &spec.credentials_secret_ref {
        let origin = format!("Secret {}", credentials.name);
        builder = builder.user(
            secret_from_env(
                "RTDP_CASSANDRA_USERNAME",
                &format!("the Cassandra username ({origin})"),
            )?,
            secret_from_env(
                "RTDP_CASSANDRA_PASSWORD",
                &format!("the Cassandra password ({origin})"),
            )?,
        );
    }
    builder
        .build()
        .await
        .map_err(|error| RunnerError::CassandraUnavailable {
            context: format!("connecting to Cassandra at {}", contact_points.join(",")),
            message: error.to_string(),
        })
}
