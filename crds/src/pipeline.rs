//! `Pipeline` (rtdp.dev/v1alpha1): one manifest for a whole real-time pipeline — where records
//! come from, the Kafka topic that carries them, the schema that parses them and the Cassandra
//! tables that store them.
//!
//! Every field carries a doc comment because the comments become the CRD's descriptions, and
//! so what `kubectl explain pipeline.spec...` teaches. Validation lives in the schema itself
//! (OpenAPI bounds and CEL `x-kubernetes-validations`), so the API server rejects an invalid
//! manifest at apply time with a message that names the field.
//!
//! The spec's top level is here; each part of it has a module of its own (`kafka`, `source`,
//! `schema`, `cassandra`, `runner`), as do the Secret references and the status. Behaviour on
//! these types lives in `lib.rs` and `manifest.rs`.

// Each `printcolumn(...)` repeats the same keys (name, type_, ...), which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]
// kube's `KubeSchema` derive emits private copies of the structs (for their CEL rules), which
// this lint reports as unreachable although the structs themselves are exported.
#![allow(unreachable_pub)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod cassandra;
mod kafka;
mod runner;
mod schema;
mod secrets;
mod source;
mod status;

pub use cassandra::*;
pub use kafka::*;
pub use runner::*;
pub use schema::*;
pub use secrets::*;
pub use source::*;
pub use status::*;

/// A CQL identifier as RTDP writes it unquoted: lowercase, starting with a letter, at most 48
/// characters (Cassandra's limit for keyspace and table names).
pub const CQL_IDENTIFIER_PATTERN: &str = "^[a-z][a-z0-9_]{0,47}$";
/// A JSON pointer (RFC 6901): empty for the whole document, otherwise `/`-separated tokens.
pub const JSON_POINTER_PATTERN: &str = "^(/([^~/]|~[01])*)*$";
/// A duration such as `30s`, `5m`, `1h30m` or `500ms`.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";
/// A Kafka topic name: letters, digits, `.`, `_` and `-`, at most 249 characters.
pub const TOPIC_NAME_PATTERN: &str = "^[a-zA-Z0-9._-]{1,249}$";
/// A cron schedule as a CronJob accepts it: five fields, or a macro such as `@daily`.
pub const CRON_PATTERN: &str = concat!(
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)",
    r"|((\*|\?|[0-9]{1,2}(-[0-9]{1,2})?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/[0-9]{1,2})?",
    r"(,(\*|\?|[0-9]{1,2}(-[0-9]{1,2})?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/[0-9]{1,2})?)*",
    r"( +(\*|\?|[0-9]{1,2}(-[0-9]{1,2})?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/[0-9]{1,2})?",
    r"(,(\*|\?|[0-9]{1,2}(-[0-9]{1,2})?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/[0-9]{1,2})?)*){4}))$"
);

/// The desired state of a real-time pipeline: source → Kafka topic → schema → Cassandra tables.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label (lowercase letters, digits and '-', at most 63 characters): the runner's Services and labels are named after it"),
    group = "rtdp.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    status = "PipelineStatus",
    shortname = "pl",
    category = "rtdp",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the whole pipeline is running"
    ),
    printcolumn(
        name = "Topic",
        type_ = "string",
        json_path = ".status.topic",
        description = "The Kafka topic the pipeline consumes"
    ),
    printcolumn(
        name = "Tables",
        type_ = "string",
        json_path = ".status.tables",
        description = "The Cassandra tables the pipeline writes"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready runner replicas"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.freshness.lagRecords",
        description = "Records in the topic not yet stored"
    ),
    printcolumn(
        name = "Last-Stored",
        type_ = "date",
        json_path = ".status.freshness.lastStoredRecordTime",
        description = "How old the newest record written to the tables is"
    ),
    printcolumn(
        name = "Written",
        type_ = "integer",
        json_path = ".status.freshness.records.written",
        priority = 1,
        description = "Records written to every table, up to the committed offsets"
    ),
    printcolumn(
        name = "Dead-Lettered",
        type_ = "integer",
        json_path = ".status.freshness.records.deadLettered",
        priority = 1,
        description = "Records sent to the dead-letter topic, up to the committed offsets"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1,
        description = "The last error, if any"
    )
)]
#[x_kube(validation = Rule::new(
    "self.cassandra.tables.all(t, t.partitionKey.all(k, self.schema.fields.exists(f, f.name == k) || (has(self.schema.derived) && self.schema.derived.exists(d, d.name == k))))"
).message("every partitionKey column must be a field or derived field declared in spec.schema").field_path(".cassandra.tables"))]
#[x_kube(validation = Rule::new(
    "self.cassandra.tables.all(t, !has(t.clusteringColumns) || t.clusteringColumns.all(c, self.schema.fields.exists(f, f.name == c.name) || (has(self.schema.derived) && self.schema.derived.exists(d, d.name == c.name))))"
).message("every clusteringColumns entry must name a field or derived field declared in spec.schema").field_path(".cassandra.tables"))]
#[x_kube(validation = Rule::new(
    "self.cassandra.tables.all(t, t.partitionKey.all(k, !self.schema.fields.exists(f, f.name == k && !(has(f.required) && f.required) && !has(f.default))))"
).message("a partitionKey column may never be null: mark its field required: true or give it a default").field_path(".cassandra.tables"))]
#[x_kube(validation = Rule::new(
    "self.cassandra.tables.all(t, !has(t.clusteringColumns) || t.clusteringColumns.all(c, !self.schema.fields.exists(f, f.name == c.name && !(has(f.required) && f.required) && !has(f.default))))"
).message("a clusteringColumns column may never be null: mark its field required: true or give it a default").field_path(".cassandra.tables"))]
#[x_kube(validation = Rule::new(
    "self.cassandra.tables.all(t, !has(t.columns) || t.columns.all(c, self.schema.fields.exists(f, f.name == c) || (has(self.schema.derived) && self.schema.derived.exists(d, d.name == c))))"
).message("every entry of a table's columns must name a field or derived field declared in spec.schema").field_path(".cassandra.tables"))]
#[x_kube(validation = Rule::new(
    "!has(self.source) || !has(self.source.http) || !has(self.source.http.keyField) || self.schema.fields.exists(f, (has(f.path) ? f.path : '/' + f.name) == self.source.http.keyField)"
).message("source.http.keyField must be the path of a field declared in spec.schema.fields").field_path(".source.http.keyField"))]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// The Kafka cluster that carries the pipeline's records.
    pub kafka: KafkaSpec,

    /// The topic records flow through, and its dead-letter topic. Created and managed by the
    /// operator; an existing topic of that name is adopted.
    #[serde(default)]
    pub topic: TopicSpec,

    /// Where records come from. Without a source, your own producers write JSON records to the
    /// topic and the pipeline processes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,

    /// How each record is parsed and validated: the single source of truth for parsing, the
    /// Cassandra table definitions and the write mapping.
    pub schema: SchemaSpec,

    /// The Cassandra cluster, keyspace and tables that store the records.
    pub cassandra: CassandraSpec,

    /// How the pipeline's runner workloads are run: replicas, image, resources, batching.
    #[serde(default)]
    pub runner: RunnerSpec,

    /// What happens to the topics and tables when the Pipeline is deleted. `Retain` (the
    /// default) keeps them and their data; `Delete` drops them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Pause the pipeline: `true` stops processing (the processors scale to zero) and the
    /// source (the CronJob is suspended, a continuous source scales to zero). The topics,
    /// tables and the consumer group's committed offsets are kept, so `false` resumes from
    /// the first record not yet stored. Records produced meanwhile wait in the topic, within
    /// its retention.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Reprocess the topic from a point in time: set a new `id` to start a replay. The
    /// operator stops the processors, moves the consumer group's committed offsets back to
    /// `from` and starts them again; `status.replay` reports its progress. Replayed records
    /// are written above every earlier write time, so a fixed transform or schema rewrites
    /// every row without a TRUNCATE, while records produced after them still win. With
    /// `spec.schema.identity` the tables end as a clean run of the current spec would leave
    /// them; without one, rows of records the current spec no longer writes stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySpec>,

    /// Backfill the source's schedule intervals within a range: set a new `id` to start one.
    /// The operator runs one Job per interval (`pipeline-runner ingest --once --interval`), in
    /// order, at most `parallelism` at a time; `status.backfill` reports its progress. Removing
    /// it, or a new `id`, cancels a backfill still running (its Jobs are deleted). Needs
    /// `source.http.schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillSpec>,

    /// Freshness objectives: the `Fresh` condition says whether the stored data meets them
    /// (measured every freshness period from Kafka; see `status.freshness`). Omit for no
    /// objective and no `Fresh` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,
}

/// A one-shot replay, identified by `id` (in the style of the Flink operator's savepoint
/// trigger nonce): each new `id` runs once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySpec {
    /// This replay's name, e.g. `2026-11-27-price-fix`; a different one starts a new replay.
    #[schemars(length(min = 1, max = 63))]
    pub id: String,

    /// Where processing starts again: `earliest` (the oldest record the topic retains) or an
    /// RFC 3339 time (per partition, the first record whose Kafka timestamp is at or after
    /// it).
    #[schemars(regex(
        pattern = r"^(earliest|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    ))]
    pub from: String,
}

/// A one-shot backfill, identified by `id` (as a replay is): each new `id` runs once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillSpec {
    /// This backfill's name, e.g. `november`; a different one starts a new backfill. A DNS
    /// label: it names the backfill's Jobs' label.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub id: String,

    /// The range's start (RFC 3339): the first interval starts at the first schedule time at
    /// or after it.
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub from: String,

    /// The range's end (RFC 3339): the last interval ends at the last schedule time at or
    /// before it. At most 1 000 intervals.
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub to: String,

    /// How many intervals run at once (Jobs in flight), started in order.
    #[serde(default = "default_backfill_parallelism")]
    #[schemars(range(min = 1, max = 20))]
    pub parallelism: i32,
}

fn default_backfill_parallelism() -> i32 {
    1
}

/// A backfill's progress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackfillStatus {
    /// The backfill's `id`.
    pub id: String,

    /// `Running`, `Completed` (every interval's Job succeeded), `Failed` (every Job finished,
    /// some failed after their retries) or `Cancelled`.
    pub state: String,

    /// The intervals in the range.
    #[serde(default)]
    pub intervals: i32,

    /// Intervals whose Job succeeded.
    #[serde(default)]
    pub succeeded: i32,

    /// Intervals whose Job failed after its retries.
    #[serde(default)]
    pub failed: i32,

    /// Intervals whose Job is running.
    #[serde(default)]
    pub running: i32,

    /// What stands out: the failed intervals, or why it cannot run.
    #[serde(default)]
    pub message: String,
}

/// Freshness objectives for the stored data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.maxLagSeconds) || has(self.maxStalenessSeconds)").message("set maxLagSeconds, maxStalenessSeconds or both"))]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    /// The longest a record may wait in the topic before it is stored, in seconds (the age of
    /// the oldest record not yet stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_lag_seconds: Option<i64>,

    /// The longest since the newest stored record was produced, in seconds: for sources that
    /// produce continuously, a quiet source shows here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_staleness_seconds: Option<i64>,
}
