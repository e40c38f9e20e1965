//! The Kafka side of a Pipeline: the client settings every component derives from the spec
//! ([`client`]), the access check that says why Kafka cannot be used ([`access`]), and the
//! topic and dead-letter topic ([`topics`], re-exported here), and how far the processors are
//! behind ([`lag`]), and moving the group back for a replay ([`rewind`]).

pub mod access;
pub mod client;
pub mod lag;
pub mod rewind;
mod topics;

pub use access::{AccessError, Refusal, ServerOutcome, ServerProbe, check_access};
pub use client::{Pem, SaslLogin, SecurityProtocol, TlsMaterial, client_config, client_properties};
pub use lag::{GroupLag, PartitionPosition, read_group_lag};
pub use rewind::{RewindTo, Rewound, rewind_group};
pub use topics::*;
