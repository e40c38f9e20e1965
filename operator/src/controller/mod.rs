//! The controller: the run loop, the error policy and the reconcile entry point. A reconcile
//! runs fetch → validate (pure) → build the desired objects (pure) → apply → status; where
//! each part lives:
//!
//! - [`reconcile`]: the steps in order (topics, schema, workloads, status);
//! - [`validate`]: what the CRD schema cannot check;
//! - [`apply`]: server-side apply of the owned Kubernetes objects;
//! - [`runner_health`]: why processor pods are not ready;
//! - [`status_update`]: writing the status and its transition events;
//! - [`cleanup`]: the finalizer and deletion;
//! - [`freshness`]: the loop that measures each Pipeline's lag into its status;
//! - [`replay`]: `spec.replay`, holding the processors while the group's offsets move back;
//! - [`backfill`]: `spec.backfill`, one Job per schedule interval, started in order;
//! - [`autoscaler`]: the lag-based replica decisions the freshness loop makes and the
//!   reconcile applies.
//!
//! A Pipeline is reconciled when its spec (generation), deletion or finalizers change, when an
//! owned object changes, and on requeue; its status changing (every freshness period) does
//! not trigger one.
//!
//! Errors: permanent ones (an invalid spec, a refused change) wait for the next change of the
//! Pipeline; transient ones requeue with per-object exponential backoff. Every error reaches
//! the status message, a Warning event and the failure metric's `reason` label.

mod apply;
pub mod autoscaler;
mod backfill;
mod cleanup;
mod external_checks;
pub mod freshness;
mod memo;
mod reconcile;
mod replay;
mod runner_health;
mod status_update;
pub mod test_hooks;
mod validate;

pub use cleanup::blocked_message;
pub use runner_health::pod_problem;
pub use test_hooks::Step;
pub use validate::validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use rtdp_crds::Pipeline;

use crate::cassandra::CassandraSessions;
use crate::error::{Error, Result};
use crate::events::EventRecorders;
use crate::kafka::KafkaClients;
use crate::metrics::Metrics;
use crate::resources::BuildContext;
/// The finalizer that guards the topics and tables of a Pipeline with `deletionPolicy: Delete`.
pub const FINALIZER: &str = "rtdp.dev/cleanup";
/// The label selecting the objects the operator owns (to watch only those).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=rtdp-operator";

/// Requests for the same Pipeline within this long are merged into one reconcile: applying a
/// Pipeline's objects changes each of them, and each change would otherwise be a reconcile.
const DEBOUNCE: Duration = Duration::from_millis(500);

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
    /// How often each Pipeline's freshness is measured and written to its status.
    pub freshness_period: Duration,
    /// Test hooks (`--features test-hooks` only).
    #[cfg(feature = "test-hooks")]
    pub test_hooks: test_hooks::TestHooks,
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
    /// When each Pipeline's topics and tables were last found as declared.
    external: external_checks::ExternalChecks,
    /// The lag-based autoscaler's recommendations and decisions.
    autoscaler: autoscaler::Autoscaler,
    /// Per Pipeline: what need not be asked of the API server again (`memo`).
    memo: memo::Memo,
    /// Replays this process finished, by Pipeline uid: the reflector's copy of the status may
    /// not show them yet, and a replay must never run twice.
    finished_replays: Mutex<HashMap<String, rtdp_crds::ReplayStatus>>,
    failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
    cleanup_failures: Mutex<HashMap<String, u32>>,
    /// The controllers' reflector stores, once they run: every Pipeline the operator sees,
    /// read without asking the API server (who owns a shared keyspace's replication).
    stores: std::sync::OnceLock<Vec<Store<Guarded>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The clients and caches say nothing useful; the settings are what differ.
        write!(formatter, "Context {{ settings: {:?}, .. }}", self.settings)
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
            external: external_checks::ExternalChecks::default(),
            autoscaler: autoscaler::Autoscaler::default(),
            memo: memo::Memo::default(),
            finished_replays: Mutex::default(),
            failures: Mutex::default(),
            cleanup_failures: Mutex::default(),
            stores: std::sync::OnceLock::new(),
        }
    }

    /// Who sets the replication of `pipeline`'s keyspace when Pipelines share it: the oldest
    /// Pipeline (then by namespace and name) declaring that keyspace on the same contact
    /// points. `None` when it is `pipeline` itself (or the stores are not running yet);
    /// otherwise `namespace/name` of the owner.
    pub fn replication_owner(&self, pipeline: &Pipeline) -> Option<String> {
        let stores = self.stores.get()?;
        let keyspace = &pipeline.spec.cassandra.keyspace.name;
        let mut contact_points = pipeline.spec.cassandra.contact_points.clone();
        contact_points.sort();
        let same_cluster = |candidate: &Pipeline| {
            let mut theirs: Vec<&String> = candidate.spec.cassandra.contact_points.iter().collect();
            theirs.sort();
            candidate.spec.cassandra.keyspace.name == *keyspace
                && theirs.len() == contact_points.len()
                && theirs.iter().zip(&contact_points).all(|(a, b)| *a == b)
        };
        let guarded: Vec<Arc<Guarded>> = stores.iter().flat_map(Store::state).collect();
        let owner = guarded
            .iter()
            .filter_map(|guarded| guarded.0.as_ref().ok())
            .filter(|candidate| {
                candidate.metadata.deletion_timestamp.is_none() && same_cluster(candidate)
            })
            .min_by_key(|candidate| {
                (
                    candidate
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|time| time.0),
                    candidate.namespace_or_default(),
                    candidate.name_any(),
                )
            })?;
        let same = owner.metadata.uid.is_some() && owner.metadata.uid == pipeline.metadata.uid;
        (!same).then(|| format!("{}/{}", owner.namespace_or_default(), owner.name_any()))
    }

    /// Forgets everything this process remembers about a Pipeline that is gone (its finalizer
    /// released, or no longer in the stores): nothing per Pipeline outlives it.
    pub(super) fn forget(&self, uid: &str) {
        self.external.forget(uid);
        self.memo.forget(uid);
        self.autoscaler.forget(uid);
        self.finished_replays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
        self.cleanup_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }

    fn apply_params(&self) -> PatchParams {
        PatchParams::apply(&self.settings.field_manager).force()
    }

    fn pipelines(&self, pipeline: &Pipeline) -> Api<Pipeline> {
        Api::namespaced(self.client.clone(), &pipeline.namespace_or_default())
    }

    /// Logs an error, counts it by reason and publishes a Warning event whose action names
    /// the step that failed (`EnsureTopics`, `EnsureSchema`, `ApplyWorkloads`, `Delete`...).
    async fn report_error(&self, pipeline: &Pipeline, action: &str, error: &Error) {
        tracing::warn!(reason = error.reason(), action, permanent = error.is_permanent(), %error, "reconcile error");
        self.metrics.failed(error.reason());
        self.recorder
            .publish_about(
                pipeline,
                EventType::Warning,
                error.reason(),
                action,
                error.to_string(),
            )
            .await;
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff_delay(
            self.settings.backoff_base,
            self.settings.backoff_max,
            failures,
        )
    }
}

/// A Pipeline as the watch delivers it: one that cannot be read (e.g. written under another
/// schema) is reported on its own instead of failing the watch of every other Pipeline.
pub type Guarded = DeserializeGuard<Pipeline>;

/// The delay before retrying after the `failures`-th consecutive transient error: `base`,
/// doubling per failure, at most `max`.
pub fn backoff_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    // Past 32 doublings every delay is `max` anyway; bounds the iteration.
    let index = failures.saturating_sub(1).min(32) as usize;
    backon::ExponentialBuilder::new()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
        .build()
        .nth(index)
        .unwrap_or(max)
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
    // The freshness loop asks for a reconcile when the autoscaler changed a Pipeline's
    // replicas (its status write alone does not trigger one): one channel per controller. It
    // measures the Pipelines each controller's reflector holds, rather than listing them.
    let mut triggers = Vec::new();
    let mut stores = Vec::new();
    let mut controller_inputs = Vec::new();
    for scope in scopes {
        let (sender, receiver) = futures::channel::mpsc::unbounded::<ObjectRef<Guarded>>();
        let (reader, writer) = reflector::store();
        triggers.push((scope.clone(), sender));
        stores.push(reader.clone());
        controller_inputs.push((scope, receiver, reader, writer));
    }
    // Kept once: a second `run` (tests) sees the same Pipelines through its own stores.
    let _ = context.stores.set(stores.clone());
    let freshness = freshness::run(
        Arc::clone(&context),
        stores,
        context.settings.freshness_period,
        triggers,
    );
    let streams = controller_inputs
        .into_iter()
        .map(|(namespace, triggered, reader, writer)| {
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
            let pipelines = watcher(
                api::<Guarded>(&client, namespace),
                watcher::Config::default(),
            )
            .default_backoff()
            // Nothing reads the managed fields, and with several field managers per Pipeline
            // they are the largest part of every object the reflector keeps.
            .modify(|pipeline| pipeline.meta_mut().managed_fields = None)
            .reflect(writer)
            .applied_objects()
            // Reconciled for a change of its spec (the generation, which the API server also
            // bumps when it sets the deletion timestamp) or its finalizers; status writes
            // (the reconcile's own, the freshness loop's) are not worth a reconcile.
            .predicate_filter(
                predicates::generation.combine(predicates::finalizers),
                PredicateConfig::default(),
            );
            Controller::for_stream(pipelines, reader)
                .owns(api::<ConfigMap>(&client, namespace), owned())
                .owns(api::<Deployment>(&client, namespace), owned())
                .owns(api::<CronJob>(&client, namespace), owned())
                .owns(api::<Job>(&client, namespace), owned())
                .owns(api::<Service>(&client, namespace), owned())
                .reconcile_on(triggered)
                .with_config(
                    ControllerConfig::default()
                        .concurrency(context.settings.concurrency)
                        .debounce(DEBOUNCE),
                )
                .graceful_shutdown_on(shutdown)
                .run(reconcile, error_policy, Arc::clone(&context))
                .boxed()
        });
    let controllers = futures::stream::select_all(streams).for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(pipeline = %object, "reconciled"),
            // Reconcile errors were reported (log, event, metric, status) already.
            Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                tracing::debug!(pipeline = %object, %error, "reconcile failed");
            }
            // Watch errors: e.g. the CRD is not installed, or no permission to list.
            Err(error) => tracing::warn!(%error, "controller"),
        }
    });
    // The freshness loop never ends by itself: it stops with the controllers.
    tokio::select! {
        () = controllers => {}
        () = freshness => {}
    }
}

/// Decides when a failed reconcile runs again: never by itself for permanent errors,
/// after a per-object exponential backoff for transient ones.
pub fn error_policy(pipeline: Arc<Guarded>, error: &Error, context: Arc<Context>) -> Action {
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
pub async fn reconcile(guarded: Arc<Guarded>, context: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let reference = ObjectRef::from_obj(guarded.as_ref());
    let span = tracing::info_span!("reconcile", pipeline = %reference);
    let pipeline = match &guarded.0 {
        Ok(pipeline) => pipeline,
        Err(invalid) => {
            unreadable(&guarded, invalid, &context).await;
            return Ok(Action::await_change());
        }
    };
    let result =
        tracing::Instrument::instrument(reconcile::reconcile_pipeline(pipeline, &context), span)
            .await;
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

/// A Pipeline the operator cannot read: said in the log, a Warning event and the failure
/// metric; nothing is touched until the object changes.
async fn unreadable(guarded: &Guarded, invalid: &InvalidObject, context: &Context) {
    const REASON: &str = "UnreadablePipeline";
    tracing::warn!(pipeline = %ObjectRef::from_obj(guarded), error = %invalid, "cannot read the Pipeline; waiting for it to change");
    context.metrics.failed(REASON);
    context
        .recorder
        .publish_reference(
            &guarded.object_ref(&()),
            EventType::Warning,
            REASON,
            "Read",
            format!("the operator cannot read this Pipeline, nothing is reconciled until it changes: {invalid}"),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
