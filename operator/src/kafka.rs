//! The Pipeline's Kafka topics, through `rtdp_provisioning::kafka`, with one admin client per
//! distinct cluster and credentials shared by every Pipeline that uses them.

use std::collections::{BTreeMap, HashMap};

use std::time::Duration;

use kube::Client;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rtdp_crds::Pipeline;
use rtdp_provisioning::ProvisionError;
use rtdp_provisioning::kafka::{self, Admin, TopicReport};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::error::Result;
use crate::secrets::read_key;

/// Admin clients by cluster and credentials.
#[derive(Default)]
pub struct KafkaClients {
    admins: Mutex<HashMap<String, Admin>>,
}

impl std::fmt::Debug for KafkaClients {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaClients")
            .finish_non_exhaustive()
    }
}

impl KafkaClients {
    /// The admin client for the Pipeline's cluster, created on first use.
    pub async fn admin(&self, client: &Client, pipeline: &Pipeline) -> Result<Admin> {
        let bootstrap = pipeline.spec.kafka.bootstrap_servers.join(",");
        let properties = client_properties(client, pipeline).await?;
        let key = cache_key(&bootstrap, &properties);
        if let Some(admin) = self.admins.lock().await.get(&key) {
            return Ok(admin.clone());
        }
        // Only a client Kafka accepts is cached: a wrong password is reported (not retried
        // forever by librdkafka in the background) and a corrected Secret gets a new one.
        // The check runs without the lock, so one unreachable cluster never delays others.
        check_access(&bootstrap, &properties).await?;
        let mut admins = self.admins.lock().await;
        if let Some(admin) = admins.get(&key) {
            return Ok(admin.clone());
        }
        let admin = kafka::admin_client(&bootstrap, &properties)?;
        admins.insert(key, admin.clone());
        Ok(admin)
    }

    /// Creates, adopts or grows the topics and sets drifted configs back.
    pub async fn ensure(&self, client: &Client, pipeline: &Pipeline) -> Result<TopicReport> {
        let admin = self.admin(client, pipeline).await?;
        Ok(kafka::ensure_topics(&admin, pipeline).await?)
    }

    /// Deletes the topics.
    pub async fn delete(&self, client: &Client, pipeline: &Pipeline) -> Result<()> {
        let admin = self.admin(client, pipeline).await?;
        Ok(kafka::delete_topics(&admin, pipeline).await?)
    }
}

/// How long the access check waits for Kafka's metadata.
const ACCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Remembers the first authentication or TLS error librdkafka reports: it reports those only
/// through this callback, while the request that failed just says "broker transport failure".
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

/// Connects once with the Pipeline's settings; a refused login or certificate becomes an error
/// naming the brokers and "authentication failed" (librdkafka's reason never holds a secret).
async fn check_access(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in properties {
        config.set(key, value);
    }
    let outcome = tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer<AccessProbe> = config.create_with_context(AccessProbe::default())?;
        let result = probe.fetch_metadata(None, ACCESS_TIMEOUT);
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
        Ok::<_, KafkaError>((result.map(|_| ()), refused))
    })
    .await
    .map_err(|error| ProvisionError::Internal(format!("the Kafka access check failed: {error}")))?;
    let context = format!("connecting to Kafka at {bootstrap}");
    match outcome {
        Ok((Ok(()), _)) => Ok(()),
        Ok((Err(_), Some(reason))) => Err(ProvisionError::Kafka {
            context: format!("{context}: authentication failed ({reason})"),
            source: KafkaError::Global(RDKafkaErrorCode::Authentication),
        }
        .into()),
        Ok((Err(source), None)) | Err(source) => {
            Err(ProvisionError::Kafka { context, source }.into())
        }
    }
}

fn cache_key(bootstrap: &str, properties: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bootstrap.as_bytes());
    for (key, value) in properties {
        hasher.update([0]);
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The librdkafka properties for the Pipeline's TLS and SASL settings, secrets resolved.
pub async fn client_properties(
    client: &Client,
    pipeline: &Pipeline,
) -> Result<BTreeMap<String, String>> {
    let namespace = pipeline.namespace_or_default();
    let spec = &pipeline.spec.kafka;
    let mut properties = BTreeMap::new();
    if let Some(protocol) = security_protocol(pipeline) {
        properties.insert("security.protocol".to_string(), protocol.to_string());
    }
    if let Some(sasl) = &spec.sasl {
        let credentials = &sasl.credentials_secret_ref;
        properties.insert("sasl.mechanism".into(), sasl.mechanism.as_str().into());
        properties.insert(
            "sasl.username".into(),
            read_key(
                client,
                &namespace,
                &credentials.name,
                &credentials.username_key,
            )
            .await?,
        );
        properties.insert(
            "sasl.password".into(),
            read_key(
                client,
                &namespace,
                &credentials.name,
                &credentials.password_key,
            )
            .await?,
        );
    }
    if let Some(tls) = &spec.tls {
        if let Some(ca) = &tls.ca_secret_ref {
            properties.insert(
                "ssl.ca.pem".into(),
                read_key(client, &namespace, &ca.name, &ca.key).await?,
            );
        }
        if let Some(certificate) = &tls.client_certificate_secret_ref {
            properties.insert(
                "ssl.certificate.pem".into(),
                read_key(client, &namespace, &certificate.name, "tls.crt").await?,
            );
            properties.insert(
                "ssl.key.pem".into(),
                read_key(client, &namespace, &certificate.name, "tls.key").await?,
            );
        }
    }
    Ok(properties)
}

/// `security.protocol` for the Pipeline's TLS and SASL settings; `None` for plaintext.
pub fn security_protocol(pipeline: &Pipeline) -> Option<&'static str> {
    let spec = &pipeline.spec.kafka;
    match (spec.tls.is_some(), spec.sasl.is_some()) {
        (false, false) => None,
        (true, false) => Some("SSL"),
        (false, true) => Some("SASL_PLAINTEXT"),
        (true, true) => Some("SASL_SSL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{generated, web_events};

    #[test]
    fn protocol_follows_tls_and_sasl() {
        assert_eq!(security_protocol(&generated()), None);
        assert_eq!(security_protocol(&web_events()), Some("SASL_SSL"));
        let mut tls_only = web_events();
        tls_only.spec.kafka.sasl = None;
        assert_eq!(security_protocol(&tls_only), Some("SSL"));
    }

    #[test]
    fn cache_keys_differ_by_credentials() {
        let one = BTreeMap::from([("sasl.password".to_string(), "a".to_string())]);
        let two = BTreeMap::from([("sasl.password".to_string(), "b".to_string())]);
        assert_ne!(cache_key("k:9092", &one), cache_key("k:9092", &two));
        assert_eq!(cache_key("k:9092", &one), cache_key("k:9092", &one.clone()));
    }
}
