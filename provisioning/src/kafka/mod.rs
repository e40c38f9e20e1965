//! The Kafka side of a Pipeline: the client settings every component derives from the spec
//! ([`client`]), the access check that says why Kafka cannot be used ([`access`]), and the
//! topic and dead-letter topic ([`topics`], re-exported here), and how far the processors are
//! behind ([`lag`]), moving the group back for a replay ([`rewind`]), and a scheduled source's run ledger
//! ([`runs`]).

pub mod access;
pub mod client;
pub mod lag;
pub mod rewind;
pub mod runs;
mod topics;

pub use access::{AccessError, Refusal, ServerOutcome, ServerProbe, check_access};
pub use client::{Pem, SaslLogin, SecurityProtocol, TlsMaterial, client_config, client_properties};
pub use lag::{GroupLag, PartitionPosition, committed_progress, read_group_lag};
pub use rewind::{RewindTo, Rewound, replay_floor_micros, rewind_group};
pub use runs::{LedgerTail, read_run_ledger};
pub use topics::*;

/// Runs a blocking librdkafka call (`what` names it for errors) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    call: impl FnOnce() -> Result<T, crate::ProvisionError> + Send + 'static,
) -> Result<T, crate::ProvisionError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| crate::ProvisionError::Internal(format!("{what} task failed: {error}")))?
}
