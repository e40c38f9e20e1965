//! Helpers for tests that run against the local stack (`dev/stack up`).
//!
//! Integration tests never skip: when a server is not configured or not reachable they fail
//! with a message that says how to start it. `make test` brings the stack up first.

pub mod kubernetes;
pub mod listings_api;
pub mod process;
pub mod prometheus;

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HOW_TO_START: &str = "start the local stack with `dev/stack up` and export its endpoints with `eval \"$(dev/stack env)\"` (or run `make test`, which does both)";

/// Reads a required environment variable, failing the test with a clear message when unset.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => {
            panic!("{name} is not set: this integration test needs the real server; {HOW_TO_START}")
        }
    }
}

/// Fails the test unless `address` (host:port) accepts TCP connections.
pub fn require_reachable(what: &str, address: &str) {
    let reachable = address
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(3)).is_ok());
    assert!(
        reachable,
        "{what} at {address} is not reachable; {HOW_TO_START}"
    );
}

/// The local Kafka's bootstrap servers, checked to be reachable.
pub fn kafka_bootstrap_servers() -> String {
    let servers = required_env("KAFKA_BOOTSTRAP_SERVERS");
    for server in servers.split(',') {
        require_reachable("Kafka", server.trim());
    }
    servers
}

/// The local Cassandra's contact points, checked to be reachable.
pub fn cassandra_contact_points() -> Vec<String> {
    let points: Vec<String> = required_env("CASSANDRA_CONTACT_POINTS")
        .split(',')
        .map(|point| point.trim().to_string())
        .collect();
    for point in &points {
        require_reachable("Cassandra", point);
    }
    points
}

/// A client for the local API server, from `KUBECONFIG`, checked to answer.
pub async fn kube_client() -> kube::Client {
    let path = required_env("KUBECONFIG");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|error| panic!("reading KUBECONFIG {path}: {error}; {HOW_TO_START}"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|error| panic!("loading KUBECONFIG {path}: {error}"));
    let client = kube::Client::try_from(config)
        .unwrap_or_else(|error| panic!("building a Kubernetes client: {error}"));
    if let Err(error) = client.apiserver_version().await {
        panic!("the Kubernetes API server from {path} does not answer: {error}; {HOW_TO_START}");
    }
    client
}

/// A name unique across test runs and within one, valid as a Kubernetes name, a Kafka topic
/// and (with `-` replaced) a CQL identifier: `<prefix>-<seconds>-<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() % 1_000_000)
        .unwrap_or_default();
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{seconds}-{}-{counter}",
        std::process::id() % 100_000
    )
}

/// A TCP port of 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free port")
}

/// `unique_name` as a CQL identifier (underscores instead of dashes).
pub fn unique_cql_identifier(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks `check` every 200 ms for `duration` and panics, naming `what`, the first time it
/// does not hold: for what must stay true (nothing dropped, nothing retried) over a while.
pub async fn stays<F, Fut>(what: &str, duration: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        assert!(
            check().await,
            "{what} stopped holding after {:?} (it must hold for {duration:?})",
            start.elapsed()
        );
        if start.elapsed() >= duration {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kafka's SASL_SSL (SCRAM-SHA-512) listener of the local stack, checked to be reachable.
pub fn kafka_secure_bootstrap_servers() -> String {
    let servers = required_env("KAFKA_SECURE_BOOTSTRAP_SERVERS");
    for server in servers.split(',') {
        require_reachable("Kafka's SASL_SSL listener", server.trim());
    }
    servers
}

/// The CA certificate (PEM file) that signed the local Kafka's TLS certificate.
pub fn kafka_ca_file() -> String {
    let path = required_env("KAFKA_CA_FILE");
    assert!(
        std::path::Path::new(&path).is_file(),
        "KAFKA_CA_FILE {path} does not exist; {HOW_TO_START}"
    );
    path
}

/// Kafka's mutual-TLS listener of the local stack (SSL, a client certificate signed by the
/// stack's CA required), checked to be reachable.
pub fn kafka_mtls_bootstrap_servers() -> String {
    let servers = required_env("KAFKA_MTLS_BOOTSTRAP_SERVERS");
    for server in servers.split(',') {
        require_reachable(
            "Kafka's mutual-TLS listener (restart an older Kafka with `dev/stack down kafka && dev/stack up kafka`)",
            server.trim(),
        );
    }
    servers
}

/// The client certificate and its key (PEM files) that the local Kafka's mutual-TLS listener
/// accepts: (certificate, key).
pub fn kafka_client_certificate_files() -> (String, String) {
    let files = (
        required_env("KAFKA_CLIENT_CERTIFICATE_FILE"),
        required_env("KAFKA_CLIENT_KEY_FILE"),
    );
    for path in [&files.0, &files.1] {
        assert!(
            std::path::Path::new(path).is_file(),
            "{path} (the local Kafka's client certificate) does not exist; {HOW_TO_START}"
        );
    }
    files
}

/// The local Kafka's log directory (its `log.dirs`: one directory of segment files per
/// partition), for tests that read what the broker stored, batch by batch.
pub fn kafka_log_dir() -> std::path::PathBuf {
    let path = std::path::PathBuf::from(required_env("KAFKA_LOG_DIR"));
    assert!(
        path.join("meta.properties").is_file(),
        "KAFKA_LOG_DIR {} is not the local Kafka's log directory; {HOW_TO_START}",
        path.display()
    );
    path
}

/// The SCRAM user of the local Kafka: (username, password).
pub fn kafka_sasl_credentials() -> (String, String) {
    (
        required_env("KAFKA_SASL_USERNAME"),
        required_env("KAFKA_SASL_PASSWORD"),
    )
}

/// The login role of the secured local Cassandra: (username, password).
pub fn cassandra_secured_credentials() -> (String, String) {
    (
        required_env("CASSANDRA_SECURED_USERNAME"),
        required_env("CASSANDRA_SECURED_PASSWORD"),
    )
}

/// Fails when the stack's Kafka or Cassandra password, or any of `extra`, appears in `text`
/// (`what` names the text: "the runner's log").
pub fn assert_no_password(what: &str, text: &str, extra: &[&str]) {
    let (_, kafka_password) = kafka_sasl_credentials();
    let (_, cassandra_password) = cassandra_secured_credentials();
    for secret in [kafka_password.as_str(), cassandra_password.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
    {
        assert!(
            !text.contains(secret),
            "{what} contains a password:\n{text}"
        );
    }
}

/// The contact points of the secured Cassandra (PasswordAuthenticator). It is not part of
/// `dev/stack up`: the first call in a test process runs `dev/stack up cassandra-secured`
/// (a no-op when it runs; `dev/stack run` and `dev/stack down` stop it). A failure to start
/// fails the test.
pub fn cassandra_secured_contact_points() -> Vec<String> {
    static STARTED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let points: Vec<String> = required_env("CASSANDRA_SECURED_CONTACT_POINTS")
        .split(',')
        .map(|point| point.trim().to_string())
        .collect();
    let mut started = STARTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*started {
        process::dev_stack(&["up", "cassandra-secured"]);
        *started = true;
    }
    for point in &points {
        require_reachable("the secured Cassandra", point);
    }
    points
}

/// A session on the local Cassandra.
pub async fn cassandra_session() -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(cassandra_contact_points())
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to Cassandra: {error}; {HOW_TO_START}"))
}

/// A session on the secured Cassandra, logged in as the stack's role (started on first use,
/// see `cassandra_secured_contact_points`).
pub async fn cassandra_secured_session() -> scylla::client::session::Session {
    let (user, password) = cassandra_secured_credentials();
    tokio::time::timeout(
        Duration::from_secs(30),
        scylla::client::session_builder::SessionBuilder::new()
            .known_nodes(cassandra_secured_contact_points())
            .user(user, password)
            .build(),
    )
    .await
    .expect("connecting to the secured Cassandra in time")
    .expect("connecting to the secured Cassandra")
}

/// The names of the tables of a keyspace (system_schema.tables), sorted.
pub async fn cassandra_table_names(
    session: &scylla::client::session::Session,
    keyspace: &str,
) -> Vec<String> {
    let result = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .expect("reading system_schema.tables")
        .into_rows_result()
        .expect("a rows result");
    let mut names: Vec<String> = result
        .rows::<(String,)>()
        .expect("typed rows")
        .map(|row| row.expect("a table_name row").0)
        .collect();
    names.sort();
    names
}
