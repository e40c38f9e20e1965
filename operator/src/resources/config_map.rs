//! `<pipeline>-runner`: the ConfigMap holding the Pipeline manifest the runner reads, and the
//! hash of it that rolls the pods when the spec changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use rtdp_crds::{Pipeline, PipelineSpec};
use serde::Serialize;

use super::object_meta;
use crate::error::{Error, Result};

/// The key holding the manifest.
pub const KEY: &str = "pipeline.yaml";

/// The ConfigMap's name: `<pipeline>-runner`.
pub fn name(pipeline: &Pipeline) -> String {
    super::child_name(pipeline, "runner")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunnerManifest<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: RunnerMetadata,
    spec: &'a PipelineSpec,
}

#[derive(Serialize)]
struct RunnerMetadata {
    name: String,
    namespace: String,
}

/// The manifest the runner reads: apiVersion, kind, name, namespace and spec; no status, no
/// server-set metadata (so the hash changes only when the spec does).
pub fn runner_manifest(pipeline: &Pipeline) -> Result<String> {
    let manifest = RunnerManifest {
        api_version: "rtdp.dev/v1alpha1",
        kind: "Pipeline",
        metadata: RunnerMetadata {
            name: pipeline.name_any(),
            namespace: pipeline.namespace_or_default(),
        },
        spec: &pipeline.spec,
    };
    serde_yaml_ng::to_string(&manifest)
        .map_err(|error| Error::Internal(format!("rendering the runner manifest: {error}")))
}

/// The hex SHA-256 of the ConfigMap's data, in key order.
pub fn hash_of(config_map: &ConfigMap) -> String {
    crate::digest::sha256_hex(
        config_map
            .data
            .iter()
            .flatten()
            .flat_map(|(key, value)| [key.as_str(), value.as_str()]),
    )
}

/// Builds the ConfigMap. Pure.
pub fn build(pipeline: &Pipeline, owner: &OwnerReference) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: object_meta(pipeline, name(pipeline), owner, None),
        data: Some(BTreeMap::from([(
            KEY.to_string(),
            runner_manifest(pipeline)?,
        )])),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::owner_reference;
    use crate::resources::tests::{generated, listings};

    #[test]
    fn the_manifest_round_trips_through_the_runners_parser() {
        let mut pipeline = listings();
        pipeline.metadata.resource_version = Some("12345".into());
        pipeline.status = Some(Default::default());
        let text = runner_manifest(&pipeline).expect("renders");
        assert!(
            !text.lines().any(|line| line.starts_with("status")),
            "{text}"
        );
        assert!(!text.contains("12345"), "{text}");
        let parsed = rtdp_crds::parse_pipeline(&text, "configmap").expect("parses");
        assert_eq!(parsed.spec, pipeline.spec);
        assert_eq!(parsed.metadata.name, pipeline.metadata.name);
        assert_eq!(parsed.metadata.namespace.as_deref(), Some("demo"));
    }

    #[test]
    fn the_hash_follows_the_spec_only() {
        let pipeline = generated();
        let owner = owner_reference(&pipeline).expect("owner");
        let config_map = build(&pipeline, &owner).expect("builds");
        assert_eq!(
            config_map.metadata.name.as_deref(),
            Some("generated-listings-runner")
        );
        let hash = hash_of(&config_map);
        assert_eq!(hash.len(), 64);

        let mut relabelled = pipeline.clone();
        relabelled.metadata.labels = Some(BTreeMap::from([("team".into(), "data".into())]));
        relabelled.metadata.resource_version = Some("999".into());
        let same = build(&relabelled, &owner).expect("builds");
        assert_eq!(hash_of(&same), hash);

        let mut changed = pipeline.clone();
        changed.spec.runner.concurrency = 64;
        let other = build(&changed, &owner).expect("builds");
        assert_ne!(hash_of(&other), hash);
    }
}
