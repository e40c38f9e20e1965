//! The operator's errors. Each has a `reason()` — the label on the failure metric, the reason
//! of the Warning event and of the condition it sets — and is either permanent (wait for the
//! next change of the Pipeline) or transient (retry with per-object exponential backoff).

use rtdp_provisioning::ProvisionError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or could not be reached.
    #[error("{context}: {source}")]
    Kube {
        /// What we were doing.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Kafka or Cassandra provisioning failed.
    #[error("{0}")]
    Provision(#[from] ProvisionError),
    /// The Pipeline cannot be turned into objects (the CRD's validation is not enough).
    #[error("invalid Pipeline: {0}")]
    InvalidSpec(String),
    /// A Secret (or one of its keys) the Pipeline refers to is missing.
    #[error("secret {namespace}/{name}: {message}")]
    Secret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Removing the finalizer waits on an external resource that keeps failing.
    #[error("{0}")]
    CleanupBlocked(String),
    /// A bug or a runtime failure of ours.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a Kubernetes client error with what we were doing.
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source,
        }
    }

    /// The reason for conditions, events and the failure metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesApiError",
            Error::Provision(error) => error.reason(),
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Secret { .. } => "SecretUnavailable",
            Error::CleanupBlocked(_) => "CleanupBlocked",
            Error::Internal(_) => "InternalError",
        }
    }

    /// Permanent errors wait for the next change of the Pipeline; the others are retried with
    /// exponential backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Provision(error) => error.is_permanent(),
            Error::InvalidSpec(_) => true,
            Error::Kube { .. }
            | Error::Secret { .. }
            | Error::CleanupBlocked(_)
            | Error::Internal(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_permanence() {
        let invalid = Error::InvalidSpec("name too long".into());
        assert_eq!(invalid.reason(), "InvalidSpec");
        assert!(invalid.is_permanent());

        let refused = Error::from(ProvisionError::TopicNotSupported {
            topic: "t".into(),
            message: "cannot shrink".into(),
        });
        assert_eq!(refused.reason(), "NotSupported");
        assert!(refused.is_permanent());

        let unavailable = Error::from(ProvisionError::Cassandra {
            context: "connecting".into(),
            message: "refused".into(),
        });
        assert_eq!(unavailable.reason(), "CassandraUnavailable");
        assert!(!unavailable.is_permanent());

        let secret = Error::Secret {
            namespace: "ns".into(),
            name: "creds".into(),
            message: "not found".into(),
        };
        assert_eq!(secret.reason(), "SecretUnavailable");
        assert!(!secret.is_permanent());
        assert_eq!(secret.to_string(), "secret ns/creds: not found");
    }
}
