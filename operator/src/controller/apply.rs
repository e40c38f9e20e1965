//! Applying the Kubernetes objects: server-side apply with the operator's field manager, and
//! removal of an ingest workload of the other kind.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Api, DeleteParams, Patch};
use kube::{Resource, ResourceExt};
use rtdp_crds::Pipeline;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Context;
use crate::error::{Error, Result};
use crate::resources::{self, DesiredObjects, Ingest};

/// Applies the Kubernetes objects with server-side apply, removes an ingest workload of the
/// other kind, and returns the processor's ready replicas.
pub(super) async fn apply_objects(
    pipeline: &Pipeline,
    context: &Context,
    desired: DesiredObjects,
) -> Result<ProcessorReplicas> {
    let namespace = pipeline.namespace_or_default();
    apply(context, &namespace, &desired.config_map).await?;
    let processor = apply(context, &namespace, &desired.processor).await?;
    let ingest_name = resources::ingest::name(pipeline);
    // Only a spec change can leave an ingest workload of the other kind: looked for once per
    // generation.
    let settled = context.memo.ingest_kind_settled(pipeline);
    let mut ingest_unready = None;
    match &desired.ingest {
        Some(Ingest::Scheduled(cron_job)) => {
            apply(context, &namespace, cron_job.as_ref()).await?;
            if !settled {
                delete_owned::<Deployment>(pipeline, context, &ingest_name).await?;
            }
        }
        Some(Ingest::Continuous(deployment)) => {
            let applied = apply(context, &namespace, deployment.as_ref()).await?;
            let wanted = applied
                .spec
                .as_ref()
                .and_then(|spec| spec.replicas)
                .unwrap_or(1);
            let ready = applied
                .status
                .as_ref()
                .and_then(|status| status.ready_replicas)
                .unwrap_or_default();
            ingest_unready = (ready < wanted).then(|| {
                format!(
                    "the ingest Deployment {ingest_name} has {ready} of {wanted} replicas ready"
                )
            });
            if !settled {
                delete_owned::<CronJob>(pipeline, context, &ingest_name).await?;
            }
        }
        None if !settled => {
            delete_owned::<Deployment>(pipeline, context, &ingest_name).await?;
            delete_owned::<CronJob>(pipeline, context, &ingest_name).await?;
        }
        None => {}
    }
    context.memo.settle_ingest_kind(pipeline);
    apply(context, &namespace, &desired.service).await?;
    let status = processor.status.unwrap_or_default();
    Ok(ProcessorReplicas {
        ready: status.ready_replicas.unwrap_or_default(),
        updated: status.updated_replicas.unwrap_or_default(),
        total: status.replicas.unwrap_or_default(),
        ingest_unready,
    })
}

/// The processor Deployment's replicas as its status reports them.
#[derive(Clone, Debug, Default)]
pub(super) struct ProcessorReplicas {
    /// Ready pods, of any template.
    pub(super) ready: i32,
    /// Pods of the current template, ready or not.
    pub(super) updated: i32,
    /// Pods of any template.
    pub(super) total: i32,
    /// A continuous source's ingest Deployment with fewer ready replicas than it wants: what
    /// it reports.
    pub(super) ingest_unready: Option<String>,
}

pub(super) async fn apply<K>(context: &Context, namespace: &str, object: &K) -> Result<K>
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
