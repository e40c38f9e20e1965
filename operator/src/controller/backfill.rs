//! Backfills (`spec.backfill`): one Job per interval of the source's schedule within the
//! range, started in order, at most `parallelism` in flight; `status.backfill` counts them,
//! with Events at the start and the end. A backfill removed from the spec, or replaced by a new
//! `id`, is cancelled: its Jobs (and their pods) are deleted. Run by the reconcile after the
//! workloads are applied (the Jobs mount the runner's ConfigMap); the controller watches the
//! Jobs it owns, so a Job finishing starts the next one.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::EventType;
use rtdp_crds::{BackfillStatus, Pipeline};

use super::{Context, apply};
use crate::error::{Error, Result};
use crate::resources::PIPELINE_LABEL;
use crate::resources::backfill::{BACKFILL_LABEL, BackfillJobs, INDEX_ANNOTATION};

/// How soon to look again while Jobs run (their changes also trigger a reconcile).
pub(super) const POLL: Duration = Duration::from_secs(10);

/// The state names of `status.backfill.state`.
pub(crate) mod states {
    pub(crate) const RUNNING: &str = "Running";
    pub(crate) const COMPLETED: &str = "Completed";
    pub(crate) const FAILED: &str = "Failed";
    pub(crate) const CANCELLED: &str = "Cancelled";
}

/// Where one interval's Job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Created, not finished (pending, running or retrying).
    Running,
    /// Its pass succeeded.
    Succeeded,
    /// It failed after its retries.
    Failed,
}

/// The next step of a backfill, from the state of its Jobs. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Advance {
    /// The intervals whose Job to start now, in order.
    pub(crate) start: Vec<usize>,
    /// The status counts after starting them.
    pub(crate) succeeded: usize,
    /// Intervals whose Job failed.
    pub(crate) failed: Vec<usize>,
    /// Jobs in flight, including those started now.
    pub(crate) running: usize,
}

impl Advance {
    /// Whether every interval's Job finished.
    pub(crate) fn finished(&self, intervals: usize) -> bool {
        self.running == 0 && self.succeeded + self.failed.len() == intervals
    }
}

/// Which intervals to start: the first ones without a Job, in order, while fewer than
/// `parallelism` run. Pure.
pub(crate) fn advance(
    intervals: usize,
    parallelism: usize,
    jobs: &BTreeMap<usize, JobState>,
) -> Advance {
    let running = jobs
        .values()
        .filter(|state| **state == JobState::Running)
        .count();
    let start: Vec<usize> = (0..intervals)
        .filter(|index| !jobs.contains_key(index))
        .take(parallelism.saturating_sub(running))
        .collect();
    Advance {
        succeeded: jobs
            .values()
            .filter(|state| **state == JobState::Succeeded)
            .count(),
        failed: jobs
            .iter()
            .filter(|(_, state)| **state == JobState::Failed)
            .map(|(index, _)| *index)
            .collect(),
        running: running + start.len(),
        start,
    }
}

/// A Job's state from its conditions (as the Job controller sets them).
fn job_state(job: &Job) -> JobState {
    let holds = |type_: &str| {
        job.status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == type_ && condition.status == "True")
            })
    };
    if holds("Complete") {
        JobState::Succeeded
    } else if holds("Failed") {
        JobState::Failed
    } else {
        JobState::Running
    }
}

/// Advances the Pipeline's backfill: cancels Jobs of any other backfill, starts the next
/// intervals, and returns `status.backfill` (unchanged without a backfill to run) and
/// whether Jobs are still in flight.
pub(super) async fn step(
    pipeline: &Pipeline,
    context: &Context,
    backfill: Option<&BackfillJobs>,
) -> Result<(Option<BackfillStatus>, bool)> {
    let current = pipeline
        .status
        .as_ref()
        .and_then(|status| status.backfill.clone());
    // A Pipeline that never had a backfill has no Jobs to look at: no request per reconcile.
    if backfill.is_none() && current.is_none() {
        return Ok((None, false));
    }
    let namespace = pipeline.namespace_or_default();
    let api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let selector = format!("{PIPELINE_LABEL}={},{BACKFILL_LABEL}", pipeline.name_any());
    let listed = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| Error::kube(format!("listing the backfill Jobs in {namespace}"), error))?;
    let wanted = backfill.map(|backfill| backfill.id.as_str());

    // Jobs of a backfill no longer declared: cancelled (deleted, with their pods).
    let mut cancelled_running = false;
    let mut jobs: BTreeMap<usize, JobState> = BTreeMap::new();
    for job in &listed.items {
        let id = job.labels().get(BACKFILL_LABEL).map(String::as_str);
        if id == wanted {
            if let Some(index) = job
                .annotations()
                .get(INDEX_ANNOTATION)
                .and_then(|index| index.parse().ok())
            {
                jobs.insert(index, job_state(job));
            }
            continue;
        }
        cancelled_running |= job_state(job) == JobState::Running;
        let name = job.name_any();
        api.delete(&name, &DeleteParams::background())
            .await
            .map_err(|error| {
                Error::kube(
                    format!("deleting Job {namespace}/{name} of a cancelled backfill"),
                    error,
                )
            })?;
    }
    let cancelled = current
        .clone()
        .filter(|status| Some(status.id.as_str()) != wanted && status.state == states::RUNNING)
        .filter(|_| cancelled_running || backfill.is_none());
    if let Some(mut status) = cancelled.clone() {
        status.state = states::CANCELLED.into();
        status.running = 0;
        status.message = "removed from the spec before it finished; its Jobs were deleted".into();
        publish(
            pipeline,
            context,
            EventType::Normal,
            "BackfillCancelled",
            &status,
        )
        .await;
        if backfill.is_none() {
            return Ok((Some(status), false));
        }
    }
    let Some(backfill) = backfill else {
        return Ok((current, false));
    };
    // Each id runs once: a finished backfill stays finished, even if its Jobs are deleted.
    let finished_before = current.as_ref().filter(|status| {
        status.id == backfill.id
            && (status.state == states::COMPLETED || status.state == states::FAILED)
    });
    if let Some(finished) = finished_before {
        return Ok((Some(finished.clone()), false));
    }

    let total = backfill.intervals.len();
    let next = advance(total, backfill.parallelism, &jobs);
    for index in &next.start {
        let Some(job) = backfill.job(*index) else {
            continue;
        };
        apply::apply(context, &namespace, &job).await?;
    }
    let finished = next.finished(total);
    let state = match (finished, next.failed.is_empty()) {
        (false, _) => states::RUNNING,
        (true, true) => states::COMPLETED,
        (true, false) => states::FAILED,
    };
    let message = if next.failed.is_empty() {
        format!("{} of {total} intervals done", next.succeeded)
    } else {
        let failed: Vec<String> = next
            .failed
            .iter()
            .take(5)
            .filter_map(|index| backfill.intervals.get(*index))
            .map(ToString::to_string)
            .collect();
        format!(
            "{} of {total} intervals done; failed after their retries: {}{} (kubectl logs job/<name>)",
            next.succeeded,
            failed.join(", "),
            if next.failed.len() > 5 { ", ..." } else { "" }
        )
    };
    let status = BackfillStatus {
        id: backfill.id.clone(),
        state: state.into(),
        intervals: saturating_i32(total),
        succeeded: saturating_i32(next.succeeded),
        failed: saturating_i32(next.failed.len()),
        running: saturating_i32(next.running),
        message,
    };
    let previous = current.filter(|status| status.id == backfill.id);
    let previous_state = previous.as_ref().map(|status| status.state.as_str());
    if previous_state.is_none() {
        publish(
            pipeline,
            context,
            EventType::Normal,
            "BackfillStarted",
            &status,
        )
        .await;
    }
    if finished && previous_state != Some(state) {
        let (type_, reason) = if state == states::COMPLETED {
            (EventType::Normal, "BackfillCompleted")
        } else {
            (EventType::Warning, "BackfillFailed")
        };
        publish(pipeline, context, type_, reason, &status).await;
    }
    Ok((Some(status), !finished))
}

fn saturating_i32(count: usize) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

async fn publish(
    pipeline: &Pipeline,
    context: &Context,
    type_: EventType,
    reason: &str,
    status: &BackfillStatus,
) {
    context
        .recorder
        .publish_about(
            pipeline,
            type_,
            reason,
            "Backfill",
            format!("backfill {}: {}", status.id, status.message),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::{Failed, Running, Succeeded};

    #[test]
    fn intervals_start_in_order_within_the_parallelism() {
        let none = BTreeMap::new();
        assert_eq!(advance(7, 2, &none).start, vec![0, 1]);
        let jobs = BTreeMap::from([(0, Succeeded), (1, Running)]);
        let next = advance(7, 2, &jobs);
        assert_eq!((next.start.clone(), next.running), (vec![2], 2));
        assert!(!next.finished(7));
        // Two running already: nothing more starts.
        let jobs = BTreeMap::from([(0, Running), (1, Running)]);
        assert!(advance(7, 2, &jobs).start.is_empty());
    }

    #[test]
    fn a_failed_interval_does_not_stop_the_others_and_is_reported() {
        let jobs = BTreeMap::from([(0, Succeeded), (1, Failed), (2, Succeeded)]);
        let next = advance(3, 1, &jobs);
        assert!(next.start.is_empty());
        assert_eq!(next.failed, vec![1]);
        assert_eq!(next.succeeded, 2);
        assert!(next.finished(3));
        let jobs = BTreeMap::from([(0, Failed)]);
        assert_eq!(
            advance(3, 1, &jobs).start,
            vec![1],
            "the next interval runs"
        );
    }
}
