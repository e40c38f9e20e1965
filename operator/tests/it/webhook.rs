//! The validating admission webhook against the local API server: the operator binary serves
//! it over TLS (a test CA, a serving certificate for 127.0.0.1), a ValidatingWebhookConfiguration
//! scoped to the test's namespace points the API server at it, and then:
//!
//! - an invalid Pipeline the CRD schema accepts (a broken filter, an undeclared field, an
//!   impossible cron) is refused BY THE WEBHOOK, the message naming the field;
//! - a valid Pipeline is admitted;
//! - metadata-only updates (labels, finalizers, the operator's own finalizer removal on
//!   deletion) of a Pipeline stored with an invalid spec before the webhook existed go
//!   through;
//! - a new certificate from a new CA, written over the files, is picked up without a restart.
//!
//! Needs the local stack (`eval "$(dev/stack env)"`); fails, never skips, without it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::common::{Operator, TestWorld, free_port};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rtdp_crds::{HttpSource, Pipeline, SourceSpec};
use rtdp_test_support::{eventually, kube_client, unique_name};

/// The webhook's name, as the API server quotes it in denials.
const WEBHOOK: &str = "validate.pipelines.rtdp.dev";

/// A CA and a serving certificate for 127.0.0.1, as PEM.
struct TestPki {
    ca: String,
    certificate: String,
    key: String,
}

impl TestPki {
    fn generate(name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("serving parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} webhook"));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a serving key");
        let certificate = params
            .signed_by(&key, &issuer)
            .expect("the serving certificate");
        Self {
            ca: ca.pem(),
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes tls.crt and tls.key, each replaced atomically (write, then rename).
    fn write(&self, directory: &Path) {
        for (name, contents) in [("tls.key", &self.key), ("tls.crt", &self.certificate)] {
            let temporary = directory.join(format!(".{name}.new"));
            std::fs::write(&temporary, contents).expect("writing a TLS file");
            std::fs::rename(&temporary, directory.join(name)).expect("replacing a TLS file");
        }
    }
}

/// The ValidatingWebhookConfiguration, deleted on drop (also when the test fails) so that no
/// other test meets a webhook whose server is gone.
struct Registration {
    name: String,
}

impl Registration {
    fn configuration(
        &self,
        namespace: &str,
        port: u16,
        ca: &str,
    ) -> ValidatingWebhookConfiguration {
        ValidatingWebhookConfiguration {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            webhooks: Some(vec![ValidatingWebhook {
                name: WEBHOOK.into(),
                admission_review_versions: vec!["v1".into()],
                side_effects: "None".into(),
                timeout_seconds: Some(5),
                // Fail, unlike the chart: a webhook that cannot be called must not look like
                // one that admitted.
                failure_policy: Some("Fail".into()),
                client_config: WebhookClientConfig {
                    url: Some(format!("https://127.0.0.1:{port}/validate-pipeline")),
                    ca_bundle: Some(ByteString(ca.as_bytes().to_vec())),
                    service: None,
                },
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec!["rtdp.dev".into()]),
                    api_versions: Some(vec!["v1alpha1".into()]),
                    operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                    resources: Some(vec!["pipelines".into()]),
                    scope: Some("Namespaced".into()),
                }]),
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        namespace.to_string(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
        }
    }

    async fn apply(&self, client: &Client, namespace: &str, port: u16, ca: &str) {
        let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        configurations
            .patch(
                &self.name,
                &PatchParams::apply("rtdp-tests").force(),
                &Patch::Apply(&self.configuration(namespace, port, ca)),
            )
            .await
            .expect("applying the ValidatingWebhookConfiguration");
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside the test's runtime: delete from a thread of
        // its own with its own runtime and client.
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            runtime.block_on(async {
                let configurations: Api<ValidatingWebhookConfiguration> =
                    Api::all(kube_client().await);
                configurations
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!(
                "could not delete the ValidatingWebhookConfiguration {}: {deleted:?}",
                self.name
            );
        }
    }
}

/// What the API server answered to a dry-run create.
async fn dry_run_create(pipelines: &Api<Pipeline>, pipeline: &Pipeline) -> Result<(), String> {
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    pipelines
        .create(&dry_run, pipeline)
        .await
        .map(|_| ())
        .map_err(|error| match error {
            kube::Error::Api(status) => status.message,
            other => other.to_string(),
        })
}

fn denied_by_the_webhook(message: &str) -> bool {
    message.starts_with(&format!(
        "admission webhook \"{WEBHOOK}\" denied the request: "
    ))
}

/// Waits until the webhook (through the API server's cached configuration) refuses `invalid`,
/// returning the message.
async fn webhook_denies(pipelines: &Api<Pipeline>, invalid: &Pipeline, what: &str) -> String {
    let mut last = String::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match dry_run_create(pipelines, invalid).await {
                Err(message) if denied_by_the_webhook(&message) => return message,
                Err(message) => last = message,
                Ok(()) => last = "admitted".into(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!("the webhook did not deny {what} within 60 s; last answer: {last}")
    })
}

/// Replaces the Pipeline with `change` applied to its metadata (a full PUT, so the webhook sees
/// an UPDATE with the same spec), retrying on conflicts with the operator's own writes.
async fn update_metadata(
    pipelines: &Api<Pipeline>,
    name: &str,
    change: impl Fn(&mut kube::api::ObjectMeta),
) -> Pipeline {
    for _ in 0..20 {
        let mut pipeline = pipelines.get(name).await.expect("reading the Pipeline");
        change(&mut pipeline.metadata);
        match pipelines
            .replace(name, &PostParams::default(), &pipeline)
            .await
        {
            Ok(updated) => return updated,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("a metadata-only update of {name} was refused: {error}"),
        }
    }
    panic!("updating {name}: 20 conflicts in a row")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_refuses_invalid_pipelines_and_never_blocks_metadata_updates() {
    let world = TestWorld::new("webhook").await;
    let client = kube_client().await;
    let pipelines = world.pipelines();

    // Stored before the webhook exists: an invalid spec the CRD schema accepts.
    let stored_name = "stored-invalid";
    let mut stored = world.pipeline(stored_name);
    stored.spec.schema.filter = Some("prize > 0".into());
    world.create(&stored).await;

    let directory = tempdir(&world.namespace);
    let first = TestPki::generate("first");
    first.write(&directory);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let certificates = directory.display().to_string();
    let operator = Operator::start(
        &world.namespace,
        &[
            "--webhook-address",
            &address,
            "--webhook-cert-dir",
            &certificates,
            "--webhook-cert-reload-seconds",
            "1",
        ],
    );
    let registration = Registration {
        name: unique_name("rtdp-webhook-test"),
    };
    registration
        .apply(&client, &world.namespace, port, &first.ca)
        .await;

    // (a) Refused by the webhook (the CRD schema admits all three), naming the field.
    let mut broken = world.pipeline("broken-filter");
    broken.spec.schema.filter = Some("price >".into());
    let message = webhook_denies(&pipelines, &broken, "a broken filter").await;
    eprintln!("broken filter: {message}");
    assert!(message.contains("spec.schema.filter"), "{message}");

    let mut undeclared = world.pipeline("undeclared-field");
    undeclared.spec.schema.filter = Some("prize > 0".into());
    let message = webhook_denies(&pipelines, &undeclared, "an undeclared field").await;
    eprintln!("undeclared field: {message}");
    assert!(message.contains("spec.schema.filter"), "{message}");
    assert!(message.contains("prize"), "{message}");

    let mut cron = world.pipeline("impossible-cron");
    cron.spec.source = Some(SourceSpec {
        http: Some(
            serde_json::from_value::<HttpSource>(serde_json::json!({
                "url": "http://127.0.0.1:9/listings",
                "schedule": "61 25 * * *",
            }))
            .expect("an HTTP source"),
        ),
        generator: None,
    });
    let message = webhook_denies(&pipelines, &cron, "an impossible cron").await;
    eprintln!("impossible cron: {message}");
    assert!(message.contains("spec.source.http.schedule"), "{message}");
    assert!(message.contains("61 25 * * *"), "{message}");

    // (b) A valid Pipeline is admitted.
    let valid = world.pipeline("valid");
    dry_run_create(&pipelines, &valid)
        .await
        .expect("a valid Pipeline is admitted");

    // (c) Metadata-only updates of the invalid Pipeline stored before the webhook: a label,
    // a finalizer added and removed. A spec change that keeps it invalid is refused.
    let labelled = update_metadata(&pipelines, stored_name, |metadata| {
        metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "a".into());
    })
    .await;
    assert_eq!(labelled.labels().get("team").map(String::as_str), Some("a"));
    let finalizer = "rtdp.dev/webhook-test";
    update_metadata(&pipelines, stored_name, |metadata| {
        metadata
            .finalizers
            .get_or_insert_default()
            .push(finalizer.into());
    })
    .await;
    let released = update_metadata(&pipelines, stored_name, |metadata| {
        if let Some(finalizers) = &mut metadata.finalizers {
            finalizers.retain(|existing| existing != finalizer);
        }
    })
    .await;
    assert!(
        !released
            .finalizers()
            .iter()
            .any(|existing| existing == finalizer)
    );
    let refused = pipelines
        .patch(
            stored_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"schema": {"filter": "prize > 1"}}})),
        )
        .await
        .expect_err("a spec change that stays invalid is refused");
    let message = refused.to_string();
    assert!(message.contains(WEBHOOK), "{message}");

    // (d) A new certificate from a new CA: written over the files, then trusted through the
    // caBundle; admission works again once the operator serves it (reloaded, not restarted).
    let second = TestPki::generate("second");
    second.write(&directory);
    registration
        .apply(&client, &world.namespace, port, &second.ca)
        .await;
    eventually(
        "the operator to log the certificate reload",
        Duration::from_secs(30),
        || {
            let reloaded = operator
                .log_text()
                .contains("the webhook's TLS certificate changed");
            async move { reloaded.then_some(()) }
        },
    )
    .await;
    let message = webhook_denies(
        &pipelines,
        &undeclared,
        "an undeclared field (new certificate)",
    )
    .await;
    assert!(message.contains("spec.schema.filter"), "{message}");
    eventually(
        "a valid Pipeline admitted with the new certificate",
        Duration::from_secs(60),
        || {
            let pipelines = pipelines.clone();
            let valid = valid.clone();
            async move { dry_run_create(&pipelines, &valid).await.ok() }
        },
    )
    .await;

    // The operator's own finalizer removal on deletion passes the webhook.
    world.delete(stored_name).await;
    world.wait_gone(stored_name, Duration::from_secs(60)).await;

    drop(registration);
    drop(operator);
    world.cleanup().await;
    let _ = std::fs::remove_dir_all(&directory);
}

/// A directory for the test's certificates.
fn tempdir(namespace: &str) -> std::path::PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{namespace}-tls"));
    std::fs::create_dir_all(&directory).expect("creating the certificate directory");
    directory
}

#[tokio::test]
async fn an_unreadable_certificate_is_a_startup_error_naming_the_file() {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique_name("no-certificates"));
    std::fs::create_dir_all(&directory).expect("creating an empty directory");
    let certificates = directory.display().to_string();
    let text = fails_to_start(&format!("127.0.0.1:{}", free_port()), &certificates);
    assert!(
        text.contains(&directory.join("tls.crt").display().to_string()),
        "{text}"
    );

    // A port in use is named too.
    let pki = TestPki::generate("port-in-use");
    pki.write(&directory);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("taking a port");
    let address = taken.local_addr().expect("its address").to_string();
    let text = fails_to_start(&address, &certificates);
    assert!(text.contains(&address), "{text}");
    let _ = std::fs::remove_dir_all(&directory);
}

/// Runs the operator with the webhook on `address` and certificates from `certificates`,
/// expects it to exit with an error, and returns what it wrote to stderr.
fn fails_to_start(address: &str, certificates: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rtdp-operator"))
        .args([
            "--namespaces",
            "nowhere",
            "--metrics-address",
            &format!("127.0.0.1:{}", free_port()),
            "--webhook-address",
            address,
            "--webhook-cert-dir",
            certificates,
            "--log-format",
            "text",
        ])
        .output()
        .expect("running the operator");
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "the operator started: {text}");
    text
}
