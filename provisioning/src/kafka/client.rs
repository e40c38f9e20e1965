//! The librdkafka settings for a Pipeline's `spec.kafka`, written once: the runner (secrets
//! from mounted files and environment variables) and the operator (secrets read from
//! Kubernetes Secrets) only differ in where the secrets come from, never in the mapping.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rtdp_crds::KafkaSpec;

/// Kafka's `security.protocol`, which follows from whether the spec has TLS and SASL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// Neither TLS nor SASL.
    Plaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The protocol `spec` asks for.
    pub fn of(spec: &KafkaSpec) -> Self {
        match (spec.tls.is_some(), spec.sasl.is_some()) {
            (false, false) => SecurityProtocol::Plaintext,
            (true, false) => SecurityProtocol::Ssl,
            (false, true) => SecurityProtocol::SaslPlaintext,
            (true, true) => SecurityProtocol::SaslSsl,
        }
    }

    /// The name librdkafka and Kafka use.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections use TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// A PEM document: a path to a mounted file (the runner) or its text (the operator, from a
/// Secret). Its `Debug` never shows the text, which may be a private key.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file librdkafka reads.
    File(String),
    /// The PEM text itself.
    Text(String),
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(path) => formatter.debug_tuple("File").field(path).finish(),
            Pem::Text(_) => formatter.write_str("Text(..)"),
        }
    }
}

/// The TLS material a client presents and trusts; what is absent falls back to librdkafka's
/// defaults (the system trust store, no client certificate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The CA bundle that signs the brokers' certificates.
    pub ca: Option<Pem>,
    /// The client certificate, for mutual TLS.
    pub certificate: Option<Pem>,
    /// The client certificate's private key.
    pub key: Option<Pem>,
}

/// A SASL username and password. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SaslLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The librdkafka properties for `spec`, except `bootstrap.servers`: the protocol, the TLS
/// material (used only when the spec asks for TLS) and the SASL mechanism and login (used only
/// when the spec asks for SASL).
pub fn client_properties(
    spec: &KafkaSpec,
    tls: &TlsMaterial,
    login: Option<&SaslLogin>,
) -> BTreeMap<String, String> {
    let protocol = SecurityProtocol::of(spec);
    let mut properties = BTreeMap::new();
    properties.insert(
        "security.protocol".to_string(),
        protocol.as_str().to_string(),
    );
    if protocol.uses_tls() {
        for (pem, file_property, text_property) in [
            (&tls.ca, "ssl.ca.location", "ssl.ca.pem"),
            (
                &tls.certificate,
                "ssl.certificate.location",
                "ssl.certificate.pem",
            ),
            (&tls.key, "ssl.key.location", "ssl.key.pem"),
        ] {
            match pem {
                Some(Pem::File(path)) => properties.insert(file_property.to_string(), path.clone()),
                Some(Pem::Text(text)) => properties.insert(text_property.to_string(), text.clone()),
                None => None,
            };
        }
    }
    if let (Some(sasl), Some(login)) = (&spec.sasl, login) {
        properties.insert(
            "sasl.mechanism".to_string(),
            sasl.mechanism.as_str().to_string(),
        );
        properties.insert("sasl.username".to_string(), login.username.clone());
        properties.insert("sasl.password".to_string(), login.password.clone());
    }
    properties
}

/// A librdkafka configuration for `bootstrap_servers` (`host:port,...`) and `properties`.
pub fn client_config(
    bootstrap_servers: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

#[cfg(test)]
mod tests {
    use rtdp_crds::{CredentialsSecretReference, KafkaSasl, KafkaTls, SaslMechanism};

    use super::*;

    fn spec(tls: bool, sasl: bool) -> KafkaSpec {
        KafkaSpec {
            bootstrap_servers: vec!["kafka:9092".into()],
            tls: tls.then_some(KafkaTls {
                ca_secret_ref: None,
                client_certificate_secret_ref: None,
            }),
            sasl: sasl.then(|| KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                credentials_secret_ref: CredentialsSecretReference {
                    name: "kafka-login".into(),
                    username_key: "username".into(),
                    password_key: "password".into(),
                },
            }),
        }
    }

    fn login() -> SaslLogin {
        SaslLogin {
            username: "runner".into(),
            password: "secret-password".into(),
        }
    }

    #[test]
    fn the_protocol_follows_tls_and_sasl() {
        assert_eq!(
            SecurityProtocol::of(&spec(false, false)).as_str(),
            "PLAINTEXT"
        );
        assert_eq!(SecurityProtocol::of(&spec(true, false)).as_str(), "SSL");
        assert_eq!(
            SecurityProtocol::of(&spec(false, true)).as_str(),
            "SASL_PLAINTEXT"
        );
        assert_eq!(SecurityProtocol::of(&spec(true, true)).as_str(), "SASL_SSL");
    }

    #[test]
    fn files_and_texts_map_to_their_properties_only_with_tls() {
        let tls = TlsMaterial {
            ca: Some(Pem::File("/ca.crt".into())),
            certificate: Some(Pem::Text("CERT".into())),
            key: Some(Pem::Text("KEY".into())),
        };
        let properties = client_properties(&spec(true, true), &tls, Some(&login()));
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("ssl.ca.location", "/ca.crt"),
            ("ssl.certificate.pem", "CERT"),
            ("ssl.key.pem", "KEY"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "runner"),
            ("sasl.password", "secret-password"),
        ] {
            assert_eq!(
                properties.get(key).map(String::as_str),
                Some(value),
                "{key}"
            );
        }
        assert_eq!(properties.len(), 7, "{properties:?}");
        let plaintext = client_properties(&spec(false, false), &tls, Some(&login()));
        assert_eq!(plaintext.len(), 1, "{plaintext:?}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?} {:?}", login(), Pem::Text("PRIVATE KEY".into()));
        assert!(
            !text.contains("secret-password") && !text.contains("PRIVATE KEY"),
            "{text}"
        );
    }
}
