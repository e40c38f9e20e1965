//! Provisioning a Pipeline's resources outside Kubernetes — Kafka topics and the Cassandra
//! keyspace and tables — shared by the operator (reconcile) and the runner's standalone mode,
//! so both create exactly the same things.

pub mod cassandra;
pub mod kafka;

/// Why provisioning failed. Each variant maps to a condition reason and a metric label.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Kafka refused or could not be reached.
    #[error("{context}: {source}")]
    Kafka {
        /// What we were doing.
        context: String,
        /// The client error.
        source: rdkafka::error::KafkaError,
    },
    /// Cassandra refused or could not be reached.
    #[error("{context}: {message}")]
    Cassandra {
        /// What we were doing.
        context: String,
        /// The driver's error, rendered (its error types differ per operation).
        message: String,
    },
    /// The topic needs a change Kafka cannot make in place.
    #[error("topic {topic} {message}")]
    TopicNotSupported {
        /// The topic.
        topic: String,
        /// What and why.
        message: String,
    },
    /// Kafka turned the client away or could not be reached; says which servers and why.
    #[error(transparent)]
    KafkaAccess(#[from] kafka::AccessError),
    /// The tables need a change that would lose data or break readers; nothing was altered.
    #[error("incompatible schema change refused, nothing altered: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    IncompatibleSchema(Vec<cassandra::IncompatibleChange>),
    /// `spec.cassandra.localDatacenter` names no datacenter of the (reachable) cluster.
    #[error(
        "spec.cassandra.localDatacenter {name:?} is not a datacenter of the Cassandra cluster, \
         whose datacenters are: {}", known.join(", ")
    )]
    UnknownDatacenter {
        /// The name the Pipeline gives.
        name: String,
        /// The datacenters the cluster reports.
        known: Vec<String>,
    },
    /// A bug or a runtime failure of ours.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProvisionError {
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn cassandra(context: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Cassandra {
            context: context.into(),
            message: error.to_string(),
        }
    }

    /// The reason for conditions, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ProvisionError::Kafka { .. } | ProvisionError::KafkaAccess(_) => "KafkaUnavailable",
            ProvisionError::Cassandra { .. } => "CassandraUnavailable",
            ProvisionError::TopicNotSupported { .. } => "NotSupported",
            ProvisionError::IncompatibleSchema(_) => "IncompatibleSchemaChange",
            ProvisionError::UnknownDatacenter { .. } => "UnknownDatacenter",
            ProvisionError::Internal(_) => "InternalError",
        }
    }

    /// Permanent errors wait for a spec change; the others are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ProvisionError::TopicNotSupported { .. }
                | ProvisionError::IncompatibleSchema(_)
                | ProvisionError::UnknownDatacenter { .. }
        )
    }
}
