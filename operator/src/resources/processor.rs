//! `<pipeline>-processor`: the Deployment running `pipeline-runner process`.

use k8s_openapi::api::apps::v1::Deployment;
use rtdp_crds::Pipeline;

use super::{CONFIG_PATH, Role, Workload, child_name};

/// The Deployment's name: `<pipeline>-processor`.
pub fn name(pipeline: &Pipeline) -> String {
    child_name(pipeline, Role::Processor.as_str())
}

/// The processor replicas: none while suspended (the group's committed offsets stay where
/// they are); with autoscaling, the autoscaler's (`autoscaled`); otherwise `runner.replicas`.
pub fn replicas(pipeline: &Pipeline, autoscaled: Option<i32>) -> i32 {
    if pipeline.spec.suspend {
        0
    } else {
        autoscaled.unwrap_or(pipeline.spec.runner.replicas)
    }
}

/// Builds the processor Deployment. Pure.
pub fn build(workload: &Workload<'_>) -> Deployment {
    let pipeline = workload.pipeline;
    workload.deployment(
        name(pipeline),
        Role::Processor,
        workload.processor_replicas,
        None,
        &["process", "--file", CONFIG_PATH],
    )
}

#[cfg(test)]
mod tests {
    use crate::resources::CONFIG_HASH_ANNOTATION;
    use crate::resources::tests::{generated, objects_of};

    #[test]
    fn runs_process_with_the_declared_replicas_and_the_config_hash() {
        let mut pipeline = generated();
        pipeline.spec.runner.replicas = 3;
        let objects = objects_of(&pipeline);
        let deployment = objects.processor;
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some("generated-listings-processor")
        );
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|meta| meta.labels.clone())
            .expect("template labels");
        for (key, value) in spec.selector.match_labels.expect("selector") {
            assert_eq!(template_labels.get(&key), Some(&value), "selector {key}");
        }
        let annotations = spec
            .template
            .metadata
            .and_then(|meta| meta.annotations)
            .expect("annotations");
        let hash = crate::resources::config_map::hash_of(&objects.config_map);
        assert_eq!(annotations.get(CONFIG_HASH_ANNOTATION), Some(&hash));
        let container = &spec.template.spec.expect("pod").containers[0];
        assert_eq!(
            container.args.clone().expect("args"),
            ["process", "--file", "/etc/rtdp/pipeline.yaml"]
        );
        assert_eq!(
            container.image.as_deref(),
            Some("ghcr.io/rtdp-dev/pipeline-runner:0.1.0")
        );
    }

    #[test]
    fn a_spec_change_changes_the_config_hash() {
        let pipeline = generated();
        let hash = |pipeline: &rtdp_crds::Pipeline| {
            objects_of(pipeline)
                .processor
                .spec
                .and_then(|spec| spec.template.metadata)
                .and_then(|meta| meta.annotations)
                .and_then(|annotations| annotations.get(CONFIG_HASH_ANNOTATION).cloned())
                .expect("hash")
        };
        let mut changed = pipeline.clone();
        changed.spec.runner.batch.max_records = 100;
        assert_ne!(hash(&pipeline), hash(&changed));
    }
}
