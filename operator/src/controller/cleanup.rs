//! The finalizer and deletion. The finalizer guards only what lives outside Kubernetes (the
//! topics and tables), so it is present only with `deletionPolicy: Delete`; owner references
//! clean up the Kubernetes children. kube-runtime's `finalizer` helper is not used because it
//! adds its finalizer to every object, and a `Retain` Pipeline must stay deletable when the
//! operator is gone (uninstalled).
//!
//! Deletion: `Retain` releases the Pipeline at once; `Delete` stops the runner workloads, then
//! drops the topics and tables. When that keeps failing, the Pipeline stays, and a condition
//! and an event say how to release it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use rtdp_crds::{DeletionPolicy, Pipeline, condition_types};
use serde::de::DeserializeOwned;

use super::{Context, FINALIZER, status_update};
use crate::error::{Error, Result};
use crate::resources;
use crate::status::{self, DesiredCondition};

/// Adds (or removes) the cleanup finalizer, guarded by the resourceVersion.
pub(super) async fn ensure_finalizer(
    pipeline: &Pipeline,
    context: &Context,
    wanted: bool,
) -> Result<()> {
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
    context
        .pipelines(pipeline)
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

pub(super) async fn cleanup(pipeline: &Pipeline, context: &Context) -> Result<Action> {
    if !pipeline.finalizers().iter().any(|name| name == FINALIZER) {
        return Ok(Action::await_change());
    }
    let uid = pipeline.uid().unwrap_or_default();
    if pipeline.spec.deletion_policy == DeletionPolicy::Retain {
        ensure_finalizer(pipeline, context, false).await?;
        context
            .recorder
            .publish_about(
                pipeline,
                EventType::Normal,
                "Retained",
                "Delete",
                format!(
                    "deletionPolicy Retain: {} are kept",
                    outside_kubernetes(pipeline)
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
            context
                .recorder
                .publish_about(
                    pipeline,
                    EventType::Normal,
                    "Deleted",
                    "Delete",
                    format!(
                        "deletionPolicy Delete: dropped {}",
                        outside_kubernetes(pipeline)
                    ),
                )
                .await;
            ensure_finalizer(pipeline, context, false).await?;
            forget_cleanup(context, &uid);
            Ok(Action::await_change())
        }
        Err(error) => {
            context.report_error(pipeline, "Delete", &error).await;
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
                context
                    .recorder
                    .publish_about(
                        pipeline,
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

/// What the Pipeline has outside Kubernetes: its topics and tables.
fn outside_kubernetes(pipeline: &Pipeline) -> String {
    let mut topics = vec![pipeline.topic_name(), pipeline.dead_letter_topic_name()];
    if pipeline.schedule().is_some() {
        topics.push(pipeline.runs_topic_name());
    }
    format!(
        "topics {} and tables {}",
        topics.join(", "),
        pipeline.qualified_table_names().join(", ")
    )
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
    status_update::apply_status(pipeline, context, status).await
}

fn forget_cleanup(context: &Context, uid: &str) {
    context.forget(uid);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::generated;

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
}
