//! Shared helpers of the operator's integration tests: the operator as a child process, a
//! namespace per test, Pipelines pointing at the local stack, and readers of what the
//! operator made in Kafka, Cassandra and Kubernetes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rtdp_crds::{Pipeline, parse_pipeline};
use rtdp_provisioning::kafka::{Admin, ExistingTopic, admin_client, read_topic};
use rtdp_test_support::{
    cassandra_contact_points, eventually, kafka_bootstrap_servers, kube_client,
    unique_cql_identifier, unique_name,
};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

/// The operator binary, run as a child process with the test's KUBECONFIG.
pub struct Operator {
    child: Child,
    /// Its metrics address.
    pub metrics: String,
    /// Its log file.
    pub log: PathBuf,
    /// Its identity in the Lease.
    pub identity: String,
}

impl Operator {
    /// Starts the operator for one namespace with its own Lease, plus `extra` flags.
    pub fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with_lease(namespace, &format!("{namespace}-leader"), extra)
    }

    /// Starts the operator with a given Lease name (two operators share one).
    pub fn start_with_lease(namespace: &str, lease: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let identity = unique_name("operator");
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{identity}.log"));
        let file = File::create(&log).expect("creating the operator's log file");
        let errors = file.try_clone().expect("cloning the log file handle");
        let child = Command::new(env!("CARGO_BIN_EXE_rtdp-operator"))
            .args([
                "--namespaces",
                namespace,
                "--metrics-address",
                &metrics,
                "--leader-election-namespace",
                namespace,
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
            .env("RUST_LOG", "info,rtdp_operator=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(errors))
            .spawn()
            .expect("starting the rtdp-operator binary");
        eprintln!("operator {identity}: log {}", log.display());
        Self {
            child,
            metrics,
            log,
            identity,
        }
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks for a graceful stop (SIGTERM) and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "sending SIGTERM");
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the operator did not stop within 30 s of SIGTERM");
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The peak resident set size of the process, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// GETs a path of the metrics server; `None` when it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics, path).await
    }

    /// The value of one sample in /metrics (a line starting with `sample`).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|line| line.strip_prefix(sample))
            .and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.0 GET, enough for /metrics and /healthz.
pub async fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
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

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free port")
}

/// One test's world: a client, a fresh namespace, and the CRD installed.
pub struct TestWorld {
    pub client: Client,
    pub namespace: String,
    pub admin: Admin,
}

impl TestWorld {
    /// Installs the CRD (idempotent) and creates a namespace for the test.
    pub async fn new(prefix: &str) -> Self {
        let client = kube_client().await;
        install_crd(&client).await;
        let namespace = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: kube::api::ObjectMeta {
                        name: Some(namespace.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect("creating the test namespace");
        let admin =
            admin_client(&kafka_bootstrap_servers(), &BTreeMap::new()).expect("Kafka admin client");
        Self {
            client,
            namespace,
            admin,
        }
    }

    /// The Pipelines API of the test namespace.
    pub fn pipelines(&self) -> Api<Pipeline> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Any namespaced API of the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A Pipeline (from examples/generated-listings.yaml) on the local Kafka and Cassandra,
    /// with unique topic and keyspace names, 2 partitions and `deletionPolicy: Delete`.
    pub fn pipeline(&self, name: &str) -> Pipeline {
        let text = include_str!("../../../examples/generated-listings.yaml");
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
    pub async fn create(&self, pipeline: &Pipeline) -> Pipeline {
        self.pipelines()
            .create(&PostParams::default(), pipeline)
            .await
            .expect("creating the Pipeline")
    }

    /// Replaces a Pipeline's spec with a merge patch of `patch`.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> Pipeline {
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
    pub async fn wait_for(
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
    pub async fn wait_for_condition(
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
    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let pipelines = self.pipelines();
        eventually(&format!("Pipeline {name} to be gone"), timeout, || {
            let pipelines = pipelines.clone();
            let name = name.to_string();
            async move { matches!(pipelines.get_opt(&name).await, Ok(None)).then_some(()) }
        })
        .await;
    }

    /// Deletes a Pipeline.
    pub async fn delete(&self, name: &str) {
        self.pipelines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("deleting the Pipeline");
    }

    /// The topic's partitions and replication factor, once it exists.
    pub async fn topic(&self, topic: &str) -> ExistingTopic {
        let admin = self.admin.clone();
        eventually(&format!("topic {topic}"), Duration::from_secs(30), || {
            let admin = admin.clone();
            let topic = topic.to_string();
            async move { read_topic(&admin, &topic).await.ok().flatten() }
        })
        .await
    }

    /// Whether the topic exists.
    pub async fn topic_exists(&self, topic: &str) -> bool {
        read_topic(&self.admin, topic)
            .await
            .expect("reading topic metadata")
            .is_some()
    }

    /// The reasons of the Events about a Pipeline.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events(name)
            .await
            .into_iter()
            .filter_map(|event| event.reason)
            .collect()
    }

    /// The Events about a Pipeline.
    pub async fn events(&self, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
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
    pub async fn cleanup(&self) {
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

/// A condition of the Pipeline's status.
pub fn find_condition<'a>(pipeline: &'a Pipeline, type_: &str) -> Option<&'a Condition> {
    pipeline
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

/// `Condition` as `(status, reason)`.
pub fn condition_of(pipeline: &Pipeline, type_: &str) -> (String, String) {
    let condition = find_condition(pipeline, type_)
        .unwrap_or_else(|| panic!("{} has no {type_} condition", pipeline.name_any()));
    (condition.status.clone(), condition.reason.clone())
}

/// Applies the Pipeline CRD and waits until it is Established.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = rtdp_crds::crd();
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    crds.patch(
        &name,
        &PatchParams::apply("rtdp-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the Pipeline CRD");
    eventually(
        "the Pipeline CRD to become Established",
        Duration::from_secs(30),
        || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .into_iter()
                    .any(|condition| condition.type_ == "Established" && condition.status == "True")
                    .then_some(())
            }
        },
    )
    .await;
}

/// A Cassandra session on the local stack.
pub async fn cassandra() -> Session {
    SessionBuilder::new()
        .known_nodes(cassandra_contact_points())
        .build()
        .await
        .expect("connecting to Cassandra")
}
