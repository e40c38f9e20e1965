//! The Helm chart's test helpers (`helm_chart.rs`): releases installed and uninstalled, RBAC
//! checked with `kubectl auth can-i`, an impersonating kubeconfig, the operator Deployment's
//! expected shape.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::Client;
use rtdp_test_support::kubernetes::{create_namespace, delete_namespace_in_background};
use rtdp_test_support::process::{output_text, run, run_ok};
use rtdp_test_support::{required_env, unique_name};

pub(crate) const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/rtdp");

/// The API server's version, for `helm template --kube-version` (helm's offline default is
/// older than the chart's kubeVersion).
pub(crate) async fn server_version(client: &Client) -> String {
    client
        .apiserver_version()
        .await
        .expect("reading the API server's version")
        .git_version
}

/// The admin client of the local API server (KUBECONFIG, with helm and kubectl on PATH), with
/// the Pipeline CRD installed first (as every operator test does), so helm's crds/ step finds
/// it and skips.
pub(crate) async fn admin_client_with_crd() -> Client {
    required_env("KUBECONFIG");
    let client = rtdp_test_support::kube_client().await;
    super::install_crd(&client).await;
    client
}

/// Asserts `helm uninstall` removed the named object.
pub(crate) async fn assert_uninstalled<K>(api: Api<K>, name: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    assert!(
        api.get_opt(name)
            .await
            .unwrap_or_else(|error| panic!("reading {kind} {name}: {error}"))
            .is_none(),
        "helm uninstall left the {kind} {name}"
    );
}

/// A unique namespace, created by the admin client, deleted (best effort) on drop.
pub(crate) struct TestNamespace {
    pub(crate) name: String,
}

impl TestNamespace {
    pub(crate) async fn create(client: &Client, prefix: &str) -> Self {
        Self {
            name: create_namespace(client, prefix).await,
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        delete_namespace_in_background(&self.name);
    }
}

/// A Helm release, uninstalled on drop (also when the test fails).
pub(crate) struct Release {
    name: String,
    namespace: String,
    uninstalled: bool,
}

impl Release {
    /// `helm install` into `namespace` (created by helm) with `--set` values.
    pub(crate) fn install(prefix: &str, namespace: &str, values: &[String]) -> Self {
        let name = unique_name(prefix);
        let mut args = vec![
            "install".to_string(),
            name.clone(),
            CHART.to_string(),
            "--namespace".into(),
            namespace.into(),
            "--create-namespace".into(),
            "--timeout".into(),
            "2m".into(),
        ];
        for value in values {
            args.push("--set".into());
            args.push(value.clone());
        }
        // The guard first: a failed install (a release in state "failed") is uninstalled too.
        let release = Self {
            name,
            namespace: namespace.to_string(),
            uninstalled: false,
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_ok("helm", &args, None);
        // NOTES.txt tells the user what to apply next.
        assert!(
            output.contains("kubectl") && output.contains("get pipelines"),
            "helm install printed no usable NOTES:\n{output}"
        );
        release
    }

    /// The release's full name (the chart's `rtdp.fullname` of a release name without
    /// "rtdp" in it): also the ServiceAccount's.
    pub(crate) fn fullname(&self) -> String {
        format!("{}-rtdp-operator", self.name)
    }

    /// Reads the release's operator Deployment and checks it (`check_deployment`).
    pub(crate) async fn check_operator_deployment(
        &self,
        client: &Client,
        namespaces: Option<&str>,
    ) {
        let deployment = Api::<Deployment>::namespaced(client.clone(), &self.namespace)
            .get(&self.fullname())
            .await
            .expect("the operator Deployment");
        check_deployment(&deployment, &self.fullname(), namespaces);
    }

    /// The release's webhook objects (`check_webhook`); returns the TLS Secret's data.
    pub(crate) async fn check_webhook(
        &self,
        client: &Client,
        namespaces: Option<&str>,
    ) -> BTreeMap<String, k8s_openapi::ByteString> {
        check_webhook(client, &self.namespace, &self.fullname(), namespaces).await
    }

    /// `helm upgrade --reuse-values`.
    pub(crate) fn upgrade(&self) {
        run_ok(
            "helm",
            &[
                "upgrade",
                &self.name,
                CHART,
                "--namespace",
                &self.namespace,
                "--reuse-values",
                "--timeout",
                "2m",
            ],
            None,
        );
    }

    pub(crate) fn service_account_user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.fullname()
        )
    }

    /// `helm uninstall --no-hooks`: the chart's pre-delete check is a Job, and the local API
    /// server has no kubelet to run it (the kind end-to-end runs it for real).
    pub(crate) fn uninstall(&mut self) {
        run_ok(
            "helm",
            &[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--no-hooks",
            ],
            None,
        );
        self.uninstalled = true;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = Command::new("helm")
                .args([
                    "uninstall",
                    &self.name,
                    "--namespace",
                    &self.namespace,
                    "--no-hooks",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        delete_namespace_in_background(&self.namespace);
    }
}

/// `kubectl auth can-i` as `user`: whether the answer is yes.
pub(crate) fn can_i(user: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let as_flag = format!("--as={user}");
    all.push(&as_flag);
    let output = run("kubectl", &all, None);
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match (output.status.code(), answer.as_str()) {
        (Some(0), "yes") => true,
        (Some(1), "no") => false,
        _ => panic!(
            "`kubectl {}` gave no yes/no answer ({}):\n{}",
            all.join(" "),
            output.status,
            output_text(&output)
        ),
    }
}

pub(crate) fn assert_can(user: &str, checks: &[&[&str]]) {
    for args in checks {
        assert!(
            can_i(user, args),
            "{user} must be allowed to `{}`",
            args.join(" ")
        );
    }
}

pub(crate) fn assert_cannot(user: &str, checks: &[&[&str]]) {
    for args in checks {
        assert!(
            !can_i(user, args),
            "{user} must NOT be allowed to `{}`",
            args.join(" ")
        );
    }
}

/// What must be denied whatever the chart's mode.
pub(crate) fn assert_never_allowed(user: &str, namespace: &str) {
    assert_cannot(
        user,
        &[
            &["delete", "namespaces"],
            &["create", "namespaces"],
            &["escalate", "clusterroles.rbac.authorization.k8s.io"],
            &["bind", "clusterroles.rbac.authorization.k8s.io"],
            &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
            &["create", "clusterroles.rbac.authorization.k8s.io"],
            &["create", "roles.rbac.authorization.k8s.io", "-n", namespace],
            &[
                "create",
                "rolebindings.rbac.authorization.k8s.io",
                "-n",
                namespace,
            ],
            &["*", "*"],
            &["*", "*", "-n", namespace],
            &["list", "secrets", "-n", namespace],
            &["watch", "secrets", "-n", namespace],
            &["create", "secrets", "-n", namespace],
            &["create", "pods", "-n", namespace],
            &["delete", "pods", "-n", namespace],
            &["get", "pods", "--subresource=log", "-n", namespace],
            &["create", "pods", "--subresource=exec", "-n", namespace],
            &["delete", "pipelines.rtdp.dev", "-n", namespace],
            &["update", "pipelines.rtdp.dev", "-n", namespace],
            &["delete", "configmaps", "-n", namespace],
            &["delete", "customresourcedefinitions.apiextensions.k8s.io"],
            &[
                "create",
                "serviceaccounts",
                "--subresource=token",
                "-n",
                namespace,
            ],
            &["impersonate", "serviceaccounts", "-n", namespace],
            &["list", "nodes"],
        ],
    );
}

/// What the operator needs in a namespace it serves.
pub(crate) fn assert_serves(user: &str, namespace: &str) {
    assert_can(
        user,
        &[
            &["list", "pipelines.rtdp.dev", "-n", namespace],
            &["watch", "pipelines.rtdp.dev", "-n", namespace],
            &["patch", "pipelines.rtdp.dev", "-n", namespace],
            &[
                "patch",
                "pipelines.rtdp.dev",
                "--subresource=status",
                "-n",
                namespace,
            ],
            &[
                "update",
                "pipelines.rtdp.dev",
                "--subresource=finalizers",
                "-n",
                namespace,
            ],
            &["create", "deployments.apps", "-n", namespace],
            &["delete", "deployments.apps", "-n", namespace],
            &["create", "cronjobs.batch", "-n", namespace],
            &["delete", "cronjobs.batch", "-n", namespace],
            &["list", "pods", "-n", namespace],
            &["create", "configmaps", "-n", namespace],
            &["patch", "services", "-n", namespace],
            &["create", "events.events.k8s.io", "-n", namespace],
            &["get", "secrets", "-n", namespace],
        ],
    );
}

/// Leader election: only the chart's Lease, in the release namespace only; never create one.
pub(crate) fn assert_lease_rights(user: &str, lease_namespace: &str, other_namespace: &str) {
    assert_can(
        user,
        &[
            &[
                "get",
                "leases.coordination.k8s.io/rtdp-operator",
                "-n",
                lease_namespace,
            ],
            &[
                "update",
                "leases.coordination.k8s.io/rtdp-operator",
                "-n",
                lease_namespace,
            ],
        ],
    );
    assert_cannot(
        user,
        &[
            &[
                "update",
                "leases.coordination.k8s.io/someone-elses",
                "-n",
                lease_namespace,
            ],
            &["list", "leases.coordination.k8s.io", "-n", lease_namespace],
            // The chart creates the Lease; the operator never needs to.
            &[
                "create",
                "leases.coordination.k8s.io",
                "-n",
                lease_namespace,
            ],
            &[
                "delete",
                "leases.coordination.k8s.io",
                "-n",
                lease_namespace,
            ],
            &[
                "create",
                "leases.coordination.k8s.io",
                "-n",
                other_namespace,
            ],
        ],
    );
}

/// Every rule of every rendered Role/ClusterRole names its groups, resources and verbs
/// (no `*` anywhere).
pub(crate) fn assert_no_wildcards(rendered: &str) {
    let mut roles = 0;
    for document in serde_yaml_ng::Deserializer::from_str(rendered) {
        let value: serde_yaml_ng::Value =
            serde::Deserialize::deserialize(document).expect("the rendered YAML parses");
        let kind = value.get("kind").and_then(|kind| kind.as_str());
        if !matches!(kind, Some("Role" | "ClusterRole")) {
            continue;
        }
        roles += 1;
        let rules = value
            .get("rules")
            .and_then(|rules| rules.as_sequence())
            .expect("a Role has rules");
        for rule in rules {
            for key in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for item in rule
                    .get(key)
                    .and_then(|items| items.as_sequence())
                    .into_iter()
                    .flatten()
                {
                    let item = item.as_str().unwrap_or_default();
                    assert!(
                        !item.contains('*'),
                        "a wildcard in {kind:?} {key}: {rule:?}"
                    );
                }
            }
            assert!(rule.get("nonResourceURLs").is_none(), "{rule:?}");
        }
    }
    assert!(roles > 0, "no Role or ClusterRole rendered:\n{rendered}");
}

/// A kubeconfig like $KUBECONFIG whose users impersonate `user` (`as:`): the admin
/// certificate authenticates, RBAC authorizes as `user` alone.
pub(crate) fn impersonating_kubeconfig(user: &str) -> PathBuf {
    let path = required_env("KUBECONFIG");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading KUBECONFIG {path}: {error}"));
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).expect("KUBECONFIG is YAML");
    let users = config
        .get_mut("users")
        .and_then(|users| users.as_sequence_mut())
        .expect("KUBECONFIG has users");
    for entry in users {
        let auth = entry
            .get_mut("user")
            .and_then(|user| user.as_mapping_mut())
            .expect("a kubeconfig user entry");
        auth.insert("as".into(), user.into());
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.kubeconfig", unique_name("impersonating")));
    std::fs::write(
        &out,
        serde_yaml_ng::to_string(&config).expect("serializing"),
    )
    .expect("writing the impersonating kubeconfig");
    out
}

/// The Deployment: 2 replicas, the restricted security context, the runner image, the flags.
pub(crate) fn check_deployment(deployment: &Deployment, fullname: &str, namespaces: Option<&str>) {
    let spec = deployment.spec.as_ref().expect("a Deployment spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("a pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(fullname));
    let pod_security = pod
        .security_context
        .as_ref()
        .expect("a pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security
            .seccomp_profile
            .as_ref()
            .map(|profile| profile.type_.as_str()),
        Some("RuntimeDefault")
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/rtdp-dev/rtdp-operator:0.1.0")
    );
    let security = super::assert_restricted(container);
    assert_eq!(
        security
            .capabilities
            .as_ref()
            .and_then(|capabilities| capabilities.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        security
            .seccomp_profile
            .as_ref()
            .map(|profile| profile.type_.as_str()),
        Some("RuntimeDefault")
    );
    let env: BTreeMap<_, _> = container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.as_str(), var.value.clone()))
        .collect();
    assert_eq!(
        env.get("RTDP_RUNNER_IMAGE").cloned().flatten().as_deref(),
        Some("ghcr.io/rtdp-dev/pipeline-runner:0.1.0")
    );
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&"--metrics-address=0.0.0.0:8080".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--webhook-address=0.0.0.0:9443".to_string())
            && args.contains(&"--webhook-cert-dir=/etc/rtdp/webhook-tls".to_string()),
        "{args:?}"
    );
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|mount| mount.mount_path == "/etc/rtdp/webhook-tls"
                && mount.read_only == Some(true)),
        "the webhook certificate must be mounted read-only: {mounts:?}"
    );
    match namespaces {
        Some(namespace) => assert!(
            args.contains(&format!("--namespaces={namespace}")),
            "{args:?}"
        ),
        None => assert!(
            !args.iter().any(|arg| arg.starts_with("--namespaces")),
            "{args:?}"
        ),
    }
    let probe_path = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        probe
            .and_then(|probe| probe.http_get.as_ref())
            .and_then(|get| get.path.clone())
    };
    assert_eq!(
        probe_path(container.liveness_probe.as_ref()).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(container.readiness_probe.as_ref()).as_deref(),
        Some("/readyz")
    );
}

/// The webhook's Secret, Service and ValidatingWebhookConfiguration: the caBundle is the CA
/// that signed the Secret's certificate, valid for every name of the Service; the webhook
/// covers Pipeline CREATE and UPDATE in the served namespaces only. Returns the Secret's data.
pub(crate) async fn check_webhook(
    client: &Client,
    release_namespace: &str,
    fullname: &str,
    namespaces: Option<&str>,
) -> BTreeMap<String, k8s_openapi::ByteString> {
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::client::danger::ServerCertVerifier as _;
    use tokio_rustls::rustls::crypto::ring;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    let secret = Api::<Secret>::namespaced(client.clone(), release_namespace)
        .get(&format!("{fullname}-webhook-tls"))
        .await
        .expect("the webhook's TLS Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.unwrap_or_default();
    let pem = |key: &str| {
        data.get(key)
            .unwrap_or_else(|| panic!("the webhook Secret has no {key}"))
            .0
            .clone()
    };
    let service_name = format!("{fullname}-webhook");
    let service = Api::<Service>::namespaced(client.clone(), release_namespace)
        .get(&service_name)
        .await
        .expect("the webhook Service");
    let port = &service
        .spec
        .and_then(|spec| spec.ports)
        .expect("the webhook Service's ports")[0];
    assert_eq!(port.port, 443);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("webhook".into()))
    );

    let configuration = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(fullname)
        .await
        .expect("the ValidatingWebhookConfiguration");
    let webhooks = configuration.webhooks.unwrap_or_default();
    assert_eq!(webhooks.len(), 1, "{webhooks:?}");
    let webhook = &webhooks[0];
    assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(webhook.side_effects, "None");
    assert_eq!(webhook.timeout_seconds, Some(5));
    let called = webhook.client_config.service.as_ref().expect("a Service");
    assert_eq!(
        (
            called.name.as_str(),
            called.namespace.as_str(),
            called.path.as_deref(),
            called.port
        ),
        (
            service_name.as_str(),
            release_namespace,
            Some("/validate-pipeline"),
            Some(443)
        )
    );
    let rules = webhook.rules.clone().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].resources, Some(vec!["pipelines".to_string()]));
    assert_eq!(
        rules[0].operations,
        Some(vec!["CREATE".to_string(), "UPDATE".to_string()])
    );
    let selected = webhook
        .namespace_selector
        .as_ref()
        .and_then(|selector| selector.match_expressions.clone())
        .unwrap_or_default();
    match namespaces {
        Some(namespace) => {
            assert_eq!(selected.len(), 1, "{selected:?}");
            assert_eq!(selected[0].key, "kubernetes.io/metadata.name");
            assert_eq!(selected[0].operator, "In");
            assert_eq!(selected[0].values, Some(vec![namespace.to_string()]));
        }
        None => assert!(selected.is_empty(), "{selected:?}"),
    }

    // The caBundle is the Secret's CA, and it verifies the serving certificate for each name
    // the API server may use.
    let ca_bundle = webhook
        .client_config
        .ca_bundle
        .as_ref()
        .expect("a caBundle");
    assert_eq!(ca_bundle.0, pem("ca.crt"));
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&ca_bundle.0) {
        roots
            .add(certificate.expect("a PEM certificate in the caBundle"))
            .expect("a CA certificate");
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(ring::default_provider()),
    )
    .build()
    .expect("a certificate verifier");
    let serving =
        CertificateDer::from_pem_slice(&pem("tls.crt")).expect("a PEM serving certificate");
    for name in [
        service_name.clone(),
        format!("{service_name}.{release_namespace}"),
        format!("{service_name}.{release_namespace}.svc"),
        format!("{service_name}.{release_namespace}.svc.cluster.local"),
    ] {
        let server = ServerName::try_from(name.clone()).expect("a DNS name");
        verifier
            .verify_server_cert(&serving, &[], &server, &[], UnixTime::now())
            .unwrap_or_else(|error| {
                panic!("the webhook certificate is not valid for {name}: {error}")
            });
    }
    data
}
