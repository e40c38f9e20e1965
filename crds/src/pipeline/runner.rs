//! `spec.runner`: the runner pods (image, replicas, resources, concurrency, batches, autoscaling).

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the runner workloads run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSpec {
    /// Replicas of the process Deployment. More than the topic's partitions only adds idle
    /// consumers. With `autoscaling`, the replicas the processors start with, until the
    /// autoscaler's first decision (kept within its bounds).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// The pipeline-runner image. Defaults to the one the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory requests and limits of each runner container. A processor runs on one
    /// thread and uses at most one core: more throughput comes from more replicas (and
    /// partitions), not from a higher CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// How records are grouped before they are written.
    #[serde(default)]
    pub batch: BatchSpec,

    /// The most Cassandra writes in flight per runner replica.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 4096))]
    pub concurrency: i32,

    /// Scale the processors on consumer lag: the operator reads the lag every freshness period
    /// and sets the replicas to ⌈records waiting ÷ targetLag⌉, within minReplicas..maxReplicas
    /// and never above the topic's partitions, with stabilisation windows against flapping.
    /// Each decision is an Event and is in `status.autoscaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

impl Default for RunnerSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            image: None,
            resources: None,
            batch: BatchSpec::default(),
            concurrency: default_concurrency(),
            autoscaling: None,
        }
    }
}

fn default_replicas() -> i32 {
    1
}

fn default_concurrency() -> i32 {
    256
}

/// Batching of consumed records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    /// The most records handled at once: taken from the consumer's fetch queue in one go by
    /// the process role, and per producer batch by ingest (librdkafka `batch.num.messages`).
    #[serde(default = "default_batch_max_records")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_records: i32,

    /// Ingest only: how long the producer waits for a batch to fill, in milliseconds
    /// (librdkafka `linger.ms`). The process role never holds a record back to fill a batch:
    /// it writes records as they arrive, up to `concurrency` in flight.
    #[serde(default = "default_batch_max_delay_milliseconds")]
    #[schemars(range(min = 0, max = 60000))]
    pub max_delay_milliseconds: i32,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            max_records: default_batch_max_records(),
            max_delay_milliseconds: default_batch_max_delay_milliseconds(),
        }
    }
}

fn default_batch_max_records() -> i32 {
    500
}

fn default_batch_max_delay_milliseconds() -> i32 {
    20
}

/// Lag-based autoscaling of the processors.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// The fewest replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,

    /// The most replicas; the topic's partition count caps it too (a replica beyond it would
    /// have no partition to read).
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// Records waiting per replica to aim for: the replicas wanted are the records waiting
    /// (over all partitions) divided by this, rounded up.
    #[serde(default = "default_target_lag")]
    #[schemars(range(min = 1))]
    pub target_lag: i64,

    /// How long a higher replica count must be wanted before scaling up, in seconds (the
    /// lowest recommendation of the window wins). 0 scales up at once.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_up_stabilization_seconds: i64,

    /// How long a lower replica count must be wanted before scaling down, in seconds (the
    /// highest recommendation of the window wins).
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i64,
}

fn default_scale_down_stabilization() -> i64 {
    300
}

fn default_target_lag() -> i64 {
    10_000
}

/// What happens to external resources when the Pipeline is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the topics, keyspace and tables, and their data.
    #[default]
    Retain,
    /// Drop the topics and the tables (the keyspace stays: other Pipelines may share it).
    Delete,
}
