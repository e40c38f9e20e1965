//! The Pipeline's Kafka topics, through `rtdp_provisioning::kafka`, with one admin client per
//! distinct cluster and credentials shared by every Pipeline that uses them.

use std::collections::BTreeMap;

use std::time::Duration;

use kube::Client;
use rtdp_crds::Pipeline;
use rtdp_provisioning::ProvisionError;
use rtdp_provisioning::kafka::{
    self, Admin, Pem, SaslLogin, SecurityProtocol, TlsMaterial, TopicReport,
};

use crate::client_cache::ClientCache;
use crate::error::Result;
use crate::secrets::read_key;

/// Admin clients by cluster and credentials (the operator's one client cache).
#[derive(Default)]
pub struct KafkaClients {
    admins: ClientCache<Admin>,
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
        // Only a client Kafka accepts is cached: a wrong password is reported (not retried
        // forever by librdkafka in the background) and a corrected Secret gets a new one.
        // The check runs outside the cache's lock, so one unreachable cluster never delays
        // others.
        self.admins
            .get_or_connect(key, async {
                check_access(&bootstrap, &properties).await?;
                Ok(kafka::admin_client(&bootstrap, &properties)?)
            })
            .await
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

/// Connects once with the Pipeline's settings; a refused login or certificate, or an
/// unreachable cluster, becomes an error naming the servers and why (the shared check of
/// `rtdp_provisioning::kafka`; librdkafka's reason never holds a secret).
async fn check_access(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<()> {
    let config = kafka::client_config(bootstrap, properties);
    kafka::check_access(&config, ACCESS_TIMEOUT)
        .await
        .map_err(|error| ProvisionError::from(error).into())
}

/// The cache key of a client: its servers and every property, secrets included, hashed.
fn cache_key(bootstrap: &str, properties: &BTreeMap<String, String>) -> String {
    crate::client_cache::cache_key(
        std::iter::once(bootstrap).chain(
            properties
                .iter()
                .flat_map(|(key, value)| [key.as_str(), value.as_str()]),
        ),
    )
}

/// The librdkafka properties for the Pipeline's TLS and SASL settings, secrets resolved from
/// the Pipeline's Secrets (the mapping itself is `rtdp_provisioning::kafka`'s, shared with the
/// runner).
pub async fn client_properties(
    client: &Client,
    pipeline: &Pipeline,
) -> Result<BTreeMap<String, String>> {
    let namespace = pipeline.namespace_or_default();
    let spec = &pipeline.spec.kafka;
    let login = match &spec.sasl {
        Some(sasl) => {
            let credentials = &sasl.credentials_secret_ref;
            Some(SaslLogin {
                username: read_key(
                    client,
                    &namespace,
                    &credentials.name,
                    &credentials.username_key,
                )
                .await?,
                password: read_key(
                    client,
                    &namespace,
                    &credentials.name,
                    &credentials.password_key,
                )
                .await?,
            })
        }
        None => None,
    };
    let mut tls = TlsMaterial::default();
    if let Some(tls_spec) = &spec.tls {
        if let Some(ca) = &tls_spec.ca_secret_ref {
            tls.ca = Some(Pem::Text(
                read_key(client, &namespace, &ca.name, &ca.key).await?,
            ));
        }
        if let Some(certificate) = &tls_spec.client_certificate_secret_ref {
            tls.certificate = Some(Pem::Text(
                read_key(client, &namespace, &certificate.name, "tls.crt").await?,
            ));
            tls.key = Some(Pem::Text(
                read_key(client, &namespace, &certificate.name, "tls.key").await?,
            ));
        }
    }
    Ok(kafka::client_properties(spec, &tls, login.as_ref()))
}

/// A librdkafka configuration for the Pipeline's cluster, secrets resolved: what the
/// freshness loop and a replay read or move the processors' consumer group with.
pub async fn client_config_of(
    client: &Client,
    pipeline: &Pipeline,
) -> Result<rdkafka::ClientConfig> {
    let properties = client_properties(client, pipeline).await?;
    Ok(kafka::client_config(
        &pipeline.spec.kafka.bootstrap_servers.join(","),
        &properties,
    ))
}

/// `security.protocol` for the Pipeline's TLS and SASL settings; `None` for plaintext.
pub fn security_protocol(pipeline: &Pipeline) -> Option<&'static str> {
    match SecurityProtocol::of(&pipeline.spec.kafka) {
        SecurityProtocol::Plaintext => None,
        protocol => Some(protocol.as_str()),
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
