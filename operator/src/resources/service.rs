//! `<pipeline>-metrics`: a headless Service over the runner pods' metrics port, for
//! Prometheus.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use rtdp_crds::Pipeline;

use super::{METRICS_PORT, METRICS_PORT_NAME, PIPELINE_LABEL, child_name, object_meta};

/// The Service's name: `<pipeline>-metrics`.
pub fn name(pipeline: &Pipeline) -> String {
    child_name(pipeline, "metrics")
}

/// Builds the metrics Service, selecting every runner pod of the Pipeline. Pure.
pub fn build(pipeline: &Pipeline, owner: &OwnerReference) -> Service {
    Service {
        metadata: object_meta(pipeline, name(pipeline), owner, None),
        spec: Some(ServiceSpec {
            // Headless: Prometheus scrapes the pods through the endpoints, and no cluster IP
            // is used up per Pipeline.
            type_: Some("ClusterIP".into()),
            cluster_ip: Some("None".into()),
            selector: Some(BTreeMap::from([(
                PIPELINE_LABEL.to_string(),
                pipeline.name_any(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some(METRICS_PORT_NAME.into()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String(METRICS_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::tests::{generated, objects_of};

    #[test]
    fn selects_the_pipelines_pods_on_the_metrics_port() {
        let pipeline = generated();
        let objects = objects_of(&pipeline);
        let spec = objects.service.spec.expect("spec");
        assert_eq!(
            objects.service.metadata.name.as_deref(),
            Some("generated-listings-metrics")
        );
        let selector = spec.selector.expect("selector");
        assert_eq!(
            selector.get("rtdp.dev/pipeline").map(String::as_str),
            Some("generated-listings")
        );
        let port = &spec.ports.expect("ports")[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("metrics"), 9090));
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        // The processor's pods carry the selected label.
        let template_labels = objects
            .processor
            .spec
            .and_then(|spec| spec.template.metadata)
            .and_then(|meta| meta.labels)
            .expect("labels");
        assert_eq!(
            template_labels.get("rtdp.dev/pipeline").map(String::as_str),
            Some("generated-listings")
        );
    }
}
