//! `spec.cassandra`: the cluster, the keyspace and its replication, and the tables.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CQL_IDENTIFIER_PATTERN, CredentialsSecretReference};

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
