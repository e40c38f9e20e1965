//! `status`: what the operator observed, and the names the API promises (condition types, dead-letter headers).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::BackfillStatus;

/// The observed state of a Pipeline, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, TopicReady, SchemaReady, RunnerReady and Degraded, in the standard shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The resolved topic name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,

    /// The resolved dead-letter topic name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,

    /// The tables written, as `keyspace.table`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,

    /// Runner replicas desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Runner replicas ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// A human-readable message for the last error; absent when all is well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// How fresh the stored data is, measured from Kafka every freshness period (written by
    /// the operator's freshness loop, its own field manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<FreshnessStatus>,

    /// The last replay: its id, state and outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStatus>,

    /// The last backfill: its id, state and how many intervals succeeded, failed and run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillStatus>,

    /// The scheduled source's runs, read from the run ledger every freshness period: the
    /// last ones (interval, trigger, outcome, pages, records, error) and where the schedule
    /// is covered to (written by the freshness loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<crate::runs::RunsStatus>,

    /// The autoscaler's last decision (with `spec.runner.autoscaling`; written by the
    /// freshness loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// A replay's progress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// The replay's `id`.
    pub id: String,

    /// `Stopping` (waiting for the processors to stop), `Completed` or `Failed`.
    pub state: String,

    /// What was done (offsets per partition, records to reprocess) or why it failed.
    #[serde(default)]
    pub message: String,

    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,

    /// When it completed or failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// What the lag-based autoscaler decided last.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The processor replicas it set.
    pub desired_replicas: i32,

    /// When it last changed them (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,

    /// Why: the lag, the target and the bounds that gave this count.
    #[serde(default)]
    pub message: String,
}

/// How far the processors are behind, from the consumer group's committed offsets (which
/// advance only after Cassandra acknowledged a record's writes) and the Kafka timestamps of
/// the records around them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FreshnessStatus {
    /// When this was measured (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,

    /// Records in the topic not yet stored, over all partitions.
    #[serde(default)]
    pub lag_records: i64,

    /// How long the oldest record not yet stored has been waiting, in seconds; 0 when
    /// nothing waits.
    #[serde(default)]
    pub lag_seconds: i64,

    /// The Kafka timestamp of the newest record written to the tables (RFC 3339), as the
    /// processors commit it with their offsets: dead-lettered and filtered records do not
    /// count. Absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stored_record_time: Option<String>,

    /// The records the processors finished, by outcome, up to their committed offsets.
    /// Counted by the processors and committed with each offset (so exact at that offset, and
    /// kept across restarts and rebalances); records a replay processes again count again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordCounts>,

    /// The dead-lettered records of `records` by reason (`wrong_type`, `malformed_json`...),
    /// counted and committed the same way.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dead_lettered_by_reason: BTreeMap<String, i64>,

    /// Why the last measurement failed, if it did (the other fields are then from the last
    /// one that worked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Records by what became of them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecordCounts {
    /// Written to every table (Cassandra acknowledged each row).
    #[serde(default)]
    pub written: i64,

    /// Sent to the dead-letter topic with the reason.
    #[serde(default)]
    pub dead_lettered: i64,

    /// Dropped by `spec.schema.filter`.
    #[serde(default)]
    pub filtered: i64,
}

/// The condition types a Pipeline's status reports.
pub mod condition_types {
    /// The whole pipeline is provisioned and its runner is available: `Provisioned` and
    /// `RunnerReady` are both True, and a scheduled source's last scheduled run did not fail
    /// (reason `LastRunFailed` until a run succeeds).
    pub const READY: &str = "Ready";
    /// The topics, the keyspace and tables, and the runner workloads exist as declared
    /// (whether the runner's pods are up is `RunnerReady`).
    pub const PROVISIONED: &str = "Provisioned";
    /// The topic and dead-letter topic exist as declared.
    pub const TOPIC_READY: &str = "TopicReady";
    /// The keyspace and tables exist as declared.
    pub const SCHEMA_READY: &str = "SchemaReady";
    /// The processor replicas of the current spec are all ready (a rollout that cannot finish
    /// is not ready, even while the previous pods still run), and so is a continuous source's
    /// ingest replica (reason `IngestUnavailable` when only it is missing).
    pub const RUNNER_READY: &str = "RunnerReady";
    /// Something needs attention although the pipeline may still run: a step of the
    /// reconcile failed, or a scheduled source's last run did not succeed (reasons
    /// `LastRunFailed`, `LastRunPartial`, `RunsSkipped`).
    pub const DEGRADED: &str = "Degraded";
    /// The stored data meets `spec.slo` (present only with an objective).
    pub const FRESH: &str = "Fresh";
    /// Most records the processors finished since the previous measurement were written:
    /// False (reason `MostlyDeadLettered`, naming the most frequent dead-letter reason) when
    /// more than half of at least ten were dead-lettered.
    pub const STORING: &str = "Storing";
}

/// The headers of every dead letter: part of the API, stable for anyone reading the dead-letter
/// topic.
pub mod dead_letter_headers {
    /// The reason label, e.g. `wrong_type`.
    pub const REASON: &str = "rtdp.reason";
    /// The field at fault, when one is.
    pub const FIELD: &str = "rtdp.field";
    /// The human-readable error.
    pub const ERROR: &str = "rtdp.error";
    /// The topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "rtdp.original.topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "rtdp.original.partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "rtdp.original.offset";
    /// Its timestamp in milliseconds.
    pub const ORIGINAL_TIMESTAMP: &str = "rtdp.original.timestamp";
    /// The pipeline, `namespace/name`.
    pub const PIPELINE: &str = "rtdp.pipeline";
    /// The table that refused the row (reason `write_rejected` only).
    pub const TABLE: &str = "rtdp.table";
}
