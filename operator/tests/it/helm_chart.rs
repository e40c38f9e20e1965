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

use std::path::Path;
use std::time::Duration;

use crate::common::helm::*;
use crate::common::{Operator, TestWorld, condition_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::Api;
use kube::{Client, ResourceExt};
use rtdp_crds::CredentialsSecretReference;
use rtdp_test_support::process::{output_text, run, run_ok};
use rtdp_test_support::{eventually, kube_client, required_env, unique_name};

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
        ("podMonitor.enabled=sometimes", &["/podMonitor/enabled"]),
        (
            "prometheusRule.alerts.lagHigh.seconds=soon",
            &["/prometheusRule/alerts/lagHigh/seconds"],
        ),
        (
            "prometheusRule.alerts.lagHgh.seconds=60",
            &["additional properties 'lagHgh'"],
        ),
        ("dashboards.enabled=yes", &["/dashboards/enabled"]),
    ];
    for (value, expected) in cases {
        for command in ["lint", "template"] {
            let output = run(
                "helm",
                &[command, CHART, "--kube-version", "1.35.0", "--set", value],
                None,
            );
            let message = output_text(&output);
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
        vec![
            "replicaCount=1",
            "podDisruptionBudget.enabled=false",
            "dashboards.enabled=true",
        ],
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
        // The Grafana dashboard's ConfigMap (tests/monitoring.rs checks its content).
        assert_eq!(
            applied.contains("configmap/rtdp-operator-dashboards"),
            values.contains(&"dashboards.enabled=true"),
            "{values:?}:\n{applied}"
        );
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

    // The ServiceMonitor renders when enabled, or (auto, the default) where the cluster serves
    // its API: `helm template` without --api-versions serves none, nor does the local stack
    // (tests/monitoring.rs covers the rest).
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

/// Runs the operator as `user` for the served namespace and proves it reconciles a Pipeline
/// fully: everything the chart's RBAC must allow, nothing from the admin credentials.
async fn reconciles_as(world: &TestWorld, user: &str, lease_namespace: &str) {
    let client = &world.client;
    // Credentials the operator itself reads (Cassandra; the local one accepts any).
    world
        .create_secret(
            "cassandra-login",
            &[("username", "cassandra"), ("password", "cassandra")],
        )
        .await;

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

    let operator = Operator::start_as(&kubeconfig, &world.namespace, lease_namespace);
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
        world.wait_for_condition(name, "Provisioned", "True", Some("Reconciled")),
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
    world.get::<ConfigMap>(&format!("{name}-runner")).await;
    world.get::<Deployment>(&format!("{name}-processor")).await;
    world.get::<Deployment>(&format!("{name}-ingest")).await;
    world.get::<Service>(&format!("{name}-metrics")).await;
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
    let client = admin_client_with_crd().await;
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
    release
        .check_operator_deployment(&client, Some(&world.namespace))
        .await;
    let issued = release.check_webhook(&client, Some(&world.namespace)).await;
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
    release.upgrade();
    let upgraded = release.check_webhook(&client, Some(&world.namespace)).await;
    assert!(
        upgraded == issued,
        "helm upgrade issued a new webhook certificate"
    );

    release.uninstall();
    assert_uninstalled(
        Api::<ServiceAccount>::namespaced(client.clone(), &release_namespace),
        &fullname,
    )
    .await;
    world.cleanup().await;
}

/// Default values (every namespace): a ClusterRole and ClusterRoleBinding with the same
/// rules, still nothing it must not do; the operator reconciles through the binding.
#[tokio::test]
async fn cluster_wide_install_is_least_privilege_and_sufficient() {
    let client = admin_client_with_crd().await;
    let world = TestWorld::new("helm-cluster").await;
    let release_namespace = unique_name("helm-ns");
    let mut release = Release::install("rel", &release_namespace, &[]);
    let fullname = release.fullname();
    let user = release.service_account_user();

    release.check_operator_deployment(&client, None).await;
    release.check_webhook(&client, None).await;
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
    assert_uninstalled(Api::<ClusterRole>::all(client.clone()), &fullname).await;
    world.cleanup().await;
}

/// `make kind-e2e`'s manifests, checked here because kind cannot run on these machines:
/// deploy/dev (Kafka, Cassandra, the listings API) and the example Pipeline with the URL
/// dev/kind-e2e substitutes pass the API server's dry run; the chart renders with
/// deploy/dev/kind-values.yaml.
#[tokio::test]
async fn kind_e2e_manifests_pass_the_server_dry_run() {
    let client = admin_client_with_crd().await;
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
