//! Writing the status: computed from what the reconcile observed (pure, in `crate::status`),
//! written with server-side apply only when it changed, an Event per condition that changed.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Patch;
use kube::runtime::events::EventType;
use rtdp_crds::{Pipeline, PipelineStatus};

use super::Context;
use crate::error::{Error, Result};
use crate::status::{self, Observed, StatusApply};

/// Computes the status from what was observed and writes it if it changed; publishes an
/// Event for each condition that changed.
pub(super) async fn write_status(
    pipeline: &Pipeline,
    context: &Context,
    observed: &Observed,
    errors: &[Error],
) -> Result<()> {
    let status = status::desired_status(pipeline, observed, Timestamp::now());
    let before = pipeline
        .status
        .as_ref()
        .map(|status| status.conditions.clone())
        .unwrap_or_default();
    for condition in status::transitions(&before, &status.conditions) {
        let healthy = status::is_healthy(condition);
        // Errors have their own Warning event already.
        if !healthy
            && errors
                .iter()
                .any(|error| error.reason() == condition.reason)
        {
            continue;
        }
        context
            .recorder
            .publish_about(
                pipeline,
                if healthy {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                &condition.reason,
                "Reconcile",
                format!(
                    "{} is {}: {}",
                    condition.type_, condition.status, condition.message
                ),
            )
            .await;
    }
    apply_status(pipeline, context, status).await
}

pub(super) async fn apply_status(
    pipeline: &Pipeline,
    context: &Context,
    status: PipelineStatus,
) -> Result<()> {
    // Only what the reconcile owns: the freshness loop's fields stay its own.
    let status = status::reconcile_owned(status);
    if pipeline.status.clone().map(status::reconcile_owned) == Some(status.clone()) {
        return Ok(());
    }
    context
        .pipelines(pipeline)
        .patch_status(
            &pipeline.name_any(),
            &context.apply_params(),
            &Patch::Apply(StatusApply::new(status)),
        )
        .await
        .map_err(|error| Error::kube("writing the status", error))?;
    Ok(())
}
