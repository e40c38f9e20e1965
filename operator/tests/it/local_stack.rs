//! Proves the local stack's Kubernetes API server is real: kube-rs creates and reads a
//! ConfigMap, and the Pipeline CRD applies and becomes Established. Needs `dev/stack up`.

use crate::common;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use rtdp_test_support::{kube_client, unique_name};

#[tokio::test]
async fn config_map_create_and_read() {
    let client = kube_client().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let name = unique_name("stack-smoke");
    let config_map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "pipeline.yaml".to_string(),
            "kind: Pipeline".to_string(),
        )])),
        ..Default::default()
    };
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .expect("creating the ConfigMap");

    let read = config_maps
        .get(&name)
        .await
        .expect("reading the ConfigMap back");
    assert_eq!(
        read.data
            .and_then(|data| data.get("pipeline.yaml").cloned())
            .as_deref(),
        Some("kind: Pipeline")
    );
    config_maps
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the ConfigMap");
}

#[tokio::test]
async fn pipeline_crd_becomes_established() {
    // Applies the CRD with server-side apply and fails unless it becomes Established.
    common::install_crd(&kube_client().await).await;
}
