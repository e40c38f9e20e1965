//! The reconcile pipeline. Each reconcile of a Pipeline runs
//! fetch → validate (pure) → build the desired objects (pure) → apply (Kafka topics,
//! Cassandra schema, Kubernetes objects) → status, and deletion runs the finalizer.
//!
//! Errors: permanent ones (an invalid spec, a refused change) wait for the next change of the
//! Pipeline; transient ones requeue with per-object exponential backoff. Every error reaches
//! the status message, a Warning event and the failure metric's `reason` label.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use rtdp_crds::{DeletionPolicy, Pipeline, PipelineStatus, condition_types};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cassandra::CassandraSessions;
use crate::error::{Error, Result};
use crate::events::EventRecorders;
use crate::kafka::KafkaClients;
use crate::metrics::Metrics;
use crate::resources::{self, BuildContext, DesiredObjects, Ingest};
use crate::status::{self, DesiredCondition, Observed, StatusApply, StepOutcome};

/// The finalizer that guards the topics and tables of a Pipeline with `deletionPolicy: Delete`.
pub const FINALIZER: &str = "rtdp.dev/cleanup";
/// The label selecting the objects the operator owns (to watch only those).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=rtdp-operator";

/// A point to pause a reconcile at, for tests that restart the operator mid-reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// After the topics are in place.
    Topics,
    /// After the keyspace and tables are in place.
    Schema,
    /// After the Kubernetes objects are applied, before the status.
    Workloads,
}

/// How the controller behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The field manager of every server-side apply.
    pub field_manager: String,
    /// Defaults for the objects built.
    pub build: BuildContext,
    /// How often a healthy Pipeline is reconciled anyway (drift in Kafka or Cassandra).
    pub resync: Duration,
    /// The first retry delay after a transient error; doubles per failure.
    pub backoff_base: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
    /// Attempts at dropping topics and tables before the deletion is reported as blocked.
    pub cleanup_attempts: u32,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Tests only: pause every reconcile after this step for an hour.
    pub pause_after: Option<Step>,
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Events.
    pub recorder: EventRecorders,
    /// Kafka admin clients.
    pub kafka: KafkaClients,
    /// Cassandra sessions.
    pub cassandra: CassandraSessions,
    failures: Mutex<HashMap<ObjectRef<Pipeline>, u32>>,
    cleanup_failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for the controller.
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        recorder: EventRecorders,
    ) -> Self {
        Self {
            client,
            settings,
            metrics,
            recorder,
            kafka: KafkaClients::default(),
            cassandra: CassandraSessions::default(),
            failures: Mutex::default(),
            cleanup_failures: Mutex::default(),
        }
    }

    fn apply_params(&self) -> PatchParams {
        PatchParams::apply(&self.settings.field_manager).force()
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff_delay(
            self.settings.backoff_base,
            self.settings.backoff_max,
            failures,
        )
    }
}

/// The delay before retrying after the `failures`-th consecutive transient error: `base`,
/// doubling per failure, at most `max`.
pub fn backoff_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(max)
}

/// Runs the controller over the given namespaces (all when empty) until `shutdown` resolves
/// and the reconciles in flight have finished.
pub async fn run(
    context: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let streams = scopes.into_iter().map(|namespace| {
        fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
        where
            K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
        {
            match namespace {
                Some(namespace) => Api::namespaced(client.clone(), namespace),
                None => Api::all(client.clone()),
            }
        }
        let namespace = namespace.as_deref();
        let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
        let shutdown = shutdown.clone();
        Controller::new(
            api::<Pipeline>(&client, namespace),
            watcher::Config::default(),
        )
        .owns(api::<ConfigMap>(&client, namespace), owned())
        .owns(api::<Deployment>(&client, namespace), owned())
        .owns(api::<CronJob>(&client, namespace), owned())
        .owns(api::<Service>(&client, namespace), owned())
        .with_config(ControllerConfig::default().concurrency(context.settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&context))
        .boxed()
    });
    futures::stream::select_all(streams)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(pipeline = %object, "reconciled"),
                // Reconcile errors were reported (log, event, metric, status) already.
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::debug!(pipeline = %object, %error, "reconcile failed");
                }
                // Watch errors: e.g. the CRD is not installed, or no permission to list.
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .await;
}

/// Decides when a failed reconcile runs again: never by itself for permanent errors,
/// after a per-object exponential backoff for transient ones.
pub fn error_policy(pipeline: Arc<Pipeline>, error: &Error, context: Arc<Context>) -> Action {
    if error.is_permanent() {
        tracing::info!(pipeline = %ObjectRef::from_obj(pipeline.as_ref()), %error, "waiting for a change of the Pipeline");
        return Action::await_change();
    }
    let failures = {
        let mut failures = context
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures
            .entry(ObjectRef::from_obj(pipeline.as_ref()))
            .or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = context.backoff(failures);
    tracing::info!(pipeline = %ObjectRef::from_obj(pipeline.as_ref()), %error, failures, ?delay, "retrying");
    Action::requeue(delay)
}

/// Reconciles one Pipeline and records the metrics.
pub async fn reconcile(pipeline: Arc<Pipeline>, context: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let reference = ObjectRef::from_obj(pipeline.as_ref());
    let span = tracing::info_span!("reconcile", pipeline = %reference);
    let result =
        tracing::Instrument::instrument(reconcile_pipeline(&pipeline, &context), span).await;
    context
        .metrics
        .reconciled(started.elapsed(), result.is_ok());
    if result.is_ok() {
        context
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&reference);
    }
    result
}

async fn reconcile_pipeline(pipeline: &Pipeline, context: &Context) -> Result<Action> {
    if pipeline.metadata.deletion_timestamp.is_some() {
        return cleanup(pipeline, context).await;
    }
    // The finalizer guards only what deletion drops: the topics and tables.
    let finalizer = match pipeline.spec.deletion_policy {
        DeletionPolicy::Delete => ensure_finalizer(pipeline, context, true).await,
        DeletionPolicy::Retain => ensure_finalizer(pipeline, context, false).await,
    };
    if let Err(error) = finalizer {
        report_error(pipeline, context, "UpdateFinalizer", &error).await;
        return Err(error);
    }

    // Validate and build (pure).
    let desired = validate(pipeline)
        .and_then(|()| resources::desired_objects(pipeline, &context.settings.build));
    let desired = match desired {
        Ok(desired) => desired,
        Err(error) => {
            report_error(pipeline, context, "Validate", &error).await;
            let failed = StepOutcome::failed(&error);
            let observed = Observed {
                topics: failed.clone(),
                schema: failed.clone(),
                workloads: failed,
                ready_replicas: 0,
                rollout_complete: false,
                runner_problem: None,
            };
            write_status(pipeline, context, &observed, std::slice::from_ref(&error)).await?;
            return Err(error);
        }
    };

    // A generation not reported yet says so at once, before the slow steps.
    let reported = pipeline
        .status
        .as_ref()
        .and_then(|status| status.observed_generation);
    if reported != pipeline.metadata.generation {
        apply_status(
            pipeline,
            context,
            status::reconciling_status(pipeline, Timestamp::now()),
        )
        .await?;
    }

    // Apply: the topics, the schema and the Kubernetes objects, each reported on its own.
    let mut errors = Vec::new();
    let topics = match context.kafka.ensure(&context.client, pipeline).await {
        Ok(report) => {
            topic_events(pipeline, context, &report).await;
            StepOutcome::Done {
                reason: "TopicsReady",
                message: format!(
                    "topics {} and {} exist as declared",
                    pipeline.topic_name(),
                    pipeline.dead_letter_topic_name()
                ),
            }
        }
        Err(error) => failed_step(pipeline, context, "EnsureTopics", error, &mut errors).await,
    };
    pause_after(context, Step::Topics).await;
    let schema = match context.cassandra.ensure(&context.client, pipeline).await {
        Ok(report) => {
            schema_events(pipeline, context, &report).await;
            StepOutcome::Done {
                reason: "SchemaReady",
                message: format!(
                    "keyspace {} and tables {} exist as declared",
                    pipeline.spec.cassandra.keyspace.name,
                    pipeline.qualified_table_names().join(", ")
                ),
            }
        }
        Err(error) => failed_step(pipeline, context, "EnsureSchema", error, &mut errors).await,
    };
    pause_after(context, Step::Schema).await;
    let mut replicas = ProcessorReplicas::default();
    let workloads = match apply_objects(pipeline, context, desired).await {
        Ok(observed) => {
            replicas = observed;
            StepOutcome::Done {
                reason: "WorkloadsApplied",
                message: "runner ConfigMap, workloads and metrics Service applied".into(),
            }
        }
        Err(error) => failed_step(pipeline, context, "ApplyWorkloads", error, &mut errors).await,
    };
    pause_after(context, Step::Workloads).await;
    let desired_replicas = pipeline.spec.runner.replicas;
    // As `kubectl rollout status` judges it: every pod on the current template, and enough
    // of them ready. Pods of an old template still running mean the rollout is not done.
    let all_ready = replicas.ready >= desired_replicas
        && replicas.updated >= desired_replicas
        && replicas.total <= replicas.updated;
    let runner_problem = if all_ready {
        None
    } else {
        runner_problem(pipeline, context).await
    };
    if let Some((reason, message)) = &runner_problem {
        publish(
            pipeline,
            context,
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
        ready_replicas: replicas.ready,
        rollout_complete: replicas.updated >= desired_replicas
            && replicas.total <= replicas.updated,
        runner_problem,
    };
    write_status(pipeline, context, &observed, &errors).await?;

    // A transient error is retried with backoff even when another error is permanent.
    match errors.iter().position(|error| !error.is_permanent()) {
        Some(index) => Err(errors.swap_remove(index)),
        None if !errors.is_empty() => Err(errors.swap_remove(0)),
        // Pods are not watched: while replicas are missing, look again soon.
        None if !all_ready => Ok(Action::requeue(RUNNER_NOT_READY_POLL)),
        None => Ok(Action::requeue(context.settings.resync)),
    }
}

/// How often a Pipeline whose processors are not all ready is looked at again.
const RUNNER_NOT_READY_POLL: Duration = Duration::from_secs(10);

/// Why the processor pods are not ready, as the pods themselves say: a pod the scheduler
/// cannot place, or a container waiting in a state that will not pass by itself. `None` when
/// they are merely starting (or the pods cannot be listed: the status then says only how
/// many replicas are ready).
async fn runner_problem(pipeline: &Pipeline, context: &Context) -> Option<(&'static str, String)> {
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &pipeline.namespace_or_default());
    let selector = resources::selector_labels(pipeline, resources::Role::Processor)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let listed = pods.list(&ListParams::default().labels(&selector)).await;
    let pods = match listed {
        Ok(pods) => pods,
        Err(error) => {
            tracing::debug!(%error, "listing processor pods to explain missing replicas");
            return None;
        }
    };
    pods.items.iter().find_map(pod_problem)
}

/// What keeps one pod from becoming ready, when it is something a person must act on. Pure.
pub fn pod_problem(pod: &Pod) -> Option<(&'static str, String)> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|condition| {
        condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        return Some((
            "Unschedulable",
            format!(
                "pod {name} cannot be scheduled: {}",
                condition.message.as_deref().unwrap_or("no reason given")
            ),
        ));
    }
    const STUCK: [&str; 6] = [
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "InvalidImageName",
    ];
    status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|container| {
            let waiting = container.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            STUCK.contains(&reason).then(|| {
                (
                    "RunnerNotStarting",
                    format!(
                        "pod {name}: container {} is {reason}: {}",
                        container.name,
                        waiting.message.as_deref().unwrap_or("no message")
                    ),
                )
            })
        })
}

async fn failed_step(
    pipeline: &Pipeline,
    context: &Context,
    action: &str,
    error: Error,
    errors: &mut Vec<Error>,
) -> StepOutcome {
    report_error(pipeline, context, action, &error).await;
    let outcome = StepOutcome::failed(&error);
    errors.push(error);
    outcome
}

async fn pause_after(context: &Context, step: Step) {
    if context.settings.pause_after == Some(step) {
        tracing::warn!(?step, "pausing the reconcile (--test-pause-after)");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Checks what the CRD's schema cannot: names that must fit Kubernetes limits. Pure.
pub fn validate(pipeline: &Pipeline) -> Result<()> {
    let name = pipeline.name_any();
    // Label values are at most 63 characters; a CronJob's name at most 52 (its Jobs append 11).
    let longest = if resources::ingest::schedule(pipeline).is_some() {
        52 - "-ingest".len()
    } else {
        63
    };
    if name.len() > longest {
        return Err(Error::InvalidSpec(format!(
            "metadata.name {name:?} is {} characters; at most {longest} fit the runner's object names and labels",
            name.len()
        )));
    }
    let nullable = pipeline.nullable_key_columns();
    if !nullable.is_empty() {
        return Err(Error::InvalidSpec(format!(
            "spec.cassandra.tables: key columns {} may be null (their fields are neither required nor defaulted); mark each field required: true or give it a default",
            nullable.join(", ")
        )));
    }
    if pipeline.spec.runner.image.as_deref() == Some("") {
        return Err(Error::InvalidSpec("spec.runner.image is empty".into()));
    }
    let tables = pipeline.qualified_table_names();
    for (index, table) in tables.iter().enumerate() {
        if tables[..index].contains(table) {
            return Err(Error::InvalidSpec(format!(
                "table {table} is declared twice"
            )));
        }
    }
    Ok(())
}

/// Adds (or removes) the cleanup finalizer, guarded by the resourceVersion.
async fn ensure_finalizer(pipeline: &Pipeline, context: &Context, wanted: bool) -> Result<()> {
    let present = pipeline.finalizers().iter().any(|name| name == FINALIZER);
    if present == wanted {
        return Ok(());
    }
    let mut finalizers: Vec<String> = pipeline
        .finalizers()
        .iter()
        .filter(|name| *name != FINALIZER)
        .cloned()
        .collect();
    if wanted {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": pipeline.resource_version(),
        }
    });
    pipelines(pipeline, context)
        .patch(
            &pipeline.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|error| {
            Error::kube(
                if wanted {
                    "adding the finalizer"
                } else {
                    "removing the finalizer"
                },
                error,
            )
        })?;
    Ok(())
}

fn pipelines(pipeline: &Pipeline, context: &Context) -> Api<Pipeline> {
    Api::namespaced(context.client.clone(), &pipeline.namespace_or_default())
}

/// Deletion: `Retain` releases the Pipeline at once; `Delete` drops the topics and tables
/// first. When that keeps failing, the Pipeline stays, and a condition and an event say how
/// to release it.
/// How often deletion checks whether the runner workloads are gone.
const WORKLOAD_STOP_POLL: Duration = Duration::from_secs(2);

/// Deletes the Pipeline's runner workloads (foreground, so each object lasts until its pods
/// are gone) and tells whether none is left. Topics and tables are dropped only after that.
async fn workloads_stopped(pipeline: &Pipeline, context: &Context) -> Result<bool> {
    let namespace = pipeline.namespace_or_default();
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let cron_jobs: Api<CronJob> = Api::namespaced(context.client.clone(), &namespace);
    let processor = resources::child_name(pipeline, "processor");
    let ingest = resources::child_name(pipeline, "ingest");
    let mut left = Vec::new();
    for name in [&processor, &ingest] {
        if stop_workload(&deployments, name).await? {
            left.push(format!("Deployment {name}"));
        }
    }
    if stop_workload(&cron_jobs, &ingest).await? {
        left.push(format!("CronJob {ingest}"));
    }
    if !left.is_empty() {
        tracing::info!(pipeline = %pipeline.name_any(), waiting_for = ?left, "stopping the runners before dropping topics and tables");
    }
    Ok(left.is_empty())
}

/// Deletes one workload in the foreground unless it is already going; true while it exists.
async fn stop_workload<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let existing = api
        .get_opt(name)
        .await
        .map_err(|error| Error::kube(format!("reading {kind} {name} before cleanup"), error))?;
    let Some(existing) = existing else {
        return Ok(false);
    };
    if existing.meta().deletion_timestamp.is_none() {
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 404 => return Ok(false),
            Err(error) => {
                return Err(Error::kube(format!("stopping {kind} {name}"), error));
            }
        }
    }
    Ok(true)
}

async fn cleanup(pipeline: &Pipeline, context: &Context) -> Result<Action> {
    if !pipeline.finalizers().iter().any(|name| name == FINALIZER) {
        return Ok(Action::await_change());
    }
    let uid = pipeline.uid().unwrap_or_default();
    if pipeline.spec.deletion_policy == DeletionPolicy::Retain {
        ensure_finalizer(pipeline, context, false).await?;
        publish(
            pipeline,
            context,
            EventType::Normal,
            "Retained",
            "Delete",
            format!(
                "deletionPolicy Retain: topics {} and {} and tables {} are kept",
                pipeline.topic_name(),
                pipeline.dead_letter_topic_name(),
                pipeline.qualified_table_names().join(", ")
            ),
        )
        .await;
        forget_cleanup(context, &uid);
        return Ok(Action::await_change());
    }

    // Say at once, for the generation being deleted, what deletion is doing.
    write_deleting_status(pipeline, context, Vec::new(), None).await?;
    // The runners go first: a processor or ingest pod still running could recreate a topic
    // (producers auto-create) or write into a table being dropped.
    if !workloads_stopped(pipeline, context).await? {
        return Ok(Action::requeue(WORKLOAD_STOP_POLL));
    }

    let dropped = async {
        context.kafka.delete(&context.client, pipeline).await?;
        context
            .cassandra
            .drop_tables(&context.client, pipeline)
            .await
    }
    .await;
    match dropped {
        Ok(()) => {
            publish(
                pipeline,
                context,
                EventType::Normal,
                "Deleted",
                "Delete",
                format!(
                    "deletionPolicy Delete: dropped topics {} and {} and tables {}",
                    pipeline.topic_name(),
                    pipeline.dead_letter_topic_name(),
                    pipeline.qualified_table_names().join(", ")
                ),
            )
            .await;
            ensure_finalizer(pipeline, context, false).await?;
            forget_cleanup(context, &uid);
            Ok(Action::await_change())
        }
        Err(error) => {
            report_error(pipeline, context, "Delete", &error).await;
            let attempts = {
                let mut failures = context
                    .cleanup_failures
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let count = failures.entry(uid).or_default();
                *count = count.saturating_add(1);
                *count
            };
            let limit = context.settings.cleanup_attempts;
            // The status must not change from one identical failure to the next: a status
            // write triggers a reconcile at once, which would defeat the backoff.
            let (reason, message, returned) = if attempts >= limit {
                let message = blocked_message(pipeline, limit, &error);
                (
                    "CleanupBlocked",
                    message.clone(),
                    Error::CleanupBlocked(message),
                )
            } else {
                (
                    error.reason(),
                    format!("dropping the topics and tables failed, retrying: {error}"),
                    error,
                )
            };
            if attempts == limit {
                publish(
                    pipeline,
                    context,
                    EventType::Warning,
                    "CleanupBlocked",
                    "Delete",
                    message.clone(),
                )
                .await;
            }
            write_deleting_status(
                pipeline,
                context,
                vec![DesiredCondition::new(
                    condition_types::DEGRADED,
                    true,
                    reason,
                    message.clone(),
                )],
                Some(message),
            )
            .await?;
            Err(returned)
        }
    }
}

/// The status of a Pipeline being deleted: `Ready=False` (reason `Deleting`) for the current
/// generation, plus `extra` conditions. The same every time for the same failure, so that
/// writing it does not retrigger a reconcile and defeat the backoff.
async fn write_deleting_status(
    pipeline: &Pipeline,
    context: &Context,
    extra: Vec<DesiredCondition>,
    message: Option<String>,
) -> Result<()> {
    let mut conditions = vec![DesiredCondition::new(
        condition_types::READY,
        false,
        "Deleting",
        "the Pipeline is being deleted: the runner workloads stop first, then the topics and tables are dropped".into(),
    )];
    conditions.extend(extra);
    let mut status = pipeline.status.clone().unwrap_or_default();
    status.conditions = status::merge_conditions(
        &status.conditions,
        conditions,
        pipeline.metadata.generation,
        Timestamp::now(),
    );
    status.observed_generation = pipeline.metadata.generation;
    if message.is_some() {
        status.message = message;
    }
    apply_status(pipeline, context, status).await
}

fn forget_cleanup(context: &Context, uid: &str) {
    context
        .cleanup_failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(uid);
}

/// What a blocked deletion says: why, and the three ways to release the Pipeline.
pub fn blocked_message(pipeline: &Pipeline, attempts: u32, error: &Error) -> String {
    let name = pipeline.name_any();
    let namespace = pipeline.namespace_or_default();
    format!(
        "could not drop the topics and tables after {attempts} attempts ({error}); the Pipeline \
         stays until one of: the server is reachable again (retried with backoff); \
         `kubectl -n {namespace} patch pipeline {name} --type merge -p '{{\"spec\":{{\"deletionPolicy\":\"Retain\"}}}}'` \
         keeps the topics and tables and releases it; \
         `kubectl -n {namespace} patch pipeline {name} --type json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'` \
         releases it without cleanup"
    )
}

/// Applies the Kubernetes objects with server-side apply, removes an ingest workload of the
/// other kind, and returns the processor's ready replicas.
async fn apply_objects(
    pipeline: &Pipeline,
    context: &Context,
    desired: DesiredObjects,
) -> Result<ProcessorReplicas> {
    let namespace = pipeline.namespace_or_default();
    apply(context, &namespace, &desired.config_map).await?;
    let processor = apply(context, &namespace, &desired.processor).await?;
    let ingest_name = resources::ingest::name(pipeline);
    match &desired.ingest {
        Some(Ingest::Scheduled(cron_job)) => {
            apply(context, &namespace, cron_job.as_ref()).await?;
            delete_owned::<Deployment>(pipeline, context, &ingest_name).await?;
        }
        Some(Ingest::Continuous(deployment)) => {
            apply(context, &namespace, deployment.as_ref()).await?;
            delete_owned::<CronJob>(pipeline, context, &ingest_name).await?;
        }
        None => {
            delete_owned::<Deployment>(pipeline, context, &ingest_name).await?;
            delete_owned::<CronJob>(pipeline, context, &ingest_name).await?;
        }
    }
    apply(context, &namespace, &desired.service).await?;
    let status = processor.status.unwrap_or_default();
    Ok(ProcessorReplicas {
        ready: status.ready_replicas.unwrap_or_default(),
        updated: status.updated_replicas.unwrap_or_default(),
        total: status.replicas.unwrap_or_default(),
    })
}

/// The processor Deployment's replicas as its status reports them.
#[derive(Clone, Copy, Debug, Default)]
struct ProcessorReplicas {
    /// Ready pods, of any template.
    ready: i32,
    /// Pods of the current template, ready or not.
    updated: i32,
    /// Pods of any template.
    total: i32,
}

async fn apply<K>(context: &Context, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(context.client.clone(), namespace);
    let name = object.name_any();
    api.patch(&name, &context.apply_params(), &Patch::Apply(object))
        .await
        .map_err(|error| {
            Error::kube(
                format!("applying {} {namespace}/{name}", K::kind(&())),
                error,
            )
        })
}

/// Deletes an object if this Pipeline controls it.
async fn delete_owned<K>(pipeline: &Pipeline, context: &Context, name: &str) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = pipeline.namespace_or_default();
    let api: Api<K> = Api::namespaced(context.client.clone(), &namespace);
    let context_message = || format!("removing the stale {} {namespace}/{name}", K::kind(&()));
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(|error| Error::kube(context_message(), error))?
    else {
        return Ok(());
    };
    let uid = pipeline.uid();
    let owned = existing
        .owner_references()
        .iter()
        .any(|owner| Some(&owner.uid) == uid.as_ref() && owner.controller == Some(true));
    if owned {
        api.delete(name, &DeleteParams::background())
            .await
            .map_err(|error| Error::kube(context_message(), error))?;
    }
    Ok(())
}

/// Computes the status from what was observed and writes it if it changed; publishes an
/// Event for each condition that changed.
async fn write_status(
    pipeline: &Pipeline,
    context: &Context,
    observed: &Observed,
    errors: &[Error],
) -> Result<()> {
    let status = status::desired_status(pipeline, observed, Timestamp::now());
    let before = pipeline
        .status
        .as_ref()
        .map(|status| status.conditions.clone())
        .unwrap_or_default();
    for condition in status::transitions(&before, &status.conditions) {
        let healthy = status::is_healthy(condition);
        // Errors have their own Warning event already.
        if !healthy
            && errors
                .iter()
                .any(|error| error.reason() == condition.reason)
        {
            continue;
        }
        publish(
            pipeline,
            context,
            if healthy {
                EventType::Normal
            } else {
                EventType::Warning
            },
            &condition.reason,
            "Reconcile",
            format!(
                "{} is {}: {}",
                condition.type_, condition.status, condition.message
            ),
        )
        .await;
    }
    apply_status(pipeline, context, status).await
}

async fn apply_status(
    pipeline: &Pipeline,
    context: &Context,
    status: PipelineStatus,
) -> Result<()> {
    if pipeline.status.as_ref() == Some(&status) {
        return Ok(());
    }
    pipelines(pipeline, context)
        .patch_status(
            &pipeline.name_any(),
            &context.apply_params(),
            &Patch::Apply(StatusApply::new(status)),
        )
        .await
        .map_err(|error| Error::kube("writing the status", error))?;
    Ok(())
}

/// Logs an error, counts it by reason and publishes a Warning event whose action names the
/// step that failed (`EnsureTopics`, `EnsureSchema`, `ApplyWorkloads`, `Delete`...).
async fn report_error(pipeline: &Pipeline, context: &Context, action: &str, error: &Error) {
    tracing::warn!(reason = error.reason(), action, permanent = error.is_permanent(), %error, "reconcile error");
    context.metrics.failed(error.reason());
    publish(
        pipeline,
        context,
        EventType::Warning,
        error.reason(),
        action,
        error.to_string(),
    )
    .await;
}

async fn publish(
    pipeline: &Pipeline,
    context: &Context,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(&note)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = context
        .recorder
        .publish(&event, &pipeline.object_ref(&()))
        .await
    {
        tracing::warn!(%error, "publishing an event");
    }
}

async fn topic_events(
    pipeline: &Pipeline,
    context: &Context,
    report: &rtdp_provisioning::kafka::TopicReport,
) {
    let changes = [
        ("TopicCreated", "created", &report.created),
        (
            "PartitionsIncreased",
            "increased partitions of",
            &report.grown,
        ),
        (
            "TopicConfigReset",
            "set drifted configs back on",
            &report.config_reset,
        ),
    ];
    for (reason, verb, items) in changes {
        if !items.is_empty() {
            let note = format!("{verb} {}", items.join(", "));
            tracing::info!(reason, %note);
            publish(
                pipeline,
                context,
                EventType::Normal,
                reason,
                "Reconcile",
                note,
            )
            .await;
        }
    }
}

async fn schema_events(
    pipeline: &Pipeline,
    context: &Context,
    report: &rtdp_provisioning::cassandra::SchemaReport,
) {
    let changes = [
        ("TableCreated", "created table", &report.created),
        ("ColumnAdded", "added column", &report.added_columns),
    ];
    for (reason, verb, items) in changes {
        if !items.is_empty() {
            let note = format!("{verb} {}", items.join(", "));
            tracing::info!(reason, %note);
            publish(
                pipeline,
                context,
                EventType::Normal,
                reason,
                "Reconcile",
                note,
            )
            .await;
        }
    }
}

/// Event notes are limited to 1 kB.
fn truncate(text: &str) -> String {
    const LIMIT: usize = 1000;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{generated, listings};

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "listings-processor-abc"},
            "status": status,
        }))
        .expect("a pod")
    }

    #[test]
    fn pods_say_what_keeps_them_from_running() {
        let unschedulable = pod(serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."
        }]}));
        assert_eq!(
            pod_problem(&unschedulable),
            Some((
                "Unschedulable",
                "pod listings-processor-abc cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu.".to_string()
            ))
        );
        let crashing = pod(serde_json::json!({"containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}
        }]}));
        let (reason, message) = pod_problem(&crashing).expect("a problem");
        assert_eq!(reason, "RunnerNotStarting");
        assert!(
            message.contains("container runner is CrashLoopBackOff: back-off 40s"),
            "{message}"
        );
        // Merely starting is no problem to report.
        let starting = pod(serde_json::json!({"containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]}));
        assert_eq!(pod_problem(&starting), None);
    }

    #[test]
    fn names_must_fit_kubernetes_limits() {
        let mut pipeline = listings();
        assert!(validate(&pipeline).is_ok());
        pipeline.metadata.name = Some("a".repeat(46));
        let error = validate(&pipeline).expect_err("too long for a CronJob");
        assert!(error.is_permanent());
        assert_eq!(error.reason(), "InvalidSpec");
        assert!(error.to_string().contains("at most 45"), "{error}");

        let mut continuous = generated();
        continuous.metadata.name = Some("a".repeat(63));
        assert!(validate(&continuous).is_ok());
        continuous.metadata.name = Some("a".repeat(64));
        assert!(validate(&continuous).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        let delays: Vec<u64> = (1..=10)
            .map(|failures| backoff_delay(base, max, failures).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff_delay(base, max, u32::MAX), max);
    }

    #[test]
    fn the_blocked_message_says_how_to_release() {
        let pipeline = generated();
        let error = Error::from(rtdp_provisioning::ProvisionError::Cassandra {
            context: "connecting".into(),
            message: "refused".into(),
        });
        let message = blocked_message(&pipeline, 5, &error);
        assert!(message.contains("after 5 attempts"), "{message}");
        assert!(
            message.contains("\"deletionPolicy\":\"Retain\""),
            "{message}"
        );
        assert!(message.contains("/metadata/finalizers"), "{message}");
    }

    #[test]
    fn notes_are_truncated_on_a_character_boundary() {
        let long = "é".repeat(800);
        let note = truncate(&long);
        assert!(note.len() <= 1004);
        assert!(note.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }
}
