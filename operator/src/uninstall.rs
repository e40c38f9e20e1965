//! `rtdp-operator uninstall-check`, run by the chart's pre-delete hook: `helm uninstall` is
//! refused while Pipelines exist, because without the operator a Pipeline with
//! `deletionPolicy: Delete` can no longer be deleted (its finalizer waits for the operator to
//! drop the topics and tables) and every Pipeline's runners would keep running unmanaged.

use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use rtdp_crds::Pipeline;

use crate::controller::FINALIZER;

/// A Pipeline found by the check: where it is and whether deleting it needs the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remaining {
    /// `namespace/name`.
    pub name: String,
    /// Carries the cleanup finalizer (`deletionPolicy: Delete`).
    pub needs_operator: bool,
}

/// Lists the Pipelines in `namespaces` (every namespace when empty), metadata only: a
/// Pipeline the operator cannot read still counts.
pub async fn remaining(
    client: &Client,
    namespaces: &[String],
) -> Result<Vec<Remaining>, kube::Error> {
    let apis: Vec<Api<Pipeline>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|namespace| Api::namespaced(client.clone(), namespace))
            .collect()
    };
    let mut found = Vec::new();
    for api in apis {
        let listed = api.list_metadata(&ListParams::default()).await?;
        found.extend(listed.items.iter().map(remaining_of));
    }
    Ok(found)
}

fn remaining_of(pipeline: &PartialObjectMeta<Pipeline>) -> Remaining {
    Remaining {
        name: format!(
            "{}/{}",
            pipeline.namespace().unwrap_or_default(),
            pipeline.name_any()
        ),
        needs_operator: pipeline.finalizers().iter().any(|name| name == FINALIZER),
    }
}

/// What the check says: `Ok` with a note when nothing is left, `Err` with what to do
/// otherwise. Pure.
pub fn verdict(remaining: &[Remaining], release: &str, namespace: &str) -> Result<String, String> {
    if remaining.is_empty() {
        return Ok("no Pipeline left; the operator can be uninstalled".into());
    }
    let mut message = format!(
        "helm uninstall refused by the rtdp pre-delete check: {} Pipeline(s) still exist and would be orphaned without the operator:\n",
        remaining.len()
    );
    for pipeline in remaining {
        let what = if pipeline.needs_operator {
            "deletionPolicy Delete: deleting it drops its topics and tables, which needs the operator (finalizer rtdp.dev/cleanup)"
        } else {
            "deletionPolicy Retain: its runners would keep running unmanaged"
        };
        message.push_str(&format!("  - {}: {what}\n", pipeline.name));
    }
    message.push_str(&format!(
        "Delete them first and wait until they are gone, then uninstall again:\n  \
         kubectl delete pipelines --all --all-namespaces --wait\n  \
         helm uninstall {release} --namespace {namespace}\n\
         Or uninstall anyway, leaving them unmanaged: helm uninstall {release} --namespace {namespace} --no-hooks\n  \
         (a Pipeline with the finalizer then stays until the operator is back, or until the finalizer is removed by hand:\n  \
         kubectl -n <namespace> patch pipeline <name> --type json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]')"
    ));
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_left_lets_the_uninstall_go_on() {
        assert!(verdict(&[], "rtdp", "rtdp-system").is_ok());
    }

    #[test]
    fn remaining_pipelines_are_named_with_what_to_do() {
        let remaining = [
            Remaining {
                name: "default/listings".into(),
                needs_operator: true,
            },
            Remaining {
                name: "team-a/clicks".into(),
                needs_operator: false,
            },
        ];
        let message = verdict(&remaining, "rtdp", "rtdp-system").expect_err("refused");
        assert!(message.contains("2 Pipeline(s) still exist"), "{message}");
        assert!(
            message.contains("default/listings: deletionPolicy Delete"),
            "{message}"
        );
        assert!(
            message.contains("team-a/clicks: deletionPolicy Retain"),
            "{message}"
        );
        assert!(
            message.contains("kubectl delete pipelines --all --all-namespaces --wait"),
            "{message}"
        );
        assert!(
            message.contains("helm uninstall rtdp --namespace rtdp-system --no-hooks"),
            "{message}"
        );
    }
}
