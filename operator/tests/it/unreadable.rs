//! A Pipeline the operator cannot read (stored under a schema its types refuse) is reported on
//! its own and does not stop the others. Needs `dev/stack up`.

use std::time::Duration;

use crate::common::{Operator, TestWorld};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use rtdp_crds::Pipeline;
use rtdp_test_support::eventually;

#[tokio::test]
async fn an_unreadable_pipeline_is_reported_and_the_others_still_reconcile() {
    let world = TestWorld::new("op-unreadable").await;

    // The status schema accepts any integer for `replicas`; the operator's types hold an i32.
    // Such an object (e.g. written by another tool or an older version) used to fail the
    // whole watch, stalling every Pipeline. Written before the operator starts, so nothing
    // overwrites it.
    world.create(&world.pipeline("broken")).await;
    let resource = ApiResource::erase::<Pipeline>(&());
    let dynamic: Api<DynamicObject> =
        Api::namespaced_with(world.client.clone(), &world.namespace, &resource);
    dynamic
        .patch_status(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"replicas": 5_000_000_000u64}})),
        )
        .await
        .expect("the API server accepts the status (its schema allows the value)");
    assert!(
        world.pipelines().get("broken").await.is_err(),
        "the typed client cannot read it either: the premise of this test"
    );

    let _operator = Operator::start(&world.namespace, &[]);
    world.create(&world.pipeline("healthy")).await;
    world
        .wait_for_condition("healthy", "Provisioned", "True", None)
        .await;
    let reasons = eventually(
        "an UnreadablePipeline event about the broken Pipeline",
        Duration::from_secs(60),
        || async {
            let reasons = world.event_reasons("broken").await;
            reasons
                .iter()
                .any(|reason| reason == "UnreadablePipeline")
                .then_some(reasons)
        },
    )
    .await;
    assert!(
        !reasons.iter().any(|reason| reason == "Reconciling"),
        "nothing is done with a Pipeline that cannot be read: {reasons:?}"
    );
    let note = world
        .events("broken")
        .await
        .into_iter()
        .find_map(|event| {
            (event.reason.as_deref() == Some("UnreadablePipeline")).then_some(event.note)
        })
        .flatten()
        .unwrap_or_default();
    assert!(
        note.contains("nothing is reconciled until it changes"),
        "{note}"
    );
    world.cleanup().await;
}
