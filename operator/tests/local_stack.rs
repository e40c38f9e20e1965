//! Proves the local stack's Kubernetes API server is real: kube-rs creates and reads a
//! ConfigMap, and the Pipeline CRD applies and becomes Established. Needs `dev/stack up`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rtdp_test_support::{eventually, kube_client, unique_name};

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
    let client = kube_client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = rtdp_crds::crd();
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    crds.patch(
        &name,
        &PatchParams::apply("rtdp-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the Pipeline CRD");

    eventually(
        "the Pipeline CRD to become Established",
        Duration::from_secs(30),
        || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                let established = crd.status?.conditions?.into_iter().any(|condition| {
                    condition.type_ == "Established" && condition.status == "True"
                });
                established.then_some(())
            }
        },
    )
    .await;
}
