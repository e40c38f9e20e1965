//! Reconciles an owned object's changes trigger reuse the last check of the topics and tables;
//! a new spec checks Kafka and Cassandra again. Needs `dev/stack up`.

use std::time::Duration;

use crate::common::TestWorld;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use rtdp_test_support::eventually;

#[tokio::test]
async fn owned_object_changes_do_not_recheck_kafka_and_cassandra() {
    let (world, operator) = TestWorld::with_operator("op-checks", &[]).await;
    let name = "checked";
    world.create(&world.pipeline(name)).await;
    world
        .wait_for_condition(name, "Provisioned", "True", None)
        .await;
    // Let the first reconciles (creation, status writes, the Deployment's own status) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let checks = operator
        .metric("rtdp_operator_external_checks_total")
        .await
        .expect("the external checks metric");
    let reconciles = operator
        .metric("rtdp_operator_reconciles_total{result=\"success\"}")
        .await
        .expect("the reconciles metric");

    // Five edits of the processor Deployment: each triggers a reconcile (owned object). They
    // are made a second apart: requests within the operator's 500 ms debounce merge into one.
    let deployments = world.api::<Deployment>();
    for edit in 0..5 {
        deployments
            .patch(
                &format!("{name}-processor"),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "metadata": {"annotations": {"example.com/edit": edit.to_string()}}
                })),
            )
            .await
            .expect("editing the processor Deployment");
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    eventually("five more reconciles", Duration::from_secs(30), || async {
        let now = operator
            .metric("rtdp_operator_reconciles_total{result=\"success\"}")
            .await?;
        (now >= reconciles + 5.0).then_some(())
    })
    .await;
    assert_eq!(
        operator.metric("rtdp_operator_external_checks_total").await,
        Some(checks),
        "reconciles triggered by an owned object reuse the last check"
    );

    // A new spec is checked against Kafka and Cassandra at once.
    world
        .patch_spec(name, serde_json::json!({"topic": {"partitions": 3}}))
        .await;
    eventually(
        "a check of the new generation",
        Duration::from_secs(30),
        || async {
            let now = operator
                .metric("rtdp_operator_external_checks_total")
                .await?;
            (now > checks).then_some(())
        },
    )
    .await;
    world.cleanup().await;
}
