//! Why the processor replicas are not ready, as the pods themselves say.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use rtdp_crds::Pipeline;

use super::Context;
use crate::resources;

/// Why the processor pods are not ready, as the pods themselves say: a pod the scheduler
/// cannot place, or a container waiting in a state that will not pass by itself. `None` when
/// they are merely starting (or the pods cannot be listed: the status then says only how
/// many replicas are ready).
pub(super) async fn runner_problem(
    pipeline: &Pipeline,
    context: &Context,
) -> Option<(&'static str, String)> {
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &pipeline.namespace_or_default());
    let selector = resources::selector_labels(pipeline, resources::Role::Processor)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let listed = pods.list(&ListParams::default().labels(&selector)).await;
    let pods = match listed {
        Ok(pods) => pods,
        Err(error) => {
            tracing::debug!(%error, "listing processor pods to explain missing replicas");
            return None;
        }
    };
    pods.items.iter().find_map(pod_problem)
}

/// What keeps one pod from becoming ready, when it is something a person must act on. Pure.
pub fn pod_problem(pod: &Pod) -> Option<(&'static str, String)> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|condition| {
        condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        return Some((
            "Unschedulable",
            format!(
                "pod {name} cannot be scheduled: {}",
                condition.message.as_deref().unwrap_or("no reason given")
            ),
        ));
    }
    const STUCK: [&str; 6] = [
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "InvalidImageName",
    ];
    status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|container| {
            let waiting = container.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            STUCK.contains(&reason).then(|| {
                (
                    "RunnerNotStarting",
                    format!(
                        "pod {name}: container {} is {reason}: {}",
                        container.name,
                        waiting.message.as_deref().unwrap_or("no message")
                    ),
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "listings-processor-abc"},
            "status": status,
        }))
        .expect("a pod")
    }

    #[test]
    fn pods_say_what_keeps_them_from_running() {
        let unschedulable = pod(serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."
        }]}));
        assert_eq!(
            pod_problem(&unschedulable),
            Some((
                "Unschedulable",
                "pod listings-processor-abc cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu.".to_string()
            ))
        );
        let crashing = pod(serde_json::json!({"containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}
        }]}));
        let (reason, message) = pod_problem(&crashing).expect("a problem");
        assert_eq!(reason, "RunnerNotStarting");
        assert!(
            message.contains("container runner is CrashLoopBackOff: back-off 40s"),
            "{message}"
        );
        // Merely starting is no problem to report.
        let starting = pod(serde_json::json!({"containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]}));
        assert_eq!(pod_problem(&starting), None);
    }
}
