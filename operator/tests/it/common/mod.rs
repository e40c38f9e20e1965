//! Shared helpers of the operator's integration tests: the operator as a child process, a
//! namespace per test, Pipelines pointing at the local stack, and readers of what the
//! operator made in Kafka, Cassandra and Kubernetes.

pub(crate) mod helm;
pub(crate) mod pods;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rtdp_crds::{Pipeline, parse_pipeline};
use rtdp_provisioning::kafka::{Admin, ExistingTopic, admin_client, read_topic};
pub(crate) use rtdp_test_support::free_port;
use rtdp_test_support::kubernetes::create_namespace;
use rtdp_test_support::process::Process;
use rtdp_test_support::{
    cassandra_contact_points, cassandra_session, eventually, kafka_bootstrap_servers, kube_client,
    unique_cql_identifier, unique_name,
};
use scylla::client::session::Session;

/// The operator binary, run as a child process with the test's KUBECONFIG.
pub(crate) struct Operator {
    process: Process,
    /// Its metrics address.
    pub(crate) metrics: String,
    /// Its log file.
    #[allow(dead_code, reason = "read by the scale binary")]
    pub(crate) log: PathBuf,
    /// Its identity in the Lease.
    pub(crate) identity: String,
}

impl Operator {
    /// Starts the operator for one namespace with its own Lease, plus `extra` flags.
    pub(crate) fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with_lease(namespace, &format!("{namespace}-leader"), extra)
    }

    /// Starts the operator with a given Lease name (two operators share one).
    pub(crate) fn start_with_lease(namespace: &str, lease: &str, extra: &[&str]) -> Self {
        Self::launch("operator", namespace, namespace, lease, None, extra)
    }

    /// Starts the operator with another kubeconfig (one that impersonates a ServiceAccount),
    /// for the `served` namespaces, with the chart's Lease (`rtdp-operator` in
    /// `lease_namespace`); its identity starts with `helm-operator`.
    pub(crate) fn start_as(kubeconfig: &Path, served: &str, lease_namespace: &str) -> Self {
        Self::launch(
            "helm-operator",
            served,
            lease_namespace,
            "rtdp-operator",
            Some(kubeconfig),
            &[],
        )
    }

    fn launch(
        identity_prefix: &str,
        namespaces: &str,
        lease_namespace: &str,
        lease: &str,
        kubeconfig: Option<&Path>,
        extra: &[&str],
    ) -> Self {
        let metrics = format!("127.0.0.1:{}", free_port());
        let identity = unique_name(identity_prefix);
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{identity}.log"));
        // Where the operator's memory goes: `RTDP_HEAPTRACK_OUTPUT=/tmp/operator make
        // bench-operator` runs it under heaptrack (then `heaptrack_print -f /tmp/operator.zst`);
        // the RSS the test prints is then heaptrack's own, not the operator's.
        let mut command = match std::env::var("RTDP_HEAPTRACK_OUTPUT") {
            Ok(output) => {
                let mut command = Command::new("heaptrack");
                command.args(["-o", &output, env!("CARGO_BIN_EXE_rtdp-operator")]);
                command
            }
            Err(_) => Command::new(env!("CARGO_BIN_EXE_rtdp-operator")),
        };
        command
            .args([
                "--namespaces",
                namespaces,
                "--metrics-address",
                &metrics,
                "--leader-election-namespace",
                lease_namespace,
                "--lease-name",
                lease,
                "--identity",
                &identity,
                "--log-format",
                "text",
                "--max-backoff-seconds",
                "5",
            ])
            .args(extra)
            .env("RUST_LOG", "info,rtdp_operator=debug");
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let process = Process::spawn("the operator", command, &log);
        eprintln!("operator {identity}: log {}", log.display());
        Self {
            process,
            metrics,
            log,
            identity,
        }
    }

    /// The operator's process id.
    #[allow(dead_code, reason = "used by the scale binary")]
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        self.process.kill();
    }

    /// Asks for a graceful stop (SIGTERM) and waits (30 s at most) for the exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate(Duration::from_secs(30))
    }

    /// Whether the process still runs.
    #[allow(dead_code, reason = "used by the api_server_outage binary")]
    pub(crate) fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The peak resident set size of the process, in KiB (VmHWM).
    #[allow(dead_code, reason = "used by the scale binary")]
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// GETs a path of the metrics server; `None` when it does not answer.
    pub(crate) async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics, path).await
    }

    /// The value of one sample in /metrics (a line starting with `sample`).
    pub(crate) async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|line| line.strip_prefix(sample))
            .and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
    }

    /// The operator's log so far.
    pub(crate) fn log_text(&self) -> String {
        self.process.log_text()
    }
}

/// A minimal HTTP/1.0 GET, enough for /metrics and /healthz.
pub(crate) async fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .ok()?
    .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// A namespaced Kubernetes object type that can be read: what `TestWorld::get` and its
/// kin work with.
pub(crate) trait Namespaced:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// One test's world: a client, a fresh namespace, and the CRD installed.
pub(crate) struct TestWorld {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) admin: Admin,
}

impl TestWorld {
    /// Installs the CRD (idempotent) and creates a namespace for the test.
    pub(crate) async fn new(prefix: &str) -> Self {
        let client = kube_client().await;
        install_crd(&client).await;
        let namespace = create_namespace(&client, prefix).await;
        let admin =
            admin_client(&kafka_bootstrap_servers(), &BTreeMap::new()).expect("Kafka admin client");
        Self {
            client,
            namespace,
            admin,
        }
    }

    /// A new world and an operator serving its namespace (with `extra` flags).
    pub(crate) async fn with_operator(prefix: &str, extra: &[&str]) -> (Self, Operator) {
        let world = Self::new(prefix).await;
        let operator = Operator::start(&world.namespace, extra);
        (world, operator)
    }

    /// The named object of the test namespace, if it exists.
    pub(crate) async fn find<K: Namespaced>(&self, name: &str) -> Option<K> {
        self.api::<K>()
            .get_opt(name)
            .await
            .unwrap_or_else(|error| panic!("reading {} {name}: {error}", K::kind(&())))
    }

    /// The named object of the test namespace, which must exist.
    pub(crate) async fn get<K: Namespaced>(&self, name: &str) -> K {
        self.find(name)
            .await
            .unwrap_or_else(|| panic!("{} {name} does not exist", K::kind(&())))
    }

    /// Whether the named object exists now.
    pub(crate) async fn object_exists<K: Namespaced>(&self, name: &str) -> bool {
        self.find::<K>(name).await.is_some()
    }

    /// The Pipelines API of the test namespace.
    pub(crate) fn pipelines(&self) -> Api<Pipeline> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Any namespaced API of the test namespace.
    pub(crate) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a Secret in the test namespace from string data.
    pub(crate) async fn create_secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            string_data: Some(
                data.iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.api()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|error| panic!("creating the Secret {name}: {error}"));
    }

    /// A Pipeline (from examples/generated-listings.yaml) on the local Kafka and Cassandra,
    /// with unique topic and keyspace names, 2 partitions and `deletionPolicy: Delete`.
    pub(crate) fn pipeline(&self, name: &str) -> Pipeline {
        let text = include_str!("../../../../examples/generated-listings.yaml");
        let mut pipeline = parse_pipeline(text, "generated-listings.yaml").expect("example");
        pipeline.metadata.name = Some(name.to_string());
        pipeline.metadata.namespace = Some(self.namespace.clone());
        pipeline.spec.kafka.bootstrap_servers = kafka_bootstrap_servers()
            .split(',')
            .map(|server| server.trim().to_string())
            .collect();
        pipeline.spec.cassandra.contact_points = cassandra_contact_points();
        pipeline.spec.cassandra.keyspace.name = unique_cql_identifier("op");
        pipeline.spec.topic.partitions = 2;
        pipeline
    }

    /// Creates a Pipeline.
    pub(crate) async fn create(&self, pipeline: &Pipeline) -> Pipeline {
        self.pipelines()
            .create(&PostParams::default(), pipeline)
            .await
            .expect("creating the Pipeline")
    }

    /// Replaces a Pipeline's spec with a merge patch of `patch`.
    pub(crate) async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> Pipeline {
        self.pipelines()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .expect("patching the Pipeline")
    }

    /// Waits until the Pipeline's status describes its current generation and `check` holds.
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Pipeline) -> bool,
    ) -> Pipeline {
        let pipelines = self.pipelines();
        let check = Arc::new(check);
        eventually(what, timeout, || {
            let pipelines = pipelines.clone();
            let check = Arc::clone(&check);
            let name = name.to_string();
            async move {
                let pipeline = pipelines.get_opt(&name).await.ok().flatten()?;
                // Current: the status reports this generation, and not merely as the
                // progress note written before the slow steps (`Reconciling`).
                let current = pipeline.status.as_ref()?.observed_generation
                    == pipeline.metadata.generation
                    && find_condition(&pipeline, "Ready")
                        .is_some_and(|ready| ready.reason != "Reconciling");
                (current && check(&pipeline)).then_some(pipeline)
            }
        })
        .await
    }

    /// Waits until `condition` has `status` (and, if given, `reason`).
    pub(crate) async fn wait_for_condition(
        &self,
        name: &str,
        condition: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Pipeline {
        let what = format!("{name}: {condition}={status} {reason:?}");
        let (condition, status, reason) = (
            condition.to_string(),
            status.to_string(),
            reason.map(str::to_string),
        );
        self.wait_for(name, &what, Duration::from_secs(90), move |pipeline| {
            find_condition(pipeline, &condition).is_some_and(|found| {
                found.status == status
                    && reason.as_ref().is_none_or(|reason| *reason == found.reason)
            })
        })
        .await
    }

    /// Waits until the Pipeline is gone.
    pub(crate) async fn wait_gone(&self, name: &str, timeout: Duration) {
        let pipelines = self.pipelines();
        eventually(&format!("Pipeline {name} to be gone"), timeout, || {
            let pipelines = pipelines.clone();
            let name = name.to_string();
            async move { matches!(pipelines.get_opt(&name).await, Ok(None)).then_some(()) }
        })
        .await;
    }

    /// Deletes a Pipeline.
    pub(crate) async fn delete(&self, name: &str) {
        self.pipelines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("deleting the Pipeline");
    }

    /// The topic's partitions and replication factor, once it exists.
    pub(crate) async fn topic(&self, topic: &str) -> ExistingTopic {
        let admin = self.admin.clone();
        eventually(&format!("topic {topic}"), Duration::from_secs(30), || {
            let admin = admin.clone();
            let topic = topic.to_string();
            async move { read_topic(&admin, &topic).await.ok().flatten() }
        })
        .await
    }

    /// Whether the topic exists.
    pub(crate) async fn topic_exists(&self, topic: &str) -> bool {
        read_topic(&self.admin, topic)
            .await
            .expect("reading topic metadata")
            .is_some()
    }

    /// The reasons of the Events about a Pipeline.
    pub(crate) async fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events(name)
            .await
            .into_iter()
            .filter_map(|event| event.reason)
            .collect()
    }

    /// The Events about a Pipeline.
    pub(crate) async fn events(&self, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.api();
        events
            .list(&Default::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|event| {
                event
                    .regarding
                    .as_ref()
                    .is_some_and(|regarding| regarding.name.as_deref() == Some(name))
            })
            .collect()
    }

    /// Deletes what the test left (Pipelines without finalizers, the operator's objects),
    /// then the namespace; best effort, and without relying on the garbage collector.
    pub(crate) async fn cleanup(&self) {
        let everything = ListParams::default();
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=rtdp-operator");
        let background = DeleteParams::background();
        let _ = self
            .pipelines()
            .delete_collection(&background, &everything)
            .await;
        let _ = self
            .api::<Service>()
            .delete_collection(&background, &managed)
            .await;
        let _ = self
            .api::<Deployment>()
            .delete_collection(&background, &managed)
            .await;
        let _ = self
            .api::<CronJob>()
            .delete_collection(&background, &managed)
            .await;
        let _ = self
            .api::<ConfigMap>()
            .delete_collection(&background, &managed)
            .await;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await;
    }
}

/// One Pipeline of a test's world, for the steps of a scenario: patch its spec, wait for a
/// condition, expect Events, delete it. Every wait polls with a deadline and fails naming what
/// it waited for.
pub(crate) struct Scenario<'a> {
    pub(crate) world: &'a TestWorld,
    pub(crate) name: String,
}

impl TestWorld {
    /// The steps of a scenario on the Pipeline `name`.
    pub(crate) fn scenario(&self, name: &str) -> Scenario<'_> {
        Scenario {
            world: self,
            name: name.to_string(),
        }
    }

    /// Waits (60 s) until the topic is deleted.
    pub(crate) async fn wait_topic_deleted(&self, topic: &str) {
        eventually(
            &format!("the topic {topic} to be deleted"),
            Duration::from_secs(60),
            || async move { (!self.topic_exists(topic).await).then_some(()) },
        )
        .await;
    }

    /// Changes a topic's config by hand (incremental alter), as drift the operator must undo.
    pub(crate) async fn set_topic_config(&self, topic: &str, key: &str, value: &str) {
        use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
        let drift = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
        let results = self
            .admin
            .alter_configs(&[drift], &AdminOptions::new())
            .await
            .unwrap_or_else(|error| panic!("setting {key}={value} on {topic}: {error}"));
        for result in results {
            result.unwrap_or_else(|(_, error)| panic!("setting {key}={value} on {topic}: {error}"));
        }
    }

    /// Waits (60 s) until the topic's config `key` reads `value` in Kafka (describe configs).
    pub(crate) async fn wait_topic_config(&self, topic: &str, key: &str, value: &str) {
        use rdkafka::admin::{AdminOptions, ResourceSpecifier};
        eventually(
            &format!("{key}={value} on topic {topic}"),
            Duration::from_secs(60),
            || async move {
                let results = self
                    .admin
                    .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
                    .await
                    .ok()?;
                let resource = results.into_iter().next()?.ok()?;
                let found = resource
                    .entries
                    .into_iter()
                    .find(|entry| entry.name == key)?
                    .value?;
                (found == value).then_some(())
            },
        )
        .await;
    }

    /// Waits until the named object is gone (or was never there).
    pub(crate) async fn wait_object_gone<K: Namespaced>(&self, name: &str) {
        let api = self.api::<K>();
        eventually(
            &format!("{} {name} to be removed", K::kind(&())),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
            },
        )
        .await;
    }

    /// Drops what `deletionPolicy: Retain` (or a test) left: the topic with its dead-letter
    /// topic, and the keyspace; best effort.
    pub(crate) async fn drop_topics_and_keyspace(&self, topic: &str, keyspace: &str) {
        let _ = self
            .admin
            .delete_topics(
                &[topic, &format!("{topic}.dlq")],
                &rdkafka::admin::AdminOptions::new(),
            )
            .await;
        let _ = cassandra()
            .await
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
            .await;
    }
}

impl Scenario<'_> {
    /// Merge-patches the Pipeline's spec.
    pub(crate) async fn patch(&self, spec: serde_json::Value) -> Pipeline {
        self.world.patch_spec(&self.name, spec).await
    }

    /// Waits (90 s) until the current generation's `condition` has `status` and, if given,
    /// `reason`.
    pub(crate) async fn until(
        &self,
        condition: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Pipeline {
        self.world
            .wait_for_condition(&self.name, condition, status, reason)
            .await
    }

    /// Waits until the current generation is `Provisioned=True` (the local stack has no kubelet,
    /// so `Ready`, which also needs the runner available, stays False there).
    pub(crate) async fn until_provisioned(&self) -> Pipeline {
        self.until("Provisioned", "True", None).await
    }

    /// Waits until `condition` is False with `reason`, and asserts its message contains
    /// `message`.
    pub(crate) async fn until_refused(
        &self,
        condition: &str,
        reason: &str,
        message: &str,
    ) -> Pipeline {
        let refused = self.until(condition, "False", Some(reason)).await;
        assert_condition_message(&refused, condition, message);
        refused
    }

    /// Waits (30 s) until there is an Event of each of `reasons` about the Pipeline.
    pub(crate) async fn expect_events(&self, reasons: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.world.event_reasons(&self.name).await;
            let missing: Vec<&str> = reasons
                .iter()
                .copied()
                .filter(|reason| !seen.iter().any(|found| found == reason))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no Event {missing:?} about {} within 30 s; its Events: {seen:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Deletes the Pipeline and waits until it is gone (its finalizer done).
    pub(crate) async fn delete_and_wait_gone(&self, timeout: Duration) {
        self.world.delete(&self.name).await;
        self.world.wait_gone(&self.name, timeout).await;
    }
}

/// Asserts the Pipeline's `type_` condition's message contains `part`.
pub(crate) fn assert_condition_message(pipeline: &Pipeline, type_: &str, part: &str) {
    let condition = find_condition(pipeline, type_);
    assert!(
        condition.is_some_and(|condition| condition.message.contains(part)),
        "the {type_} condition's message should contain {part:?}: {condition:?}"
    );
}

/// Asserts the container runs restricted (non-root, read-only root filesystem, no privilege
/// escalation); returns its securityContext for more checks.
pub(crate) fn assert_restricted(
    container: &k8s_openapi::api::core::v1::Container,
) -> &k8s_openapi::api::core::v1::SecurityContext {
    let security = container
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("container {} has no securityContext", container.name));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    security
}

/// A condition of the Pipeline's status.
pub(crate) fn find_condition<'a>(pipeline: &'a Pipeline, type_: &str) -> Option<&'a Condition> {
    pipeline
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

/// `Condition` as `(status, reason)`.
pub(crate) fn condition_of(pipeline: &Pipeline, type_: &str) -> (String, String) {
    let condition = find_condition(pipeline, type_)
        .unwrap_or_else(|| panic!("{} has no {type_} condition", pipeline.name_any()));
    (condition.status.clone(), condition.reason.clone())
}

/// Applies the Pipeline CRD and waits until it is Established.
pub(crate) async fn install_crd(client: &Client) {
    rtdp_test_support::kubernetes::install_crd(client, &rtdp_crds::crd()).await;
}

/// A Cassandra session on the local stack.
pub(crate) async fn cassandra() -> Session {
    cassandra_session().await
}
