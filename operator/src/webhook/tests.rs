use serde_json::{Value, json};

use super::*;
use crate::resources::tests::generated;

/// An AdmissionRequest as the API server sends it.
fn request(operation: &str, object: Option<Value>, old_object: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "rtdp.dev", "version": "v1alpha1", "kind": "Pipeline"},
            "resource": {"group": "rtdp.dev", "version": "v1alpha1", "resource": "pipelines"},
            "name": "generated-listings",
            "namespace": "team-a",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
        }
    })
}

fn parse(review: Value) -> AdmissionRequest<DynamicObject> {
    serde_json::from_value::<AdmissionReview<DynamicObject>>(review)
        .expect("an AdmissionReview")
        .try_into()
        .expect("with a request")
}

fn valid() -> Value {
    serde_json::to_value(generated()).expect("a Pipeline as JSON")
}

fn with_filter(filter: &str) -> Value {
    let mut pipeline = generated();
    pipeline.spec.schema.filter = Some(filter.into());
    serde_json::to_value(pipeline).expect("a Pipeline as JSON")
}

#[test]
fn a_valid_pipeline_is_admitted() {
    let request = parse(request("CREATE", Some(valid()), None));
    assert_eq!(verdict(&request), Ok(()));
    let response = review(&request);
    assert!(response.allowed);
    assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
}

#[test]
fn an_invalid_pipeline_is_denied_naming_the_field() {
    let request = parse(request("CREATE", Some(with_filter("prize > 0")), None));
    let message = verdict(&request).expect_err("undeclared field");
    assert!(message.starts_with("spec.schema.filter: "), "{message}");
    assert!(message.contains("prize"), "{message}");
    let response = review(&request);
    assert!(!response.allowed);
    assert_eq!(response.result.message, message);
    assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
}

#[test]
fn an_update_changing_the_spec_to_an_invalid_one_is_denied() {
    let request = parse(request(
        "UPDATE",
        Some(with_filter("price >")),
        Some(valid()),
    ));
    let message = verdict(&request).expect_err("a broken expression");
    assert!(message.contains("spec.schema.filter"), "{message}");
}

#[test]
fn a_metadata_only_update_of_an_invalid_pipeline_is_allowed() {
    let old = with_filter("prize > 0");
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!([]);
    new["metadata"]["labels"] = json!({"team": "a"});
    let request = parse(request("UPDATE", Some(new), Some(old)));
    assert_eq!(verdict(&request), Ok(()));
}

#[test]
fn an_object_that_is_not_a_pipeline_is_denied_with_the_decode_error() {
    let mut object = valid();
    object["spec"]["topic"]["partitions"] = json!("many");
    let request = parse(request("CREATE", Some(object), None));
    let message = verdict(&request).expect_err("not a Pipeline");
    assert!(
        message.starts_with("the object cannot be read as a Pipeline: "),
        "{message}"
    );
}

#[test]
fn deletes_and_status_writes_are_not_checked() {
    let request = parse(request("DELETE", None, Some(with_filter("prize > 0"))));
    assert_eq!(verdict(&request), Ok(()));
    let mut review = request_json_with_sub_resource();
    review["request"]["object"] = with_filter("prize > 0");
    assert_eq!(verdict(&parse(review)), Ok(()));
}

fn request_json_with_sub_resource() -> Value {
    let mut review = request("UPDATE", Some(valid()), Some(valid()));
    review["request"]["subResource"] = json!("status");
    review
}

#[tokio::test]
async fn the_handler_answers_with_an_admission_review_or_a_bad_request() {
    let body =
        serde_json::to_vec(&request("CREATE", Some(with_filter("prize > 0")), None)).expect("JSON");
    let response = validate_pipeline(Bytes::from(body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), BODY_LIMIT)
        .await
        .expect("the body");
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );

    let response = validate_pipeline(Bytes::from_static(b"{\"kind\": 3}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn a_missing_certificate_names_the_file() {
    let directory = std::env::temp_dir().join(format!("rtdp-webhook-{}", std::process::id()));
    let error = tls::Certificates::load(&directory).expect_err("no files");
    let message = error.to_string();
    assert!(
        message.contains(&directory.join("tls.crt").display().to_string()),
        "{message}"
    );
}

/// A self-signed certificate and its key, as PEM.
fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("a self-signed certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

#[test]
fn changed_files_are_served_and_an_unusable_pair_keeps_the_previous_one() {
    let directory =
        std::env::temp_dir().join(format!("rtdp-webhook-reload-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a directory");
    let write = |(certificate, key): &(String, String)| {
        std::fs::write(directory.join("tls.crt"), certificate).expect("writing tls.crt");
        std::fs::write(directory.join("tls.key"), key).expect("writing tls.key");
    };
    let first = self_signed();
    write(&first);
    let certificates = tls::Certificates::load(&directory).expect("a usable pair");
    let served = |certificates: &tls::Certificates| {
        certificates.current().expect("a certificate").cert[0].clone()
    };
    let initial = served(&certificates);
    assert!(!certificates.reload().expect("unchanged files"));

    let second = self_signed();
    write(&second);
    assert!(certificates.reload().expect("a new pair"));
    let renewed = served(&certificates);
    assert_ne!(renewed, initial);

    // Half-way through a replacement: the new certificate with the old key.
    write(&(self_signed().0, second.1.clone()));
    let error = certificates.reload().expect_err("a mismatched pair");
    assert!(error.to_string().contains("does not fit"), "{error}");
    assert_eq!(served(&certificates), renewed);
    let _ = std::fs::remove_dir_all(&directory);
}
