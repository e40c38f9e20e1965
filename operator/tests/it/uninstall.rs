//! The uninstall path on the local API server: the pre-delete check the chart runs, and a Lease
//! owned by the chart that the operator never creates again. Needs `dev/stack up`.

use std::process::Command;
use std::time::Duration;

use crate::common::{Operator, TestWorld};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use rtdp_test_support::eventually;

/// Runs `rtdp-operator --namespaces <namespace> uninstall-check`.
fn uninstall_check(namespace: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rtdp-operator"))
        .args([
            "--namespaces",
            namespace,
            "uninstall-check",
            "--release",
            "rtdp",
            "--release-namespace",
            "rtdp-system",
        ])
        .output()
        .expect("running rtdp-operator uninstall-check")
}

#[tokio::test]
async fn the_uninstall_check_refuses_while_pipelines_exist() {
    let world = TestWorld::new("op-uninstall").await;
    let empty = uninstall_check(&world.namespace);
    assert!(
        empty.status.success(),
        "nothing to orphan: {}",
        String::from_utf8_lossy(&empty.stderr)
    );

    // Not reconciled (no operator runs): the finalizer is what a Delete Pipeline carries.
    let mut pipeline = world.pipeline("left-behind");
    pipeline.metadata.finalizers = Some(vec!["rtdp.dev/cleanup".into()]);
    world.create(&pipeline).await;
    let refused = uninstall_check(&world.namespace);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "{}/left-behind: deletionPolicy Delete",
            world.namespace
        )),
        "{message}"
    );
    assert!(
        message.contains("helm uninstall rtdp --namespace rtdp-system --no-hooks"),
        "{message}"
    );

    // Released by hand as the message says, the check lets the uninstall go on.
    world
        .pipelines()
        .patch(
            "left-behind",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(
                serde_json::from_value(serde_json::json!([
                    {"op": "remove", "path": "/metadata/finalizers"}
                ]))
                .expect("a JSON patch"),
            ),
        )
        .await
        .expect("removing the finalizer");
    world.delete("left-behind").await;
    world
        .wait_gone("left-behind", Duration::from_secs(30))
        .await;
    let after = uninstall_check(&world.namespace);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    world.cleanup().await;
}

#[tokio::test]
async fn with_create_lease_false_the_operator_waits_for_the_lease_and_never_recreates_it() {
    let world = TestWorld::new("op-lease").await;
    let lease_name = format!("{}-chart-lease", world.namespace);
    let leases = world.api::<Lease>();
    let mut operator =
        Operator::start_with_lease(&world.namespace, &lease_name, &["--create-lease=false"]);

    // No Lease: the operator stands by and creates nothing.
    eventually(
        "the operator to serve metrics",
        Duration::from_secs(30),
        || operator.metric("rtdp_operator_leader"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(operator.metric("rtdp_operator_leader").await, Some(0.0));
    assert!(leases.get_opt(&lease_name).await.expect("get").is_none());

    // The chart creates it: the operator leads.
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(lease_name.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("creating the Lease as the chart does");
    eventually("the operator to lead", Duration::from_secs(30), || async {
        (operator.metric("rtdp_operator_leader").await == Some(1.0)).then_some(())
    })
    .await;

    // helm uninstall deletes it: the operator steps down and does not create it again.
    leases
        .delete(&lease_name, &DeleteParams::default())
        .await
        .expect("deleting the Lease as helm uninstall does");
    eventually(
        "the operator to step down",
        Duration::from_secs(30),
        || async { (operator.metric("rtdp_operator_leader").await == Some(0.0)).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        leases.get_opt(&lease_name).await.expect("get").is_none(),
        "the operator recreated the Lease"
    );
    assert!(
        operator.log_text().contains("was deleted"),
        "{}",
        operator.log_text()
    );
    operator.terminate();
    world.cleanup().await;
}
