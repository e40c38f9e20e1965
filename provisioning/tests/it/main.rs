//! The provisioning crate's integration tests against the real Kafka and Cassandra, one binary.

mod kafka_access;
mod lag;
mod real_servers;
