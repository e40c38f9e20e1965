//! When Kafka and Cassandra were last checked for a Pipeline. Every change of an owned object
//! (a Deployment's status, a ConfigMap edit) triggers a reconcile; those must not each turn
//! into Kafka admin and Cassandra schema round trips. The topics and tables are checked again
//! when the spec changes (a new generation), when the last check failed, and at least once per
//! resync period (drift made by hand is set back then).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use rtdp_crds::Pipeline;

/// The last successful check of each Pipeline's topics and tables, by uid.
#[derive(Debug, Default)]
pub(super) struct ExternalChecks {
    verified: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl ExternalChecks {
    /// Whether the topics and tables of this generation were found as declared less than
    /// `within` ago.
    pub(super) fn is_fresh(&self, pipeline: &Pipeline, within: Duration) -> bool {
        let Some(uid) = pipeline.uid() else {
            return false;
        };
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&uid)
            .is_some_and(|(generation, at)| {
                *generation == pipeline.metadata.generation && at.elapsed() < within
            })
    }

    /// Records that the topics and tables of this generation are as declared.
    pub(super) fn verified(&self, pipeline: &Pipeline) {
        if let Some(uid) = pipeline.uid() {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uid, (pipeline.metadata.generation, Instant::now()));
        }
    }

    /// Forgets a Pipeline: its next reconcile checks again.
    pub(super) fn forget(&self, uid: &str) {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::generated;

    #[test]
    fn fresh_only_for_the_same_generation_and_within_the_period() {
        let checks = ExternalChecks::default();
        let mut pipeline = generated();
        let period = Duration::from_secs(60);
        assert!(!checks.is_fresh(&pipeline, period));
        checks.verified(&pipeline);
        assert!(checks.is_fresh(&pipeline, period));
        assert!(!checks.is_fresh(&pipeline, Duration::ZERO));
        pipeline.metadata.generation = Some(2);
        assert!(!checks.is_fresh(&pipeline, period), "a new spec is checked");
        checks.verified(&pipeline);
        checks.forget(&pipeline.uid().expect("a uid"));
        assert!(!checks.is_fresh(&pipeline, period));
    }
}
