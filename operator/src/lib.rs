//! The RTDP operator: reconciles `Pipeline`s (rtdp.dev/v1alpha1) into Kafka topics, a
//! Cassandra keyspace and tables, and the runner's Kubernetes workloads.
//!
//! - [`controller`]: the reconcile pipeline (fetch → validate → build → apply → status) and
//!   the finalizer;
//! - [`resources`]: pure builders of the owned Kubernetes objects;
//! - [`kafka`], [`cassandra`]: the external resources, through `rtdp-provisioning`, with
//!   clients shared per cluster in a [`client_cache`];
//! - [`status`]: typed conditions;
//! - [`events`]: Events, one per distinct message;
//! - [`leader`]: Lease-based leader election;
//! - [`metrics`]: Prometheus metrics, `/healthz`;
//! - [`uninstall`]: the check the chart's pre-delete hook runs;
//! - [`webhook`]: the validating admission webhook (every replica serves it);
//! - [`error`]: the error type, its reasons and which errors are permanent.

pub mod cassandra;
pub mod client_cache;
pub mod controller;
pub mod digest;
pub mod error;
pub mod events;
pub mod kafka;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod resources;
pub mod secrets;
pub mod status;
pub mod uninstall;
pub mod webhook;

pub use error::{Error, Result};
