//! A backfill on the real local stack, its Jobs run as processes (the local stack has no
//! kubelet and no Job controller: this test plays both, running each Job's pod template as the
//! real runner and then marking the Job complete as the Job controller would).
//! `examples/listings-by-day.yaml` with a week's `spec.backfill` and `parallelism: 2` gets one
//! Job per day, never more than two unfinished at once, started in order; each Job asks the
//! listings API for exactly its day; `status.backfill` counts them to `Completed`. A new `id`
//! replaces the finished backfill's Jobs, and removing it cancels a running one.
//!
//! Every run is recorded in the run ledger, which the freshness loop reads into `status.runs`:
//! the backfill's seven days with their records, then a scheduled run (the CronJob's pod
//! template, run the same way) that fails, with a `RunFailed` Warning Event.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::TestWorld;
use crate::common::pods::start_pod;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use rtdp_crds::{BackfillSpec, Pipeline, parse_pipeline};
use rtdp_test_support::listings_api::{Listings, ListingsApi};
use rtdp_test_support::{cassandra_contact_points, kafka_bootstrap_servers, unique_cql_identifier};
use serde_json::json;

const DAYS: [&str; 8] = [
    "2026-11-20",
    "2026-11-21",
    "2026-11-22",
    "2026-11-23",
    "2026-11-24",
    "2026-11-25",
    "2026-11-26",
    "2026-11-27",
];

fn runs_of(pipeline: &Pipeline) -> rtdp_crds::runs::RunsStatus {
    pipeline
        .status
        .as_ref()
        .and_then(|status| status.runs.clone())
        .unwrap_or_default()
}

fn backfill_status(pipeline: &Pipeline) -> Option<rtdp_crds::BackfillStatus> {
    pipeline.status.as_ref()?.backfill.clone()
}

/// The Jobs of backfill `id`, by their interval's index.
async fn jobs_of(world: &TestWorld, id: &str) -> Vec<Job> {
    let mut jobs = world
        .api::<Job>()
        .list(&ListParams::default().labels(&format!("rtdp.dev/backfill={id}")))
        .await
        .expect("listing the backfill Jobs")
        .items;
    jobs.sort_by_key(|job| {
        job.annotations()
            .get("rtdp.dev/interval-index")
            .and_then(|index| index.parse::<usize>().ok())
    });
    jobs
}

/// Runs the CronJob's pod template once, as the CronJob's schedule would.
async fn scheduled_run(
    world: &TestWorld,
    name: &str,
    work: &std::path::Path,
    label: &str,
) -> rtdp_test_support::process::Process {
    let cron_job: k8s_openapi::api::batch::v1::CronJob = world.get(&format!("{name}-ingest")).await;
    let template = cron_job
        .spec
        .and_then(|spec| spec.job_template.spec)
        .expect("the CronJob's Job template")
        .template;
    start_pod(world, &template, work, label).await
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Complete")
        })
}

/// What the Job controller writes when a Job's pod succeeded.
async fn mark_complete(world: &TestWorld, job: &Job) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastProbeTime": now, "lastTransitionTime": now});
    world
        .api::<Job>()
        .patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": now,
                "completionTime": now,
                "succeeded": 1,
                "conditions": [condition("SuccessCriteriaMet"), condition("Complete")],
            }})),
        )
        .await
        .unwrap_or_else(|error| panic!("marking Job {} complete: {error}", job.name_any()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_runs_one_job_per_day_in_order_within_its_parallelism() {
    let (world, _operator) =
        TestWorld::with_operator("op-backfill", &["--freshness-period-seconds", "1"]).await;
    let last_day = DAYS[6].parse().expect("a date");
    let api = ListingsApi::start(
        "127.0.0.1:0".parse().expect("an address"),
        Listings::generate(4, 25, 0).posted_over(7, last_day),
        None,
    )
    .await
    .expect("starting the listings API");
    world
        .create_secret("listings-api", &[("api-key", "test-key")])
        .await;
    let name = "by-day";
    let mut pipeline = parse_pipeline(
        include_str!("../../../examples/listings-by-day.yaml"),
        "listings-by-day.yaml",
    )
    .expect("the example parses");
    pipeline.metadata.name = Some(name.into());
    pipeline.metadata.namespace = Some(world.namespace.clone());
    pipeline.spec.kafka.bootstrap_servers = vec![kafka_bootstrap_servers()];
    pipeline.spec.cassandra.contact_points = cassandra_contact_points();
    pipeline.spec.cassandra.keyspace.name = unique_cql_identifier("op");
    pipeline.spec.deletion_policy = rtdp_crds::DeletionPolicy::Delete;
    if let Some(http) = pipeline
        .spec
        .source
        .as_mut()
        .and_then(|source| source.http.as_mut())
    {
        http.url = api.url.clone();
    }
    pipeline.spec.backfill = Some(BackfillSpec {
        id: "week".into(),
        from: format!("{}T00:00:00Z", DAYS[0]),
        to: format!("{}T00:00:00Z", DAYS[7]),
        parallelism: 2,
    });
    let keyspace = pipeline.spec.cassandra.keyspace.name.clone();
    let scenario = world.scenario(name);
    world.create(&pipeline).await;
    let provisioned = scenario.until_provisioned().await;
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&world.namespace);

    // Play the kubelet and the Job controller: run each Job's pod, in order, then complete it.
    let mut ran: BTreeSet<String> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while ran.len() < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of the 7 Jobs appeared in time: {ran:?}",
            ran.len()
        );
        let jobs = jobs_of(&world, "week").await;
        let unfinished: Vec<&Job> = jobs.iter().filter(|job| !finished(job)).collect();
        assert!(
            unfinished.len() <= 2,
            "parallelism 2, yet {} Jobs unfinished",
            unfinished.len()
        );
        let Some(job) = unfinished.first() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let template = job.spec.clone().expect("a Job spec").template;
        let mut pod = start_pod(&world, &template, &work, &job.name_any()).await;
        assert!(
            pod.wait(Duration::from_secs(60)).success(),
            "Job {}'s pass failed",
            job.name_any()
        );
        mark_complete(&world, job).await;
        ran.insert(job.name_any());
    }
    let completed = world
        .wait_for(
            name,
            "the backfill completed",
            Duration::from_secs(60),
            |pipeline| backfill_status(pipeline).is_some_and(|status| status.state == "Completed"),
        )
        .await;
    let status = backfill_status(&completed).expect("status.backfill");
    assert_eq!(
        (
            status.intervals,
            status.succeeded,
            status.failed,
            status.running
        ),
        (7, 7, 0, 0),
        "{status:?}"
    );
    // Each Job asked for its own day, in order.
    let requested = api.requested_dates();
    let days: Vec<(String, String)> = DAYS
        .windows(2)
        .map(|pair| (pair[0].to_string(), pair[1].to_string()))
        .collect();
    assert_eq!(requested, days);
    scenario
        .expect_events(&["BackfillStarted", "BackfillCompleted"])
        .await;

    // The run history: the ledger's runs in status, newest first, with their records.
    let with_runs = world
        .wait_for(
            name,
            "status.runs to list the backfill's seven runs",
            Duration::from_secs(60),
            |pipeline| runs_of(pipeline).recent.len() == 7,
        )
        .await;
    let runs = runs_of(&with_runs);
    let listed: Vec<(String, String, String)> = runs
        .recent
        .iter()
        .map(|run| {
            (
                run.interval.clone(),
                run.trigger.clone(),
                run.outcome.clone(),
            )
        })
        .collect();
    let newest_first: Vec<(String, String, String)> = days
        .iter()
        .rev()
        .map(|(since, before)| {
            (
                format!("{since}T00:00:00Z..{before}T00:00:00Z"),
                "Backfill".to_string(),
                "Succeeded".to_string(),
            )
        })
        .collect();
    assert_eq!(listed, newest_first);
    assert_eq!(
        runs.recent.iter().map(|run| run.records).sum::<i64>(),
        100,
        "every listing of the week, once"
    );
    assert_eq!(
        runs.covered_through, None,
        "a backfill does not move the schedule"
    );

    // A scheduled run that fails (its API unreachable) is in the history, with a Warning.
    scenario
        .patch(json!({"source": {"http": {"url": "http://127.0.0.1:1/search", "maxRetries": 0}}}))
        .await;
    world
        .wait_for(
            name,
            "the unreachable URL applied",
            Duration::from_secs(60),
            |pipeline| {
                pipeline
                    .status
                    .as_ref()
                    .and_then(|status| status.observed_generation)
                    == pipeline.metadata.generation
            },
        )
        .await;
    let mut pod = scheduled_run(&world, name, &work, "scheduled-run").await;
    assert!(
        !pod.wait(Duration::from_secs(60)).success(),
        "a run whose API is unreachable must fail"
    );
    let failed = world
        .wait_for(
            name,
            "status.runs to show the failed scheduled run",
            Duration::from_secs(60),
            |pipeline| {
                runs_of(pipeline)
                    .recent
                    .first()
                    .is_some_and(|run| run.trigger == "Scheduled")
            },
        )
        .await;
    let latest = runs_of(&failed).recent[0].clone();
    assert_eq!(latest.outcome, "Failed", "{latest:?}");
    assert!(
        latest
            .error
            .as_deref()
            .is_some_and(|error| error.contains("127.0.0.1:1")),
        "the run says why: {latest:?}"
    );
    scenario.expect_events(&["RunFailed"]).await;
    // The conditions say so: Degraded names the run (Ready is False already here, where no
    // kubelet runs the processors; the unit tests cover Ready's own reason).
    let degraded_by_the_run = world
        .wait_for(
            name,
            "Degraded to name the failed run",
            Duration::from_secs(60),
            |pipeline| {
                pipeline.condition("Degraded").is_some_and(|condition| {
                    condition.status == "True"
                        && condition.message.contains("the last run (Scheduled of ")
                })
            },
        )
        .await;
    let degraded = degraded_by_the_run
        .condition("Degraded")
        .expect("the Degraded condition");
    assert_eq!(degraded.reason, "LastRunFailed", "{degraded:?}");
    assert!(degraded.message.contains("127.0.0.1:1"), "{degraded:?}");

    // The next scheduled run succeeds: nothing degraded any more.
    scenario
        .patch(json!({"source": {"http": {"url": api.url, "maxRetries": 5}}}))
        .await;
    world
        .wait_for(
            name,
            "the reachable URL applied",
            Duration::from_secs(60),
            |_| true,
        )
        .await;
    let mut pod = scheduled_run(&world, name, &work, "scheduled-run-again").await;
    assert!(
        pod.wait(Duration::from_secs(60)).success(),
        "a run whose API answers succeeds"
    );
    world
        .wait_for(
            name,
            "Degraded to clear once a run succeeded",
            Duration::from_secs(60),
            |pipeline| {
                runs_of(pipeline)
                    .recent
                    .first()
                    .is_some_and(|run| run.outcome == "Succeeded")
                    && pipeline
                        .condition("Degraded")
                        .is_some_and(|condition| condition.status == "False")
            },
        )
        .await;

    // Each id runs once: with its Jobs deleted, a later reconcile (a new generation, reported
    // in the status) starts none again.
    for job in jobs_of(&world, "week").await {
        world
            .api::<Job>()
            .delete(&job.name_any(), &kube::api::DeleteParams::background())
            .await
            .expect("deleting a finished Job");
    }
    scenario.patch(json!({"runner": {"concurrency": 64}})).await;
    world
        .wait_for(
            name,
            "the new generation reconciled",
            Duration::from_secs(60),
            |pipeline| {
                pipeline
                    .status
                    .as_ref()
                    .and_then(|status| status.observed_generation)
                    == pipeline.metadata.generation
                    && backfill_status(pipeline).is_some_and(|status| status.state == "Completed")
            },
        )
        .await;
    assert!(
        jobs_of(&world, "week").await.is_empty(),
        "a finished backfill started its Jobs again"
    );

    // A new id: the finished backfill's Jobs go, the new one starts (parallelism 1).
    scenario
        .patch(json!({"backfill": {"id": "again", "from": "2026-11-20T00:00:00Z", "to": "2026-11-27T00:00:00Z", "parallelism": 1}}))
        .await;
    world
        .wait_for(
            name,
            "the second backfill running",
            Duration::from_secs(60),
            |pipeline| {
                backfill_status(pipeline)
                    .is_some_and(|status| status.id == "again" && status.running == 1)
            },
        )
        .await;
    assert_eq!(jobs_of(&world, "again").await.len(), 1, "parallelism 1");
    // Removed while it runs: cancelled, its Job deleted.
    scenario.patch(json!({"backfill": null})).await;
    let cancelled = world
        .wait_for(
            name,
            "the backfill cancelled",
            Duration::from_secs(60),
            |pipeline| backfill_status(pipeline).is_some_and(|status| status.state == "Cancelled"),
        )
        .await;
    assert_eq!(
        backfill_status(&cancelled).map(|status| status.id),
        Some("again".into())
    );
    rtdp_test_support::eventually("the backfill Jobs deleted", Duration::from_secs(30), || {
        let world = &world;
        async move {
            (jobs_of(world, "again").await.is_empty() && jobs_of(world, "week").await.is_empty())
                .then_some(())
        }
    })
    .await;
    scenario.expect_events(&["BackfillCancelled"]).await;

    scenario.delete_and_wait_gone(Duration::from_secs(60)).await;
    world
        .drop_topics_and_keyspace(&provisioned.topic_name(), &keyspace)
        .await;
    world.cleanup().await;
}
