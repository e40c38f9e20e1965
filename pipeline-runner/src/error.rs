//! The runner's errors. Each variant has a stable label (logs, metrics) and an exit code
//! (what a CronJob or a person running the binary sees).

use std::process::ExitCode;

use rtdp_provisioning::kafka::AccessError;

/// Why a role stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The manifest could not be read or parsed.
    #[error(transparent)]
    Manifest(#[from] rtdp_crds::ManifestError),
    /// The manifest or the flags describe something the runner cannot run.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Kafka refused or could not be reached.
    #[error("{context}: {source}")]
    KafkaUnavailable {
        /// What we were doing.
        context: String,
        /// The client error.
        source: rdkafka::error::KafkaError,
    },
    /// Kafka turned the runner away or could not be reached, with each server and why.
    #[error(transparent)]
    KafkaAccess(#[from] AccessError),
    /// Cassandra refused or could not be reached.
    #[error("{context}: {message}")]
    CassandraUnavailable {
        /// What we were doing.
        context: String,
        /// The driver's error, rendered.
        message: String,
    },
    /// Provisioning topics or tables failed (standalone mode).
    #[error("provisioning: {0}")]
    Provision(#[from] rtdp_provisioning::ProvisionError),
    /// The HTTP source failed after its retries.
    #[error("source: {0}")]
    Source(String),
    /// A local resource (a port, a file) failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl RunnerError {
    /// A stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RunnerError::Manifest(_) => "InvalidManifest",
            RunnerError::Config(_) => "InvalidConfiguration",
            // A refused login or certificate is the user's to fix, as before the shared check.
            RunnerError::KafkaAccess(AccessError::Refused { .. }) => "InvalidConfiguration",
            RunnerError::KafkaUnavailable { .. } | RunnerError::KafkaAccess(_) => {
                "KafkaUnavailable"
            }
            RunnerError::CassandraUnavailable { .. } => "CassandraUnavailable",
            RunnerError::Provision(error) => error.reason(),
            RunnerError::Source(_) => "SourceFailed",
            RunnerError::Io { .. } => "LocalResource",
        }
    }

    /// The process exit code: 2 for configuration the user must fix, 1 for the rest.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RunnerError::Manifest(_)
            | RunnerError::Config(_)
            | RunnerError::KafkaAccess(AccessError::Refused { .. }) => ExitCode::from(2),
            RunnerError::Provision(error) if error.is_permanent() => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        RunnerError::KafkaUnavailable {
            context: context.into(),
            source,
        }
    }
}
