//! What this process remembers about each Pipeline between reconciles, to spare the API server
//! requests whose answer cannot have changed. At 1 000 Pipelines the API server, not the
//! operator, is what runs out first (`make bench-operator`):
//!
//! - the search for an ingest workload of the other kind (a CronJob left behind when the source
//!   turned continuous, or the reverse) is made once per generation: only a spec change can
//!   leave one behind;
//! - the poll that looks at the processor pods while replicas are missing backs off, 10 s
//!   doubling to 160 s for the same generation; a Deployment's status change (a pod became
//!   ready, or not) still triggers a reconcile at once, through the owned-Deployment watch.
//!
//! Forgotten on restart: each Pipeline is then looked at once more, as before.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kube::ResourceExt;
use rtdp_crds::Pipeline;

/// The first look at missing replicas.
pub(super) const FIRST_NOT_READY_POLL: Duration = Duration::from_secs(10);
/// The longest wait between two looks at missing replicas.
pub(super) const MAX_NOT_READY_POLL: Duration = Duration::from_secs(160);

/// Per Pipeline uid.
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// The generation for which no ingest workload of the other kind is left.
    ingest_kind: Mutex<HashMap<String, Option<i64>>>,
    /// The generation, and the polls of missing replicas in a row for it.
    not_ready: Mutex<HashMap<String, (Option<i64>, u32)>>,
}

impl Memo {
    /// Whether this generation's stale ingest workload was already looked for.
    pub(super) fn ingest_kind_settled(&self, pipeline: &Pipeline) -> bool {
        let Some(uid) = pipeline.uid() else {
            return false;
        };
        lock(&self.ingest_kind).get(&uid) == Some(&pipeline.metadata.generation)
    }

    /// Records that this generation has no ingest workload of the other kind.
    pub(super) fn settle_ingest_kind(&self, pipeline: &Pipeline) {
        if let Some(uid) = pipeline.uid() {
            lock(&self.ingest_kind).insert(uid, pipeline.metadata.generation);
        }
    }

    /// How long to wait before looking at the missing replicas again: 10 s, then twice as
    /// long each time for the same generation, at most 160 s.
    pub(super) fn next_not_ready_poll(&self, pipeline: &Pipeline) -> Duration {
        let Some(uid) = pipeline.uid() else {
            return FIRST_NOT_READY_POLL;
        };
        let mut polls = lock(&self.not_ready);
        let entry = polls
            .entry(uid)
            .or_insert((pipeline.metadata.generation, 0));
        if entry.0 != pipeline.metadata.generation {
            *entry = (pipeline.metadata.generation, 0);
        }
        let wait = FIRST_NOT_READY_POLL
            .saturating_mul(2_u32.saturating_pow(entry.1))
            .min(MAX_NOT_READY_POLL);
        entry.1 = entry.1.saturating_add(1);
        wait
    }

    /// Every replica is ready: the next shortage starts polling at 10 s again.
    pub(super) fn replicas_ready(&self, pipeline: &Pipeline) {
        if let Some(uid) = pipeline.uid() {
            lock(&self.not_ready).remove(&uid);
        }
    }

    /// Forgets a deleted Pipeline.
    pub(super) fn forget(&self, uid: &str) {
        lock(&self.ingest_kind).remove(uid);
        lock(&self.not_ready).remove(uid);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::generated;

    #[test]
    fn the_stale_ingest_search_is_made_once_per_generation() {
        let memo = Memo::default();
        let mut pipeline = generated();
        assert!(!memo.ingest_kind_settled(&pipeline));
        memo.settle_ingest_kind(&pipeline);
        assert!(memo.ingest_kind_settled(&pipeline));
        pipeline.metadata.generation = Some(7);
        assert!(
            !memo.ingest_kind_settled(&pipeline),
            "a new spec looks again"
        );
        memo.settle_ingest_kind(&pipeline);
        memo.forget(&pipeline.uid().expect("a uid"));
        assert!(!memo.ingest_kind_settled(&pipeline));
    }

    #[test]
    fn missing_replicas_are_polled_less_and_less_often_until_ready() {
        let memo = Memo::default();
        let mut pipeline = generated();
        let waits: Vec<u64> = (0..7)
            .map(|_| memo.next_not_ready_poll(&pipeline).as_secs())
            .collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 160, 160]);
        memo.replicas_ready(&pipeline);
        assert_eq!(memo.next_not_ready_poll(&pipeline).as_secs(), 10);
        assert_eq!(memo.next_not_ready_poll(&pipeline).as_secs(), 20);
        pipeline.metadata.generation = Some(9);
        assert_eq!(
            memo.next_not_ready_poll(&pipeline).as_secs(),
            10,
            "a new spec starts over"
        );
    }
}
