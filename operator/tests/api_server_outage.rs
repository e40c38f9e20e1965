//! The Kubernetes API server goes away for 30 s under a running operator: it loses the Lease
//! (it cannot renew), stops its controller and stands by; it does not exit or crash-loop, and
//! once the API server is back it leads again and applies a change made after the outage.
//!
//! This test stops and restarts the local stack's shared API server. It is alone in its test
//! binary on purpose: cargo runs test binaries one after another, so no other test talks to
//! the API server while it is down, and it is back up before the next binary starts.

// Shares the helpers of the `it` binary, of which it uses a part.
#[path = "it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::TestWorld;
use k8s_openapi::api::apps::v1::Deployment;
use rtdp_test_support::process::dev_stack;
use rtdp_test_support::{eventually, stays};

#[tokio::test]
async fn an_api_server_outage_is_waited_out_and_the_operator_converges_after() {
    let (world, mut operator) = TestWorld::with_operator("op-api-outage", &[]).await;
    let name = "outage";
    world.create(&world.pipeline(name)).await;
    world
        .wait_for_condition(name, "Provisioned", "True", None)
        .await;

    dev_stack(&["down", "kube"]);
    // The outage lasts 30 s; the operator must run all along.
    stays(
        "the operator running while the API server is away",
        Duration::from_secs(30),
        || {
            let running = operator.is_running();
            if !running {
                eprintln!("the operator exited; log:\n{}", operator.log_text());
            }
            std::future::ready(running)
        },
    )
    .await;
    dev_stack(&["up", "kube"]);

    // A change made after the outage is applied by the same process, leading again.
    eventually(
        "the spec change accepted by the API server",
        Duration::from_secs(60),
        || async {
            world
                .pipelines()
                .patch(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(
                        serde_json::json!({"spec": {"runner": {"replicas": 2}}}),
                    ),
                )
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    eventually(
        "the processor Deployment scaled to 2",
        Duration::from_secs(90),
        || async {
            let deployment = world
                .api::<Deployment>()
                .get(&format!("{name}-processor"))
                .await
                .ok()?;
            (deployment.spec?.replicas == Some(2)).then_some(())
        },
    )
    .await;
    assert!(
        operator.is_running(),
        "the operator still runs after the outage"
    );
    let log = operator.log_text();
    assert!(
        log.contains("standing by to lead again"),
        "the outage cost the Lease, and the operator stood by instead of exiting; log:\n{log}"
    );
    world.cleanup().await;
}
