//! `Pipeline` (rtdp.dev/v1alpha1): one manifest for a whole real-time pipeline — where records
//! come from, the Kafka topic that carries them, the schema that parses them and the Cassandra
//! tables that store them.
//!
//! Every field carries a doc comment because the comments become the CRD's descriptions, and
//! so what `kubectl explain pipeline.spec...` teaches. Validation lives in the schema itself
//! (OpenAPI bounds and CEL `x-kubernetes-validations`), so the API server rejects an invalid
//! manifest at apply time with a message that names the field.
//!
//! Longer than 500 lines on purpose: this is the API's type definition, and its length is the
//! fields' documentation. Behaviour on these types lives in `lib.rs` and `manifest.rs`. Its
//! optional fields and its constant lists repeat one shape each, which is how serde, schemars
//! and a documented constant are declared; they are declarations, not logic to share.

// Each `printcolumn(...)` repeats the same keys (name, type_, ...), which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]
// kube's `KubeSchema` derive emits private copies of the structs (for their CEL rules), which
// this lint reports as unreachable although the structs themselves are exported.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------------------------------------
// Kafka
// ---------------------------------------------------------------------------------------------

/// Connection settings for the Kafka cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap brokers as `host:port`, e.g. `kafka.kafka.svc:9092`.
    #[schemars(length(min = 1, max = 32), inner(length(min = 3, max = 253)))]
    pub bootstrap_servers: Vec<String>,

    /// TLS for connections to the brokers. Omit for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,

    /// SASL authentication. Omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// TLS settings for Kafka connections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// A Secret key holding the PEM CA bundle that signs the brokers' certificates. Omit to use
    /// the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,

    /// A Secret holding a client certificate (`tls.crt`) and key (`tls.key`) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret_ref: Option<SecretReference>,
}

/// SASL settings for Kafka connections; the credentials always come from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// The SASL mechanism.
    pub mechanism: SaslMechanism,

    /// The Secret holding the username and password.
    pub credentials_secret_ref: CredentialsSecretReference,
}

/// A SASL mechanism supported by the runner.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// Username and password in clear text; use only with TLS.
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka's `sasl.mechanism` expects.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The topic the pipeline's records flow through.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.name) || (self.name != '.' && self.name != '..')").message("topic.name may not be . or .. (Kafka refuses them)").field_path(".name"))]
#[x_kube(validation = Rule::new("!has(self.deadLetter) || !has(self.deadLetter.name) || (self.deadLetter.name != '.' && self.deadLetter.name != '..')").message("topic.deadLetter.name may not be . or .. (Kafka refuses them)").field_path(".deadLetter.name"))]
#[x_kube(validation = Rule::new("!has(self.name) || !has(self.deadLetter) || !has(self.deadLetter.name) || self.name != self.deadLetter.name").message("topic.deadLetter.name must differ from topic.name: dead letters would be read back as records").field_path(".deadLetter.name"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The topic's name. Defaults to `<namespace>.<pipeline name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOPIC_NAME_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("topic.name is immutable: create a new Pipeline to move to another topic"))]
    pub name: Option<String>,

    /// Number of partitions: the pipeline's unit of parallelism. May grow, never shrink.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("topic.partitions can only increase: Kafka cannot remove partitions"))]
    pub partitions: i32,

    /// Copies of each partition across brokers. Fixed once the topic exists.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 16))]
    pub replication_factor: i32,

    /// Topic configuration entries the operator manages, e.g. `retention.ms: "604800000"`.
    /// Entries not listed here are left as the broker set them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// The dead-letter topic, where records that cannot be processed go with headers that
    /// say why.
    #[serde(default)]
    pub dead_letter: DeadLetterSpec,
}

impl Default for TopicSpec {
    fn default() -> Self {
        Self {
            name: None,
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            config: BTreeMap::new(),
            dead_letter: DeadLetterSpec::default(),
        }
    }
}

fn default_partitions() -> i32 {
    6
}

fn default_replication_factor() -> i32 {
    1
}

/// The dead-letter topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(oldSelf.partitions) || (has(self.partitions) && self.partitions >= oldSelf.partitions)").message("topic.deadLetter.partitions can only increase: Kafka cannot remove partitions").field_path(".partitions"))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// The dead-letter topic's name. Defaults to `<topic>.dlq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOPIC_NAME_PATTERN))]
    pub name: Option<String>,

    /// Partitions of the dead-letter topic. Defaults to 1. May grow, never shrink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: Option<i32>,

    /// Topic configuration entries for the dead-letter topic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Source
// ---------------------------------------------------------------------------------------------

/// Where records come from: exactly one of `http` or `generator`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.http) != has(self.generator)").message("source must set exactly one of http or generator"))]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Pull records from an HTTP/JSON API, on a cron schedule or by continuous polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,

    /// Synthetic property listings at a steady rate, for demos and benchmarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSource>,
}

/// An HTTP/JSON API polled for records.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.schedule) != has(self.pollInterval)").message("http source must set exactly one of schedule (cron) or pollInterval (continuous)"))]
#[x_kube(validation = Rule::new("!has(self.body) || (has(self.method) && self.method == 'POST')").message("a body is sent only with method: POST").field_path(".body"))]
#[x_kube(validation = Rule::new("!has(self.catchUp) || has(self.schedule)").message("catchUp is about the runs of a schedule: set schedule, or remove catchUp").field_path(".catchUp"))]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// The URL to request, e.g. `https://api.example.com/search`.
    #[schemars(regex(pattern = "^https?://[^ ]+$"), length(max = 2048))]
    pub url: String,

    /// The HTTP method.
    #[serde(default)]
    pub method: HttpMethod,

    /// Query parameters added to every request, e.g. `location: "houston, tx"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, String>,

    /// Request headers; values either inline or from a Secret (for API keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<HttpHeader>,

    /// A JSON body sent with POST requests (refused with GET; must parse as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,

    /// JSON pointer to the array of records in each response, e.g. `/results`. Empty when the
    /// response body itself is the array.
    #[serde(default)]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN), length(max = 256))]
    pub records_pointer: String,

    /// JSON pointer, inside each record, to the value used as the Kafka record key, e.g.
    /// `/zpid`. Records with the same key land in the same partition, in order. Must be the
    /// path of a declared schema field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN), length(max = 256))]
    pub key_field: Option<String>,

    /// How to request further pages of results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,

    /// A cron schedule (as a CronJob takes it, e.g. `@daily` or `0 */6 * * *`): each run
    /// fetches all pages once. Mutually exclusive with pollInterval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN), length(min = 1, max = 128))]
    pub schedule: Option<String>,

    /// What a scheduled run does about the intervals missed since the last one (the cluster
    /// or the source was down): by default it runs each of them, in order, before its own.
    /// Only with schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpSpec>,

    /// Poll continuously, waiting this long between passes, e.g. `30s` or `5m`. Mutually
    /// exclusive with schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub poll_interval: Option<String>,

    /// Timeout of each request, in seconds.
    #[serde(default = "default_http_timeout_seconds")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: i32,

    /// Retries of a failed request (connection error, 429 or 5xx), with exponential backoff.
    #[serde(default = "default_http_max_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: i32,
}

/// What a scheduled run does about missed intervals. Every run is recorded in the run ledger
/// (the compacted topic `<topic>.runs`), which tells the next run where the schedule stopped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatchUpSpec {
    /// `All`: run every missed interval, oldest first, then the latest (Airflow's catchup).
    /// `Latest`: run only the latest interval, however late. `None`: run only a run started
    /// within 5 minutes of its schedule time; missed runs are dropped.
    #[serde(default)]
    pub policy: CatchUpPolicy,

    /// With `All`, the most missed intervals one run catches up (the newest ones); older ones
    /// are recorded as `Skipped`, with the backfill that runs them.
    #[serde(default = "default_catch_up_max_intervals")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_intervals: i32,
}

impl Default for CatchUpSpec {
    fn default() -> Self {
        Self {
            policy: CatchUpPolicy::default(),
            max_intervals: default_catch_up_max_intervals(),
        }
    }
}

fn default_catch_up_max_intervals() -> i32 {
    100
}

/// Which missed intervals a scheduled run runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum CatchUpPolicy {
    /// Every missed interval, in order, then the latest.
    #[default]
    All,
    /// The latest interval only.
    Latest,
    /// The latest interval only, and only when its run starts within 5 minutes of the
    /// schedule time.
    None,
}

fn default_http_timeout_seconds() -> i32 {
    30
}

fn default_http_max_retries() -> i32 {
    5
}

/// An HTTP method for the source's requests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum HttpMethod {
    /// GET with query parameters.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// POST with the configured body.
    #[serde(rename = "POST")]
    Post,
}

/// One request header: a literal value or a value read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("a header sets exactly one of value or valueFrom"))]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// The header's name, e.g. `X-Api-Key`.
    #[schemars(regex(pattern = "^[A-Za-z0-9-]{1,128}$"))]
    pub name: String,

    /// A literal value. Never put credentials here: use valueFrom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,

    /// The value, read from a key of a Secret in the Pipeline's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderValueSource>,
}

/// Where a header's value comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValueSource {
    /// A key of a Secret in the Pipeline's namespace.
    pub secret_key_ref: SecretKeySelector,
}

/// How further pages are requested. Omit pagination for a single request per pass.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.type != 'PageNumber' || has(self.pageParam)").message("PageNumber pagination needs pageParam"))]
#[x_kube(validation = Rule::new("self.type != 'Cursor' || (has(self.cursorParam) && has(self.nextCursorPointer))").message("Cursor pagination needs cursorParam and nextCursorPointer"))]
#[x_kube(validation = Rule::new("self.type != 'NextUrl' || has(self.nextUrlPointer)").message("NextUrl pagination needs nextUrlPointer"))]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// The pagination style.
    #[serde(rename = "type")]
    pub type_: PaginationType,

    /// PageNumber: the query parameter carrying the page number, e.g. `page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<String>,

    /// PageNumber: the first page's number.
    #[serde(default = "default_start_page")]
    #[schemars(range(min = 0, max = 1000000))]
    pub start_page: i32,

    /// PageNumber: JSON pointer to the total number of pages in a response, e.g.
    /// `/totalPages`. Without it, paging stops at the first empty page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN))]
    pub total_pages_pointer: Option<String>,

    /// Cursor: the query parameter carrying the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_param: Option<String>,

    /// Cursor: JSON pointer to the next cursor in a response; paging stops when it is absent
    /// or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN))]
    pub next_cursor_pointer: Option<String>,

    /// NextUrl: JSON pointer to the URL of the next page; paging stops when it is absent or
    /// null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN))]
    pub next_url_pointer: Option<String>,

    /// The most pages fetched in one pass, a guard against APIs that never stop.
    #[serde(default = "default_max_pages")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_pages: i32,
}

fn default_start_page() -> i32 {
    1
}

fn default_max_pages() -> i32 {
    100
}

/// A pagination style.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PaginationType {
    /// A page-number query parameter, incremented until the last page.
    PageNumber,
    /// An opaque cursor taken from each response and sent with the next request.
    Cursor,
    /// The full URL of the next page, taken from each response.
    NextUrl,
}

/// Synthetic records at a steady rate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorSource {
    /// Records produced per second.
    #[schemars(range(min = 1, max = 1000000))]
    pub records_per_second: i32,

    /// Stop after this many records. Omit to run until stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub total_records: Option<i64>,

    /// Distinct keys the generator cycles through, so later records update earlier ones.
    #[serde(default = "default_generator_keys")]
    #[schemars(range(min = 1))]
    pub distinct_keys: i64,

    /// The kind of synthetic record.
    #[serde(default)]
    pub profile: GeneratorProfile,
}

fn default_generator_keys() -> i64 {
    100_000
}

/// The shape of synthetic records.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum GeneratorProfile {
    /// Zillow-style property listings (zpid, price, livingArea, city, ...), about 1 KB each.
    #[default]
    PropertyListings,
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

/// The record schema.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.derived) || self.derived.all(d, !self.fields.exists(f, f.name == d.name))").message("a derived field must not reuse the name of a field").field_path(".derived"))]
#[serde(rename_all = "camelCase")]
pub struct SchemaSpec {
    /// The typed fields read from each JSON record. Each becomes a Cassandra column.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub fields: Vec<FieldSpec>,

    /// Fields computed from the parsed ones with a CEL expression. Each becomes a column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub derived: Vec<DerivedFieldSpec>,

    /// A CEL expression over the parsed and derived fields; records for which it is false are
    /// skipped on purpose (and counted), e.g. `price > 0 && home_status == "FOR_SALE"`. With
    /// `identity`, the tables show the identities whose latest record passes it: a record it
    /// skips also removes its identity's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub filter: Option<String>,

    /// What identifies a record (a listing's `zpid`). With it every table keeps exactly one
    /// row per identity, at its latest values: when a newer record moves an identity to other
    /// key values (a new price in a table clustered by price), its superseded row is deleted.
    /// Without it every record is an event of its own and rows are only ever upserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,

    /// What to do with JSON members the schema does not declare: `Ignore` (default) or
    /// `Reject` (dead-letter the record).
    #[serde(default)]
    pub unknown_fields: UnknownFieldPolicy,
}

/// What identifies a record, and when a record says its identity is gone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// The fields whose values identify a record, e.g. `[zpid]`: declared fields (not derived),
    /// required or defaulted, in every table's primary key. Records of one identity must share
    /// a Kafka key (a source's `keyField` is the identity's path), so one processor orders them.
    #[schemars(length(min = 1, max = 8), inner(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48)))]
    pub fields: Vec<String>,

    /// A CEL expression over the parsed and derived fields; when it is true the record says
    /// its identity is gone (e.g. `home_status == "SOLD"`) and its rows are deleted from every
    /// table. A Kafka tombstone (a key with no value) deletes the identity its key names too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub delete_when: Option<String>,
}

/// One typed field of the record.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.maxLength) || self.type in ['text', 'ascii', 'blob']").message("maxLength applies only to text, ascii and blob fields"))]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    /// The column name: a lowercase CQL identifier, e.g. `street_address`.
    #[schemars(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48))]
    pub name: String,

    /// JSON pointer to the value inside the record, e.g. `/streetAddress`. Defaults to
    /// `/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN), length(max = 256))]
    pub path: Option<String>,

    /// The CQL type of the column; the JSON value must convert to it exactly (no silent
    /// truncation: 2.5 is not an int).
    #[serde(rename = "type")]
    pub type_: CqlType,

    /// A record whose value is missing or null is dead-lettered instead of written.
    #[serde(default)]
    pub required: bool,

    /// The value used when the record has none, written as text and parsed as the field's
    /// type, e.g. `"0"` or `"USA"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub default: Option<String>,

    /// For text, ascii and blob: the longest accepted value in bytes; longer values are
    /// dead-lettered. Defaults to 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777216))]
    pub max_length: Option<i32>,
}

impl FieldSpec {
    /// The JSON pointer this field reads: the declared path, or `/<name>`.
    pub fn json_pointer(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("/{}", self.name))
    }
}

/// A field computed with a CEL expression.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DerivedFieldSpec {
    /// The column name: a lowercase CQL identifier, e.g. `price_per_sqft`.
    #[schemars(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48))]
    pub name: String,

    /// The CQL type of the result.
    #[serde(rename = "type")]
    pub type_: CqlType,

    /// A CEL expression over the parsed fields (by column name), e.g.
    /// `living_area > 0 ? double(price) / double(living_area) : null`. A null result leaves
    /// the column empty; an evaluation error dead-letters the record.
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
}

/// The CQL types a field can have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CqlType {
    /// UTF-8 text.
    Text,
    /// US-ASCII text.
    Ascii,
    /// true or false.
    Boolean,
    /// 8-bit signed integer.
    Tinyint,
    /// 16-bit signed integer.
    Smallint,
    /// 32-bit signed integer.
    Int,
    /// 64-bit signed integer.
    Bigint,
    /// 32-bit floating point.
    Float,
    /// 64-bit floating point.
    Double,
    /// Arbitrary-precision decimal, every digit kept: from a JSON number (read from the
    /// record's text, never through a double), a numeric string or an integer. A JSON number
    /// beyond a double's range (such as 1e400) is refused as malformed JSON: send it as a
    /// string. Derived: from a CEL string or integer.
    Decimal,
    /// Milliseconds since the epoch, from an RFC 3339 string or epoch milliseconds.
    Timestamp,
    /// A calendar date, from a `YYYY-MM-DD` string (derived: a CEL string).
    Date,
    /// A UUID, from its canonical string (derived: a CEL string).
    Uuid,
    /// Bytes, from a base64 string.
    Blob,
}

impl CqlType {
    /// The type as written in CQL DDL.
    pub fn as_cql(self) -> &'static str {
        match self {
            CqlType::Text => "text",
            CqlType::Ascii => "ascii",
            CqlType::Boolean => "boolean",
            CqlType::Tinyint => "tinyint",
            CqlType::Smallint => "smallint",
            CqlType::Int => "int",
            CqlType::Bigint => "bigint",
            CqlType::Float => "float",
            CqlType::Double => "double",
            CqlType::Decimal => "decimal",
            CqlType::Timestamp => "timestamp",
            CqlType::Date => "date",
            CqlType::Uuid => "uuid",
            CqlType::Blob => "blob",
        }
    }
}

/// What to do with record members the schema does not declare.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum UnknownFieldPolicy {
    /// Ignore them: APIs add members all the time.
    #[default]
    Ignore,
    /// Dead-letter the record, naming the first unknown member.
    Reject,
}

// ---------------------------------------------------------------------------------------------
// Cassandra
// ---------------------------------------------------------------------------------------------

/// The Cassandra cluster, keyspace and tables.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CassandraSpec {
    /// Contact points as `host:port`, e.g. `cassandra.cassandra.svc:9042`.
    #[schemars(length(min = 1, max = 32), inner(length(min = 3, max = 253)))]
    pub contact_points: Vec<String>,

    /// The datacenter the runner treats as local for load balancing and LOCAL_* consistency.
    /// It must be one of the datacenters the cluster reports: another name is refused by the
    /// operator (`UnknownDatacenter`) and by the runner when they connect.
    #[serde(default = "default_local_datacenter")]
    #[schemars(length(min = 1, max = 128))]
    pub local_datacenter: String,

    /// The Secret holding the username and password. Omit when authentication is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretReference>,

    /// The keyspace that holds the tables; created if missing.
    pub keyspace: KeyspaceSpec,

    /// The tables fed from the stream. Model them query-first: each serves one query through
    /// its partition key and clustering order.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tables: Vec<TableSpec>,
}

fn default_local_datacenter() -> String {
    "datacenter1".to_string()
}

/// A keyspace and its replication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyspaceSpec {
    /// The keyspace name: a lowercase CQL identifier.
    #[schemars(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48))]
    pub name: String,

    /// How the keyspace is replicated.
    #[serde(default)]
    pub replication: ReplicationSpec,
}

/// Keyspace replication.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.strategy != 'SimpleStrategy' || has(self.replicationFactor)").message("SimpleStrategy needs replicationFactor"))]
#[x_kube(validation = Rule::new("self.strategy != 'NetworkTopologyStrategy' || (has(self.datacenters) && size(self.datacenters) > 0)").message("NetworkTopologyStrategy needs datacenters"))]
#[x_kube(validation = Rule::new("!has(self.datacenters) || self.datacenters.all(dc, self.datacenters[dc] >= 1 && self.datacenters[dc] <= 16)").message("each datacenter's replication must be between 1 and 16").field_path(".datacenters"))]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// The replication strategy.
    #[serde(default)]
    pub strategy: ReplicationStrategy,

    /// SimpleStrategy: copies of each row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub replication_factor: Option<i32>,

    /// NetworkTopologyStrategy: copies of each row per datacenter, e.g. `dc1: 3`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub datacenters: BTreeMap<String, i32>,
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            strategy: ReplicationStrategy::SimpleStrategy,
            replication_factor: Some(1),
            datacenters: BTreeMap::new(),
        }
    }
}

/// A Cassandra replication strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReplicationStrategy {
    /// One replication factor for the whole cluster; for development and single-DC clusters.
    #[default]
    SimpleStrategy,
    /// A replication factor per datacenter; for production.
    NetworkTopologyStrategy,
}

/// One table fed from the stream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.clusteringColumns) || self.clusteringColumns.all(c, !(c.name in self.partitionKey))").message("a column cannot be both in partitionKey and clusteringColumns"))]
#[serde(rename_all = "camelCase")]
pub struct TableSpec {
    /// The table name: a lowercase CQL identifier, e.g. `listings_by_city`.
    #[schemars(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48))]
    pub name: String,

    /// The partition key columns, in order: the query's equality predicate.
    #[schemars(length(min = 1, max = 8), inner(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub partition_key: Vec<String>,

    /// Clustering columns and their order within a partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub clustering_columns: Vec<ClusteringColumn>,

    /// The columns this table stores. Defaults to every field and derived field. Key columns
    /// are always stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48)))]
    pub columns: Option<Vec<String>>,

    /// Seconds before written rows expire; 0 (the default) keeps them forever.
    #[serde(default)]
    #[schemars(range(min = 0, max = 630720000))]
    pub ttl_seconds: i32,

    /// The consistency level of each write.
    #[serde(default)]
    pub consistency: WriteConsistency,
}

/// A clustering column and its order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusteringColumn {
    /// A field or derived field name.
    #[schemars(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48))]
    pub name: String,

    /// The order of rows within a partition.
    #[serde(default)]
    pub order: ClusteringOrder,
}

/// A clustering order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ClusteringOrder {
    /// Smallest first.
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

/// A write consistency level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum WriteConsistency {
    /// One replica anywhere.
    One,
    /// One replica in the local datacenter.
    LocalOne,
    /// A majority of replicas in the local datacenter.
    #[default]
    LocalQuorum,
    /// A majority of all replicas.
    Quorum,
    /// A majority in every datacenter.
    EachQuorum,
    /// Every replica.
    All,
}

// ---------------------------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// References to Secrets
// ---------------------------------------------------------------------------------------------

/// A key of a Secret in the Pipeline's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Secret in the Pipeline's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A Secret holding a username and a password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretReference {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the username.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// The key holding the password.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_string()
}

fn default_password_key() -> String {
    "password".to_string()
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

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
