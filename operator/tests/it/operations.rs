//! The operator as it is operated: restarted in the middle of a reconcile, run as two
//! replicas with one leader, and stopped gracefully. Needs `dev/stack up`.

#[cfg(not(feature = "test-hooks"))]
compile_error!(
    "operations.rs restarts the operator mid-reconcile: run with `--features rtdp-operator/test-hooks` (make test does)"
);

use std::time::Duration;

use crate::common::{Operator, TestWorld, cassandra, condition_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::ListParams;
use rtdp_test_support::{cassandra_table_names, eventually};

/// Killed after the topics and tables exist but before any Kubernetes object or status, the
/// operator's successor converges with no duplicates.
#[tokio::test]
async fn a_restart_in_the_middle_of_a_reconcile_converges_without_duplicates() {
    let world = TestWorld::new("op-restart").await;
    let lease = format!("{}-leader", world.namespace);
    let mut first =
        Operator::start_with_lease(&world.namespace, &lease, &["--test-pause-after", "schema"]);
    let name = "restarted";
    let pipeline = world.pipeline(name);
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let topic = format!("{}.{name}", world.namespace);
    world.create(&pipeline).await;

    // In the middle: Kafka and Cassandra done, Kubernetes objects and status not yet.
    world.topic(&topic).await;
    let session = cassandra().await;
    eventually("the table to exist", Duration::from_secs(60), || {
        let session = &session;
        let keyspace = keyspace.clone();
        async move {
            let columns =
                rtdp_provisioning::cassandra::read_table(session, &keyspace, "listings_by_id")
                    .await
                    .ok()?;
            (!columns.is_empty()).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        world
            .api::<ConfigMap>()
            .get_opt(&format!("{name}-runner"))
            .await
            .expect("get")
            .is_none(),
        "the first operator is paused before the Kubernetes objects"
    );
    // Only the progress note written before the slow steps, nothing a finished step reports.
    assert!(
        world
            .pipelines()
            .get(name)
            .await
            .expect("get")
            .status
            .is_none_or(|status| status
                .conditions
                .iter()
                .all(|condition| condition.reason == "Reconciling"))
    );
    first.kill();

    // The successor waits for the dead leader's Lease to expire, then converges.
    let second = Operator::start_with_lease(&world.namespace, &lease, &[]);
    let ready = world
        .wait_for_condition(name, "Provisioned", "True", None)
        .await;

    let selector = ListParams::default().labels(&format!("rtdp.dev/pipeline={name}"));
    let deployments = world
        .api::<Deployment>()
        .list(&selector)
        .await
        .expect("list");
    let names: Vec<String> = deployments
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(
        names,
        [format!("{name}-ingest"), format!("{name}-processor")]
    );
    assert_eq!(
        world
            .api::<ConfigMap>()
            .list(&selector)
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    assert_eq!(
        world
            .api::<Service>()
            .list(&selector)
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    let finalizers = ready
        .finalizers()
        .iter()
        .filter(|f| *f == "rtdp.dev/cleanup")
        .count();
    assert_eq!(finalizers, 1);
    let status = ready.status.clone().expect("status");
    let mut types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(
        types.len(),
        status.conditions.len(),
        "one condition per type"
    );
    let metadata = world
        .admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("Kafka metadata");
    let topics: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|topic| topic.name())
        .filter(|candidate| candidate.starts_with(&topic))
        .collect();
    assert_eq!(topics.len(), 2, "{topics:?}");
    assert_eq!(cassandra_table_names(&session, &keyspace).await.len(), 1);
    assert!(second.get("/healthz").await.is_some());

    world.delete(name).await;
    world.wait_gone(name, Duration::from_secs(60)).await;
    world.cleanup().await;
}

/// Two operators at once: only the leader writes; when it dies the other takes over; a
/// graceful stop releases the Lease.
#[tokio::test]
async fn two_operators_only_the_leader_writes() {
    let world = TestWorld::new("op-leader").await;
    let lease_name = format!("{}-leader", world.namespace);
    let mut operators = vec![
        Operator::start_with_lease(&world.namespace, &lease_name, &[]),
        Operator::start_with_lease(&world.namespace, &lease_name, &[]),
    ];
    let leases = world.api::<Lease>();
    let holder = eventually("a leader", Duration::from_secs(30), || {
        let leases = leases.clone();
        let lease_name = lease_name.clone();
        async move { leases.get(&lease_name).await.ok()?.spec?.holder_identity }
    })
    .await;
    let leader_index = operators
        .iter()
        .position(|operator| operator.identity == holder)
        .expect("the holder is one of the two");
    let follower_index = 1 - leader_index;
    eventually("the leader gauges", Duration::from_secs(20), || {
        let operators = &operators;
        async move {
            let leader = operators[leader_index]
                .metric("rtdp_operator_leader")
                .await?;
            let follower = operators[follower_index]
                .metric("rtdp_operator_leader")
                .await?;
            (leader == 1.0 && follower == 0.0).then_some(())
        }
    })
    .await;

    let name = "led";
    world.create(&world.pipeline(name)).await;
    world
        .wait_for_condition(name, "Provisioned", "True", None)
        .await;
    let events = world.events(name).await;
    assert!(!events.is_empty());
    for event in &events {
        assert_eq!(
            event.reporting_instance.as_deref(),
            Some(operators[leader_index].identity.as_str()),
            "only the leader writes: {event:?}"
        );
    }
    assert_eq!(
        operators[follower_index]
            .metric("rtdp_operator_reconciles_total{result=\"success\"}")
            .await,
        None,
        "the follower never reconciled"
    );

    // The leader dies; the follower takes over once the Lease expires and reconciles changes.
    operators[leader_index].kill();
    world
        .patch_spec(name, serde_json::json!({"runner": {"replicas": 2}}))
        .await;
    let updated = world
        .wait_for(
            name,
            "the new leader to reconcile",
            Duration::from_secs(60),
            |pipeline| pipeline.status.as_ref().and_then(|status| status.replicas) == Some(2),
        )
        .await;
    assert_eq!(condition_of(&updated, "Provisioned").0, "True");
    let lease = leases.get(&lease_name).await.expect("the Lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(operators[follower_index].identity.as_str())
    );
    assert!(spec.lease_transitions.unwrap_or_default() >= 1);

    world.delete(name).await;
    world.wait_gone(name, Duration::from_secs(60)).await;

    // A graceful stop exits 0 and releases the Lease.
    let status = operators[follower_index].terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let lease = leases.get(&lease_name).await.expect("the Lease");
    assert_eq!(lease.spec.and_then(|spec| spec.holder_identity), None);
    world.cleanup().await;
}

/// Drift made while no operator runs (a managed topic config changed, a column the spec still
/// declares dropped, the processor Deployment deleted) is repaired when an operator comes
/// back: its first reconcile of every Pipeline compares everything with the spec.
#[tokio::test]
async fn drift_made_while_the_operator_is_down_is_repaired_when_it_returns() {
    let (world, mut first) = TestWorld::with_operator("op-down-drift", &[]).await;
    let name = "drifted";
    let pipeline = world.pipeline(name);
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let topic = pipeline.topic_name();
    world.create(&pipeline).await;
    world
        .wait_for_condition(name, "Provisioned", "True", None)
        .await;
    let status = first.terminate();
    assert!(status.success(), "graceful stop: {status}");

    // 1. The managed timestamp type, changed by hand.
    world
        .set_topic_config(&topic, "message.timestamp.type", "CreateTime")
        .await;
    // 2. A column the spec still declares, dropped.
    let session = cassandra().await;
    session
        .query_unpaged(
            format!("ALTER TABLE {keyspace}.listings_by_id DROP price"),
            (),
        )
        .await
        .expect("dropping a column by hand");
    // 3. The processor Deployment, deleted.
    let deployments = world.api::<Deployment>();
    let processor = format!("{name}-processor");
    deployments
        .delete(&processor, &Default::default())
        .await
        .expect("deleting the processor Deployment by hand");

    let _second = Operator::start(&world.namespace, &[]);
    world
        .wait_topic_config(&topic, "message.timestamp.type", "LogAppendTime")
        .await;
    eventually("the dropped column back", Duration::from_secs(60), || {
        let session = &session;
        let keyspace = keyspace.clone();
        async move {
            let table =
                rtdp_provisioning::cassandra::read_table(session, &keyspace, "listings_by_id")
                    .await
                    .ok()?;
            table.contains_key("price").then_some(())
        }
    })
    .await;
    eventually(
        "the processor Deployment back",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            let processor = processor.clone();
            async move {
                deployments
                    .get_opt(&processor)
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ())
            }
        },
    )
    .await;
    world
        .wait_for_condition(name, "Provisioned", "True", None)
        .await;
    world.cleanup().await;
}
