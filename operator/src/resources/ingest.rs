//! `<pipeline>-ingest`: a CronJob running `pipeline-runner ingest --once` for an HTTP source
//! with a `schedule`, or a Deployment running `pipeline-runner ingest` for a continuous source
//! (an HTTP `pollInterval`, or the generator). None without a source.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, JobSpec, JobTemplateSpec, PodFailurePolicy,
    PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rtdp_crds::{CatchUpPolicy, Pipeline};

use super::{
    CONFIG_PATH, CONTAINER_NAME, Ingest, Role, Workload, child_name, common_labels, object_meta,
    selector_labels,
};

/// Completed and failed Jobs kept for `kubectl logs`.
pub const HISTORY_LIMIT: i32 = 3;
/// Retries of a failed ingest pass before the Job fails.
pub const BACKOFF_LIMIT: i32 = 2;
/// With `catchUp: None`, a run that could not start within this many seconds of its time is
/// skipped. With `All` and `Latest` there is no deadline: after an outage the CronJob starts
/// one run at once, and that run catches up from the run ledger.
pub const STARTING_DEADLINE_SECONDS: i64 = rtdp_crds::runs::NONE_POLICY_DEADLINE_SECONDS;
/// The runner's exit code for bad configuration: retrying cannot help.
pub const EXIT_BAD_CONFIGURATION: i32 = 2;

/// The ingest workload's name: `<pipeline>-ingest`.
pub fn name(pipeline: &Pipeline) -> String {
    child_name(pipeline, Role::Ingest.as_str())
}

/// Builds the ingest workload, if the Pipeline has a source. Pure.
pub fn build(workload: &Workload<'_>) -> Option<Ingest> {
    let pipeline = workload.pipeline;
    let source = pipeline.spec.source.as_ref()?;
    if source.http.is_none() && source.generator.is_none() {
        return None;
    }
    Some(match pipeline.schedule() {
        Some(schedule) => Ingest::Scheduled(Box::new(cron_job(workload, schedule))),
        None => Ingest::Continuous(Box::new(deployment(workload))),
    })
}

fn cron_job(workload: &Workload<'_>, schedule: &str) -> CronJob {
    let pipeline = workload.pipeline;
    let mut job_labels = common_labels(pipeline);
    job_labels.extend(selector_labels(pipeline, Role::Ingest));
    CronJob {
        metadata: object_meta(pipeline, name(pipeline), workload.owner, Some(Role::Ingest)),
        spec: Some(CronJobSpec {
            schedule: schedule.to_string(),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(HISTORY_LIMIT),
            failed_jobs_history_limit: Some(HISTORY_LIMIT),
            starting_deadline_seconds: pipeline
                .catch_up()
                .filter(|catch_up| catch_up.policy == CatchUpPolicy::None)
                .map(|_| STARTING_DEADLINE_SECONDS),
            // Suspended: no new runs; a run already started finishes its pass.
            suspend: Some(pipeline.spec.suspend),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..Default::default()
                }),
                spec: Some(job_spec(
                    workload,
                    &["ingest", "--once", "--file", CONFIG_PATH],
                )),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Job running one ingest pass with `args`: retried [`BACKOFF_LIMIT`] times, and failed at
/// once on bad configuration (retrying cannot help). The scheduled runs' and the backfill's.
pub(super) fn job_spec(workload: &Workload<'_>, args: &[&str]) -> JobSpec {
    JobSpec {
        backoff_limit: Some(BACKOFF_LIMIT),
        pod_failure_policy: Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER_NAME.into()),
                    operator: "In".into(),
                    values: vec![EXIT_BAD_CONFIGURATION],
                }),
                ..Default::default()
            }],
        }),
        template: workload.pod_template(Role::Ingest, args, "Never"),
        ..Default::default()
    }
}

fn deployment(workload: &Workload<'_>) -> Deployment {
    workload.deployment(
        name(workload.pipeline),
        Role::Ingest,
        // One producer: a second would duplicate every record. None while suspended.
        if workload.pipeline.spec.suspend { 0 } else { 1 },
        Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            ..Default::default()
        }),
        &["ingest", "--file", CONFIG_PATH],
    )
}

#[cfg(test)]
mod tests {
    use super::{BACKOFF_LIMIT, HISTORY_LIMIT};
    use crate::resources::tests::{
        continuous_ingest_of, cron_job_of, generated, listings, objects_of, web_events,
    };

    #[test]
    fn a_scheduled_source_is_a_cron_job() {
        let pipeline = listings();
        let cron_job = cron_job_of(&pipeline);
        assert_eq!(
            cron_job.metadata.name.as_deref(),
            Some("property-listings-ingest")
        );
        let spec = cron_job.spec.expect("spec");
        assert_eq!(spec.schedule, "@daily");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(spec.successful_jobs_history_limit, Some(HISTORY_LIMIT));
        assert_eq!(spec.failed_jobs_history_limit, Some(HISTORY_LIMIT));
        // catchUp All (the default): no starting deadline, the run catches up.
        assert_eq!(spec.starting_deadline_seconds, None);
        let job = spec.job_template.spec.expect("job spec");
        assert_eq!(job.backoff_limit, Some(BACKOFF_LIMIT));
        let pod = job.template.spec.expect("pod spec");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(
            container.args.clone().expect("args"),
            ["ingest", "--once", "--file", "/etc/rtdp/pipeline.yaml"]
        );
        let env = container.env.clone().unwrap_or_default();
        let key = env
            .iter()
            .find(|var| var.name == "RTDP_HTTP_HEADER_X_RAPIDAPI_KEY")
            .expect("the API key header");
        let reference = key
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.as_ref())
            .expect("a secretKeyRef");
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("listings-api", "api-key")
        );
        // Literal headers stay in the ConfigMap; only secrets become environment variables.
        assert!(
            !env.iter()
                .any(|var| var.name == "RTDP_HTTP_HEADER_X_RAPIDAPI_HOST")
        );
    }

    #[test]
    fn catch_up_none_keeps_the_starting_deadline() {
        let mut pipeline = listings();
        if let Some(http) = pipeline
            .spec
            .source
            .as_mut()
            .and_then(|source| source.http.as_mut())
        {
            http.catch_up = Some(rtdp_crds::CatchUpSpec {
                policy: rtdp_crds::CatchUpPolicy::None,
                ..Default::default()
            });
        }
        let spec = cron_job_of(&pipeline).spec.expect("spec");
        assert_eq!(
            spec.starting_deadline_seconds,
            Some(super::STARTING_DEADLINE_SECONDS)
        );
    }

    #[test]
    fn a_continuous_source_is_a_deployment() {
        let pipeline = generated();
        let deployment = continuous_ingest_of(&pipeline);
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        let container = &spec.template.spec.expect("pod").containers[0];
        assert_eq!(
            container.args.clone().expect("args"),
            ["ingest", "--file", "/etc/rtdp/pipeline.yaml"]
        );
    }

    #[test]
    fn no_source_no_ingest() {
        let pipeline = web_events();
        let objects = objects_of(&pipeline);
        assert!(objects.ingest.is_none());
    }
}
