//! Whether Kafka accepts a client's settings, and when it does not, why. librdkafka's own
//! error for an unusable cluster is a bare "broker transport failure"; this check names each
//! bootstrap server tried and what went wrong with it: DNS, a refused or unanswered TCP
//! connection, a TLS handshake or a SASL login. Written once for the runner and the operator.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::net::TcpStream;

/// How long resolving or connecting to one bootstrap address may take while diagnosing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why Kafka turned away a client that reached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The SASL login was refused (wrong username or password, unknown mechanism).
    Authentication,
    /// The TLS handshake failed (an untrusted certificate, a TLS client on a plaintext port).
    Tls,
    /// The broker ended the TLS handshake with an alert: it wants a client certificate that
    /// was not presented, or does not trust the one that was (mutual TLS).
    ClientCertificate,
}

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Refusal::Authentication => "SASL authentication failed",
            Refusal::Tls => "TLS authentication failed (certificate or handshake)",
            Refusal::ClientCertificate => {
                "TLS authentication failed: the broker refused the client certificate, \
                 spec.kafka.tls.clientCertificateSecretRef (it requires one and none was \
                 presented, or it does not trust the one presented)"
            }
        })
    }
}

/// What connecting to one bootstrap server by hand found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOutcome {
    /// The entry is not `host:port`.
    InvalidAddress,
    /// The host name did not resolve; the resolver's words.
    UnknownHost(String),
    /// The address refused the TCP connection: nothing listens on that port.
    ConnectionRefused(SocketAddr),
    /// Nothing answered the TCP connection in time (a firewall, a host that is down).
    TimedOut(SocketAddr),
    /// Another socket error; the operating system's words.
    ConnectFailed(SocketAddr, String),
    /// A TCP connection succeeds, yet Kafka did not answer on it.
    Listening,
}

/// One bootstrap server and what connecting to it found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerProbe {
    /// The entry as configured, `host:port`.
    pub server: String,
    /// What was found.
    pub outcome: ServerOutcome,
}

impl fmt::Display for ServerProbe {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = &self.server;
        match &self.outcome {
            ServerOutcome::InvalidAddress => write!(formatter, "{server} (not host:port)"),
            ServerOutcome::UnknownHost(message) => {
                write!(formatter, "{server} (DNS lookup failed: {message})")
            }
            ServerOutcome::ConnectionRefused(address) => {
                write!(formatter, "{server} (connection refused by {address})")
            }
            ServerOutcome::TimedOut(address) => write!(
                formatter,
                "{server} (no answer from {address} within {} s)",
                PROBE_TIMEOUT.as_secs()
            ),
            ServerOutcome::ConnectFailed(address, message) => {
                write!(
                    formatter,
                    "{server} (cannot connect to {address}: {message})"
                )
            }
            ServerOutcome::Listening => write!(
                formatter,
                "{server} (accepts TCP connections but did not answer as Kafka: \
                 another service, or a listener of another security protocol?)"
            ),
        }
    }
}

/// Why Kafka cannot be used with a client's settings.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Kafka was reached and turned the client away.
    #[error(
        "Kafka at {bootstrap_servers} refused the connection: {refusal} \
         (check the Pipeline's Kafka credentials and CA): {reason}"
    )]
    Refused {
        /// The bootstrap servers, `host:port,...`.
        bootstrap_servers: String,
        /// TLS or SASL.
        refusal: Refusal,
        /// librdkafka's reason, which never contains the password.
        reason: String,
    },
    /// No bootstrap server answered as Kafka.
    #[error("{}", unreachable_message(servers, source))]
    Unreachable {
        /// Each bootstrap server and what connecting to it found.
        servers: Vec<ServerProbe>,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// librdkafka rejected the settings themselves.
    #[error("creating a Kafka client for {bootstrap_servers}: {source}")]
    Client {
        /// The bootstrap servers, `host:port,...`.
        bootstrap_servers: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The check itself failed (its thread panicked).
    #[error("the Kafka access check for {bootstrap_servers} failed: {message}")]
    Internal {
        /// The bootstrap servers, `host:port,...`.
        bootstrap_servers: String,
        /// What happened.
        message: String,
    },
}

/// The text of [`AccessError::Unreachable`]: every server tried, with its cause. librdkafka's
/// error is added only when no server failed at the network level, since then it is the
/// only clue. Pure.
pub fn unreachable_message(servers: &[ServerProbe], source: &KafkaError) -> String {
    let tried: Vec<String> = servers.iter().map(ToString::to_string).collect();
    let mut message = format!(
        "Kafka is unreachable; bootstrap servers tried: {}",
        tried.join(", ")
    );
    if servers
        .iter()
        .all(|probe| probe.outcome == ServerOutcome::Listening)
    {
        message.push_str(&format!("; librdkafka: {source}"));
    }
    message
}

/// Whether an error librdkafka reports is Kafka turning the client away, and how. A TLS alert
/// the broker sends (OpenSSL's `... alert bad certificate`, `... alert certificate required`,
/// `... alert unknown ca`) reaches the client as a transport failure while receiving: the
/// broker refused the client's side of the handshake, its certificate. Pure.
pub fn refusal_of(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<Refusal> {
    match code {
        Some(RDKafkaErrorCode::Authentication) => Some(Refusal::Authentication),
        Some(RDKafkaErrorCode::SSL) => Some(Refusal::Tls),
        Some(RDKafkaErrorCode::BrokerTransportFailure)
            if reason.contains("SSL routines") && reason.contains(" alert ") =>
        {
            Some(Refusal::ClientCertificate)
        }
        _ => None,
    }
}

/// Remembers the first authentication or TLS error librdkafka reports: it reports those only
/// through this callback, while the request that failed just says "broker transport failure".
#[derive(Default)]
struct RefusalRecorder {
    first: Mutex<Option<(Refusal, String)>>,
}

impl ClientContext for RefusalRecorder {
    fn error(&self, error: KafkaError, reason: &str) {
        let Some(refusal) = refusal_of(error.rdkafka_error_code(), reason) else {
            return;
        };
        if let Ok(mut first) = self.first.lock()
            && first.is_none()
        {
            *first = Some((refusal, reason.to_string()));
        }
    }
}

impl ConsumerContext for RefusalRecorder {}

/// Connects once with `config` and waits up to `timeout` for the cluster's metadata. On
/// failure, says why: a refused login or certificate (librdkafka's reason), or else each
/// bootstrap server and what resolving and connecting to it found.
pub async fn check_access(config: &ClientConfig, timeout: Duration) -> Result<(), AccessError> {
    let bootstrap_servers = config
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    let config = config.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer<RefusalRecorder> =
            config.create_with_context(RefusalRecorder::default())?;
        let result = probe.fetch_metadata(None, timeout);
        if result.is_err() {
            // Error events reach the context only when the client is polled.
            for _ in 0..10 {
                let _ = probe.poll(Duration::from_millis(100));
            }
        }
        let refusal = probe
            .context()
            .first
            .lock()
            .ok()
            .and_then(|mut first| first.take());
        Ok::<_, KafkaError>((result.map(|_| ()), refusal))
    })
    .await
    .map_err(|error| AccessError::Internal {
        bootstrap_servers: bootstrap_servers.clone(),
        message: error.to_string(),
    })?;
    match outcome {
        Ok((Ok(()), _)) => Ok(()),
        Ok((Err(_), Some((refusal, reason)))) => Err(AccessError::Refused {
            bootstrap_servers,
            refusal,
            reason,
        }),
        Ok((Err(source), None)) => Err(AccessError::Unreachable {
            servers: probe_servers(&bootstrap_servers).await,
            source,
        }),
        Err(source) => Err(AccessError::Client {
            bootstrap_servers,
            source,
        }),
    }
}

/// Resolves and connects to every server of `host:port,...`, all at once.
pub async fn probe_servers(bootstrap_servers: &str) -> Vec<ServerProbe> {
    let handles: Vec<_> = bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .map(|server| {
            let server = server.to_string();
            tokio::spawn(async move {
                let outcome = probe_server(&server).await;
                ServerProbe { server, outcome }
            })
        })
        .collect();
    let mut probes = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(probe) = handle.await {
            probes.push(probe);
        }
    }
    probes
}

/// Splits `host:port` (optionally `PROTOCOL://host:port`, `[v6]:port`).
fn host_and_port(server: &str) -> Option<(&str, u16)> {
    let address = server.rsplit("://").next().unwrap_or(server);
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

async fn probe_server(server: &str) -> ServerOutcome {
    let Some((host, port)) = host_and_port(server) else {
        return ServerOutcome::InvalidAddress;
    };
    let addresses: Vec<SocketAddr> =
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(error)) => return ServerOutcome::UnknownHost(error.to_string()),
            Err(_) => {
                return ServerOutcome::UnknownHost(format!(
                    "no answer from the resolver within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
        };
    let mut outcome = ServerOutcome::UnknownHost("the name has no addresses".to_string());
    for address in addresses {
        outcome = match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(_)) => return ServerOutcome::Listening,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                ServerOutcome::ConnectionRefused(address)
            }
            Ok(Err(error)) => ServerOutcome::ConnectFailed(address, error.to_string()),
            Err(_) => ServerOutcome::TimedOut(address),
        };
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport_failure() -> KafkaError {
        KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure)
    }

    #[test]
    fn names_every_server_and_its_cause() {
        let servers = vec![
            ServerProbe {
                server: "kafka-0.example:9092".into(),
                outcome: ServerOutcome::UnknownHost("Name or service not known".into()),
            },
            ServerProbe {
                server: "127.0.0.1:1".into(),
                outcome: ServerOutcome::ConnectionRefused(SocketAddr::from(([127, 0, 0, 1], 1))),
            },
            ServerProbe {
                server: "10.1.2.3:9092".into(),
                outcome: ServerOutcome::TimedOut(SocketAddr::from(([10, 1, 2, 3], 9092))),
            },
        ];
        assert_eq!(
            unreachable_message(&servers, &transport_failure()),
            "Kafka is unreachable; bootstrap servers tried: \
             kafka-0.example:9092 (DNS lookup failed: Name or service not known), \
             127.0.0.1:1 (connection refused by 127.0.0.1:1), \
             10.1.2.3:9092 (no answer from 10.1.2.3:9092 within 3 s)"
        );
    }

    #[test]
    fn adds_librdkafka_only_when_every_server_listens() {
        let servers = vec![ServerProbe {
            server: "localhost:9093".into(),
            outcome: ServerOutcome::Listening,
        }];
        let message = unreachable_message(&servers, &transport_failure());
        assert!(
            message.contains("accepts TCP connections but did not answer as Kafka")
                && message.contains("librdkafka: Meta data fetch error"),
            "{message}"
        );
    }

    #[test]
    fn refusals_say_which_layer_refused() {
        let error = AccessError::Refused {
            bootstrap_servers: "k:9094".into(),
            refusal: Refusal::Authentication,
            reason: "SASL authentication error: Authentication failed".into(),
        };
        assert_eq!(
            error.to_string(),
            "Kafka at k:9094 refused the connection: SASL authentication failed (check the \
             Pipeline's Kafka credentials and CA): SASL authentication error: Authentication failed"
        );
    }

    #[test]
    fn a_tls_alert_from_the_broker_is_a_client_certificate_refusal() {
        // What librdkafka reports when a broker requiring client certificates gets none
        // (seen against the local stack's mutual-TLS listener).
        let alert = "ssl://127.0.0.1:9095/bootstrap: Receive failed: error:0A000412:SSL \
                     routines::sslv3 alert bad certificate: SSL alert number 42 (after 0ms in \
                     state APIVERSION_QUERY)";
        assert_eq!(
            refusal_of(Some(RDKafkaErrorCode::BrokerTransportFailure), alert),
            Some(Refusal::ClientCertificate)
        );
        assert_eq!(
            refusal_of(
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
            ),
            None
        );
        assert_eq!(
            refusal_of(Some(RDKafkaErrorCode::SSL), "certificate verify failed"),
            Some(Refusal::Tls)
        );
        assert_eq!(
            refusal_of(Some(RDKafkaErrorCode::Authentication), "SASL"),
            Some(Refusal::Authentication)
        );
        assert_eq!(
            refusal_of(Some(RDKafkaErrorCode::AllBrokersDown), alert),
            None
        );
    }

    #[test]
    fn splits_hosts_and_ports() {
        assert_eq!(host_and_port("kafka:9092"), Some(("kafka", 9092)));
        assert_eq!(
            host_and_port("SASL_SSL://kafka:9094"),
            Some(("kafka", 9094))
        );
        assert_eq!(host_and_port("[::1]:9092"), Some(("::1", 9092)));
        assert_eq!(host_and_port("kafka"), None);
        assert_eq!(host_and_port("kafka:port"), None);
    }
}
