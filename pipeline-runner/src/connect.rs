//! Client settings for Kafka and Cassandra, from the Pipeline spec plus the secrets the
//! runner receives as environment variables (see docs/runner-contract.md).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rtdp_crds::{CassandraSpec, KafkaSpec};
use rtdp_provisioning::cassandra::check_local_datacenter;
use rtdp_provisioning::kafka::{self, Pem, SaslLogin, TlsMaterial};
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

/// The librdkafka settings every client of this Pipeline shares: brokers, TLS, SASL. The
/// mapping is `rtdp_provisioning::kafka`'s (the operator uses the same); the runner's secrets
/// are mounted files and environment variables (docs/runner-contract.md).
pub fn kafka_client_config(
    spec: &KafkaSpec,
    overrides: &EndpointOverrides,
) -> Result<ClientConfig, RunnerError> {
    let (bootstrap_servers, properties) = kafka_client_properties(spec, overrides)?;
    Ok(kafka::client_config(&bootstrap_servers, &properties))
}

/// The bootstrap servers and the other librdkafka properties of [`kafka_client_config`],
/// apart (an admin client takes them so).
pub fn kafka_client_properties(
    spec: &KafkaSpec,
    overrides: &EndpointOverrides,
) -> Result<(String, BTreeMap<String, String>), RunnerError> {
    let bootstrap_servers = overrides
        .kafka_bootstrap_servers
        .clone()
        .unwrap_or_else(|| spec.bootstrap_servers.join(","));
    let file = |variable: &str| {
        std::env::var(variable)
            .ok()
            .filter(|path| !path.is_empty())
            .map(Pem::File)
    };
    let tls = TlsMaterial {
        ca: file("RTDP_KAFKA_CA_FILE"),
        certificate: file("RTDP_KAFKA_CERTIFICATE_FILE"),
        key: file("RTDP_KAFKA_KEY_FILE"),
    };
    let login = match &spec.sasl {
        Some(sasl) => {
            let origin = format!("Secret {}", sasl.credentials_secret_ref.name);
            Some(SaslLogin {
                username: secret_from_env(
                    "RTDP_KAFKA_USERNAME",
                    &format!("the Kafka username ({origin})"),
                )?,
                password: secret_from_env(
                    "RTDP_KAFKA_PASSWORD",
                    &format!("the Kafka password ({origin})"),
                )?,
            })
        }
        None => None,
    };
    let mut properties = kafka::client_properties(spec, &tls, login.as_ref());
    properties.insert("client.id".to_string(), "rtdp-pipeline-runner".to_string());
    Ok((bootstrap_servers, properties))
}

/// How long the access check waits for Kafka's metadata.
const KAFKA_ACCESS_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects once with the Pipeline's Kafka settings and fails clearly when Kafka cannot be
/// used: a refused login or certificate, or each bootstrap server and why it is unreachable,
/// instead of a bare transport failure (or an endless reconnect loop).
pub async fn check_kafka_access(config: &ClientConfig) -> Result<(), RunnerError> {
    Ok(kafka::check_access(config, KAFKA_ACCESS_TIMEOUT).await?)
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
/// outage is noticed (and retried) rather than waited on. A reachable cluster without
/// `spec.cassandra.localDatacenter` among its datacenters is a configuration error
/// ([`RunnerError::Config`]: not retried, exit 2), refused before anything is written; an
/// unreachable one stays [`RunnerError::CassandraUnavailable`] (retried).
pub async fn cassandra_session(
    spec: &CassandraSpec,
    overrides: &EndpointOverrides,
) -> Result<Session, RunnerError> {
    let contact_points = cassandra_contact_points(spec, overrides);
    let policy = DefaultPolicy::builder()
        .prefer_datacenter(spec.local_datacenter.clone())
        .token_aware(true)
        // The name is checked against the cluster below; failover lets requests reach another
        // datacenter when the local one is down (moot with one datacenter).
        .permit_dc_failover(true)
        .build();
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy)
        .request_timeout(Some(CASSANDRA_REQUEST_TIMEOUT))
        .build();
    // Routing needs only the Pipeline's keyspace (its replication, its tables' partitioners):
    // the driver's default reads every keyspace's tables and columns at start, every minute
    // and after each schema change, which in a cluster shared by many Pipelines costs memory
    // and CPU for nothing.
    let mut builder = SessionBuilder::new()
        .known_nodes(&contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(Duration::from_secs(5))
        .keyspaces_to_fetch([spec.keyspace.name.clone()])
        .fetch_full_schema_metadata(false);
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
    let session = builder
        .build()
        .await
        .map_err(|error| RunnerError::CassandraUnavailable {
            context: format!("connecting to Cassandra at {}", contact_points.join(",")),
            message: error.to_string(),
        })?;
    match check_local_datacenter(&session, spec) {
        Ok(()) => Ok(session),
        Err(error) if error.is_permanent() => Err(RunnerError::Config(error.to_string())),
        Err(error) => Err(RunnerError::CassandraUnavailable {
            context: format!("connecting to Cassandra at {}", contact_points.join(",")),
            message: error.to_string(),
        }),
    }
}
