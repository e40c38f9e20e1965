//! One reconcile, step by step: finalizer → validate and build (pure) → "Reconciling" for a
//! new generation → topics → schema → Kubernetes objects → runner health → status. Each step
//! reports its own outcome, so one failing server does not hide what the others did.

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use rtdp_crds::{DeletionPolicy, Pipeline, condition_types};
use rtdp_provisioning::cassandra::SchemaReport;
use rtdp_provisioning::kafka::TopicReport;

use super::{
    Context, Step, apply, autoscaler, backfill, cleanup, replay, runner_health, status_update,
    test_hooks, validate,
};
use crate::error::{Error, Result};
use crate::events::Change;
use crate::metrics::ReconcileStep;
use crate::resources;
use crate::status::{self, Observed, StepOutcome};

/// The workloads' reason while a refused schema change holds them at the last accepted spec.
pub(super) const HELD_AT_LAST_ACCEPTED_SPEC: &str = "HeldAtLastAcceptedSpec";

pub(super) async fn reconcile_pipeline(pipeline: &Pipeline, context: &Context) -> Result<Action> {
    if pipeline.metadata.deletion_timestamp.is_some() {
        return cleanup::cleanup(pipeline, context).await;
    }
    // Validate (pure) before anything with a side effect: an invalid Pipeline gets no
    // finalizer, and is never rewound, scaled or applied.
    if let Err(error) = validate(pipeline) {
        return report_invalid(pipeline, context, error).await;
    }
    // The finalizer guards only what deletion drops: the topics and tables.
    let finalizer = match pipeline.spec.deletion_policy {
        DeletionPolicy::Delete => cleanup::ensure_finalizer(pipeline, context, true).await,
        DeletionPolicy::Retain => cleanup::ensure_finalizer(pipeline, context, false).await,
    };
    if let Err(error) = finalizer {
        context
            .report_error(pipeline, "UpdateFinalizer", &error)
            .await;
        return Err(error);
    }

    // Build (pure), with the autoscaler's replicas when it scales the processors.
    let autoscaled = pipeline.spec.runner.autoscaling.as_ref().map(|spec| {
        let decided = pipeline
            .metadata
            .uid
            .as_deref()
            .and_then(|uid| context.autoscaler.decided(uid));
        autoscaler::current_replicas(pipeline, spec, decided)
    });
    // A pending replay holds the processors at zero until the offsets are moved.
    let replay = replay::step(pipeline, context).await;
    let hold_processors = replay.hold_processors;
    let desired_replicas = if hold_processors {
        0
    } else {
        resources::processor::replicas(pipeline, autoscaled)
    };
    let desired =
        match resources::desired_objects(pipeline, &context.settings.build, desired_replicas) {
            Ok(desired) => desired,
            Err(error) => return report_invalid(pipeline, context, error).await,
        };

    // A generation not reported yet says so at once, before the slow steps.
    let reported = pipeline
        .status
        .as_ref()
        .and_then(|status| status.observed_generation);
    if reported != pipeline.metadata.generation {
        status_update::apply_status(
            pipeline,
            context,
            status::reconciling_status(pipeline, Timestamp::now()),
        )
        .await?;
    }

    // Apply: the topics, the schema and the Kubernetes objects, each reported on its own. The
    // topics and tables are checked for a new generation, after a failure, and once per resync
    // period; the many reconciles an owned object's changes trigger in between skip them.
    let mut steps = Steps {
        pipeline,
        context,
        errors: Vec::new(),
    };
    let (topics, schema) = if context.external.is_fresh(pipeline, context.settings.resync) {
        (topics_done(pipeline), schema_as_reported(pipeline))
    } else {
        context.metrics.external_check();
        let ensured = context
            .metrics
            .timed(
                ReconcileStep::Topics,
                context.kafka.ensure(&context.client, pipeline),
            )
            .await;
        let topics = steps.settle("EnsureTopics", ensured, topic_changes, |pipeline, _| {
            topics_done(pipeline)
        });
        let topics = topics.await;
        test_hooks::pause_after(context, Step::Topics).await;
        let ensured = context
            .metrics
            .timed(
                ReconcileStep::Schema,
                context.cassandra.ensure(&context.client, pipeline, || {
                    context.replication_owner(pipeline)
                }),
            )
            .await;
        let schema = steps.settle("EnsureSchema", ensured, schema_changes, schema_done);
        let schema = schema.await;
        if steps.errors.is_empty() {
            context.external.verified(pipeline);
        } else if let Some(uid) = pipeline.metadata.uid.as_deref() {
            context.external.forget(uid);
        }
        (topics, schema)
    };
    test_hooks::pause_after(context, Step::Schema).await;
    let mut replicas = apply::ProcessorReplicas::default();
    let backfill_jobs = desired.backfill.clone();
    // A refused schema change holds the runner at the last accepted spec: processors given
    // the new types would dead-letter every record Cassandra then refuses.
    let schema_refused = steps.errors.iter().any(|error| {
        matches!(
            error,
            Error::Provision(rtdp_provisioning::ProvisionError::IncompatibleSchema(_))
        )
    });
    let workloads = if schema_refused {
        StepOutcome::Failed {
            reason: HELD_AT_LAST_ACCEPTED_SPEC,
            message: "runner workloads not updated: the processors keep the last accepted spec (ConfigMap and image) until the schema change is reverted or made compatible".into(),
        }
    } else {
        let applied = context
            .metrics
            .timed(
                ReconcileStep::Workloads,
                apply::apply_objects(pipeline, context, desired),
            )
            .await;
        match applied {
            Ok(observed) => {
                replicas = observed;
                StepOutcome::Done {
                    reason: "WorkloadsApplied",
                    message: "runner ConfigMap, workloads and metrics Service applied".into(),
                }
            }
            Err(error) => steps.failed("ApplyWorkloads", error).await,
        }
    };
    test_hooks::pause_after(context, Step::Workloads).await;
    let (backfill, backfill_running) = if matches!(workloads, StepOutcome::Done { .. }) {
        suspension_events(pipeline, context).await;
        // The backfill's Jobs mount the runner's ConfigMap: started once it is applied.
        let progress = context
            .metrics
            .timed(
                ReconcileStep::Backfill,
                backfill::step(pipeline, context, backfill_jobs.as_ref()),
            )
            .await;
        match progress {
            Ok(progress) => progress,
            Err(error) => {
                steps.failed("Backfill", error).await;
                (current_backfill(pipeline), false)
            }
        }
    } else {
        (current_backfill(pipeline), false)
    };
    // As `kubectl rollout status` judges it: every pod on the current template, and enough
    // of them ready. Pods of an old template still running mean the rollout is not done.
    // A continuous source's ingest replica counts too: without it nothing arrives.
    let all_ready = replicas.ready >= desired_replicas
        && replicas.updated >= desired_replicas
        && replicas.total <= replicas.updated
        && replicas.ingest_unready.is_none();
    let runner_problem = if all_ready {
        context.memo.replicas_ready(pipeline);
        None
    } else {
        context
            .metrics
            .timed(
                ReconcileStep::RunnerHealth,
                runner_health::runner_problem(pipeline, context),
            )
            .await
    };
    if let Some((reason, message)) = &runner_problem {
        context
            .recorder
            .publish_about(
                pipeline,
                EventType::Warning,
                reason,
                "RunProcessors",
                message.clone(),
            )
            .await;
    }

    let observed = Observed {
        topics,
        schema,
        workloads,
        desired_replicas,
        replay: replay.status,
        backfill,
        ready_replicas: replicas.ready,
        rollout_complete: replicas.updated >= desired_replicas
            && replicas.total <= replicas.updated,
        runner_problem,
        ingest_unready: replicas.ingest_unready.clone(),
    };
    let mut errors = steps.errors;
    let written = context
        .metrics
        .timed(
            ReconcileStep::Status,
            status_update::write_status(pipeline, context, &observed, &errors),
        )
        .await;
    written?;

    // A transient error is retried with backoff even when another error is permanent.
    match errors.iter().position(|error| !error.is_permanent()) {
        Some(index) => Err(errors.swap_remove(index)),
        None if !errors.is_empty() => Err(errors.swap_remove(0)),
        // A replay waits for the processors to stop: look again soon.
        None if hold_processors => Ok(Action::requeue(replay::POLL)),
        // Backfill Jobs in flight: their changes trigger a reconcile; this is the safety net.
        None if backfill_running => Ok(Action::requeue(backfill::POLL)),
        // Pods are not watched: while replicas are missing, look again soon.
        None if !all_ready => Ok(Action::requeue(context.memo.next_not_ready_poll(pipeline))),
        None => Ok(Action::requeue(context.settings.resync)),
    }
}

/// A spec that cannot be built: reported as the reason of every step, with the replay and
/// backfill left as they were (nothing was done); the error waits for a change.
async fn report_invalid(pipeline: &Pipeline, context: &Context, error: Error) -> Result<Action> {
    context.report_error(pipeline, "Validate", &error).await;
    let failed = StepOutcome::failed(&error);
    let observed = Observed {
        topics: failed.clone(),
        schema: failed.clone(),
        workloads: failed,
        desired_replicas: resources::processor::replicas(pipeline, None),
        replay: pipeline
            .status
            .as_ref()
            .and_then(|status| status.replay.clone()),
        backfill: current_backfill(pipeline),
        ready_replicas: 0,
        rollout_complete: false,
        runner_problem: None,
        ingest_unready: None,
    };
    status_update::write_status(pipeline, context, &observed, std::slice::from_ref(&error)).await?;
    Err(error)
}

/// `status.backfill` as it stands, for steps that do not advance the backfill.
fn current_backfill(pipeline: &Pipeline) -> Option<rtdp_crds::BackfillStatus> {
    pipeline
        .status
        .as_ref()
        .and_then(|status| status.backfill.clone())
}

/// The topic step's outcome when the topics exist as declared.
fn topics_done(pipeline: &Pipeline) -> StepOutcome {
    StepOutcome::Done {
        reason: "TopicsReady",
        message: format!(
            "topics {} and {} exist as declared",
            pipeline.topic_name(),
            pipeline.dead_letter_topic_name()
        ),
    }
}

/// The schema step's outcome when the keyspace and tables exist as declared.
fn schema_done(pipeline: &Pipeline, report: &SchemaReport) -> StepOutcome {
    let tables = format!(
        "keyspace {} and tables {} exist as declared",
        pipeline.spec.cassandra.keyspace.name,
        pipeline.qualified_table_names().join(", ")
    );
    match &report.replication_left {
        None => StepOutcome::Done {
            reason: "SchemaReady",
            message: tables,
        },
        Some(left) => StepOutcome::Done {
            reason: REPLICATION_OWNED_ELSEWHERE,
            message: format!(
                "{tables}; the keyspace's replication is not this Pipeline's to set: {left}"
            ),
        },
    }
}

/// The schema step's outcome when it was not checked this time: as the last check found it
/// (a keyspace whose replication another Pipeline owns stays reported as such).
fn schema_as_reported(pipeline: &Pipeline) -> StepOutcome {
    let previous = pipeline
        .condition(condition_types::SCHEMA_READY)
        .filter(|condition| condition.reason == REPLICATION_OWNED_ELSEWHERE);
    match previous {
        Some(condition) => StepOutcome::Done {
            reason: REPLICATION_OWNED_ELSEWHERE,
            message: condition.message.clone(),
        },
        None => schema_done(pipeline, &SchemaReport::default()),
    }
}

/// The schema step's reason when another Pipeline owns the shared keyspace's replication and
/// this one declares another.
const REPLICATION_OWNED_ELSEWHERE: &str = "ReplicationOwnedElsewhere";

/// A Normal event when the workloads were just stopped or started again by `spec.suspend`,
/// judged against the status the previous reconcile wrote.
async fn suspension_events(pipeline: &Pipeline, context: &Context) {
    let was_suspended = pipeline
        .condition(condition_types::RUNNER_READY)
        .is_some_and(|condition| condition.reason == status::SUSPENDED);
    let (reason, note) = match (was_suspended, pipeline.spec.suspend) {
        (false, true) => (
            "Suspended",
            "suspended: processors scaled to zero and the source stopped; the consumer group's offsets are kept",
        ),
        (true, false) => (
            "Resumed",
            "resumed: processors and source started again, from the first record not yet stored",
        ),
        _ => return,
    };
    context
        .recorder
        .publish_about(pipeline, EventType::Normal, reason, "Suspend", note.into())
        .await;
}

/// What the apply steps share: the Pipeline, the context, and the errors met so far.
struct Steps<'reconcile> {
    pipeline: &'reconcile Pipeline,
    context: &'reconcile Context,
    errors: Vec<Error>,
}

impl Steps<'_> {
    /// An external step's outcome: on success its changes become Normal events and `done` its
    /// outcome; on failure the error is reported and kept for the reconcile's result.
    async fn settle<Report>(
        &mut self,
        action: &str,
        result: Result<Report, Error>,
        changes: for<'report> fn(&'report Report) -> Vec<Change<'report>>,
        done: fn(&Pipeline, &Report) -> StepOutcome,
    ) -> StepOutcome {
        match result {
            Ok(report) => {
                let changes = changes(&report);
                self.context.recorder.changes(self.pipeline, &changes).await;
                done(self.pipeline, &report)
            }
            Err(error) => self.failed(action, error).await,
        }
    }

    /// A failed step: reported as a Warning event and a metric, kept for the result.
    async fn failed(&mut self, action: &str, error: Error) -> StepOutcome {
        self.context
            .report_error(self.pipeline, action, &error)
            .await;
        let outcome = StepOutcome::failed(&error);
        self.errors.push(error);
        outcome
    }
}

/// The Normal events a topic step's changes deserve.
fn topic_changes(report: &TopicReport) -> Vec<Change<'_>> {
    vec![
        Change::new("TopicCreated", "created", &report.created),
        Change::new(
            "PartitionsIncreased",
            "increased partitions of",
            &report.grown,
        ),
        Change::new(
            "TopicConfigReset",
            "set drifted configs back on",
            &report.config_reset,
        ),
    ]
}

/// The Normal events a schema step's changes deserve.
fn schema_changes(report: &SchemaReport) -> Vec<Change<'_>> {
    vec![
        Change::new("TableCreated", "created table", &report.created),
        Change::new("ColumnAdded", "added column", &report.added_columns),
        Change::new(
            "ReplicationChanged",
            "changed the replication of keyspace (run a repair so existing data reaches the new replicas):",
            &report.replication_changed,
        ),
        Change::new(
            "TableTtlChanged",
            "changed the default TTL (rows written before keep theirs) of",
            &report.ttl_changed,
        ),
    ]
}
