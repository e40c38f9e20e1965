//! The RTDP data plane. The binary (`pipeline-runner`) runs a Pipeline's roles: ingest
//! (source → Kafka), process (Kafka → Cassandra) and standalone (both, no Kubernetes).
//! The record logic is pure and public so tests and the fuzz target reach it directly.

pub mod connect;
pub mod error;
pub mod ingest;
pub mod kafka;
pub mod process;
pub mod record;
pub mod retry;
pub mod shutdown;
pub mod standalone;
pub mod telemetry;
pub mod transform;
