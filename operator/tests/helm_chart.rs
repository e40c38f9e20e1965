//! The Helm chart (`helm/rtdp`) against the real local stack (`dev/stack up`): it lints clean,
//! bad values fail with a message naming the key, the rendered manifests pass the API server's
//! dry run, `helm install` creates what it should, the operator's ServiceAccount can do what
//! the operator needs and nothing it must not (`kubectl auth can-i`), and the operator binary,
//! running AS that ServiceAccount (impersonation, not cluster-admin), still reconciles a
//! Pipeline end to end: Lease, finalizer, ConfigMap, Deployments, CronJob, Service, Kafka
//! topics, Cassandra schema (with credentials read from a Secret), Events, status, deletion.
//!
//! Needs `helm` and `kubectl` on PATH and KUBECONFIG (`eval "$(dev/stack env)"` sets all three);
//! fails, never skips, without them.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{TestWorld, condition_of, free_port, install_crd};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use rtdp_crds::CredentialsSecretReference;
use rtdp_test_support::{eventually, kube_client, required_env, unique_name};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/rtdp");
const HOW_TO_GET_TOOLS: &str = "`eval \"$(dev/stack env)\"` puts the local stack's helm and kubectl on PATH and sets KUBECONFIG (or run `make test`)";

/// Runs a command (optionally feeding `stdin`) and returns its output; fails the test with a
/// clear message when the program is missing.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is not on PATH: this test needs it; {HOW_TO_GET_TOOLS}")
        }
        Err(error) => panic!("running {program}: {error}"),
    };
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("the child's stdin")
            .write_all(input.as_bytes())
            .unwrap_or_else(|error| panic!("writing to {program}'s stdin: {error}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("waiting for {program}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command that must succeed; returns its stdout.
fn run_ok(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = run(program, args, stdin);
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}):\n{}",
        args.join(" "),
        output.status,
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The API server's version, for `helm template --kube-version` (helm's offline default is
/// older than the chart's kubeVersion).
async fn server_version(client: &Client) -> String {
    client
        .apiserver_version()
        .await
        .expect("reading the API server's version")
        .git_version
}

/// A unique namespace, created by the admin client, deleted (best effort) on drop.
struct TestNamespace {
    name: String,
}

impl TestNamespace {
    async fn create(client: &Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect("creating a test namespace");
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop is synchronous: ask kubectl, and do not wait.
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A Helm release, uninstalled on drop (also when the test fails).
struct Release {
    name: String,
    namespace: String,
    uninstalled: bool,
}

impl Release {
    /// `helm install` into `namespace` (created by helm) with `--set` values.
    fn install(prefix: &str, namespace: &str, values: &[String]) -> Self {
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
    fn fullname(&self) -> String {
        format!("{}-rtdp-operator", self.name)
    }

    fn service_account_user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.fullname()
        )
    }

    fn uninstall(&mut self) {
        run_ok(
            "helm",
            &["uninstall", &self.name, "--namespace", &self.namespace],
            None,
        );
        self.uninstalled = true;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = Command::new("helm")
                .args(["uninstall", &self.name, "--namespace", &self.namespace])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `kubectl auth can-i` as `user`: whether the answer is yes.
fn can_i(user: &str, args: &[&str]) -> bool {
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
            text(&output)
        ),
    }
}

fn assert_can(user: &str, checks: &[&[&str]]) {
    for args in checks {
        assert!(
            can_i(user, args),
            "{user} must be allowed to `{}`",
            args.join(" ")
        );
    }
}

fn assert_cannot(user: &str, checks: &[&[&str]]) {
    for args in checks {
        assert!(
            !can_i(user, args),
            "{user} must NOT be allowed to `{}`",
            args.join(" ")
        );
    }
}

/// What must be denied whatever the chart's mode.
fn assert_never_allowed(user: &str, namespace: &str) {
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
fn assert_serves(user: &str, namespace: &str) {
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

/// Leader election: the Lease in the release namespace only, and only the chart's Lease
/// after creation.
fn assert_lease_rights(user: &str, lease_namespace: &str, other_namespace: &str) {
    assert_can(
        user,
        &[
            &[
                "create",
                "leases.coordination.k8s.io",
                "-n",
                lease_namespace,
            ],
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
fn assert_no_wildcards(rendered: &str) {
    let mut roles = 0;
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let value: serde_yaml::Value =
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

#[test]
fn chart_lints_clean() {
    for extra in [
        &[][..],
        &["--strict"][..],
        &[
            "--strict",
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "rbac.readSecrets=false",
        ][..],
    ] {
        let mut args = vec!["lint", CHART];
        args.extend_from_slice(extra);
        let output = run_ok("helm", &args, None);
        assert!(
            output.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{output}"
        );
        assert!(
            !output.contains("[WARNING]") && !output.contains("[ERROR]"),
            "helm lint {extra:?} is not clean:\n{output}"
        );
    }
}

#[test]
fn bad_values_fail_with_a_message_naming_the_key() {
    let cases: &[(&str, &[&str])] = &[
        ("replicaCount=two", &["/replicaCount", "want integer"]),
        ("replicaCount=0", &["/replicaCount", "minimum"]),
        ("replicaCuont=2", &["additional properties 'replicaCuont'"]),
        ("operator.logFormat=yaml", &["/operator/logFormat"]),
        (
            "operator.image.pullPolicy=Sometimes",
            &["/operator/image/pullPolicy"],
        ),
        ("watchNamespaces={Not_A_Namespace}", &["/watchNamespaces/0"]),
        ("metrics.port=80", &["/metrics/port", "minimum"]),
        (
            "webhook.failurePolicy=Sometimes",
            &["/webhook/failurePolicy"],
        ),
        ("webhook.port=443", &["/webhook/port", "minimum"]),
        (
            "serviceMonitor.interval=often",
            &["/serviceMonitor/interval"],
        ),
    ];
    for (value, expected) in cases {
        for command in ["lint", "template"] {
            let output = run(
                "helm",
                &[command, CHART, "--kube-version", "1.35.0", "--set", value],
                None,
            );
            let message = text(&output);
            assert!(
                !output.status.success(),
                "helm {command} accepted --set {value}:\n{message}"
            );
            for fragment in *expected {
                assert!(
                    message.contains("values don't meet the specifications of the schema")
                        && message.contains(fragment),
                    "helm {command} --set {value}: the message should name {fragment}:\n{message}"
                );
            }
        }
    }
}

#[tokio::test]
async fn rendered_manifests_pass_the_server_dry_run() {
    required_env("KUBECONFIG");
    let client = kube_client().await;
    let version = server_version(&client).await;
    let release_namespace = TestNamespace::create(&client, "helm-dry").await;
    let served = TestNamespace::create(&client, "helm-dry-served").await;
    let served_values = format!("watchNamespaces={{{}}}", served.name);
    for values in [
        vec![],
        vec![served_values.as_str(), "rbac.readSecrets=false"],
        vec!["replicaCount=1", "podDisruptionBudget.enabled=false"],
    ] {
        let mut args = vec![
            "template",
            "rtdp",
            CHART,
            "--namespace",
            &release_namespace.name,
            "--kube-version",
            &version,
            "--include-crds",
        ];
        for value in &values {
            args.extend(["--set", value]);
        }
        let rendered = run_ok("helm", &args, None);
        assert!(rendered.contains("kind: CustomResourceDefinition"));
        assert_no_wildcards(&rendered);
        // Server-side and forced: other tests apply the same CRD with their own field manager;
        // a dry run changes nothing either way.
        let applied = run_ok(
            "kubectl",
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=rtdp-helm-chart-test",
                "--dry-run=server",
                "-f",
                "-",
            ],
            Some(&rendered),
        );
        for expected in [
            "customresourcedefinition.apiextensions.k8s.io/pipelines.rtdp.dev",
            "serviceaccount/rtdp-operator",
            "deployment.apps/rtdp-operator",
            "service/rtdp-operator-metrics",
            "service/rtdp-operator-webhook",
            "secret/rtdp-operator-webhook-tls",
            "validatingwebhookconfiguration.admissionregistration.k8s.io/rtdp-operator",
            "role.rbac.authorization.k8s.io/rtdp-operator-leader-election",
        ] {
            assert!(
                applied.contains(expected),
                "{values:?}: {expected} missing from the dry run:\n{applied}"
            );
        }
        if values.is_empty() {
            assert!(applied.contains("clusterrole.rbac.authorization.k8s.io/rtdp-operator"));
            assert!(
                applied.contains("poddisruptionbudget.policy/rtdp-operator"),
                "{applied}"
            );
        }
        if values.contains(&served_values.as_str()) {
            assert!(!applied.contains("clusterrole"), "{applied}");
            assert!(!rendered.contains("resources: [\"secrets\"]"), "{rendered}");
        }
    }

    // The ServiceMonitor renders only when enabled (its CRD is not on the local stack).
    let base = [
        "template",
        "rtdp",
        CHART,
        "--kube-version",
        version.as_str(),
    ];
    let without = run_ok("helm", &base, None);
    assert!(!without.contains("kind: ServiceMonitor"));
    let mut args = base.to_vec();
    args.extend(["--set", "serviceMonitor.enabled=true"]);
    let with = run_ok("helm", &args, None);
    assert!(with.contains("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor"));
}

/// A kubeconfig like $KUBECONFIG whose users impersonate `user` (`as:`): the admin
/// certificate authenticates, RBAC authorizes as `user` alone.
fn impersonating_kubeconfig(user: &str) -> PathBuf {
    let path = required_env("KUBECONFIG");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading KUBECONFIG {path}: {error}"));
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("KUBECONFIG is YAML");
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
    std::fs::write(&out, serde_yaml::to_string(&config).expect("serializing"))
        .expect("writing the impersonating kubeconfig");
    out
}

/// The operator binary running with an impersonating kubeconfig, killed on drop.
struct ImpersonatedOperator {
    child: Child,
    log: PathBuf,
}

impl ImpersonatedOperator {
    fn start(kubeconfig: &Path, served: &str, lease_namespace: &str) -> Self {
        let identity = unique_name("helm-operator");
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{identity}.log"));
        let file = File::create(&log).expect("creating the operator's log file");
        let errors = file.try_clone().expect("cloning the log file handle");
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_rtdp-operator"))
            .args([
                "--namespaces",
                served,
                "--metrics-address",
                &metrics,
                // The chart's Lease: in the release namespace, named by leaderElection.leaseName.
                "--leader-election-namespace",
                lease_namespace,
                "--lease-name",
                "rtdp-operator",
                "--identity",
                &identity,
                "--log-format",
                "text",
                "--max-backoff-seconds",
                "5",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,rtdp_operator=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(errors))
            .spawn()
            .expect("starting the rtdp-operator binary");
        eprintln!("impersonated operator {identity}: log {}", log.display());
        Self { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ImpersonatedOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the operator as `user` for the served namespace and proves it reconciles a Pipeline
/// fully: everything the chart's RBAC must allow, nothing from the admin credentials.
async fn reconciles_as(world: &TestWorld, user: &str, lease_namespace: &str) {
    let client = &world.client;
    // Credentials the operator itself reads (Cassandra; the local one accepts any).
    let secrets: Api<Secret> = world.api();
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("cassandra-login".into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([
                    ("username".to_string(), "cassandra".to_string()),
                    ("password".to_string(), "cassandra".to_string()),
                ])),
                ..Default::default()
            },
        )
        .await
        .expect("creating the credentials Secret");

    let kubeconfig = impersonating_kubeconfig(user);
    // Control: the impersonating kubeconfig, loaded by kube-rs as the operator loads it, is
    // really limited to the ServiceAccount's rights (listing Secrets is never granted).
    let loaded = kube::config::Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(loaded, &Default::default())
        .await
        .expect("loading the impersonating kubeconfig");
    let impersonated = Client::try_from(config).expect("an impersonating client");
    match Api::<Secret>::namespaced(impersonated.clone(), &world.namespace)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("listing Secrets as {user} must be forbidden, got {other:?}"),
    }
    Api::<rtdp_crds::Pipeline>::namespaced(impersonated, &world.namespace)
        .list(&Default::default())
        .await
        .unwrap_or_else(|error| panic!("listing Pipelines as {user}: {error}"));

    let operator = ImpersonatedOperator::start(&kubeconfig, &world.namespace, lease_namespace);
    let name = "listings";
    let mut pipeline = world.pipeline(name);
    pipeline.spec.cassandra.credentials_secret_ref = Some(CredentialsSecretReference {
        name: "cassandra-login".into(),
        username_key: "username".into(),
        password_key: "password".into(),
    });
    world.create(&pipeline).await;

    let ready = tokio::time::timeout(
        Duration::from_secs(120),
        world.wait_for_condition(name, "Ready", "True", Some("Reconciled")),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the Pipeline did not become Ready under {user}; operator log:\n{}",
            operator.log_text()
        )
    });
    assert_eq!(
        condition_of(&ready, "SchemaReady"),
        ("True".into(), "SchemaReady".into())
    );
    assert!(
        ready.finalizers().contains(&"rtdp.dev/cleanup".to_string()),
        "the finalizer (a patch of the Pipeline) is missing"
    );
    let topic = format!("{}.{name}", world.namespace);
    assert_eq!(world.topic(&topic).await.partitions, 2);
    world.topic(&format!("{topic}.dlq")).await;
    world
        .api::<ConfigMap>()
        .get(&format!("{name}-runner"))
        .await
        .expect("the runner ConfigMap");
    world
        .api::<Deployment>()
        .get(&format!("{name}-processor"))
        .await
        .expect("the processor Deployment");
    world
        .api::<Deployment>()
        .get(&format!("{name}-ingest"))
        .await
        .expect("the ingest Deployment (generator source)");
    world
        .api::<Service>()
        .get(&format!("{name}-metrics"))
        .await
        .expect("the metrics Service");
    let events = world.event_reasons(name).await;
    assert!(!events.is_empty(), "no Events were published");

    // The chart's Lease, held by this operator.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), lease_namespace);
    let lease = leases
        .get("rtdp-operator")
        .await
        .expect("the chart's Lease exists");
    assert!(
        lease
            .spec
            .and_then(|spec| spec.holder_identity)
            .is_some_and(|holder| holder.starts_with("helm-operator")),
        "the Lease is not held by the impersonated operator"
    );

    // Switching to a scheduled HTTP source: a CronJob is created, the ingest Deployment deleted.
    world
        .patch_spec(
            name,
            serde_json::json!({
                "source": {
                    "generator": null,
                    "http": {
                        "url": "http://listings-api.invalid/search",
                        "recordsPointer": "/results",
                        "keyField": "/zpid",
                        "schedule": "@daily"
                    }
                }
            }),
        )
        .await;
    let cron_jobs = world.api::<CronJob>();
    let deployments = world.api::<Deployment>();
    let ingest = format!("{name}-ingest");
    eventually(
        "the ingest CronJob to replace the ingest Deployment",
        Duration::from_secs(60),
        || {
            let (cron_jobs, deployments, ingest) =
                (cron_jobs.clone(), deployments.clone(), ingest.clone());
            async move {
                let cron_job = cron_jobs.get_opt(&ingest).await.ok()?;
                let deployment = deployments.get_opt(&ingest).await.ok()?;
                (cron_job.is_some()
                    && deployment
                        .is_none_or(|deployment| deployment.metadata.deletion_timestamp.is_some()))
                .then_some(())
            }
        },
    )
    .await;

    // Deletion: the finalizer drops the topics, then releases the Pipeline.
    world.delete(name).await;
    world.wait_gone(name, Duration::from_secs(90)).await;
    assert!(
        !world.topic_exists(&topic).await,
        "deletionPolicy Delete: the topic should be gone"
    );
    let log = operator.log_text();
    assert!(
        !log.contains("forbidden"),
        "the operator hit a permission error under {user}:\n{log}"
    );
    let _ = std::fs::remove_file(kubeconfig);
}

/// watchNamespaces = [one namespace]: Roles there only, no cluster-wide rights, Secrets
/// readable only in the served namespace; the operator reconciles as the ServiceAccount.
#[tokio::test]
async fn namespaced_install_is_least_privilege_and_sufficient() {
    required_env("KUBECONFIG");
    let client = kube_client().await;
    // The CRD first (as every operator test does), so helm's crds/ step finds it and skips.
    install_crd(&client).await;
    let world = TestWorld::new("helm-served").await;
    let unserved = TestNamespace::create(&client, "helm-unserved").await;
    let release_namespace = unique_name("helm-ns");
    let mut release = Release::install(
        "rel",
        &release_namespace,
        &[format!("watchNamespaces={{{}}}", world.namespace)],
    );
    let fullname = release.fullname();
    let user = release.service_account_user();

    // What the release created.
    let deployment = Api::<Deployment>::namespaced(client.clone(), &release_namespace)
        .get(&fullname)
        .await
        .expect("the operator Deployment");
    check_deployment(&deployment, &fullname, Some(&world.namespace));
    let issued = check_webhook(
        &client,
        &release_namespace,
        &fullname,
        Some(&world.namespace),
    )
    .await;
    Api::<ServiceAccount>::namespaced(client.clone(), &release_namespace)
        .get(&fullname)
        .await
        .expect("the ServiceAccount");
    Api::<Service>::namespaced(client.clone(), &release_namespace)
        .get(&format!("{fullname}-metrics"))
        .await
        .expect("the metrics Service");
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &release_namespace)
        .get(&fullname)
        .await
        .expect("the PodDisruptionBudget");
    Api::<Role>::namespaced(client.clone(), &world.namespace)
        .get(&fullname)
        .await
        .expect("the Role in the served namespace");
    Api::<RoleBinding>::namespaced(client.clone(), &world.namespace)
        .get(&fullname)
        .await
        .expect("the RoleBinding in the served namespace");
    Api::<Role>::namespaced(client.clone(), &release_namespace)
        .get(&format!("{fullname}-leader-election"))
        .await
        .expect("the leader election Role");
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&fullname)
            .await
            .expect("reading ClusterRoles")
            .is_none(),
        "a namespaced install must not create a ClusterRole"
    );

    // What the ServiceAccount may and may not do.
    assert_serves(&user, &world.namespace);
    assert_never_allowed(&user, &world.namespace);
    assert_lease_rights(&user, &release_namespace, &world.namespace);
    assert_cannot(
        &user,
        &[
            &["get", "secrets", "-n", &unserved.name],
            &["get", "secrets", "-n", &release_namespace],
            &["list", "pipelines.rtdp.dev", "-n", &unserved.name],
            &["list", "pipelines.rtdp.dev", "--all-namespaces"],
            &["create", "deployments.apps", "-n", &unserved.name],
            &["create", "events.events.k8s.io", "-n", &unserved.name],
        ],
    );

    // And it is enough: the operator, as that ServiceAccount, reconciles everything.
    reconciles_as(&world, &user, &release_namespace).await;

    // `helm upgrade` keeps the webhook's certificate (lookup of the existing Secret).
    run_ok(
        "helm",
        &[
            "upgrade",
            &release.name,
            CHART,
            "--namespace",
            &release_namespace,
            "--reuse-values",
            "--timeout",
            "2m",
        ],
        None,
    );
    let upgraded = check_webhook(
        &client,
        &release_namespace,
        &fullname,
        Some(&world.namespace),
    )
    .await;
    assert!(
        upgraded == issued,
        "helm upgrade issued a new webhook certificate"
    );

    release.uninstall();
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), &release_namespace)
            .get_opt(&fullname)
            .await
            .expect("reading ServiceAccounts")
            .is_none(),
        "helm uninstall left the ServiceAccount"
    );
    world.cleanup().await;
}

/// Default values (every namespace): a ClusterRole and ClusterRoleBinding with the same
/// rules, still nothing it must not do; the operator reconciles through the binding.
#[tokio::test]
async fn cluster_wide_install_is_least_privilege_and_sufficient() {
    required_env("KUBECONFIG");
    let client = kube_client().await;
    install_crd(&client).await;
    let world = TestWorld::new("helm-cluster").await;
    let release_namespace = unique_name("helm-ns");
    let mut release = Release::install("rel", &release_namespace, &[]);
    let fullname = release.fullname();
    let user = release.service_account_user();

    let deployment = Api::<Deployment>::namespaced(client.clone(), &release_namespace)
        .get(&fullname)
        .await
        .expect("the operator Deployment");
    check_deployment(&deployment, &fullname, None);
    check_webhook(&client, &release_namespace, &fullname, None).await;
    Api::<ClusterRole>::all(client.clone())
        .get(&fullname)
        .await
        .expect("the ClusterRole");
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get(&fullname)
        .await
        .expect("the ClusterRoleBinding");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        (
            "ServiceAccount",
            fullname.as_str(),
            Some(release_namespace.as_str())
        )
    );

    assert_serves(&user, &world.namespace);
    assert_can(
        &user,
        &[&["list", "pipelines.rtdp.dev", "--all-namespaces"]],
    );
    assert_never_allowed(&user, &world.namespace);
    assert_lease_rights(&user, &release_namespace, &world.namespace);
    assert_cannot(&user, &[&["list", "secrets", "--all-namespaces"]]);

    // Restricted to the test's namespace by flag (not to touch other tests' Pipelines); the
    // rights come from the ClusterRoleBinding.
    reconciles_as(&world, &user, &release_namespace).await;

    release.uninstall();
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&fullname)
            .await
            .expect("reading ClusterRoles")
            .is_none(),
        "helm uninstall left the ClusterRole"
    );
    world.cleanup().await;
}

/// The webhook's Secret, Service and ValidatingWebhookConfiguration: the caBundle is the CA
/// that signed the Secret's certificate, valid for every name of the Service; the webhook
/// covers Pipeline CREATE and UPDATE in the served namespaces only. Returns the Secret's data.
async fn check_webhook(
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

/// The Deployment: 2 replicas, the restricted security context, the runner image, the flags.
fn check_deployment(deployment: &Deployment, fullname: &str, namespaces: Option<&str>) {
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
    let security = container
        .security_context
        .as_ref()
        .expect("a container securityContext");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
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

/// `make kind-e2e`'s manifests, checked here because kind cannot run on these machines:
/// deploy/dev (Kafka, Cassandra, the listings API) and the example Pipeline with the URL
/// dev/kind-e2e substitutes pass the API server's dry run; the chart renders with
/// deploy/dev/kind-values.yaml.
#[tokio::test]
async fn kind_e2e_manifests_pass_the_server_dry_run() {
    required_env("KUBECONFIG");
    let client = kube_client().await;
    install_crd(&client).await;
    let version = server_version(&client).await;
    let namespace = TestNamespace::create(&client, "helm-kind").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    let namespace_file = std::fs::read_to_string(root.join("deploy/dev/namespace.yaml"))
        .expect("reading deploy/dev/namespace.yaml");
    assert!(namespace_file.contains("name: rtdp-dev"));
    run_ok(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&namespace_file),
    );
    for file in ["kafka.yaml", "cassandra.yaml", "listings-api.yaml"] {
        let text = std::fs::read_to_string(root.join("deploy/dev").join(file))
            .unwrap_or_else(|error| panic!("reading deploy/dev/{file}: {error}"));
        // Into the test's namespace (rtdp-dev does not exist here); host names stay.
        let text = text.replace(
            "namespace: rtdp-dev",
            &format!("namespace: {}", namespace.name),
        );
        let applied = run_ok(
            "kubectl",
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&text),
        );
        assert!(applied.contains("(server dry run)"), "{file}: {applied}");
    }

    // The same substitution dev/kind-e2e makes with sed.
    let example = std::fs::read_to_string(root.join("examples/property-listings.yaml"))
        .expect("reading the example");
    let from = "url: https://zillow56.p.rapidapi.com/search";
    let to = "url: http://listings-api.rtdp-dev.svc.cluster.local:8080/search";
    assert!(example.contains(from), "dev/kind-e2e replaces `{from}`");
    let script = std::fs::read_to_string(root.join("dev/kind-e2e")).expect("reading dev/kind-e2e");
    assert!(
        script.contains("EXAMPLE_URL=https://zillow56.p.rapidapi.com/search")
            && script.contains(
                "LISTINGS_URL=http://listings-api.rtdp-dev.svc.cluster.local:8080/search"
            ),
        "dev/kind-e2e and this test must substitute the same URL"
    );
    let patched = example.replace(from, to);
    run_ok(
        "kubectl",
        &[
            "apply",
            "--dry-run=server",
            "-n",
            &namespace.name,
            "-f",
            "-",
        ],
        Some(&patched),
    );

    let values = root.join("deploy/dev/kind-values.yaml");
    let values = values.to_str().expect("a UTF-8 path");
    run_ok("helm", &["lint", "--strict", CHART, "-f", values], None);
    let rendered = run_ok(
        "helm",
        &[
            "template",
            "rtdp",
            CHART,
            "--namespace",
            &namespace.name,
            "--kube-version",
            &version,
            "-f",
            values,
        ],
        None,
    );
    assert!(rendered.contains("image: \"ghcr.io/rtdp-dev/rtdp-operator:kind-e2e\""));
    assert!(rendered.contains("value: \"ghcr.io/rtdp-dev/pipeline-runner:kind-e2e\""));
    run_ok(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    );
}
