//! The runner's integration tests, one binary (`cargo test -p pipeline-runner --test it`; one module per
//! area). `cassandra_outage` and `kafka_outage` stay binaries of their own: they stop a shared server,
//! and cargo runs binaries one after another, so nothing else talks to it meanwhile.

mod common;

mod backfill;
mod decimals;
mod endpoints;
mod identity;
mod local_stack;
mod pipeline;
mod rebalance;
mod secured;
mod sources;
mod write_bounds;
mod write_semantics;
