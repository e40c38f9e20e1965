//! `<pipeline>-bf-<digest of id>-<n>`: the Jobs of a backfill (`spec.backfill`), one per
//! interval of the source's schedule, each `pipeline-runner ingest --once --interval FROM..TO`
//! with the scheduled runs' Job spec. Built here (pure); started, counted and cancelled by
//! `controller/backfill.rs`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use rtdp_crds::template::Interval;

use super::{COMPONENT_LABEL, CONFIG_PATH, Workload, common_labels, ingest};

/// The label carrying the backfill's `id` on its Jobs.
pub const BACKFILL_LABEL: &str = "rtdp.dev/backfill";
/// The annotation carrying a Job's interval's position in the backfill (0-based).
pub const INDEX_ANNOTATION: &str = "rtdp.dev/interval-index";
/// The annotation carrying a Job's interval, `FROM..TO`.
pub const INTERVAL_ANNOTATION: &str = "rtdp.dev/interval";
/// The component label's value on backfill Jobs.
pub const COMPONENT: &str = "backfill";

/// A backfill's Jobs, built one at a time as the controller starts them.
#[derive(Clone, Debug)]
pub struct BackfillJobs {
    /// The backfill's `id`.
    pub id: String,
    /// Its intervals, in order.
    pub intervals: Vec<Interval>,
    /// At most this many Jobs in flight.
    pub parallelism: usize,
    pipeline_name: String,
    namespace: Option<String>,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    job: Job,
}

/// The backfill's Jobs, when the Pipeline declares one; `intervals` are its schedule's within
/// the range (`rtdp_crds::validation::backfill_intervals`). Pure.
pub fn build(workload: &Workload<'_>, intervals: Vec<Interval>) -> Option<BackfillJobs> {
    let pipeline = workload.pipeline;
    let backfill = pipeline.spec.backfill.as_ref()?;
    let mut labels = common_labels(pipeline);
    labels.insert(COMPONENT_LABEL.into(), COMPONENT.into());
    labels.insert(BACKFILL_LABEL.into(), backfill.id.clone());
    // The interval is filled in per Job (`job`): a placeholder argument here.
    let job = Job {
        spec: Some(ingest::job_spec(
            workload,
            &["ingest", "--once", "--interval", "", "--file", CONFIG_PATH],
        )),
        ..Default::default()
    };
    Some(BackfillJobs {
        id: backfill.id.clone(),
        intervals,
        parallelism: usize::try_from(backfill.parallelism).unwrap_or(1).max(1),
        pipeline_name: pipeline.name_any(),
        namespace: pipeline.namespace(),
        owner: workload.owner.clone(),
        labels,
        job,
    })
}

/// The name of a backfill's Job: short enough for a Job (63) with any Pipeline name the
/// validation lets schedule (45), unique per backfill `id` and interval.
pub fn job_name(pipeline_name: &str, id: &str, index: usize) -> String {
    let digest = crate::digest::sha256_hex([id]);
    format!("{pipeline_name}-bf-{}-{index}", &digest[..6])
}

impl BackfillJobs {
    /// The Job of the `index`-th interval.
    pub fn job(&self, index: usize) -> Option<Job> {
        let interval = self.intervals.get(index)?;
        let mut job = self.job.clone();
        job.metadata.name = Some(job_name(&self.pipeline_name, &self.id, index));
        job.metadata.namespace = self.namespace.clone();
        job.metadata.labels = Some(self.labels.clone());
        job.metadata.annotations = Some(BTreeMap::from([
            (INDEX_ANNOTATION.into(), index.to_string()),
            (INTERVAL_ANNOTATION.into(), interval.to_string()),
        ]));
        job.metadata.owner_references = Some(vec![self.owner.clone()]);
        let container = job
            .spec
            .as_mut()
            .and_then(|spec| spec.template.spec.as_mut())
            .and_then(|pod| pod.containers.first_mut())?;
        let args = container.args.as_mut()?;
        let placeholder = args.iter().position(|arg| arg.is_empty())?;
        args[placeholder] = interval.to_string();
        Some(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::listings;
    use crate::resources::{BuildContext, desired_objects};

    #[test]
    fn each_interval_gets_its_own_job_running_that_interval() {
        let mut pipeline = listings();
        pipeline.spec.backfill = Some(rtdp_crds::BackfillSpec {
            id: "november".into(),
            from: "2026-11-20T00:00:00Z".into(),
            to: "2026-11-23T00:00:00Z".into(),
            parallelism: 2,
        });
        let context = BuildContext {
            default_image: "runner:test".into(),
        };
        let objects = desired_objects(&pipeline, &context, 1).expect("objects");
        let backfill = objects.backfill.expect("a backfill");
        assert_eq!(backfill.intervals.len(), 3);
        assert_eq!(backfill.parallelism, 2);
        let job = backfill.job(1).expect("the second interval's Job");
        let name = job.metadata.name.clone().expect("a name");
        assert!(
            name.starts_with("property-listings-bf-") && name.ends_with("-1"),
            "{name}"
        );
        assert!(name.len() <= 63);
        let labels = job.metadata.labels.clone().expect("labels");
        assert_eq!(labels[BACKFILL_LABEL], "november");
        assert_eq!(labels[COMPONENT_LABEL], COMPONENT);
        let annotations = job.metadata.annotations.clone().expect("annotations");
        assert_eq!(
            annotations[INTERVAL_ANNOTATION],
            "2026-11-21T00:00:00Z..2026-11-22T00:00:00Z"
        );
        let spec = job.spec.expect("a Job spec");
        let container = &spec.template.spec.expect("a pod spec").containers[0];
        assert_eq!(
            container.args.clone().expect("args"),
            [
                "ingest",
                "--once",
                "--interval",
                "2026-11-21T00:00:00Z..2026-11-22T00:00:00Z",
                "--file",
                CONFIG_PATH
            ]
        );
        assert_eq!(spec.backoff_limit, Some(ingest::BACKOFF_LIMIT));
        assert!(backfill.job(3).is_none(), "three intervals only");
        // Another id, other names: a new backfill never collides with an old one's Jobs.
        assert_ne!(job_name("p", "november", 0), job_name("p", "december", 0));
    }
}
