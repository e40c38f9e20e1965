//! Unit tests of the desired status.

use super::*;
use crate::resources::tests::generated;

fn done(reason: &'static str) -> StepOutcome {
    StepOutcome::Done {
        reason,
        message: "ok".into(),
    }
}

fn observed() -> Observed {
    Observed {
        topics: done("TopicsReady"),
        schema: done("SchemaReady"),
        workloads: done("WorkloadsApplied"),
        desired_replicas: 1,
        replay: None,
        backfill: None,
        ready_replicas: 0,
        rollout_complete: true,
        runner_problem: None,
        ingest_unready: None,
    }
}

#[test]
fn a_new_generation_is_reported_as_reconciling_at_once() {
    let mut pipeline = generated();
    pipeline.metadata.generation = Some(3);
    let status = reconciling_status(&pipeline, Timestamp::now());
    assert_eq!(status.observed_generation, Some(3));
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Reconciling")
    );
    assert_eq!(ready.observed_generation, Some(3));
    assert_eq!(status.topic.as_deref(), Some("demo.generated-listings"));
}

#[test]
fn a_runner_that_cannot_be_scheduled_says_why() {
    let pipeline = generated();
    let mut observed = observed();
    observed.runner_problem = Some((
        "Unschedulable",
        "pod generated-listings-processor-x cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu.".into(),
    ));
    let unschedulable = |observed: &Observed, message_start: &str| {
        let status = desired_status(&pipeline, observed, Timestamp::now());
        let runner = condition(&status, "RunnerReady").clone();
        assert_eq!(
            (runner.status.as_str(), runner.reason.as_str()),
            ("False", "Unschedulable")
        );
        assert!(
            runner.message.starts_with(message_start),
            "{}",
            runner.message
        );
        assert!(runner.message.contains("Insufficient cpu"));
    };
    unschedulable(&observed, "0 of 1 processor replicas ready: pod ");
    // A rollout stuck behind an unschedulable pod is not ready, though the old pod is.
    observed.ready_replicas = 1;
    observed.rollout_complete = false;
    unschedulable(
        &observed,
        "1 of 1 processor replicas ready; the rollout of the current spec is not finished: pod ",
    );
    // Once the replicas are ready on the current spec, an old problem is not reported.
    observed.rollout_complete = true;
    let status = desired_status(&pipeline, &observed, Timestamp::now());
    assert_eq!(condition(&status, "RunnerReady").reason, "ReplicasReady");
}

#[test]
fn a_source_whose_ingest_replica_is_not_ready_leaves_the_pipeline_not_ready() {
    let pipeline = generated();
    let mut observed = observed();
    observed.ready_replicas = 1;
    observed.ingest_unready =
        Some("the ingest Deployment generated-listings-ingest has 0 of 1 replicas ready".into());
    let status = desired_status(&pipeline, &observed, Timestamp::now());
    let runner = condition(&status, "RunnerReady");
    assert_eq!(
        (runner.status.as_str(), runner.reason.as_str()),
        ("False", "IngestUnavailable")
    );
    assert_eq!(
        runner.message,
        "1 of 1 processor replicas ready; the ingest Deployment generated-listings-ingest has 0 of 1 replicas ready"
    );
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "IngestUnavailable")
    );
    // Processors not ready either: their reason comes first, the ingest is still named.
    observed.ready_replicas = 0;
    let status = desired_status(&pipeline, &observed, Timestamp::now());
    let runner = condition(&status, "RunnerReady");
    assert_eq!(runner.reason, "ReplicasUnavailable");
    assert!(
        runner.message.ends_with("has 0 of 1 replicas ready"),
        "{}",
        runner.message
    );
}

fn condition<'a>(status: &'a PipelineStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

#[test]
fn ready_when_everything_is_in_place() {
    let pipeline = generated();
    let status = desired_status(&pipeline, &observed(), Timestamp::now());
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&status, "Provisioned").status, "True");
    assert_eq!(condition(&status, "TopicReady").status, "True");
    assert_eq!(condition(&status, "Degraded").status, "False");
    // No kubelet, no ready replicas: reported honestly.
    let runner = condition(&status, "RunnerReady");
    assert_eq!(
        (runner.status.as_str(), runner.reason.as_str()),
        ("False", "ReplicasUnavailable")
    );
    assert_eq!(runner.message, "0 of 1 processor replicas ready");
    // Ready means available: not while the runner is not.
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ReplicasUnavailable")
    );
    assert_eq!(
        ready.message,
        "the runner is not available: 0 of 1 processor replicas ready"
    );
    let mut available = observed();
    available.ready_replicas = 1;
    let status = desired_status(&pipeline, &available, Timestamp::now());
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Available")
    );
    assert_eq!(status.message, None);
    assert_eq!(status.topic.as_deref(), Some("demo.generated-listings"));
    assert_eq!(status.tables, vec!["generated.listings_by_id".to_string()]);
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ORDER);
}

#[test]
fn a_suspended_pipeline_is_provisioned_but_not_ready() {
    let mut pipeline = generated();
    pipeline.spec.suspend = true;
    let status = desired_status(&pipeline, &observed(), Timestamp::now());
    assert_eq!(condition(&status, "Provisioned").status, "True");
    for type_ in ["RunnerReady", "Ready"] {
        let found = condition(&status, type_);
        assert_eq!(
            (found.status.as_str(), found.reason.as_str()),
            ("False", SUSPENDED),
            "{type_}"
        );
    }
    assert!(
        condition(&status, "Ready")
            .message
            .contains("spec.suspend: true")
    );
}

#[test]
fn a_failure_reaches_its_condition_ready_degraded_and_the_message() {
    let pipeline = generated();
    let mut observed = observed();
    observed.topics = StepOutcome::Failed {
        reason: "NotSupported",
        message: "topic t has 6 partitions in Kafka but declares 3".into(),
    };
    let status = desired_status(&pipeline, &observed, Timestamp::now());
    let topic = condition(&status, "TopicReady");
    assert_eq!(
        (topic.status.as_str(), topic.reason.as_str()),
        ("False", "NotSupported")
    );
    assert_eq!(condition(&status, "Ready").reason, "NotSupported");
    assert_eq!(condition(&status, "Degraded").status, "True");
    assert_eq!(condition(&status, "SchemaReady").status, "True");
    assert!(status.message.expect("message").contains("6 partitions"));
}

#[test]
fn transition_times_move_only_on_status_changes() {
    let mut pipeline = generated();
    let earlier = Timestamp::from_second(1_700_000_000).expect("timestamp");
    let first = desired_status(&pipeline, &observed(), earlier);
    pipeline.status = Some(first.clone());

    let later = Timestamp::from_second(1_700_000_600).expect("timestamp");
    let same = desired_status(&pipeline, &observed(), later);
    assert_eq!(same, first, "an unchanged status is identical, so no write");

    let mut failing = observed();
    failing.schema = StepOutcome::Failed {
        reason: "CassandraUnavailable",
        message: "down".into(),
    };
    let changed = desired_status(&pipeline, &failing, later);
    assert_eq!(
        condition(&changed, "SchemaReady").last_transition_time.0,
        later
    );
    assert_eq!(
        condition(&changed, "TopicReady").last_transition_time.0,
        earlier
    );
    let moved: Vec<&str> = transitions(&first.conditions, &changed.conditions)
        .iter()
        .map(|condition| condition.type_.as_str())
        .collect();
    assert_eq!(moved, ["Ready", "Provisioned", "SchemaReady", "Degraded"]);
    assert!(!is_healthy(condition(&changed, "Degraded")));
    assert!(is_healthy(condition(&changed, "TopicReady")));
}

fn run(trigger: &str, outcome: &str) -> runs::RunRecord {
    runs::RunRecord {
        interval: "2026-12-07T00:00:00Z..2026-12-08T00:00:00Z".into(),
        trigger: trigger.into(),
        outcome: outcome.into(),
        error: (outcome != "Succeeded").then(|| "connection refused".into()),
        ..Default::default()
    }
}

/// The status once the freshness loop read `trigger`'s run ending in `outcome` (newest, and
/// unlike the last one's) and the reconcile then reflected it.
fn with_last_run(
    pipeline: &mut Pipeline,
    observed: &Observed,
    trigger: &str,
    outcome: &str,
) -> PipelineStatus {
    let mut status = desired_status(pipeline, observed, Timestamp::now());
    let runs = runs::RunsStatus {
        recent: vec![run(trigger, outcome), run("Scheduled", "Succeeded")],
        ..Default::default()
    };
    status.runs = Some(runs.clone());
    pipeline.status = Some(status);
    // Each call changes what the last run implies.
    assert!(
        !runs_reflected(pipeline),
        "a reconcile is asked for when the conditions do not say what the runs imply"
    );
    let status = PipelineStatus {
        runs: Some(runs),
        ..desired_status(pipeline, observed, Timestamp::now())
    };
    pipeline.status = Some(status.clone());
    assert!(runs_reflected(pipeline), "{status:?}");
    status
}

#[test]
fn a_failed_scheduled_run_makes_the_pipeline_not_ready_until_a_run_succeeds() {
    let mut pipeline = generated();
    let mut observed = observed();
    observed.ready_replicas = 1;

    let failed = with_last_run(&mut pipeline, &observed, "Scheduled", "Failed");
    let ready = condition(&failed, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "LastRunFailed")
    );
    assert_eq!(
        ready.message,
        "the last run (Scheduled of 2026-12-07T00:00:00Z..2026-12-08T00:00:00Z) ended Failed: connection refused; the tables miss its interval until a run succeeds"
    );
    let degraded = condition(&failed, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "LastRunFailed")
    );
    assert_eq!(condition(&failed, "Provisioned").status, "True");
    assert_eq!(condition(&failed, "RunnerReady").status, "True");

    // Partial, skipped, or a failed backfill: degraded, still ready.
    for (trigger, outcome, reason) in [
        ("Scheduled", "Partial", "LastRunPartial"),
        ("CatchUp", "Skipped", "RunsSkipped"),
        ("Backfill", "Failed", "LastRunFailed"),
    ] {
        let status = with_last_run(&mut pipeline, &observed, trigger, outcome);
        assert_eq!(condition(&status, "Ready").status, "True", "{outcome}");
        let degraded = condition(&status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", reason)
        );
    }

    // The next run succeeds: ready again, nothing degraded.
    let succeeded = with_last_run(&mut pipeline, &observed, "Scheduled", "Succeeded");
    assert_eq!(condition(&succeeded, "Ready").reason, "Available");
    assert_eq!(condition(&succeeded, "Degraded").status, "False");
    assert_eq!(succeeded.message, None);

    // A step's failure comes first; the run is still named.
    observed.schema = StepOutcome::Failed {
        reason: "SchemaFailed",
        message: "Cassandra unreachable".into(),
    };
    let both = with_last_run(&mut pipeline, &observed, "Scheduled", "Failed");
    let degraded = condition(&both, "Degraded");
    assert_eq!(degraded.reason, "SchemaFailed");
    assert!(
        degraded
            .message
            .starts_with("Cassandra unreachable; the last run"),
        "{}",
        degraded.message
    );
    assert_eq!(condition(&both, "Ready").reason, "SchemaFailed");
}
