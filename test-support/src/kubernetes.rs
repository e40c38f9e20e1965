//! The Kubernetes objects every test against the local API server needs: a CRD installed
//! and Established, a namespace of its own.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::{eventually, unique_name};

/// Applies a CRD (server-side apply, idempotent) and waits until it is Established.
pub async fn install_crd(client: &Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    crds.patch(
        &name,
        &PatchParams::apply("rtdp-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|error| panic!("applying the CRD {name}: {error}"));
    eventually(
        &format!("the CRD {name} to become Established"),
        Duration::from_secs(30),
        || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let conditions = crds.get(&name).await.ok()?.status?.conditions?;
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Established" && condition.status == "True")
                    .then_some(())
            }
        },
    )
    .await;
}

/// Creates a namespace with a unique name starting with `prefix`; returns the name.
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("creating the test namespace {name}: {error}"));
    name
}

/// Deletes a namespace without waiting, best effort, with kubectl: usable from `Drop`, which
/// cannot await.
pub fn delete_namespace_in_background(name: &str) {
    let _ = std::process::Command::new("kubectl")
        .args(["delete", "namespace", name, "--wait=false"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}
