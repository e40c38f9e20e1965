//! The Pipeline's status as a typed value: what each reconcile observed, turned into the
//! conditions the CRD defines (Ready, TopicReady, SchemaReady, RunnerReady, Degraded). Pure;
//! the controller writes the result with server-side apply on the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use rtdp_crds::{Pipeline, PipelineStatus, condition_types, runs};
use serde::Serialize;

/// How one part of the reconcile went: a reason and a message either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The part is as declared.
    Done {
        /// The condition reason.
        reason: &'static str,
        /// What is in place.
        message: String,
    },
    /// The part failed.
    Failed {
        /// The error's reason.
        reason: &'static str,
        /// The error.
        message: String,
    },
}

impl StepOutcome {
    /// A failure from an error.
    pub fn failed(error: &crate::error::Error) -> Self {
        StepOutcome::Failed {
            reason: error.reason(),
            message: error.to_string(),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, StepOutcome::Done { .. })
    }

    fn condition(&self, type_: &'static str) -> DesiredCondition {
        match self {
            StepOutcome::Done { reason, message } => {
                DesiredCondition::new(type_, true, reason, message.clone())
            }
            StepOutcome::Failed { reason, message } => {
                DesiredCondition::new(type_, false, reason, message.clone())
            }
        }
    }

    fn failure(&self) -> Option<(&'static str, &str)> {
        match self {
            StepOutcome::Done { .. } => None,
            StepOutcome::Failed { reason, message } => Some((reason, message)),
        }
    }
}

/// What one reconcile observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The topic and the dead-letter topic.
    pub topics: StepOutcome,
    /// The keyspace and tables.
    pub schema: StepOutcome,
    /// The Kubernetes objects (ConfigMap, workloads, Service).
    pub workloads: StepOutcome,
    /// Processor replicas wanted: declared, autoscaled, or 0 while suspended.
    pub desired_replicas: i32,
    /// `status.replay`: the replay step's report (or the last one, unchanged).
    pub replay: Option<rtdp_crds::ReplayStatus>,
    /// `status.backfill`: the backfill step's report (or the last one, unchanged).
    pub backfill: Option<rtdp_crds::BackfillStatus>,
    /// Processor replicas the Deployment reports as ready.
    pub ready_replicas: i32,
    /// Whether every processor pod runs the current pod template (no rollout under way).
    pub rollout_complete: bool,
    /// Why processor pods are not ready, when a pod says (unschedulable, crash-looping, an
    /// image that cannot be pulled): a reason and a message.
    pub runner_problem: Option<(&'static str, String)>,
    /// A continuous source's ingest Deployment that is not ready: what it reports.
    pub ingest_unready: Option<String>,
}

/// A condition as we want it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// The type.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    pub message: String,
}

impl DesiredCondition {
    /// A condition.
    pub fn new(type_: &'static str, status: bool, reason: &str, message: String) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message,
        }
    }
}

/// The reason of `RunnerReady` and `Ready` when the processors are ready and a continuous
/// source's ingest replica is not.
pub const INGEST_UNAVAILABLE: &str = "IngestUnavailable";

/// The reason of `RunnerReady` and `Ready` while `spec.suspend` is true.
pub const SUSPENDED: &str = "Suspended";

/// The reason of `Ready` and `Degraded` when a scheduled source's last run fetched nothing.
pub const LAST_RUN_FAILED: &str = "LastRunFailed";

/// How every message about the last run starts: the freshness loop looks for it to tell
/// whether the conditions reflect `status.runs` yet (`runs_reflected`).
const LAST_RUN: &str = "the last run";

/// A scheduled source's last run, when it needs attention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunProblem {
    /// `LastRunFailed`, `LastRunPartial` or `RunsSkipped`.
    pub reason: &'static str,
    /// What the run was and what went wrong.
    pub message: String,
    /// Whether it makes the pipeline not ready: a scheduled or catch-up run that fetched
    /// nothing (the tables miss the interval until the next run); a partial or skipped run, or
    /// a failed backfill, only degrades it.
    pub blocks_ready: bool,
}

/// The last run recorded in `status.runs` (the freshness loop's reading of the run ledger),
/// when it did not succeed. Pure.
pub fn last_run_problem(pipeline: &Pipeline) -> Option<RunProblem> {
    let run = pipeline.status.as_ref()?.runs.as_ref()?.recent.first()?;
    if !run.is_failure() {
        return None;
    }
    let reason = match run.outcome.as_str() {
        runs::outcomes::FAILED => LAST_RUN_FAILED,
        runs::outcomes::PARTIAL => "LastRunPartial",
        _ => "RunsSkipped",
    };
    Some(RunProblem {
        reason,
        message: format!(
            "{LAST_RUN} ({} of {}) ended {}: {}",
            run.trigger,
            run.interval,
            run.outcome,
            run.error.as_deref().unwrap_or("no error recorded")
        ),
        blocks_ready: run.outcome == runs::outcomes::FAILED
            && run.trigger != runs::triggers::BACKFILL,
    })
}

/// Whether the reconcile's conditions already say what `status.runs` implies (so the
/// freshness loop, which writes `status.runs`, knows when to ask for a reconcile). Pure.
pub fn runs_reflected(pipeline: &Pipeline) -> bool {
    let degraded = pipeline.condition(condition_types::DEGRADED);
    let shown = degraded.map_or("", |condition| condition.message.as_str());
    match last_run_problem(pipeline) {
        Some(problem) => {
            degraded.is_some_and(|condition| condition.status == "True")
                && shown.contains(&problem.message)
        }
        None => !shown.contains(LAST_RUN),
    }
}

/// The order conditions are listed in.
const ORDER: [&str; 6] = [
    condition_types::READY,
    condition_types::PROVISIONED,
    condition_types::TOPIC_READY,
    condition_types::SCHEMA_READY,
    condition_types::RUNNER_READY,
    condition_types::DEGRADED,
];

/// The status a reconcile's observations amount to. `Ready` means the topics, the schema and
/// the runner workloads are in place and a scheduled source's last run did not fail;
/// `RunnerReady` reports the processor's ready replicas as the Deployment does.
pub fn desired_status(pipeline: &Pipeline, observed: &Observed, now: Timestamp) -> PipelineStatus {
    let desired_replicas = observed.desired_replicas;
    let steps = [&observed.topics, &observed.schema, &observed.workloads];
    let failures: Vec<(&'static str, &str)> =
        steps.iter().filter_map(|step| step.failure()).collect();
    let last_run = last_run_problem(pipeline);
    // Everything that needs attention: the steps' failures, then the last run's.
    let attention: Vec<(&'static str, &str)> = failures
        .iter()
        .copied()
        .chain(
            last_run
                .as_ref()
                .map(|problem| (problem.reason, problem.message.as_str())),
        )
        .collect();

    // Every message, joined: the Degraded condition's and the status' message.
    let message = (!attention.is_empty()).then(|| {
        attention
            .iter()
            .map(|(_, message)| *message)
            .collect::<Vec<_>>()
            .join("; ")
    });
    let provisioned = match failures.first() {
        Some((reason, first)) => DesiredCondition::new(
            condition_types::PROVISIONED,
            false,
            reason,
            (*first).to_string(),
        ),
        None => DesiredCondition::new(
            condition_types::PROVISIONED,
            true,
            "Reconciled",
            "the topics, the schema and the runner workloads are in place".into(),
        ),
    };
    let degraded = match (attention.first(), &message) {
        (Some((reason, _)), Some(all)) => {
            DesiredCondition::new(condition_types::DEGRADED, true, reason, all.clone())
        }
        _ => DesiredCondition::new(
            condition_types::DEGRADED,
            false,
            "AsExpected",
            "no errors".into(),
        ),
    };
    let runner = if let StepOutcome::Failed { reason, message } = &observed.workloads {
        DesiredCondition::new(
            condition_types::RUNNER_READY,
            false,
            reason,
            message.clone(),
        )
    } else if pipeline.spec.suspend {
        DesiredCondition::new(
            condition_types::RUNNER_READY,
            false,
            SUSPENDED,
            format!(
                "suspended by spec.suspend: processors and source stopped, offsets kept ({} processor replicas still ready)",
                observed.ready_replicas
            ),
        )
    } else {
        let mut message = format!(
            "{} of {desired_replicas} processor replicas ready",
            observed.ready_replicas
        );
        // Ready means ready on the current spec: a rollout that cannot finish is not ready,
        // even while the previous pods still run.
        if !observed.rollout_complete {
            message = format!("{message}; the rollout of the current spec is not finished");
        }
        let available = observed.ready_replicas >= desired_replicas && observed.rollout_complete;
        let reason = match &observed.runner_problem {
            _ if available => "ReplicasReady",
            Some((reason, problem)) => {
                message = format!("{message}: {problem}");
                reason
            }
            None => "ReplicasUnavailable",
        };
        // The processors may be ready while the source's ingest replica is not.
        let (available, reason) = match &observed.ingest_unready {
            Some(ingest) => {
                message = format!("{message}; {ingest}");
                (
                    false,
                    if available {
                        INGEST_UNAVAILABLE
                    } else {
                        reason
                    },
                )
            }
            None => (available, reason),
        };
        DesiredCondition::new(condition_types::RUNNER_READY, available, reason, message)
    };
    // Ready: provisioned and available. Otherwise the first reason that stands in the way.
    let ready = if !provisioned.status {
        DesiredCondition::new(
            condition_types::READY,
            false,
            &provisioned.reason,
            provisioned.message.clone(),
        )
    } else if let Some(problem) = last_run
        .as_ref()
        .filter(|problem| runner.status && problem.blocks_ready)
    {
        DesiredCondition::new(
            condition_types::READY,
            false,
            problem.reason,
            format!(
                "{}; the tables miss its interval until a run succeeds",
                problem.message
            ),
        )
    } else if runner.status {
        DesiredCondition::new(
            condition_types::READY,
            true,
            "Available",
            "the topics, the schema and the runner workloads are in place, and every processor replica of the current spec is ready".into(),
        )
    } else if pipeline.spec.suspend {
        DesiredCondition::new(
            condition_types::READY,
            false,
            SUSPENDED,
            "the pipeline is suspended (spec.suspend: true); set it to false to resume".into(),
        )
    } else {
        DesiredCondition::new(
            condition_types::READY,
            false,
            &runner.reason,
            format!("the runner is not available: {}", runner.message),
        )
    };
    let conditions = vec![
        ready,
        provisioned,
        observed.topics.condition(condition_types::TOPIC_READY),
        observed.schema.condition(condition_types::SCHEMA_READY),
        runner,
        degraded,
    ];
    let current = pipeline.status.clone().unwrap_or_default();
    let provisioned = observed.topics.is_done() && observed.schema.is_done();
    PipelineStatus {
        observed_generation: pipeline.metadata.generation,
        conditions: merge_conditions(
            &current.conditions,
            conditions,
            pipeline.metadata.generation,
            now,
        ),
        topic: Some(pipeline.topic_name()),
        dead_letter_topic: Some(pipeline.dead_letter_topic_name()),
        tables: if provisioned || !current.tables.is_empty() {
            pipeline.qualified_table_names()
        } else {
            Vec::new()
        },
        replicas: Some(desired_replicas),
        ready_replicas: Some(observed.ready_replicas),
        message,
        replay: observed.replay.clone(),
        backfill: observed.backfill.clone(),
        // The freshness loop's own (see `reconcile_owned`).
        freshness: None,
        autoscaling: None,
        runs: None,
    }
}

/// The status written as soon as a new generation is seen, before any slow step (a Kafka or
/// Cassandra that does not answer can take many seconds): `Ready=False`, reason
/// `Reconciling`, for this generation, with the topic columns filled in. Other
/// conditions stay as they were until their step reports. Pure.
pub fn reconciling_status(pipeline: &Pipeline, now: Timestamp) -> PipelineStatus {
    let current = pipeline.status.clone().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    PipelineStatus {
        observed_generation: generation,
        conditions: merge_conditions(
            &current.conditions,
            vec![DesiredCondition::new(
                condition_types::READY,
                false,
                "Reconciling",
                format!(
                    "applying generation {}: topics, keyspace and tables, runner workloads",
                    generation.unwrap_or_default()
                ),
            )],
            generation,
            now,
        ),
        topic: Some(pipeline.topic_name()),
        dead_letter_topic: Some(pipeline.dead_letter_topic_name()),
        ..current
    }
}

/// Sets conditions, keeping each one's `lastTransitionTime` unless its status changes, and
/// keeping conditions not mentioned. Listed in a fixed order.
pub fn merge_conditions(
    existing: &[Condition],
    desired: Vec<DesiredCondition>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let mut merged: Vec<Condition> = existing
        .iter()
        .filter(|condition| !desired.iter().any(|wanted| wanted.type_ == condition.type_))
        .cloned()
        .collect();
    for wanted in desired {
        let status = if wanted.status { "True" } else { "False" };
        let previous = existing
            .iter()
            .find(|condition| condition.type_ == wanted.type_);
        let last_transition_time = match previous {
            Some(previous) if previous.status == status => previous.last_transition_time.clone(),
            _ => now.clone(),
        };
        merged.push(Condition {
            type_: wanted.type_.to_string(),
            status: status.to_string(),
            reason: wanted.reason,
            message: wanted.message,
            observed_generation: generation,
            last_transition_time,
        });
    }
    merged.sort_by_key(|condition| {
        ORDER
            .iter()
            .position(|type_| *type_ == condition.type_)
            .unwrap_or(ORDER.len())
    });
    merged
}

/// The conditions whose status or reason changed: each is worth an Event.
pub fn transitions<'a>(before: &[Condition], after: &'a [Condition]) -> Vec<&'a Condition> {
    after
        .iter()
        .filter(|condition| {
            !before.iter().any(|previous| {
                previous.type_ == condition.type_
                    && previous.status == condition.status
                    && previous.reason == condition.reason
            })
        })
        .collect()
}

/// Whether a condition is good news (`Ready=True`, `Degraded=False`, ...).
pub fn is_healthy(condition: &Condition) -> bool {
    (condition.type_ == condition_types::DEGRADED) == (condition.status == "False")
}

/// The part of a status the reconcile owns: all but `freshness`, `autoscaling` and the
/// `Fresh` condition, which the freshness loop writes with its own field manager.
pub fn reconcile_owned(mut status: PipelineStatus) -> PipelineStatus {
    status.freshness = None;
    status.autoscaling = None;
    status.runs = None;
    status
        .conditions
        .retain(|condition| ORDER.contains(&condition.type_.as_str()));
    status
}

/// The body of a server-side apply on the status subresource.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusApply {
    api_version: &'static str,
    kind: &'static str,
    status: PipelineStatus,
}

impl StatusApply {
    /// Wraps a status for applying.
    pub fn new(status: PipelineStatus) -> Self {
        Self {
            api_version: "rtdp.dev/v1alpha1",
            kind: "Pipeline",
            status,
        }
    }
}

#[cfg(test)]
mod tests;
