//! The validating admission webhook: `POST /validate-pipeline` answers the API server's
//! `admission.k8s.io/v1` AdmissionReview with [`rtdp_crds::validate`]'s verdict, so that
//! `kubectl apply` of an invalid Pipeline fails at once with the field and the reason, instead
//! of being stored and reported later in the status.
//!
//! The reconcile re-validates every object anyway (objects written while the webhook was down
//! or before it was installed): the webhook is the early, friendly refusal, not the only line.
//! Every replica serves it (not only the leader), over TLS with certificates reloaded from
//! files ([`tls`]).

pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rtdp_crds::Pipeline;
use rtdp_crds::validation::describe;

/// The path the ValidatingWebhookConfiguration calls.
pub const PATH: &str = "/validate-pipeline";

/// An AdmissionReview carries the object and, on updates, the old one: twice the API server's
/// object size limit (1.5 MiB) plus room for the envelope.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Why the request is allowed or denied: `Err` carries the message the caller sees
/// (`kubectl` prints it after `admission webhook "…" denied the request:`). Pure.
pub fn verdict(request: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(());
    }
    // The status subresource is the operator's own; only the object itself is checked.
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|sub_resource| !sub_resource.is_empty())
    {
        return Ok(());
    }
    let Some(object) = &request.object else {
        return Err("the admission request carries no object to validate".into());
    };
    // Metadata-only updates (labels, annotations, the operator removing its finalizer) must
    // never be blocked, even for an object stored before the webhook existed: otherwise an
    // invalid Pipeline could not even be deleted.
    if matches!(request.operation, Operation::Update)
        && let Some(old) = &request.old_object
        && old.data.get("spec") == object.data.get("spec")
    {
        return Ok(());
    }
    let pipeline = serde_json::to_value(object)
        .and_then(serde_json::from_value::<Pipeline>)
        .map_err(|error| format!("the object cannot be read as a Pipeline: {error}"))?;
    let errors = rtdp_crds::validate(&pipeline);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(describe(&errors))
    }
}

/// The response to one admission request: [`verdict`] with the request's uid. Pure.
pub fn review(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    match verdict(request) {
        Ok(()) => response,
        Err(message) => response.deny(message),
    }
}

/// `POST /validate-pipeline`: a body that is not an AdmissionReview with a request is a 400
/// (the API server then applies the failure policy); everything else is answered.
async fn validate_pipeline(body: Bytes) -> Response {
    let request: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
            .map_err(|error| format!("the body is not an AdmissionReview: {error}"))
            .and_then(|review| {
                review
                    .try_into()
                    .map_err(|_| "the AdmissionReview carries no request".to_string())
            }) {
            Ok(request) => request,
            Err(message) => {
                tracing::warn!(%message, "refusing a malformed admission request");
                return (StatusCode::BAD_REQUEST, message).into_response();
            }
        };
    let response = review(&request);
    tracing::info!(
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        operation = ?request.operation,
        dry_run = request.dry_run,
        allowed = response.allowed,
        message = %response.result.message,
        "admission review"
    );
    match serde_json::to_vec(&response.into_review()) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding an AdmissionReview response");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: try POST /validate-pipeline\n",
    )
}

fn router() -> Router {
    Router::new()
        .route(PATH, post(validate_pipeline))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .fallback(not_found)
}

/// Binds the webhook's port and loads its certificate: both fail here, at startup, naming the
/// address or the file, rather than on the API server's first call.
pub async fn bind(
    address: SocketAddr,
    certificate_directory: &Path,
    reload_every: Duration,
) -> anyhow::Result<tls::TlsListener> {
    let certificates = tls::Certificates::load(certificate_directory)?;
    tls::TlsListener::bind(address, certificates, reload_every).await
}

/// Serves the webhook until `shutdown` resolves.
pub async fn serve(
    listener: tls::TlsListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(error) = axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "serving the admission webhook");
    }
}

#[cfg(test)]
mod tests;
