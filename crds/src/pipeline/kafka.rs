//! `spec.kafka` and `spec.topic`: the Kafka cluster, its TLS and SASL, the topic and its dead-letter topic.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CredentialsSecretReference, SecretKeySelector, SecretReference, TOPIC_NAME_PATTERN};

/// Connection settings for the Kafka cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap brokers as `host:port`, e.g. `kafka.kafka.svc:9092`.
    #[schemars(length(min = 1, max = 32), inner(length(min = 3, max = 253)))]
    pub bootstrap_servers: Vec<String>,

    /// TLS for connections to the brokers. Omit for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,

    /// SASL authentication. Omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// TLS settings for Kafka connections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// A Secret key holding the PEM CA bundle that signs the brokers' certificates. Omit to use
    /// the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,

    /// A Secret holding a client certificate (`tls.crt`) and key (`tls.key`) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret_ref: Option<SecretReference>,
}

/// SASL settings for Kafka connections; the credentials always come from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// The SASL mechanism.
    pub mechanism: SaslMechanism,

    /// The Secret holding the username and password.
    pub credentials_secret_ref: CredentialsSecretReference,
}

/// A SASL mechanism supported by the runner.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// Username and password in clear text; use only with TLS.
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka's `sasl.mechanism` expects.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The topic the pipeline's records flow through.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.name) || (self.name != '.' && self.name != '..')").message("topic.name may not be . or .. (Kafka refuses them)").field_path(".name"))]
#[x_kube(validation = Rule::new("!has(self.deadLetter) || !has(self.deadLetter.name) || (self.deadLetter.name != '.' && self.deadLetter.name != '..')").message("topic.deadLetter.name may not be . or .. (Kafka refuses them)").field_path(".deadLetter.name"))]
#[x_kube(validation = Rule::new("!has(self.name) || !has(self.deadLetter) || !has(self.deadLetter.name) || self.name != self.deadLetter.name").message("topic.deadLetter.name must differ from topic.name: dead letters would be read back as records").field_path(".deadLetter.name"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The topic's name. Defaults to `<namespace>.<pipeline name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOPIC_NAME_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("topic.name is immutable: create a new Pipeline to move to another topic"))]
    pub name: Option<String>,

    /// Number of partitions: the pipeline's unit of parallelism. May grow, never shrink.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("topic.partitions can only increase: Kafka cannot remove partitions"))]
    pub partitions: i32,

    /// Copies of each partition across brokers. Fixed once the topic exists.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 16))]
    pub replication_factor: i32,

    /// Topic configuration entries the operator manages, e.g. `retention.ms: "604800000"`.
    /// Entries not listed here are left as the broker set them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// The dead-letter topic, where records that cannot be processed go with headers that
    /// say why.
    #[serde(default)]
    pub dead_letter: DeadLetterSpec,
}

impl Default for TopicSpec {
    fn default() -> Self {
        Self {
            name: None,
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            config: BTreeMap::new(),
            dead_letter: DeadLetterSpec::default(),
        }
    }
}

fn default_partitions() -> i32 {
    6
}

fn default_replication_factor() -> i32 {
    1
}

/// The dead-letter topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(oldSelf.partitions) || (has(self.partitions) && self.partitions >= oldSelf.partitions)").message("topic.deadLetter.partitions can only increase: Kafka cannot remove partitions").field_path(".partitions"))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// The dead-letter topic's name. Defaults to `<topic>.dlq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOPIC_NAME_PATTERN))]
    pub name: Option<String>,

    /// Partitions of the dead-letter topic. Defaults to 1. May grow, never shrink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: Option<i32>,

    /// Topic configuration entries for the dead-letter topic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}
