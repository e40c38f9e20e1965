//! Pure builders of the Kubernetes objects a Pipeline owns: the runner's ConfigMap, the
//! processor Deployment, the ingest CronJob or Deployment, and the metrics Service. Nothing
//! here talks to a server; `desired_objects` is what the reconcile applies, and what the unit
//! tests check against docs/runner-contract.md.

pub mod backfill;
pub mod config_map;
pub mod ingest;
mod pod;
pub mod processor;
pub mod service;
#[cfg(test)]
pub(crate) mod tests;

pub use pod::{Workload, header_env_name};

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use rtdp_crds::Pipeline;

use crate::error::{Error, Result};

/// The annotation on pod templates holding the SHA-256 of the runner's config.
pub const CONFIG_HASH_ANNOTATION: &str = "rtdp.dev/config-hash";
/// The label every owned object carries: the Pipeline's name.
pub const PIPELINE_LABEL: &str = "rtdp.dev/pipeline";
/// The component label: `processor` or `ingest` on workloads.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Where the ConfigMap's `pipeline.yaml` is mounted in runner containers.
pub const CONFIG_PATH: &str = "/etc/rtdp/pipeline.yaml";
/// The runner's metrics port (its `--metrics-address` default) and the port's name.
pub const METRICS_PORT: i32 = 9090;
/// The name of the runner containers' metrics port.
pub const METRICS_PORT_NAME: &str = "metrics";
/// The runner containers' name.
pub const CONTAINER_NAME: &str = "runner";
/// The user and group runner containers run as (the distroless `nonroot` user).
pub const RUNNER_USER: i64 = 65532;

/// What building the objects needs besides the Pipeline.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The runner image when the Pipeline does not set `spec.runner.image`.
    pub default_image: String,
}

/// Everything a Pipeline owns in Kubernetes.
#[derive(Clone, Debug)]
pub struct DesiredObjects {
    /// `<pipeline>-runner`: the runner's config.
    pub config_map: ConfigMap,
    /// `<pipeline>-processor`: `pipeline-runner process`.
    pub processor: Deployment,
    /// `<pipeline>-ingest`, when the Pipeline has a source.
    pub ingest: Option<Ingest>,
    /// `<pipeline>-metrics`: the runner pods' metrics port.
    pub service: Service,
    /// The Jobs of `spec.backfill`, when declared.
    pub backfill: Option<backfill::BackfillJobs>,
}

/// The ingest workload: scheduled or continuous.
#[derive(Clone, Debug)]
pub enum Ingest {
    /// An HTTP source with a cron `schedule`: `pipeline-runner ingest --once`.
    Scheduled(Box<CronJob>),
    /// An HTTP source with `pollInterval`, or a generator: `pipeline-runner ingest`.
    Continuous(Box<Deployment>),
}

/// The runner roles, each with its own workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Consumes the topic and writes Cassandra.
    Processor,
    /// Pulls the source and produces to the topic.
    Ingest,
}

impl Role {
    /// The role's name as used in object names and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Processor => "processor",
            Role::Ingest => "ingest",
        }
    }
}

/// Builds every object the Pipeline owns, the processor Deployment with `processor_replicas`
/// (see `processor::replicas`). Pure.
pub fn desired_objects(
    pipeline: &Pipeline,
    context: &BuildContext,
    processor_replicas: i32,
) -> Result<DesiredObjects> {
    let owner = owner_reference(pipeline)?;
    let config_map = config_map::build(pipeline, &owner)?;
    let config_hash = config_map::hash_of(&config_map);
    let image = runner_image(pipeline, context);
    let workload = Workload {
        pipeline,
        owner: &owner,
        image: &image,
        config_hash: &config_hash,
        processor_replicas,
    };
    let intervals = rtdp_crds::validation::backfill_intervals(pipeline)
        .map_err(|error| Error::InvalidSpec(error.to_string()))?;
    Ok(DesiredObjects {
        backfill: backfill::build(&workload, intervals),
        processor: processor::build(&workload),
        ingest: ingest::build(&workload),
        service: service::build(pipeline, &owner),
        config_map,
    })
}

/// The image runner containers use: the Pipeline's, or the operator's default.
pub fn runner_image(pipeline: &Pipeline, context: &BuildContext) -> String {
    pipeline
        .spec
        .runner
        .image
        .clone()
        .unwrap_or_else(|| context.default_image.clone())
}

/// The Pipeline as controlling owner, so the garbage collector removes what it owns.
pub fn owner_reference(pipeline: &Pipeline) -> Result<OwnerReference> {
    let mut owner = pipeline.controller_owner_ref(&()).ok_or_else(|| {
        Error::Internal(format!(
            "Pipeline {} has no name or uid; it must come from the API server",
            pipeline.name_any()
        ))
    })?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// The name of an object the Pipeline owns: `<pipeline>-<suffix>`.
pub fn child_name(pipeline: &Pipeline, suffix: &str) -> String {
    format!("{}-{suffix}", pipeline.name_any())
}

/// Labels of every owned object.
pub fn common_labels(pipeline: &Pipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "pipeline-runner".into()),
        ("app.kubernetes.io/instance".into(), pipeline.name_any()),
        (
            "app.kubernetes.io/managed-by".into(),
            "rtdp-operator".into(),
        ),
        (PIPELINE_LABEL.into(), pipeline.name_any()),
    ])
}

/// The labels that select one role's pods.
pub fn selector_labels(pipeline: &Pipeline, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PIPELINE_LABEL.into(), pipeline.name_any()),
        (COMPONENT_LABEL.into(), role.as_str().into()),
    ])
}

/// Metadata of an owned object.
pub fn object_meta(
    pipeline: &Pipeline,
    name: String,
    owner: &OwnerReference,
    role: Option<Role>,
) -> ObjectMeta {
    let mut labels = common_labels(pipeline);
    if let Some(role) = role {
        labels.insert(COMPONENT_LABEL.into(), role.as_str().into());
    }
    ObjectMeta {
        name: Some(name),
        namespace: pipeline.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}
