//! Retry policies, one place for all of them (backon: a maintained, runtime-agnostic retry
//! crate that kube-runtime already brings in, so it costs no new dependency tree).

use std::time::Duration;

use backon::ExponentialBuilder;

/// Retries for as long as it takes, doubling the wait from `first` up to `longest`, with
/// jitter so that many runners do not retry in lockstep. For failures that only end when a
/// server comes back (a write to Cassandra, a dead letter to Kafka): giving up would lose the
/// record, so the caller pauses and the policy waits.
pub fn until_it_works(first: Duration, longest: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(longest)
        .with_jitter()
        .without_max_times()
}
